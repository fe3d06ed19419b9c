"""In-memory stand-ins for what the operator talks to, so reconcile, revoke, the timer and provider
upkeep can be tested in milliseconds instead of through a real control plane.

`FakeKube` mirrors `kube.Kube` method for method (same names, parameters and return shapes; a unit
test holds the signatures equal), the way `tests/unit/test_leader.py`'s store mirrors
`leader.LeaseStore`. It is honest in the ways the code under test relies on:

- it refuses what the API server refuses: a duplicate create (`kube.AlreadyExists`), a replace with a
  stale resourceVersion or another object's uid (`kube.Conflict`), a create that carries a
  resourceVersion, a token shorter than ten minutes;
- it assigns what the API server assigns: metadata.uid, resourceVersion (one counter, like etcd's)
  and creationTimestamp;
- it hands out copies, never its own objects, so code cannot "see" a write it did not re-read;
- deletion respects finalizers (deletionTimestamp first), status patches are JSON merge patches.

Every call is recorded in `calls` (method name first, arguments deep-copied), so a test can say what
was written, in which order, or "no API call at all"; `fail` makes the next matching call raise.
RBAC is reduced to a list of `Grant`s per user, answered by `subject_access_review`.

`FakeClock` and `FakeWaiter` are virtual wall time and the scheduler's wait on it;
`VirtualTime` is a virtual monotonic clock for the Cloudflare request budget.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import heapq
import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from agentaccounts.clock import Clock, rfc3339, utcnow
from agentaccounts.kube import _KINDS, PLURALS, AlreadyExists, Conflict, KubeApiError
from agentaccounts.ownership import MANAGED_BY, owned_by

CLUSTER_KINDS = {"ClusterAccountProvider"}
BUILTIN_KINDS = frozenset(_KINDS)  # exactly what kube.Kube.get/create/... accept
CUSTOM_KINDS = frozenset(PLURALS)
WRITES = frozenset(
    {
        "create",
        "replace",
        "delete",
        "delete_labelled",
        "request_token",
        "create_custom",
        "patch_status",
        "patch_account_status",
        "annotate_account",
        "delete_account",
        "ensure_secret_key",
    }
)
MIN_TOKEN_SECONDS = 600  # the TokenRequest API refuses shorter tokens
SERVED: dict[str, set[str]] = {
    "": {"configmaps", "secrets", "pods", "pods/log", "services", "serviceaccounts", "events"},
    "apps": {"deployments", "deployments/scale", "statefulsets"},
    "coordination.k8s.io": {"leases"},
    "rbac.authorization.k8s.io": {"roles", "rolebindings"},
    "agentaccounts.dev": {"agentaccounts", "agentaccounts/status", "accountproviders"},
}


@dataclass(frozen=True)
class Grant:
    """One allowed verb on one resource: "*" matches anything, name "*" every object."""

    verb: str
    resource: str  # plural, e.g. "configmaps"
    group: str = ""
    subresource: str = ""
    name: str = "*"
    namespace: str = "*"

    def allows(self, attributes: dict[str, str]) -> bool:
        def ok(mine: str, theirs: str) -> bool:
            return mine in ("*", theirs)

        return (
            ok(self.verb, attributes.get("verb", ""))
            and ok(self.group, attributes.get("group", ""))
            and ok(self.resource, attributes.get("resource", ""))
            and ok(self.subresource, attributes.get("subresource", ""))
            and ok(self.name, attributes.get("name", ""))
            and ok(self.namespace, attributes.get("namespace", ""))
        )


ALL = Grant("*", "*", group="*", subresource="*")  # cluster-admin


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge recursively, None deletes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def selector_matches(selector: str, labels: dict[str, str]) -> bool:
    """Equality-based label selectors, as the API server reads them: `k=v`, `k==v`, `k!=v`, `k`, `!k`,
    comma-separated (all must hold; empty selects everything). Set-based ones are not faked."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if " in " in term or " notin " in term or "(" in term:
            raise NotImplementedError(f"set-based selector {term!r} is not supported by FakeKube")
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


Failure = tuple[str, BaseException, Callable[[tuple[Any, ...]], bool] | None]


class FakeKube:
    """An in-memory `kube.Kube` (see the module docstring). Storage is plain dicts, open to tests:
    `custom[(kind, namespace, name)]` for our kinds, `objects[kind][(namespace, name)]` for built-in
    ones (`secrets` is `objects["Secret"]`), `namespaces[name]` -> labels, `grants[username]`."""

    server = "https://fake-apiserver.test:6443"
    CA = "-----BEGIN CERTIFICATE-----\nRkFLRQ==\n-----END CERTIFICATE-----\n"

    def __init__(self, now: Clock = utcnow) -> None:
        self.now = now
        self.custom: dict[tuple[str, str, str], dict[str, Any]] = {}  # (kind, namespace, name) -> body
        self.objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {k: {} for k in BUILTIN_KINDS}
        self.secrets: dict[tuple[str, str], dict[str, Any]] = self.objects["Secret"]  # (namespace, name)
        self.namespaces: dict[str, dict[str, str]] = {}  # name -> labels
        self.grants: dict[str, list[Grant]] = {}  # username -> grants (groups are not consulted)
        self.calls: list[tuple[Any, ...]] = []
        self.sar_delay: dict[str, float] = {}  # resource -> seconds the answer takes (for ordering tests)
        self.served: dict[str, set[str]] = {group: set(names) for group, names in SERVED.items()}
        self.tokens: list[dict[str, Any]] = []  # every token handed out by request_token
        self.failures: list[Failure] = []
        self._versions = itertools.count(1)
        self._uids = itertools.count(1)

    # -- setup ------------------------------------------------------------------------------------

    def add(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        """Store one of our objects as-is (no call recorded); uid and resourceVersion if missing."""
        meta = body.setdefault("metadata", {})
        namespace = "" if kind in CLUSTER_KINDS else meta.setdefault("namespace", "agents")
        meta.setdefault("uid", f"uid-{kind}-{namespace}-{meta['name']}")
        meta.setdefault("resourceVersion", self._version())
        self.custom[(kind, namespace, meta["name"])] = body
        return body

    def add_object(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        """Store a built-in object as-is (no call recorded); uid and resourceVersion if missing."""
        meta = body.setdefault("metadata", {})
        meta.setdefault("labels", {})
        meta.setdefault("uid", self._uid())
        meta.setdefault("resourceVersion", self._version())
        self.objects[kind][(meta["namespace"], meta["name"])] = body
        return body

    def add_secret(
        self,
        namespace: str,
        name: str,
        labels: dict[str, str] | None = None,
        data: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """A Secret; `data` values are plain text (stored base64-encoded, as the API server does)."""
        body: dict[str, Any] = {"metadata": {"name": name, "namespace": namespace, "labels": labels or {}}}
        if data is not None:
            body["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        return self.add_object("Secret", body)

    def allow(self, username: str, *grants: Grant) -> None:
        self.grants.setdefault(username, []).extend(grants)

    def fail(
        self, method: str, exc: BaseException, when: Callable[[tuple[Any, ...]], bool] | None = None
    ) -> None:
        """The next call of `method` (whose recorded call tuple satisfies `when`) raises `exc`, once."""
        self.failures.append((method, exc, when))

    # -- inspection -------------------------------------------------------------------------------

    @property
    def sar_calls(self) -> list[tuple[dict[str, Any], dict[str, str]]]:
        return [(c[1], c[2]) for c in self.calls if c[0] == "subject_access_review"]

    @property
    def writes(self) -> list[tuple[Any, ...]]:
        """Every call that would change something on a real API server."""
        return [c for c in self.calls if c[0] in WRITES]

    def called(self, method: str, *args: Any) -> list[tuple[Any, ...]]:
        """The calls of `method` whose first arguments are `args`."""
        return [c for c in self.calls if c[0] == method and c[1 : 1 + len(args)] == args]

    def status_patches(self, namespace: str, name: str) -> list[dict[str, Any]]:
        """Every status merge patch sent for AgentAccount namespace/name, in order."""
        patches = []
        for call in self.calls:
            if call[0] == "patch_account_status" and call[1:3] == (namespace, name):
                patches.append(call[3])
            elif call[0] == "patch_status" and call[1:4] == ("AgentAccount", namespace, name):
                patches.append(call[4])
        return patches

    def stored(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object as stored (not a copy; no call recorded)."""
        if kind in CUSTOM_KINDS:
            return self.custom.get((kind, "" if kind in CLUSTER_KINDS else namespace, name))
        return self.objects[kind].get((namespace, name))

    def names(self, kind: str, namespace: str, selector: str = "") -> list[str]:
        """Names of the stored built-in objects of `kind` in `namespace` matching `selector`."""
        return sorted(
            name
            for (ns, name), body in self.objects[kind].items()
            if ns == namespace and selector_matches(selector, _labels(body))
        )

    # -- internals --------------------------------------------------------------------------------

    def _record(self, *call: Any) -> None:
        recorded = copy.deepcopy(call)
        self.calls.append(recorded)
        for failure in self.failures:
            method, exc, when = failure
            if method == call[0] and (when is None or when(recorded)):
                self.failures.remove(failure)
                raise exc

    def _version(self) -> str:
        return str(next(self._versions))

    def _uid(self) -> str:
        return str(uuid.UUID(int=next(self._uids)))

    @staticmethod
    def _builtin(kind: str) -> None:
        if kind not in BUILTIN_KINDS:
            raise KeyError(kind)  # kube.Kube has no client method for it either

    def _stamp_new(self, body: dict[str, Any], namespace: str, what: str) -> dict[str, Any]:
        stored = copy.deepcopy(body)
        meta = stored.setdefault("metadata", {})
        if meta.get("resourceVersion"):
            raise KubeApiError(f"{what}: resourceVersion should not be set on objects to be created", 500)
        if namespace:
            if meta.get("namespace", namespace) != namespace:
                raise KubeApiError(f"{what}: HTTP 400 the namespace of the object does not match", 400)
            meta["namespace"] = namespace
        meta.update(uid=self._uid(), resourceVersion=self._version(), creationTimestamp=rfc3339(self.now()))
        return stored

    def _remove(self, store: dict[Any, dict[str, Any]], key: Any) -> None:
        """Delete as the API server does: with finalizers left, only mark it (deletionTimestamp)."""
        body = store[key]
        meta = body["metadata"]
        if meta.get("finalizers"):
            if not meta.get("deletionTimestamp"):
                meta["deletionTimestamp"] = rfc3339(self.now())
                meta["resourceVersion"] = self._version()
        else:
            del store[key]

    # -- built-in objects -------------------------------------------------------------------------

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self._record("get", kind, namespace, name)
        self._builtin(kind)
        return copy.deepcopy(self.objects[kind].get((namespace, name)))

    async def list_objects(self, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        """Like Kube.list_objects: namespace "" lists every namespace."""
        self._record("list_objects", kind, namespace, selector)
        self._builtin(kind)
        return [
            copy.deepcopy(body)
            for (ns, _), body in sorted(self.objects[kind].items())
            if namespace in ("", ns) and selector_matches(selector, _labels(body))
        ]

    async def create(self, kind: str, namespace: str, body: dict[str, Any]) -> dict[str, Any] | None:
        name = body["metadata"]["name"]
        self._record("create", kind, namespace, body)
        self._builtin(kind)
        what = f"create {kind} {namespace}/{name}"
        if (namespace, name) in self.objects[kind]:
            raise AlreadyExists(f"{what}: Conflict", 409)
        stored = self._stamp_new(body, namespace, what)
        self.objects[kind][(namespace, name)] = stored
        return copy.deepcopy(stored)

    async def replace(self, kind: str, namespace: str, body: dict[str, Any]) -> dict[str, Any] | None:
        name = body["metadata"]["name"]
        self._record("replace", kind, namespace, body)
        self._builtin(kind)
        current = self.objects[kind].get((namespace, name))
        if current is None:
            return None  # 404
        what = f"replace {kind} {namespace}/{name}"
        meta, old = body.get("metadata") or {}, current["metadata"]
        version = meta.get("resourceVersion")
        # Without a resourceVersion, an update of these kinds is unconditional (as on the API server).
        if version and version != old["resourceVersion"]:
            raise Conflict(f"{what}: Conflict (the object has been modified)", 409)
        if meta.get("uid") and meta["uid"] != old["uid"]:
            raise Conflict(f"{what}: Conflict (precondition failed: uid)", 409)
        stored = copy.deepcopy(body)
        stored["metadata"] = {
            **stored["metadata"],
            "namespace": namespace,
            "uid": old["uid"],
            "resourceVersion": self._version(),
            "creationTimestamp": old.get("creationTimestamp"),
        }
        self.objects[kind][(namespace, name)] = stored
        return copy.deepcopy(stored)

    async def delete(self, kind: str, namespace: str, name: str, uid: str | None = None) -> bool:
        self._record("delete", kind, namespace, name, uid)
        self._builtin(kind)
        current = self.objects[kind].get((namespace, name))
        if current is None:
            return False
        if uid and current["metadata"].get("uid") != uid:
            return False  # precondition failed (409), which kube.Kube.delete turns into False
        self._remove(self.objects[kind], (namespace, name))
        return True

    async def delete_owned(self, kind: str, namespace: str, name: str, uid: str) -> bool:
        obj = await self.get(kind, namespace, name)
        if obj is None or not owned_by(obj, uid):
            return False
        await self.delete(kind, namespace, name, uid=obj["metadata"]["uid"])
        return True

    async def delete_labelled(self, kind: str, namespace: str, selector: str) -> None:
        self._record("delete_labelled", kind, namespace, selector)
        self._builtin(kind)
        store = self.objects[kind]
        doomed = [k for k, b in store.items() if k[0] == namespace and selector_matches(selector, _labels(b))]
        for key in doomed:
            self._remove(store, key)

    async def request_token(
        self, namespace: str, service_account: str, seconds: int, bound_secret: tuple[str, str] | None = None
    ) -> tuple[str, str]:
        self._record("request_token", namespace, service_account, seconds, bound_secret)
        what = f"create token for {namespace}/{service_account}"
        if (namespace, service_account) not in self.objects["ServiceAccount"]:
            raise KubeApiError(f"ServiceAccount {namespace}/{service_account} vanished", 404)
        if seconds < MIN_TOKEN_SECONDS:
            raise KubeApiError(f"{what}: HTTP 422 expirationSeconds may not be less than 10 minutes", 422)
        if bound_secret is not None:
            secret = self.secrets.get((namespace, bound_secret[0]))
            if secret is None or secret["metadata"].get("uid") != bound_secret[1]:
                raise KubeApiError(f"{what}: HTTP 422 the bound Secret does not exist", 422)
        token = f"fake-token-{namespace}-{service_account}-{len(self.tokens) + 1}"
        expires = rfc3339(self.now() + timedelta(seconds=seconds))
        self.tokens.append(
            {
                "namespace": namespace,
                "serviceAccount": service_account,
                "seconds": seconds,
                "boundSecret": bound_secret,
                "token": token,
                "expirationTimestamp": expires,
            }
        )
        return token, expires

    # -- our custom resources ---------------------------------------------------------------------

    def _custom_key(self, kind: str, namespace: str, name: str) -> tuple[str, str, str]:
        if kind not in CUSTOM_KINDS:
            raise KeyError(kind)  # kube.PLURALS has no entry for it either
        return (kind, "" if kind in CLUSTER_KINDS else namespace, name)

    async def get_custom(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self._record("get_custom", kind, namespace, name)
        return copy.deepcopy(self.custom.get(self._custom_key(kind, namespace, name)))

    async def create_custom(
        self, kind: str, namespace: str, body: dict[str, Any], dry_run: bool = False
    ) -> dict[str, Any] | None:
        self._record("create_custom", kind, namespace, body, dry_run)
        meta = body["metadata"]
        name = meta.get("name") or f"{meta.get('generateName', '')}{uuid.uuid4().hex[:5]}"
        key = self._custom_key(kind, namespace, name)
        what = f"create {kind} {namespace}/{name}"
        if key in self.custom:
            raise AlreadyExists(f"{what}: Conflict", 409)
        stored = self._stamp_new(body, key[1], what)
        stored["metadata"]["name"] = name
        stored["metadata"].setdefault("generation", 1)
        if not dry_run:
            self.custom[key] = stored
        return copy.deepcopy(stored)

    async def list_custom(self, kind: str, namespace: str = "") -> list[dict[str, Any]]:
        self._record("list_custom", kind, namespace)
        return [
            copy.deepcopy(body)
            for (k, ns, _), body in sorted(self.custom.items())
            if k == kind and (not namespace or ns == namespace)
        ]

    def _patch(self, kind: str, namespace: str, name: str, patch: dict[str, Any]) -> None:
        body = self.custom.get(self._custom_key(kind, namespace, name))
        if body is None:
            return  # 404: kube.Kube's _call returns None, and the patch methods ignore it
        merged = merge_patch(body, patch)
        body.clear()
        body.update(merged)
        body["metadata"]["resourceVersion"] = self._version()

    async def patch_status(self, kind: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        self._record("patch_status", kind, namespace, name, status)
        self._patch(kind, namespace, name, {"status": status})

    async def patch_account_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self._record("patch_account_status", namespace, name, status)
        self._patch("AgentAccount", namespace, name, {"status": status})

    async def annotate_account(self, namespace: str, name: str, annotations: dict[str, str | None]) -> None:
        self._record("annotate_account", namespace, name, annotations)
        self._patch("AgentAccount", namespace, name, {"metadata": {"annotations": annotations}})

    async def delete_account(self, namespace: str, name: str, uid: str) -> None:
        self._record("delete_account", namespace, name, uid)
        key = self._custom_key("AgentAccount", namespace, name)
        current = self.custom.get(key)
        if current is None or current["metadata"].get("uid") != uid:
            return  # 404, or a newer AgentAccount with that name (409, suppressed by kube.Kube)
        self._remove(self.custom, key)

    async def read_secret_key(self, namespace: str, name: str, key: str) -> str | None:
        self._record("read_secret_key", namespace, name, key)
        value = ((self.secrets.get((namespace, name)) or {}).get("data") or {}).get(key)
        return base64.b64decode(value).decode() if value else None

    async def subject_access_review(
        self, user: dict[str, Any], attributes: dict[str, str]
    ) -> tuple[bool, str]:
        self._record("subject_access_review", user, attributes)
        delay = self.sar_delay.get(attributes.get("resource", ""), 0.0)
        if delay:
            await asyncio.sleep(delay)
        allowed = any(g.allows(attributes) for g in self.grants.get(user.get("username", ""), []))
        return allowed, "fake RBAC"

    async def namespace_labels(self, name: str) -> dict[str, str] | None:
        self._record("namespace_labels", name)
        labels = self.namespaces.get(name)
        return None if labels is None else dict(labels)

    async def ensure_secret_key(
        self, namespace: str, name: str, key: str, make: Callable[[], bytes]
    ) -> bytes:
        self._record("ensure_secret_key", namespace, name, key)
        if (namespace, name) not in self.secrets:
            body = {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "Opaque",
                "metadata": {"name": name, "namespace": namespace, "labels": dict(MANAGED_BY)},
                "data": {key: base64.b64encode(make()).decode()},
            }
            self.secrets[(namespace, name)] = self._stamp_new(body, namespace, f"create Secret {name}")
        value = (self.secrets[(namespace, name)].get("data") or {}).get(key)
        if not value:
            raise KubeApiError(f"Secret {namespace}/{name} has no key {key!r}", 500)
        return base64.b64decode(value)

    # -- discovery and connection -----------------------------------------------------------------

    async def served_resources(self) -> dict[str, set[str]]:
        self._record("served_resources")
        return {group: set(names) for group, names in self.served.items()}

    def ca_pem(self) -> str:
        return self.CA

    def close(self) -> None:
        pass


def _labels(body: dict[str, Any]) -> dict[str, str]:
    return dict((body.get("metadata") or {}).get("labels") or {})


# -- time -----------------------------------------------------------------------------------------


class FakeClock:
    """Virtual wall time: `now()` for the code under test; `sleep` parks until `advance` passes it."""

    def __init__(self, start: datetime) -> None:
        self.t = start
        self._sleepers: list[tuple[datetime, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> datetime:
        return self.t

    async def sleep(self, seconds: float) -> None:
        await self.alarm(seconds)

    def alarm(self, seconds: float) -> asyncio.Future[None]:
        """A future that `advance` resolves once `seconds` have passed (registered at once)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.t + timedelta(seconds=seconds), next(self._seq), future))
        return future

    def advance(self, seconds: float) -> None:
        """Move time on; every sleeper whose time has come is released (it runs at the next await)."""
        self.t += timedelta(seconds=seconds)
        while self._sleepers and self._sleepers[0][0] <= self.t:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)


class FakeWaiter:
    """The scheduler's wait (scheduler.Waiter) on a FakeClock: returns when the event is set or the
    virtual timeout has passed. `asked` records every timeout; `waiting` is the one being waited now
    (None while the scheduler runs, or once the wait is over but the scheduler has not resumed)."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.asked: list[float] = []
        self._current: tuple[float, datetime, asyncio.Event] | None = None

    @property
    def waiting(self) -> float | None:
        if self._current is None:
            return None
        seconds, until, event = self._current
        return None if event.is_set() or self.clock.now() >= until else seconds

    async def __call__(self, event: asyncio.Event, seconds: float) -> None:
        self.asked.append(seconds)
        waiters = [asyncio.ensure_future(event.wait()), self.clock.alarm(seconds)]
        self._current = (seconds, self.clock.now() + timedelta(seconds=seconds), event)
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._current = None
            for waiter in waiters:
                waiter.cancel()


class VirtualTime:
    """A fake monotonic clock; sleeping yields to other tasks, then moves time forward."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        target = self.now + seconds
        await asyncio.sleep(0)
        self.now = max(self.now, target)
