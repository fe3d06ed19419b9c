"""The bad-input corpus (tests/data/bad-input/) and the machinery that plays it against a real operator.

The corpus format is described in tests/data/bad-input/README.md. In short: YAML documents, each either
the `setup:` document (foreign objects, shared providers, bystander accounts) or a `case:`, a short
script of steps run in order:

    apply: <manifest>      `kubectl apply` it (as the admin, or `as: requester`); `refused: [...]`
                           says the API server must refuse it with a message containing every string
    kubectl: [args...]     any other kubectl command in the corpus namespace (patch, annotate, ...)
    expect: {...}          wait (deadline `timeout`, 20 s) until the object `of` (default: the last
                           one the case applied) shows what is expected: phase, reason, message, ...

`case` with top-level `apply` and `expect` is the short form of two steps. `bug:` marks a case whose
expectation is correct but which the operator does not meet today: the test is a strict xfail.

Nothing here sleeps to synchronise: every wait polls a predicate until a deadline. One poller thread
lists the namespace's AgentAccounts, AccountProviders and Events a few times a second and the cases'
threads judge that snapshot, so 150 waiting cases cost the API server three list calls per poll.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from agentaccounts.models import parse_duration

GROUP, VERSION = "agentaccounts.dev", "v1alpha1"
CORPUS_DIR = Path(__file__).resolve().parent.parent / "data" / "bad-input"
PLURALS = {
    "AgentAccount": "agentaccounts",
    "AccountProvider": "accountproviders",
    "ClusterAccountProvider": "clusteraccountproviders",
}
CLUSTER_SCOPED = {"ClusterAccountProvider", "ClusterRole", "ClusterRoleBinding", "Namespace"}
UID_LABEL = "agentaccounts.dev/account-uid"
DEFAULT_TIMEOUT = 20.0
ON_TIME_SLACK = 5.0  # an expiry "on time" lands within this many seconds of expiresAt
POLL = 0.25
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_.-]+)\}")
STEP_KINDS = ("apply", "kubectl", "expect")
EXPECT_KEYS = {
    "of",
    "timeout",
    "phase",
    "reason",
    "message",
    "notMessage",
    "requester",
    "annotations",
    "secret",
    "expiresWithin",
    "roleRules",
    "identity",
    "absent",
    "onTime",
    "current",
    "ready",
    "event",
}


# -- the corpus --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    id: str
    file: str
    why: str
    bug: str | None
    steps: list[dict[str, Any]]

    @property
    def theme(self) -> str:
        return self.file.removesuffix(".yaml")

    @property
    def weight(self) -> int:
        """How long the case is likely to wait after its first kubectl call: the longest start first."""
        expects = [s["expect"] for s in self.steps if "expect" in s]
        if self.bug or any("timeout" in e or e.get("onTime") for e in expects):
            return 3
        return 2 if len(self.steps) > 2 else 1 if expects else 0


@dataclass(frozen=True)
class Corpus:
    foreign: list[dict[str, Any]]
    setup: list[dict[str, Any]]
    bystanders: list[dict[str, Any]]
    cases: list[Case]

    def case(self, case_id: str) -> Case:
        return next(c for c in self.cases if c.id == case_id)


class CorpusError(ValueError):
    pass


def load_corpus(directory: Path = CORPUS_DIR) -> Corpus:
    """Every document of every *.yaml file, checked for shape (not yet substituted)."""
    foreign: list[dict[str, Any]] = []
    setup: list[dict[str, Any]] = []
    bystanders: list[dict[str, Any]] = []
    cases: list[Case] = []
    for path in sorted(directory.glob("*.yaml")):
        for n, doc in enumerate(yaml.safe_load_all(path.read_text(encoding="utf-8"))):
            if doc is None:
                continue
            where = f"{path.name} document {n + 1}"
            if not isinstance(doc, dict):
                raise CorpusError(f"{where}: not a mapping")
            if "setup" in doc:
                shared = doc["setup"]
                if not isinstance(shared, dict) or set(shared) - {"foreign", "providers", "bystanders"}:
                    raise CorpusError(f"{where}: setup takes foreign, providers and bystanders")
                foreign += shared.get("foreign") or []
                setup += shared.get("providers") or []
                bystanders += shared.get("bystanders") or []
                continue
            cases.append(_case(doc, path.name, where))
    ids = [c.id for c in cases]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise CorpusError(f"duplicate case ids: {duplicates}")
    return Corpus(foreign, setup, bystanders, cases)


def _case(doc: dict[str, Any], file: str, where: str) -> Case:
    case_id = doc.get("case")
    if not isinstance(case_id, str) or not re.fullmatch(r"[a-z0-9][a-z0-9-]*", case_id):
        raise CorpusError(f"{where}: `case` must be a lowercase id")
    unknown = set(doc) - {"case", "why", "bug", "apply", "expect", "steps"}
    if unknown:
        raise CorpusError(f"{where} ({case_id}): unknown keys {sorted(unknown)}")
    if "steps" in doc:
        if "apply" in doc or "expect" in doc:
            raise CorpusError(f"{where} ({case_id}): use either steps or apply/expect")
        steps = list(doc["steps"])
    else:
        expect = dict(doc.get("expect") or {})
        refused = expect.pop("refused", None)
        applies = doc["apply"] if isinstance(doc.get("apply"), list) else [doc.get("apply")]
        steps = [{"apply": manifest} for manifest in applies]
        if refused is not None:
            steps[-1]["refused"] = refused
        if expect:
            steps.append({"expect": expect})
    for step in steps:
        kinds = [k for k in STEP_KINDS if k in step]
        if len(kinds) != 1:
            raise CorpusError(f"{where} ({case_id}): each step needs exactly one of {STEP_KINDS}: {step}")
        if "expect" in step and set(step["expect"]) - EXPECT_KEYS:
            raise CorpusError(f"{where} ({case_id}): unknown expect keys {set(step['expect']) - EXPECT_KEYS}")
    if not any("refused" in s or "expect" in s for s in steps):
        raise CorpusError(f"{where} ({case_id}): a case must expect something")
    return Case(case_id, file, str(doc.get("why") or "").strip(), doc.get("bug"), steps)


def substitute(value: Any, values: dict[str, str]) -> Any:
    """Replace ${NAME} in every string (keys included); an unknown placeholder is an error."""
    if isinstance(value, str):

        def one(match: re.Match[str]) -> str:
            if match.group(1) not in values:
                raise CorpusError(f"unknown placeholder ${{{match.group(1)}}}")
            return values[match.group(1)]

        return _PLACEHOLDER.sub(one, value)
    if isinstance(value, list):
        return [substitute(v, values) for v in value]
    if isinstance(value, dict):
        return {substitute(k, values): substitute(v, values) for k, v in value.items()}
    return value


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


# -- what the cluster looks like, polled once for everyone ------------------------------------------
@dataclass
class Seen:
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)
    providers: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    events: list[dict[str, str]] = field(default_factory=list)
    at: float = 0.0
    wall: datetime = field(default_factory=lambda: datetime.now(UTC))


class Poller:
    """Lists AgentAccounts, providers and Events of the corpus namespace every POLL seconds."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.api, self.namespace = api, namespace
        self.custom, self.core = client.CustomObjectsApi(api), client.CoreV1Api(api)
        self.seen = Seen()
        self.errors = 0
        # (account name, phase) -> when a snapshot first showed it: measures that need no extra calls
        self.first_seen: dict[tuple[str, str], datetime] = {}
        self._stop = threading.Event()
        self._fresh = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="bad-input-poller", daemon=True)

    def start(self) -> Poller:
        self._thread.start()
        self.wait_fresh()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def wait_fresh(self, after: float | None = None) -> Seen:
        """A snapshot taken after `after` (default: now), so that it reflects what was just done."""
        after = time.monotonic() if after is None else after
        with self._fresh:
            self._fresh.wait_for(lambda: self.seen.at > after or self._stop.is_set(), timeout=30)
        return self.seen

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                seen = self._snapshot(started)
            except (ApiException, OSError):  # a hiccup of the API server: try again next round
                self.errors += 1
            else:
                for name, body in seen.accounts.items():
                    phase = str((body.get("status") or {}).get("phase"))
                    self.first_seen.setdefault((name, phase), seen.wall)
                with self._fresh:
                    self.seen = seen
                    self._fresh.notify_all()
            self._stop.wait(max(0.0, POLL - (time.monotonic() - started)))

    def _snapshot(self, at: float) -> Seen:
        ns, wall = self.namespace, datetime.now(UTC)
        accounts = self.custom.list_namespaced_custom_object(GROUP, VERSION, ns, "agentaccounts")["items"]
        providers = self.custom.list_namespaced_custom_object(GROUP, VERSION, ns, "accountproviders")["items"]
        clusterwide = self.custom.list_cluster_custom_object(GROUP, VERSION, "clusteraccountproviders")[
            "items"
        ]
        events = [
            {
                "kind": e.involved_object.kind or "",
                "name": e.involved_object.name or "",
                "type": e.type or "",
                "reason": e.reason or "",
                "message": e.message or "",
            }
            for e in self.core.list_namespaced_event(ns).items
        ]
        return Seen(
            accounts={a["metadata"]["name"]: a for a in accounts},
            providers={
                **{("AccountProvider", p["metadata"]["name"]): p for p in providers},
                **{("ClusterAccountProvider", p["metadata"]["name"]): p for p in clusterwide},
            },
            events=events,
            at=at,
            wall=wall,
        )


# -- playing one case ----------------------------------------------------------------------------------
def ready_condition(body: dict[str, Any] | None) -> dict[str, Any]:
    conditions = ((body or {}).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == "Ready"), {})


def when(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def describe(body: dict[str, Any] | None) -> str:
    """One line about an object's state, for failure messages."""
    if body is None:
        return "absent"
    status = body.get("status") or {}
    cond = ready_condition(body)
    return (
        f"phase={status.get('phase')!r} reason={cond.get('reason')!r} message={cond.get('message')!r} "
        f"expiresAt={status.get('expiresAt')!r}"
    )


@dataclass
class CaseResult:
    case: Case
    problems: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    names: set[str] = field(default_factory=set)  # AgentAccounts it made, to find in the operator log
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems


class Slots:
    """At most `n` kubectl processes at once; a waiting case's later steps go before other cases' first
    ones, so that a multi-step case is not queued behind the whole corpus at every step."""

    def __init__(self, n: int) -> None:
        self._free, self._cond = n, threading.Condition()
        self._waiting: list[tuple[int, int]] = []  # (priority, ticket): lowest first
        self._tickets = 0

    def acquire(self, priority: int) -> None:
        with self._cond:
            self._tickets += 1
            me = (priority, self._tickets)
            self._waiting.append(me)
            self._cond.wait_for(lambda: self._free > 0 and min(self._waiting) == me)
            self._waiting.remove(me)
            self._free -= 1
            self._cond.notify_all()

    def release(self) -> None:
        with self._cond:
            self._free += 1
            self._cond.notify_all()


class Player:
    """Runs cases (one thread each) against one namespace; owns nothing it does not create."""

    def __init__(
        self,
        kubectl: Callable[..., subprocess.CompletedProcess[str]],
        api: client.ApiClient,
        poller: Poller,
        namespace: str,
        values: dict[str, str],
        requester: str,
        kubectl_slots: int = 4,
    ) -> None:
        self.kubectl_fn, self.api, self.poller = kubectl, api, poller
        self.namespace, self.values, self.requester = namespace, values, requester
        self._slots = Slots(kubectl_slots)
        self._priority = threading.local()  # 0 for a case's later steps, 1 for its first
        self._api_lock = threading.Lock()
        self.cluster_objects: list[tuple[str, str]] = []  # (kind, name) to delete at the end
        self._cluster_lock = threading.Lock()

    # kubectl and the API ---------------------------------------------------------------------------
    def kubectl(self, *args: str, as_user: str | None = None, input: str | None = None) -> Any:
        who = [f"--as={as_user}"] if as_user else []
        self._slots.acquire(getattr(self._priority, "value", 1))
        try:
            return self.kubectl_fn(*who, *args, check=False, input=input)
        finally:
            self._slots.release()

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        namespace = self.namespace if namespace is None else namespace
        with self._api_lock:
            try:
                if kind == "ClusterAccountProvider":
                    return client.CustomObjectsApi(self.api).get_cluster_custom_object(  # type: ignore[no-any-return]
                        GROUP, VERSION, PLURALS[kind], name
                    )
                if kind in PLURALS:
                    return client.CustomObjectsApi(self.api).get_namespaced_custom_object(  # type: ignore[no-any-return]
                        GROUP, VERSION, namespace, PLURALS[kind], name
                    )
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise
        raise ValueError(f"no getter for {kind}")

    def labelled(self, uid: str) -> list[str]:
        """Every ServiceAccount, Role, RoleBinding and Secret carrying the account's UID label."""
        selector = f"{UID_LABEL}={uid}"
        core, rbac = client.CoreV1Api(self.api), client.RbacAuthorizationV1Api(self.api)
        ns = self.namespace
        with self._api_lock:
            found = [
                f"ServiceAccount/{o.metadata.name}"
                for o in core.list_namespaced_service_account(ns, label_selector=selector).items
            ]
            found += [
                f"Role/{o.metadata.name}"
                for o in rbac.list_namespaced_role(ns, label_selector=selector).items
            ]
            found += [
                f"RoleBinding/{o.metadata.name}"
                for o in rbac.list_namespaced_role_binding(ns, label_selector=selector).items
            ]
            found += [
                f"Secret/{o.metadata.name}"
                for o in core.list_namespaced_secret(ns, label_selector=selector).items
            ]
        return found

    def secret_labels(self, name: str) -> dict[str, str] | None:
        with self._api_lock:
            try:
                secret = client.CoreV1Api(self.api).read_namespaced_secret(name, self.namespace)
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise
        return dict(secret.metadata.labels or {})

    def role_rules(self, name: str) -> list[dict[str, Any]] | None:
        with self._api_lock:
            try:
                role = client.RbacAuthorizationV1Api(self.api).read_namespaced_role(name, self.namespace)
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise
        return list(self.api.sanitize_for_serialization(role).get("rules") or [])

    # steps -------------------------------------------------------------------------------------------
    def play(self, case: Case) -> CaseResult:
        result = CaseResult(case)
        started = time.monotonic()
        context: dict[str, Any] = {"last": None, "uids": {}, "expires": {}}
        try:
            for n, raw in enumerate(case.steps):
                self._priority.value = 0 if n else 1
                step = substitute(raw, self.values)
                problem = self._step(step, context, result)
                if problem:
                    result.problems.append(f"step {n + 1}: {problem}")
                    break
        except Exception as exc:  # a broken harness or corpus must show as this case's failure
            result.problems.append(f"harness error: {type(exc).__name__}: {exc}")
        result.seconds = time.monotonic() - started
        return result

    def _step(self, step: dict[str, Any], context: dict[str, Any], result: CaseResult) -> str | None:
        as_user = self.requester if step.get("as") == "requester" else None
        if "apply" in step:
            manifest = dict(step["apply"])
            if manifest.pop("as", None) == "requester":
                as_user = self.requester
            return self._apply(manifest, as_user, step.get("refused"), context, result)
        if "kubectl" in step:
            return self._kubectl(list(step["kubectl"]), as_user, step.get("refused"), result)
        return self._expect(dict(step["expect"]), context, result)

    def _apply(
        self,
        manifest: dict[str, Any],
        as_user: str | None,
        refused: Any,
        context: dict[str, Any],
        result: CaseResult,
    ) -> str | None:
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        namespace = (manifest.get("metadata") or {}).get("namespace")
        args = ["apply", "-f", "-", "-o", "json"]
        if kind not in CLUSTER_SCOPED and not namespace:
            args += ["-n", self.namespace]
        if kind in CLUSTER_SCOPED:
            with self._cluster_lock:
                self.cluster_objects.append((kind, name))
        if kind == "AgentAccount":
            result.names.add(name)
        context["last"] = (kind, name)
        done = self.kubectl(*args, as_user=as_user, input=json.dumps(manifest))
        result.log.append(
            f"kubectl apply {kind}/{name[:60]}: rc={done.returncode} {done.stderr.strip()[:400]}"
        )
        if refused is not None:
            return self._judge_refusal(done, as_list(refused), kind, name, namespace)
        if done.returncode != 0:
            return f"kubectl apply {kind}/{name} failed: {done.stderr.strip()}"
        body = json.loads(done.stdout)
        context["uids"][(kind, name)] = body["metadata"]["uid"]
        return None

    def _kubectl(self, args: list[str], as_user: str | None, refused: Any, result: CaseResult) -> str | None:
        done = self.kubectl("-n", self.namespace, *args, as_user=as_user)
        result.log.append(f"kubectl {' '.join(args)[:200]}: rc={done.returncode} {done.stderr.strip()[:400]}")
        if refused is not None:
            return self._judge_refusal(done, as_list(refused), None, None, None)
        if done.returncode != 0:
            return f"kubectl {' '.join(args)} failed: {done.stderr.strip()}"
        return None

    def _judge_refusal(
        self,
        done: subprocess.CompletedProcess[str],
        fragments: list[str],
        kind: str | None,
        name: str | None,
        namespace: str | None,
    ) -> str | None:
        if done.returncode == 0:
            return f"expected a refusal containing {fragments}, but it was accepted: {done.stdout[:300]}"
        missing = [f for f in fragments if f not in done.stderr]
        if missing:
            return f"refused, but the message lacks {missing}: {done.stderr.strip()}"
        if kind in PLURALS and name and self.get(kind, name, namespace) is not None:
            return f"refused, yet {kind}/{name} exists"
        return None

    def _expect(self, expect: dict[str, Any], context: dict[str, Any], result: CaseResult) -> str | None:
        of = expect.get("of")
        kind, name = tuple(of.split("/", 1)) if of else (context["last"] or (None, None))
        if kind is None:
            return "expect without an object to look at"
        timeout = float(expect.get("timeout", DEFAULT_TIMEOUT))
        deadline = time.monotonic() + timeout
        last: list[str] = []
        while True:
            checked_at = time.monotonic()
            seen = self.poller.wait_fresh(checked_at)
            last = self._check(kind, name, expect, seen, context)
            if not last:
                break
            if time.monotonic() >= deadline:
                body = seen.accounts.get(name) if kind == "AgentAccount" else seen.providers.get((kind, name))
                why = "; ".join(last)
                return f"{kind}/{name[:80]} after {timeout:.0f}s: {why} (last seen: {describe(body)})"
        result.log.append(f"expect {kind}/{name[:60]} held after {time.monotonic() - checked_at:.1f}s")
        if expect.get("onTime"):
            expires = context["expires"].get(name)
            if expires is None:
                return f"onTime: never saw {name}'s expiresAt while it was live"
            late = (datetime.now(UTC) - expires).total_seconds()
            if late > ON_TIME_SLACK + POLL * 2:
                return f"{kind}/{name} held only {late:.1f}s after its expiresAt (limit {ON_TIME_SLACK}s)"
        return None

    def _check(
        self, kind: str, name: str, expect: dict[str, Any], seen: Seen, context: dict[str, Any]
    ) -> list[str]:
        """What does not (yet) hold; empty when everything expected holds."""
        if kind == "AgentAccount":
            return self._check_account(name, expect, seen, context)
        return self._check_provider(kind, name, expect, seen)

    def _check_condition(self, body: dict[str, Any] | None, expect: dict[str, Any]) -> list[str]:
        cond = ready_condition(body)
        problems = []
        reasons = as_list(expect.get("reason"))
        if reasons and cond.get("reason") not in reasons:
            problems.append(f"reason {cond.get('reason')!r} is not {reasons}")
        message = str(cond.get("message") or "")
        lacking = [m for m in as_list(expect.get("message")) if m not in message]
        if lacking:
            problems.append(f"message {message!r} lacks {lacking}")
        present = [m for m in as_list(expect.get("notMessage")) if m in message]
        if present:
            problems.append(f"message {message!r} must not contain {present}")
        return problems

    def _check_provider(self, kind: str, name: str, expect: dict[str, Any], seen: Seen) -> list[str]:
        body = seen.providers.get((kind, name))
        if body is None:
            return [f"{kind}/{name} not found"]
        problems = []
        cond = ready_condition(body)
        if "ready" in expect and cond.get("status") != str(expect["ready"]):
            problems.append(f"Ready {cond.get('status')!r}, not {expect['ready']!r}")
        return problems + self._check_condition(body, expect)

    def _check_account(
        self, name: str, expect: dict[str, Any], seen: Seen, context: dict[str, Any]
    ) -> list[str]:
        body = seen.accounts.get(name)
        uid = context["uids"].get(("AgentAccount", name)) or ((body or {}).get("metadata") or {}).get("uid")
        if body is not None:
            status = body.get("status") or {}
            if status.get("phase") == "Ready" and status.get("expiresAt") and name not in context["expires"]:
                context["expires"][name] = when(status["expiresAt"])  # the real one, before any forgery
        if expect.get("absent"):
            if body is not None:
                return ["still exists"]
            problems = self._named_events(name, expect, seen)
            return problems or (self._identity_gone(uid) if expect.get("identity") == "gone" else [])
        if body is None:
            return ["not found"]
        status, meta = body.get("status") or {}, body.get("metadata") or {}
        problems = []
        if "phase" in expect and status.get("phase") != expect["phase"]:
            problems.append(f"phase {status.get('phase')!r}, not {expect['phase']!r}")
        problems += self._check_condition(body, expect)
        if problems:
            return problems  # the cheap checks first; the rest need API calls
        if expect.get("current") and status.get("observedGeneration") != meta.get("generation"):
            observed, generation = status.get("observedGeneration"), meta.get("generation")
            problems.append(f"observedGeneration {observed} != generation {generation}")
        if "requester" in expect:
            got = (status.get("requester") or {}).get("username")
            if got != expect["requester"]:
                problems.append(f"status.requester.username {got!r}, not {expect['requester']!r}")
        annotations = meta.get("annotations") or {}
        for key, value in (expect.get("annotations") or {}).items():
            if annotations.get(key) != value:
                problems.append(f"annotation {key}={annotations.get(key)!r}, not {value!r}")
        if "expiresWithin" in expect:
            limit = datetime.now(UTC) + parse_duration(expect["expiresWithin"]) + timedelta(seconds=60)
            expires = when(status.get("expiresAt"))
            if expires is None or expires > limit:
                problems.append(
                    f"expiresAt {status.get('expiresAt')!r} is later than now + {expect['expiresWithin']}"
                )
        problems += self._events(name, status, expect, seen) + self._named_events(name, expect, seen)
        if problems:
            return problems
        if "secret" in expect:
            if status.get("secretName") != expect["secret"]:
                problems.append(f"status.secretName {status.get('secretName')!r}, not {expect['secret']!r}")
            labels = self.secret_labels(expect["secret"])
            if labels is None or labels.get(UID_LABEL) != uid:
                problems.append(f"Secret {expect['secret'][:80]} missing or not this account's ({labels})")
        if "roleRules" in expect:
            from agentaccounts.providers.kubernetes.rbac import object_name

            rules = self.role_rules(object_name(name))
            if rules != expect["roleRules"]:
                problems.append(f"Role rules {rules}, not {expect['roleRules']}")
        if expect.get("identity") == "gone":
            problems += self._identity_gone(uid)
        return problems

    def _identity_gone(self, uid: str | None) -> list[str]:
        if not uid:
            return ["no uid recorded for the account"]
        left = self.labelled(uid)
        return [f"still present: {left}"] if left else []

    @staticmethod
    def _named_events(name: str, expect: dict[str, Any], seen: Seen) -> list[str]:
        """`event: <reason>`: an Event with that reason (any type) on this AgentAccount."""
        reasons = {e["reason"] for e in seen.events if (e["kind"], e["name"]) == ("AgentAccount", name)}
        missing = [r for r in as_list(expect.get("event")) if r not in reasons]
        return [f"no Event {missing} (saw {sorted(reasons)})"] if missing else []

    @staticmethod
    def _events(name: str, status: dict[str, Any], expect: dict[str, Any], seen: Seen) -> list[str]:
        """A Failed or Pending outcome comes with a Warning Event saying the same (IssueFailed, or the
        Pending reason)."""
        phase, reasons = expect.get("phase"), as_list(expect.get("reason"))
        if phase not in ("Failed", "Pending") or not reasons:
            return []
        wanted = (
            "IssueFailed" if phase == "Failed" else str(ready_condition({"status": status}).get("reason"))
        )
        fragments = as_list(expect.get("message"))
        for event in seen.events:
            if (event["kind"], event["name"], event["type"], event["reason"]) == (
                "AgentAccount",
                name,
                "Warning",
                wanted,
            ) and all(f in event["message"] for f in fragments):
                return []
        return [f"no Warning Event {wanted} with {fragments}"]


# -- foreign objects ---------------------------------------------------------------------------------
def fingerprint(kubectl: Callable[..., Any], kind: str, name: str, namespace: str | None) -> dict[str, Any]:
    """resourceVersion and content of an object we do not own, to compare before and after."""
    args = ["get", kind, name, "-o", "json"]
    if namespace:
        args += ["-n", namespace]
    done = kubectl(*args, check=False)
    if done.returncode != 0:
        return {"missing": done.stderr.strip()}
    body = json.loads(done.stdout)
    meta = body.get("metadata") or {}
    content = {k: v for k, v in body.items() if k not in ("metadata", "status")}
    return {
        "resourceVersion": meta.get("resourceVersion"),
        "uid": meta.get("uid"),
        "labels": meta.get("labels") or {},
        "annotations": {
            k: v for k, v in (meta.get("annotations") or {}).items() if not k.startswith("kubectl.")
        },
        "content": content,
    }


# -- the operator's log ------------------------------------------------------------------------------
_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


def tracebacks(log: str) -> Iterator[str]:
    """Every traceback block, from the log line before it to the next timestamped line."""
    lines = log.splitlines()
    for n, line in enumerate(lines):
        if line.startswith("Traceback (most recent call last):"):
            start = n
            while start > 0 and not _TIMESTAMP.match(lines[start]):
                start -= 1
            end = n + 1
            while end < len(lines) and not _TIMESTAMP.match(lines[end]):
                end += 1
            yield "\n".join(lines[start:end])


# Tracebacks whose cause this corpus knows (each is a strict xfail in test_bad_input.py): the pattern
# that identifies the block, and the bug.
KNOWN_TRACEBACKS: dict[str, tuple[re.Pattern[str], str]] = {
    # Empty: the two this corpus found (the stamp webhook raising on specs its model rejects, kopf's
    # bookkeeping in forgeable annotations) are fixed; any traceback now fails the survival test.
}


def classify(block: str) -> str | None:
    return next((key for key, (pattern, _) in KNOWN_TRACEBACKS.items() if pattern.search(block)), None)


def revocation_lag(log: str, namespace: str, name: str) -> float | None:
    """The operator's own measure for one account: 'Expired ns/name, revoked 0.578s after expiresAt'."""
    match = re.search(
        rf"Expired {re.escape(namespace)}/{re.escape(name)}, revoked (-?[0-9.]+)s after expiresAt", log
    )
    return float(match.group(1)) if match else None
