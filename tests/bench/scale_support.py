"""What the scale benchmarks share: making fleets of accounts, watching them, the floors (the same API
calls issued directly), the API server's own request counters, and the results table.

A floor is measured in the same run as its figure, on the same machine, so the ratio survives a noisy
shared machine where absolute seconds do not.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from bench.machine import mem_gib
from integration.support import GROUP, VERSION

RESULTS = Path(__file__).parent / "results"
UID_LABEL = "agentaccounts.dev/account-uid"
FINALIZER = "agentaccounts.dev/revoke"
WRITES = ("POST", "PUT", "PATCH", "DELETE", "APPLY")
SCOPES = [{"permissions": ["list"], "resources": ["configmaps"]}]


def account_body(namespace: str, name: str, provider: str, lifetime: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AgentAccount",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "providerRef": {"kind": "ClusterAccountProvider", "name": provider},
            "lifetime": lifetime,
            "scopes": SCOPES,
            **spec,
        },
    }


def in_parallel(threads: int, items: Iterable[Any], fn: Callable[[Any], Any]) -> list[Any]:
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(fn, items))


def retrying(fn: Callable[[], Any], attempts: int = 20) -> Any:
    """An API call retried on 429/5xx/connection errors (a burst may meet API priority and fairness)."""
    for attempt in range(attempts):
        try:
            return fn()
        except ApiException as exc:
            if exc.status not in (429, 500, 503, 504) or attempt == attempts - 1:
                raise
        except OSError:
            if attempt == attempts - 1:
                raise
        time.sleep(0.2 * (attempt + 1))  # backoff between retries, not synchronisation
    raise AssertionError("unreachable")


def create_accounts(
    api: client.ApiClient, namespace: str, names: list[str], provider: str, lifetime: str, threads: int = 16
) -> dict[str, float]:
    """Create the accounts as fast as `threads` clients allow; name -> when its create returned."""
    custom = client.CustomObjectsApi(api)
    created: dict[str, float] = {}

    def one(name: str) -> None:
        body = account_body(namespace, name, provider, lifetime)
        retrying(
            lambda: custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "agentaccounts", body)
        )
        created[name] = time.time()

    in_parallel(threads, names, one)
    return created


class PhaseWatch(threading.Thread):
    """Every AgentAccount event of a namespace: when each account was first seen in each phase, each
    version it went through (resourceVersions) and when it was gone."""

    def __init__(self, api_factory: Callable[[], client.ApiClient], namespace: str) -> None:
        super().__init__(daemon=True)
        self.api, self.namespace = api_factory(), namespace
        self.first: dict[tuple[str, str], float] = {}
        self.versions: dict[str, list[tuple[float, str]]] = {}
        self.gone: dict[str, float] = {}
        self.finalized: set[str] = set()  # accounts seen carrying the operator's finalizer
        self.ready = threading.Event()
        self._stop = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        custom = client.CustomObjectsApi(self.api)
        version = ""
        while not self._stop.is_set():
            w = watch.Watch()
            try:
                kwargs: dict[str, Any] = {"timeout_seconds": 30, "allow_watch_bookmarks": True}
                if version:
                    kwargs["resource_version"] = version
                self.ready.set()
                for event in w.stream(
                    custom.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    self.namespace,
                    "agentaccounts",
                    **kwargs,
                ):
                    obj, now = event["object"], time.time()
                    version = obj["metadata"].get("resourceVersion", version)
                    if event["type"] == "BOOKMARK":
                        continue
                    name = obj["metadata"]["name"]
                    with self.lock:
                        if event["type"] == "DELETED":
                            self.gone.setdefault(name, now)
                            continue
                        self.versions.setdefault(name, []).append((now, version))
                        if FINALIZER in (obj["metadata"].get("finalizers") or []):
                            self.finalized.add(name)
                        phase = (obj.get("status") or {}).get("phase")
                        if phase:
                            self.first.setdefault((name, phase), now)
                    if self._stop.is_set():
                        break
            except ApiException as exc:
                if exc.status == 410:
                    version = ""  # too old: relist
            except Exception:  # a dropped watch is re-established
                time.sleep(0.2)

    def stop(self) -> None:
        self._stop.set()

    def count(self, phase: str, names: Iterable[str]) -> int:
        with self.lock:
            return sum(1 for n in names if (n, phase) in self.first)

    def count_finalized(self, names: Iterable[str]) -> int:
        with self.lock:
            return sum(1 for n in names if n in self.finalized)

    def changed_between(self, names: Iterable[str], start: float, end: float) -> list[str]:
        """Accounts with a new version (a write) in [start, end]."""
        with self.lock:
            return [n for n in names if any(start <= t <= end for t, _ in self.versions.get(n, []))]


@contextlib.contextmanager
def profiled(pid: int, label: str) -> Iterator[None]:
    """With BENCH_PROFILE=<dir>: py-spy samples the operator meanwhile (collapsed stacks, for reading
    with any flame-graph tool). Off by default: sampling costs the 2-CPU machine a little."""
    where = os.environ.get("BENCH_PROFILE")
    if not where:
        yield
        return
    Path(where).mkdir(parents=True, exist_ok=True)
    out = Path(where) / f"{label}.txt"
    spy = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "py-spy"),
            "record",
            "-p",
            str(pid),
            "-f",
            "raw",
            "-o",
            str(out),
            "-r",
            "50",
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)


class DeletionWatch(threading.Thread):
    """When each labelled RoleBinding of a namespace was deleted: the moment its agent's calls are
    refused (403), whatever the operator still does for that account afterwards."""

    def __init__(self, api_factory: Callable[[], client.ApiClient], namespace: str) -> None:
        super().__init__(daemon=True)
        self.api, self.namespace = api_factory(), namespace
        self.deleted: dict[str, float] = {}
        self.ready = threading.Event()
        self._stop = threading.Event()

    def run(self) -> None:
        rbac = client.RbacAuthorizationV1Api(self.api)
        listed = rbac.list_namespaced_role_binding(self.namespace, label_selector=UID_LABEL)
        version = listed.metadata.resource_version
        while not self._stop.is_set():
            try:
                self.ready.set()
                for event in watch.Watch().stream(
                    rbac.list_namespaced_role_binding,
                    self.namespace,
                    label_selector=UID_LABEL,
                    timeout_seconds=30,
                    resource_version=version,  # resumed where it left off: no DELETE missed in between
                ):
                    version = event["object"].metadata.resource_version or version
                    if event["type"] == "DELETED":
                        self.deleted.setdefault(event["object"].metadata.name, time.time())
                    if self._stop.is_set():
                        break
            except Exception:  # a dropped watch is re-established (a missed DELETE fails the bench)
                time.sleep(0.2)

    def stop(self) -> None:
        self._stop.set()


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> float:
    """Poll until true (deadline: AssertionError); returns when it became true (time.time())."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return time.time()
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def floor_issue(
    api: client.ApiClient, namespace: str, names: list[str], provider: str, threads: int = 8
) -> float:
    """The API writes the operator makes to issue one Kubernetes account (the AgentAccount create
    through admission, three status patches, ServiceAccount, Role, RoleBinding, TokenRequest, Secret),
    issued directly for every name with `threads` clients; returns the seconds it took."""
    core, rbac, custom = (
        client.CoreV1Api(api),
        client.RbacAuthorizationV1Api(api),
        client.CustomObjectsApi(api),
    )

    def one(name: str) -> None:
        sa = f"floor-{name}"
        body = account_body(namespace, name, provider, "1h")
        retrying(
            lambda: custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "agentaccounts", body)
        )
        for n in range(3):
            patch = {"status": {"phase": "Pending", "message": f"floor {n}"}}
            retrying(
                lambda p=patch: custom.patch_namespaced_custom_object_status(
                    GROUP, VERSION, namespace, "agentaccounts", name, p
                )
            )
        retrying(lambda: core.create_namespaced_service_account(namespace, {"metadata": {"name": sa}}))
        role = {
            "metadata": {"name": sa},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}],
        }
        retrying(lambda: rbac.create_namespaced_role(namespace, role))
        binding = {
            "metadata": {"name": sa},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": sa},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": namespace}],
        }
        retrying(lambda: rbac.create_namespaced_role_binding(namespace, binding))
        request = {"spec": {"expirationSeconds": 3600}}
        retrying(lambda: core.create_namespaced_service_account_token(sa, namespace, request))
        secret = {"metadata": {"name": f"{sa}-credentials"}, "stringData": {"token": "x" * 900}}
        retrying(lambda: core.create_namespaced_secret(namespace, secret))

    started = time.time()
    in_parallel(threads, names, one)
    return time.time() - started


def floor_delete_service_accounts(
    api: client.ApiClient, namespace: str, names: list[str], threads: int = 8
) -> float:
    core = client.CoreV1Api(api)
    started = time.time()
    in_parallel(
        threads, names, lambda n: retrying(lambda: core.delete_namespaced_service_account(n, namespace))
    )
    return time.time() - started


_REQUEST = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")


def apiserver_requests(api: client.ApiClient) -> Counter[tuple[str, str, str]]:
    """The API server's own counter of requests served: (verb, resource, subresource) -> count, for
    resource requests (no /metrics, /healthz and the like)."""
    headers = {}
    token = api.configuration.api_key.get("authorization") or api.configuration.api_key.get("BearerToken")
    if token:
        headers["authorization"] = token if " " in token else f"Bearer {token}"
    response = api.call_api("GET", f"{api.configuration.host}/metrics", header_params=headers)
    response.read()
    counts: Counter[tuple[str, str, str]] = Counter()
    for line in response.data.decode().splitlines():
        match = _REQUEST.match(line)
        if not match:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
        if labels.get("resource"):
            counts[(labels["verb"], labels["resource"], labels.get("subresource", ""))] += int(
                float(match["value"])
            )
    return counts


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (and its reaped children), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
    return ticks / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Figure:
    measure: str
    value: float
    unit: str
    target: str  # e.g. "<= 2x floor", "<= 150 ms"
    met: bool | None  # None: no target (reported only)
    floor: float | None = None
    note: str = ""
    when: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M", time.gmtime()))


@dataclass
class Report:
    """The scale results: figures, written as JSON and as a table with machine, command and date."""

    name: str
    command: str
    figures: list[Figure] = field(default_factory=list)

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        print(
            f"{figure.measure}: {figure.value:.3g} {figure.unit}"
            + (f" (floor {figure.floor:.3g})" if figure.floor else "")
        )
        self.write()
        return figure

    def write(self) -> None:
        (RESULTS / self.name).parent.mkdir(parents=True, exist_ok=True)
        machine = {
            "host": platform.node(),
            "cpus": os.cpu_count(),
            "mem_gib": round(mem_gib(), 1),
            "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        }
        # A run of some of the tests (-k) replaces their figures and keeps the others' (with the date
        # each was measured), so the file always holds every figure.
        path = RESULTS / f"{self.name}.json"
        kept: list[Figure] = []
        if path.exists():
            ours = {f.measure for f in self.figures}
            for old in json.loads(path.read_text()).get("figures", []):
                if old.get("measure") not in ours:
                    kept.append(Figure(**{k: v for k, v in old.items() if k in Figure.__dataclass_fields__}))
        figures = kept + self.figures
        data = {"machine": machine, "command": self.command, "figures": [f.__dict__ for f in figures]}
        path.write_text(json.dumps(data, indent=2) + "\n")
        rows = "\n".join(
            f"| {f.measure} | {f.value:.3g} {f.unit} | "
            + (f"{f.floor:.3g} {f.unit} ({f.value / f.floor:.2f}x)" if f.floor else "—")
            + f" | {f.target} | {_verdict(f.met)} | {f.when} | {f.note} |"
            for f in figures
        )
        header = (
            f"# Scale: {self.name}\n\nMeasured {machine['date']} on `{machine['host']}`: "
            f"{machine['cpus']} CPUs, {machine['mem_gib']} GiB, Python {machine['python']}; the local "
            "control plane (etcd, kube-apiserver, kube-controller-manager) and the operator (one process, "
            "out of process, Kubernetes provider) on the same machine.\n\n"
            f"Command: `{self.command}`\n\n"
        )
        table = (
            "| measure | value | floor (same run) | target | | measured (UTC) | note |\n"
            "|---|---|---|---|---|---|---|\n"
        )
        (RESULTS / f"{self.name}.md").write_text(header + table + rows + "\n")


def _verdict(met: bool | None) -> str:
    return "met" if met else ("—" if met is None else "**missed**")
