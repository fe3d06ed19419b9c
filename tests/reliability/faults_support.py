"""What the fault-injection suites share: a fault-injecting proxy in front of the API server, bulk
account creation that outlasts a dead webhook, a watch that timestamps every phase change, the
inventory checks (orphans, duplicates, phases) and the credential leak scan.

Why a proxy: the control plane is shared by the whole test session, so the API server itself is never
restarted or slowed. Instead the operator under test reaches it through `ApiProxy`, a loopback TCP
proxy that forwards bytes untouched (TLS passes through: the serving certificate is valid for
127.0.0.1, whatever the port) and can hold every chunk for a while (latency), reset every open
connection (watches dropped), stop listening (an API server restart: connections refused), freeze
every open connection without closing it (a half-open connection that only a timeout can notice),
and swallow new connections (with the freeze: a partition). The webhook path (API server ->
operator) does not pass the proxy.

Nothing here sleeps to synchronise: waits poll with a deadline (`integration.support.wait_for`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import urllib3
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from integration.support import GROUP, VERSION, OperatorProcess, custom

UID_LABEL = "agentaccounts.dev/account-uid"
TOKEN_PREFIX = "agentaccounts/"


def until_none(problems: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> None:
    """Poll `problems()` (a list or dict of what is still wrong) until it is empty; on timeout fail
    with what was still wrong, so the report says which accounts and why."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            last = problems()
        except ApiException as exc:
            last = exc
        else:
            if not last:
                return
        time.sleep(interval)  # poll interval; the deadline bounds the wait
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; still wrong: {last!r}")


# -- the API server proxy ----------------------------------------------------------------------------
class _Conn:
    """One proxied connection: the client side, the upstream side, and whether it is frozen."""

    def __init__(self, client_w: asyncio.StreamWriter, upstream_w: asyncio.StreamWriter) -> None:
        self.writers = (client_w, upstream_w)
        self.frozen = asyncio.Event()  # set: never forward another byte, keep the sockets open
        self.tasks: list[asyncio.Task[None]] = []

    def abort(self) -> None:
        for writer in self.writers:
            writer.transport.abort()  # RST, no FIN handshake: what a crashed server looks like
        for task in self.tasks:
            task.cancel()


class ApiProxy:
    """A loopback TCP proxy to `upstream` (https://host:port), on its own event loop thread.

    `latency` (seconds) holds every chunk that long in each direction, as a delay line (throughput is
    not throttled, only delayed). `drop_all()` resets every open connection. `refuse()` stops
    listening (new connections are refused by the kernel) and resets every open one; `accept()`
    listens again on the same port. `stall()` freezes every open connection: the sockets stay open
    and nothing more is forwarded, so only a client-side timeout can notice; new connections work.
    `blackhole = True` makes new connections hang too (accepted, never answered: a partition);
    frozen connections stay frozen after it is set back to False, as a half-open socket would.
    """

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream_host, self.upstream_port = parts.hostname or "127.0.0.1", parts.port or 443
        self.latency = 0.0
        self.blackhole = False
        self.port = 0
        self.accepted = 0
        self.dropped = 0
        self.stalled = 0
        self._conns: set[_Conn] = set()
        self._server: asyncio.Server | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="api-proxy", daemon=True)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> ApiProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._close(refuse=True))
        self._call(self._cancel_all())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def drop_all(self) -> int:
        """Reset every open connection (watches included); returns how many."""
        return self._call(self._close(refuse=False))

    def refuse(self) -> int:
        """Stop listening and reset every open connection: the API server is down."""
        return self._call(self._close(refuse=True))

    def accept(self) -> None:
        """Listen again, on the same port: the API server is back."""
        self._call(self._listen())

    def stall(self) -> int:
        """Freeze every open connection (no byte forwarded, nothing closed); returns how many."""

        async def freeze() -> int:
            for conn in self._conns:
                conn.frozen.set()
            self.stalled += len(self._conns)
            return len(self._conns)

        return self._call(freeze())

    # -- inside the loop ---------------------------------------------------------------------------
    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    async def _listen(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self, refuse: bool) -> int:
        if refuse and self._server is not None:
            self._server.close()
            self._server = None
        conns, self._conns = list(self._conns), set()
        for conn in conns:
            conn.abort()
        self.dropped += len(conns)
        return len(conns)

    async def _cancel_all(self) -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.blackhole:
            await self._swallow(client_r, client_w)
            return
        try:
            upstream_r, upstream_w = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        except OSError:
            client_w.transport.abort()
            return
        conn = _Conn(client_w, upstream_w)
        self._conns.add(conn)
        conn.tasks = [
            asyncio.ensure_future(self._pipe(client_r, upstream_w, conn)),
            asyncio.ensure_future(self._pipe(upstream_r, client_w, conn)),
        ]
        try:
            await asyncio.gather(*conn.tasks, return_exceptions=True)
        finally:
            if conn in self._conns:
                self._conns.discard(conn)
                for writer in conn.writers:
                    writer.transport.abort()

    async def _swallow(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A connection into the black hole: read and discard until the client gives up."""
        conn = _Conn(writer, writer)
        conn.frozen.set()
        self._conns.add(conn)
        self.stalled += 1
        try:
            while await reader.read(65536):
                pass
        except OSError:
            pass
        finally:
            self._conns.discard(conn)
            writer.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: _Conn) -> None:
        line: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def send() -> None:
            while True:
                due, data = await line.get()
                if not data:
                    break
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)  # the injected latency
                if conn.frozen.is_set():
                    await asyncio.Event().wait()  # frozen: hold the socket open, forward nothing, ever
                writer.write(data)
                await writer.drain()
            with contextlib.suppress(OSError):
                writer.write_eof()

        sender = asyncio.ensure_future(send())
        try:
            while True:
                data = await reader.read(65536)
                line.put_nowait((time.monotonic() + self.latency, data))
                if not data:
                    break
            await sender
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            sender.cancel()


def kubeconfig_via(source: Path, server: str, dest: Path) -> Path:
    """A copy of `source` (the launcher's JSON kubeconfig) whose clusters point at `server`."""
    config = json.loads(source.read_text())
    for entry in config["clusters"]:
        entry["cluster"]["server"] = server
    dest.write_text(json.dumps(config, indent=2))
    return dest


def liveness(operator: OperatorProcess) -> int:
    """The operator's liveness endpoint: its HTTP status, 0 if it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{operator.health_port}/healthz", timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


# -- accounts -------------------------------------------------------------------------------------
def account_body(namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AgentAccount",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def create_retrying(
    api: client.ApiClient, namespace: str, name: str, spec: dict[str, Any], timeout: float = 90.0
) -> dict[str, Any]:
    """Create an AgentAccount, retrying while admission cannot answer (the operator was killed and its
    webhook registration points at a dead port, failurePolicy Fail) or the API server is unreachable.
    A 409 means an earlier attempt got through: that object is returned. A 403 (refused by a rule)
    is not retried."""
    deadline, last = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        try:
            return custom(api).create_namespaced_custom_object(  # type: ignore[no-any-return]
                GROUP, VERSION, namespace, "agentaccounts", account_body(namespace, name, spec)
            )
        except ApiException as exc:
            if exc.status == 409:
                return custom(api).get_namespaced_custom_object(  # type: ignore[no-any-return]
                    GROUP, VERSION, namespace, "agentaccounts", name
                )
            if exc.status in (400, 403, 422):
                raise
            last = f"HTTP {exc.status} {exc.reason}"
        except urllib3.exceptions.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.2)  # retry interval while admission is down; the deadline bounds it
    raise AssertionError(f"could not create {namespace}/{name} within {timeout}s: {last}")


def delete_quietly(api: client.ApiClient, namespace: str, name: str) -> None:
    """Delete an AgentAccount (deletes are not intercepted by admission); gone already is fine."""
    try:
        custom(api).delete_namespaced_custom_object(GROUP, VERSION, namespace, "agentaccounts", name)
    except ApiException as exc:
        if exc.status != 404:
            raise


def accounts(api: client.ApiClient, namespace: str) -> dict[str, dict[str, Any]]:
    items = custom(api).list_namespaced_custom_object(GROUP, VERSION, namespace, "agentaccounts")["items"]
    return {item["metadata"]["name"]: item for item in items}


def when(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Watcher:
    """A watch in a thread, re-established whenever it ends, calling `note(event, wall_time)` for
    every event. It talks to the API server directly (never through a test's proxy)."""

    def __init__(
        self,
        api_factory: Callable[[], client.ApiClient],
        list_call: Callable[..., Any],
        *args: Any,
        **kwargs: Any,
    ) -> None:
        self._api_factory, self._call, self._args, self._kwargs = api_factory, list_call, args, kwargs
        self._stop = threading.Event()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watcher", daemon=True)

    def note(self, event: dict[str, Any], at: float) -> None:
        raise NotImplementedError

    def __enter__(self) -> Any:
        self._thread.start()
        if not self._started.wait(30):
            raise AssertionError("the watch did not start")
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(15)

    def _run(self) -> None:
        api = self._api_factory()
        version = ""
        try:
            while not self._stop.is_set():
                w = watch.Watch()
                try:
                    kwargs: dict[str, Any] = {"timeout_seconds": 5, **self._kwargs}
                    if version:
                        kwargs["resource_version"] = version
                    self._started.set()
                    for event in w.stream(self._call(api), *self._args, **kwargs):
                        if event["type"] == "ERROR":
                            version = ""
                            break
                        obj = event["object"]
                        meta = obj.get("metadata", {}) if isinstance(obj, dict) else obj.metadata
                        version = (
                            meta.get("resourceVersion") if isinstance(meta, dict) else meta.resource_version
                        ) or version
                        self.note(event, time.time())
                        if self._stop.is_set():
                            break
                except ApiException as exc:
                    if exc.status == 410:
                        version = ""  # too old: start afresh (the first events replay current state)
                    else:
                        self._stop.wait(0.5)  # back off before watching again
                except urllib3.exceptions.HTTPError:
                    self._stop.wait(0.5)
                finally:
                    w.stop()
        finally:
            api.close()


class PhaseWatch(Watcher):
    """Records the wall-clock moment each (AgentAccount, phase) was first seen, and when each account
    disappeared. Status timestamps have whole seconds; this measures to the watch's delivery."""

    def __init__(self, api_factory: Callable[[], client.ApiClient], namespace: str) -> None:
        super().__init__(
            api_factory,
            lambda api: custom(api).list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            "agentaccounts",
        )
        self.first: dict[tuple[str, str], float] = {}
        self.first_version: dict[tuple[str, str], int] = {}
        self.gone: dict[str, float] = {}
        self.bodies: dict[str, dict[str, Any]] = {}

    def seen(self, name: str, phase: str) -> float | None:
        return self.first.get((name, phase))

    def seen_version(self, name: str, phase: str) -> int | None:
        """The resourceVersion at which the account was first seen in `phase` (see SecretWatch)."""
        return self.first_version.get((name, phase))

    def note(self, event: dict[str, Any], at: float) -> None:
        obj = event["object"]
        if event["type"] == "BOOKMARK":
            return
        name = obj["metadata"]["name"]
        if event["type"] == "DELETED":
            self.gone.setdefault(name, at)
            return
        self.bodies[name] = obj
        phase = (obj.get("status") or {}).get("phase")
        if phase:
            self.first.setdefault((name, phase), at)
            self.first_version.setdefault((name, phase), int(obj["metadata"]["resourceVersion"]))


class SecretWatch(Watcher):
    """Every value every labelled Secret of a namespace ever held, in order: the credentials issued
    during a test (for the leak scan and the rejection checks), and whether a Secret's credentials
    changed after its account was Ready (a re-issue).

    Order across the Secret and the AgentAccount is judged by resourceVersion, not by when two
    separate watches delivered their events: on one etcd, resourceVersions are its single revision
    counter (opaque to clients by contract, but this is a test of one known control plane)."""

    def __init__(self, api_factory: Callable[[], client.ApiClient], namespace: str) -> None:
        super().__init__(
            api_factory,
            lambda api: client.CoreV1Api(api).list_namespaced_secret,
            namespace,
            label_selector=UID_LABEL,
        )
        self.history: dict[str, list[tuple[int, dict[str, str]]]] = {}  # (resourceVersion, data)

    def note(self, event: dict[str, Any], at: float) -> None:
        secret = event["object"]
        if event["type"] not in ("ADDED", "MODIFIED") or not secret.data:
            return
        data = {k: base64.b64decode(v).decode() for k, v in secret.data.items()}
        versions = self.history.setdefault(secret.metadata.name, [])
        if not versions or versions[-1][1] != data:
            versions.append((int(secret.metadata.resource_version), data))

    def credentials(self, name: str) -> list[dict[str, str]]:
        return [data for _, data in self.history.get(name, [])]

    def changed_after(self, name: str, version: int) -> bool:
        """Whether the Secret's credentials changed after resourceVersion `version` (e.g. the one at
        which its account was first seen Ready)."""
        versions = sorted(self.history.get(name, []), key=lambda v: v[0])
        before = [d for rv, d in versions if rv < version]
        after = [d for rv, d in versions if rv > version]
        current = before[-1] if before else (after[0] if after else {})
        return any(_secret_part(d) != _secret_part(current) for d in after)


def _secret_part(data: dict[str, str]) -> tuple[str | None, ...]:
    return (data.get("token"), data.get("CLOUDFLARE_API_TOKEN"), data.get("AWS_SECRET_ACCESS_KEY"))


def revocation_lags(phases: PhaseWatch, names: Iterable[str]) -> dict[str, float]:
    """Seconds from each account's expiresAt to the watch first seeing it Expired."""
    lags = {}
    for name in names:
        body, seen = phases.bodies.get(name), phases.seen(name, "Expired")
        if body is None or seen is None:
            continue
        lags[name] = seen - when(body["status"]["expiresAt"])
    return lags


# -- what exists: labelled objects, our Cloudflare tokens ---------------------------------------------
LABELLED_KINDS = ("ServiceAccount", "Role", "RoleBinding", "Secret")


def labelled_objects(api: client.ApiClient, namespace: str) -> list[tuple[str, str, str]]:
    """(kind, name, account uid) of every object in `namespace` carrying our UID label."""
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    listers = {
        "ServiceAccount": core.list_namespaced_service_account,
        "Role": rbac.list_namespaced_role,
        "RoleBinding": rbac.list_namespaced_role_binding,
        "Secret": core.list_namespaced_secret,
    }
    found = []
    for kind, lister in listers.items():
        for obj in lister(namespace, label_selector=UID_LABEL).items:
            found.append((kind, obj.metadata.name, obj.metadata.labels[UID_LABEL]))
    return found


def our_tokens(emu: Any, account_id: str) -> list[dict[str, Any]]:
    """Every token in the emulated account named like the operator names its tokens."""
    return [t for t in emu.list_tokens(account_id) if str(t.get("name", "")).startswith(TOKEN_PREFIX)]


def token_uid(token: dict[str, Any]) -> str:
    return str(token["name"]).rsplit("/", 1)[-1]


@dataclass
class Inventory:
    """Orphans and duplicates, given the live accounts (uid -> phase)."""

    live: dict[str, str]
    orphans: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.orphans or self.duplicates or self.missing)


def inventory(
    api: client.ApiClient,
    namespace: str,
    emu: Any = None,
    cf_account: str = "",
    providers: dict[str, str] | None = None,
) -> Inventory:
    """Every labelled object and every token of ours must belong to a live, Ready account (an orphan
    otherwise), at most one of each per account (a duplicate otherwise), and every Ready account must
    have its whole identity (missing otherwise). `providers`: account uid -> provider type."""
    live = {
        a["metadata"]["uid"]: (a.get("status") or {}).get("phase", "")
        for a in accounts(api, namespace).values()
    }
    inv = Inventory(live)
    counts: dict[tuple[str, str], int] = {}
    for kind, name, uid in labelled_objects(api, namespace):
        if live.get(uid) != "Ready":
            inv.orphans.append(f"{kind} {namespace}/{name} of account {uid} ({live.get(uid, 'gone')})")
        counts[(kind, uid)] = counts.get((kind, uid), 0) + 1
    tokens = our_tokens(emu, cf_account) if emu is not None else []
    for token in tokens:
        uid = token_uid(token)
        if token["name"].split("/")[1] != namespace:
            continue
        if live.get(uid) != "Ready" and token.get("status") == "active":
            inv.orphans.append(
                f"live Cloudflare token {token['id']} {token['name']} ({live.get(uid, 'gone')})"
            )
        elif live.get(uid) != "Ready":
            inv.orphans.append(f"expired Cloudflare token {token['id']} {token['name']} left undeleted")
        counts[("token", uid)] = counts.get(("token", uid), 0) + 1
    for (kind, uid), n in counts.items():
        if n > 1:
            inv.duplicates.append(f"{n} {kind}s for account {uid}")
    for uid, phase in live.items():
        if phase != "Ready" or providers is None or uid not in providers:
            continue
        wanted = LABELLED_KINDS if providers[uid] == "kubernetes" else ("Secret", "token")
        for kind in wanted:
            if counts.get((kind, uid), 0) == 0:
                inv.missing.append(f"Ready account {uid} has no {kind}")
    return inv


# -- the credential leak scan -----------------------------------------------------------------------
class LeakScan:
    """Every credential value issued during a test, and the places none may appear in."""

    def __init__(self) -> None:
        self.values: set[str] = set()

    def add(self, *values: str | None) -> None:
        for value in values:
            if value and len(value) >= 16:  # ids, names and endpoints are not secrets
                self.values.add(value)

    def add_secret_data(self, data: dict[str, str]) -> None:
        """The secret parts of a credentials Secret (Kubernetes or Cloudflare)."""
        self.add(
            data.get("token"),
            data.get("CLOUDFLARE_API_TOKEN"),
            data.get("AWS_SECRET_ACCESS_KEY"),
            data.get("CLAIM_URL"),
        )

    def collect(self, *watchers: SecretWatch) -> None:
        """Every credential the watched Secrets ever held. A positive control first: scanning those
        Secrets themselves must find them, or the scan could not find a leak either."""
        seen = [data for w in watchers for versions in w.history.values() for _, data in versions]
        for data in seen:
            self.add_secret_data(data)
        if seen:
            assert self.hits({"the Secrets": json.dumps(seen)}), "the leak scan does not find credentials"
            encoded = [{k: base64.b64encode(v.encode()).decode() for k, v in d.items()} for d in seen]
            assert self.hits({"the Secrets, base64": json.dumps(encoded)}), "nor their base64 form"

    def hits(self, places: dict[str, str]) -> list[str]:
        """'credential #n in <where>' for every value (raw or base64) found in any place."""
        forms = [(n, (v, base64.b64encode(v.encode()).decode())) for n, v in enumerate(sorted(self.values))]
        found = []
        for where, text in places.items():
            for n, (raw, b64) in forms:
                if raw in text or b64 in text:
                    found.append(f"credential #{n} in {where}")
        return found


def places_to_scan(
    api: client.ApiClient, namespaces: Iterable[str], logs: dict[str, str], metrics: dict[str, str]
) -> dict[str, str]:
    """Operator logs, metrics expositions, every Event of the namespaces (all fields), and every
    AgentAccount and provider object (status, annotations, everything)."""
    places = {f"log {k}": v for k, v in logs.items()} | {f"metrics {k}": v for k, v in metrics.items()}
    core = client.CoreV1Api(api)
    for namespace in namespaces:
        with contextlib.suppress(ApiException):
            for event in core.list_namespaced_event(namespace).items:
                what = f"Event {event.reason} on {event.involved_object.kind}/{event.involved_object.name}"
                places[what] = json.dumps(api.sanitize_for_serialization(event))
        for plural in ("agentaccounts", "accountproviders"):
            with contextlib.suppress(ApiException):
                items = custom(api).list_namespaced_custom_object(GROUP, VERSION, namespace, plural)["items"]
                for item in items:
                    places[f"{item['kind']} {namespace}/{item['metadata']['name']}"] = json.dumps(item)
    for item in custom(api).list_cluster_custom_object(GROUP, VERSION, "clusteraccountproviders")["items"]:
        places[f"ClusterAccountProvider {item['metadata']['name']}"] = json.dumps(item)
    return places


def leak_hits(
    leaks: LeakScan, api: client.ApiClient, namespaces: Iterable[str], operators: Operators
) -> list[str]:
    """The leak scan over every place a credential must never be (places_to_scan), with the current
    operator's metrics exposition taken now (killed ones' were taken before each kill)."""
    operators.snapshot_metrics()
    return leaks.hits(places_to_scan(api, namespaces, operators.logs(), operators.metrics))


# -- the operators of one test ----------------------------------------------------------------------
class Operators:
    """Every operator process a test starts: restart after a kill, and keep what each said (its log,
    its last metrics exposition) for the leak scan after it is gone."""

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig
        self.all: list[OperatorProcess] = []
        self.metrics: dict[str, str] = {}
        self.kills = 0
        self.killed_at: list[float] = []  # time.monotonic() of each kill

    @property
    def current(self) -> OperatorProcess:
        return self.all[-1]

    def start(
        self, *namespaces: str, env: dict[str, str] | None = None, kubeconfig: Path | None = None
    ) -> OperatorProcess:
        proc = OperatorProcess(kubeconfig or self.kubeconfig, list(namespaces), env)
        self.all.append(proc)
        return proc

    def snapshot_metrics(self, proc: OperatorProcess | None = None) -> None:
        proc = proc or self.current
        with contextlib.suppress(OSError):
            self.metrics[f"operator #{self.all.index(proc)}"] = proc.metrics()

    def kill(self) -> None:
        """SIGKILL the current operator, keeping its metrics exposition first."""
        self.snapshot_metrics()
        self.current.kill()
        self.kills += 1
        self.killed_at.append(time.monotonic())

    def logs(self) -> dict[str, str]:
        return {f"operator #{n}": proc.output() for n, proc in enumerate(self.all)}
