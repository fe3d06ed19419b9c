"""Scale benchmarks of the Kubernetes provider: issue latency, bursts, simultaneous expiry, footprint
of an idle fleet, restart catch-up, API economy. Each figure is written beside its target and, where
one exists, beside a floor measured in the same run (the same API calls issued directly).

    make bench                                            # full sizes, ~20 minutes on 2 CPUs
    PYTHONPATH=tests .venv/bin/pytest tests/bench/test_bench_scale.py -q -s [--quick]

Results: tests/bench/results/kubernetes-scale.{md,json} (`--quick`: results/quick/, not committed).
`--quick` runs in `make test` at a small size so the benchmarks cannot rot; its figures are not the
product and its only assertions are that every account completed its life.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes import client

from bench import scale_support as s
from bench.machine import proc_kib
from integration.support import GROUP, VERSION, OperatorProcess


@dataclass(frozen=True)
class Sizes:
    latency: int
    bursts: tuple[int, ...]
    expiries: tuple[int, ...]
    fleets: tuple[int, ...]
    overdue: int
    idle_seconds: float
    economy: int


FULL = Sizes(
    latency=200,
    bursts=(200, 1000),
    expiries=(200, 1000),
    fleets=(1000, 10000),
    overdue=500,
    idle_seconds=60,
    economy=20,
)
QUICK = Sizes(
    latency=10, bursts=(20,), expiries=(20,), fleets=(30, 60), overdue=10, idle_seconds=10, economy=5
)


@pytest.fixture(scope="module")
def sizes(request: pytest.FixtureRequest) -> Sizes:
    """FULL or QUICK; BENCH_FLEETS=1000,5000 (say) overrides the idle-fleet sizes, for profiling."""
    chosen = QUICK if request.config.getoption("--quick") else FULL
    if fleets := os.environ.get("BENCH_FLEETS"):
        chosen = dataclasses.replace(chosen, fleets=tuple(int(x) for x in fleets.split(",")))
    return chosen


@pytest.fixture(scope="module")
def report(request: pytest.FixtureRequest) -> s.Report:
    quick = request.config.getoption("--quick")
    command = "PYTHONPATH=tests .venv/bin/pytest tests/bench/test_bench_scale.py -q -s" + (
        " --quick" if quick else ""
    )
    return s.Report("quick/kubernetes-scale" if quick else "kubernetes-scale", command)


@pytest.fixture(scope="module")
def provider(cluster: Any) -> Iterator[str]:
    api = cluster.api_client()
    custom = client.CustomObjectsApi(api)
    name = f"scale-{uuid.uuid4().hex[:6]}"
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ClusterAccountProvider",
        "metadata": {"name": name},
        "spec": {"kubernetes": {}},
    }
    custom.create_cluster_custom_object(GROUP, VERSION, "clusteraccountproviders", body)
    yield name
    custom.delete_cluster_custom_object(GROUP, VERSION, "clusteraccountproviders", name)
    api.close()


@pytest.fixture
def elsewhere(cluster: Any) -> Iterator[str]:
    """A second namespace, not watched by the operator: where the floors run."""
    api = cluster.api_client()
    name = f"floor-{uuid.uuid4().hex[:6]}"
    client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    yield name
    client.CoreV1Api(api).delete_namespace(name, propagation_policy="Background")
    api.close()


def trace_memory(operator: OperatorProcess) -> None:
    """With BENCH_TRACEMALLOC=1: the operator traces allocations from now on (SIGUSR1)."""
    if os.environ.get("BENCH_TRACEMALLOC"):
        operator.proc.send_signal(signal.SIGUSR1)


def memory_dump(operator: OperatorProcess, label: str) -> None:
    """With BENCH_TRACEMALLOC: where the operator's memory is, from its own log (SIGUSR2)."""
    if not os.environ.get("BENCH_TRACEMALLOC"):
        return
    seen = operator.output().count("Memory held (tracemalloc)")
    operator.proc.send_signal(signal.SIGUSR2)
    s.wait_until(lambda: operator.output().count("Memory held (tracemalloc)") > seen, 120, "a memory dump")
    dump = operator.output().rsplit("Memory held (tracemalloc)", 1)[1][:6000]
    (s.RESULTS / "quick").mkdir(parents=True, exist_ok=True)
    (s.RESULTS / "quick" / f"memory-{label}.txt").write_text(dump)


class Fleet:
    """An operator watching one namespace, a phase watch on it, and helpers to grow the fleet."""

    def __init__(self, cluster: Any, namespace: str, provider: str) -> None:
        self.cluster, self.namespace, self.provider = cluster, namespace, provider
        self.api = cluster.api_client()
        self.api.rest_client.pool_manager.connection_pool_kw["maxsize"] = 32  # 16 client threads and more
        self.watch = s.PhaseWatch(cluster.api_client, namespace)
        self.watch.start()
        self.watch.ready.wait(10)
        self.operator = OperatorProcess(cluster.kubeconfig, [namespace])
        self.created: dict[str, float] = {}

    def grow(self, names: list[str], lifetime: str = "2h", threads: int = 16) -> float:
        """Create the accounts at once; seconds from the first create until all are Ready."""
        started = time.time()
        with s.profiled(self.operator.proc.pid, f"grow-{len(names)}"):
            self.created.update(
                s.create_accounts(self.api, self.namespace, names, self.provider, lifetime, threads)
            )
            done = s.wait_until(
                lambda: self.watch.count("Ready", names) == len(names),
                120 + len(names) / 5,
                f"{len(names)} Ready",
                0.2,
            )
        return done - started

    def close(self) -> None:
        self.watch.stop()
        self.operator.stop()
        self.api.close()


@pytest.fixture
def fleet(cluster: Any, namespace: str, provider: str) -> Iterator[Fleet]:
    f = Fleet(cluster, namespace, provider)
    try:
        yield f
    finally:
        f.close()


def test_issue_latency_one_at_a_time(fleet: Fleet, elsewhere: str, sizes: Sizes, report: s.Report) -> None:
    latencies = []
    for i in range(sizes.latency):
        name = f"solo-{i:04d}"
        started = time.time()
        s.create_accounts(fleet.api, fleet.namespace, [name], fleet.provider, "2h", threads=1)
        ready = s.wait_until(lambda n=name: fleet.watch.count("Ready", [n]) == 1, 30, f"{name} Ready", 0.005)
        latencies.append(ready - started)
    floors = [s.floor_issue(fleet.api, elsewhere, [f"f{i}"], fleet.provider, threads=1) for i in range(20)]
    floor = statistics.median(floors)
    p50, p99 = s.percentile(latencies, 0.5), s.percentile(latencies, 0.99)
    report.add(
        s.Figure(
            f"issue latency p50, one at a time (n={len(latencies)})",
            p50 * 1000,
            "ms",
            "<= 150 ms",
            p50 <= 0.150,
            floor * 1000,
            "floor: the same writes for one account, issued directly",
        )
    )
    report.add(
        s.Figure(
            f"issue latency p99, one at a time (n={len(latencies)})",
            p99 * 1000,
            "ms",
            "<= 500 ms",
            p99 <= 0.500,
            floor * 1000,
        )
    )


def test_bursts_all_ready_vs_the_same_writes_issued_directly(
    fleet: Fleet, elsewhere: str, sizes: Sizes, report: s.Report
) -> None:
    for n in sizes.bursts:
        names = [f"burst{n}-{i:05d}" for i in range(n)]
        took = fleet.grow(names)
        floor = s.floor_issue(
            fleet.api, elsewhere, [f"f{n}-{i}" for i in range(n)], fleet.provider, threads=8
        )
        report.add(
            s.Figure(
                f"burst: {n} accounts at once -> all Ready",
                took,
                "s",
                "<= 2x floor",
                took <= 2 * floor,
                floor,
                "floor: the same writes per account, 8 client threads",
            )
        )


def test_simultaneous_expiry_vs_deleting_the_service_accounts_directly(
    fleet: Fleet, elsewhere: str, sizes: Sizes, report: s.Report
) -> None:
    for n in sizes.expiries:
        lag, floor = _expire_at_once(fleet, elsewhere, n)
        report.add(
            s.Figure(
                f"simultaneous expiry: {n} accounts, expiresAt -> every credential refused",
                lag,
                "s",
                "<= 2x floor" + ("; <= 1 s at 200" if n == 200 else ""),
                lag <= 2 * floor and (n != 200 or lag <= 1.0),
                floor,
                "floor: deleting as many ServiceAccounts directly, 8 threads",
            )
        )


def _expire_at_once(fleet: Fleet, elsewhere: str, n: int) -> tuple[float, float]:
    """(seconds from the shared expiresAt until every account was revoked, the floor's seconds)."""
    core, custom = client.CoreV1Api(fleet.api), client.CustomObjectsApi(fleet.api)
    names = [f"exp{n}-{i:05d}" for i in range(n)]
    fleet.grow(names)
    # Every expiresAt in the same second: written into status (as the operator itself does when an
    # account is shortened), far enough ahead that all the writes land first.
    at = (datetime.now(UTC) + timedelta(seconds=5 + n / 100)).replace(microsecond=0)
    patch = {"status": {"expiresAt": at.isoformat().replace("+00:00", "Z")}}

    def shorten(name: str) -> None:
        s.retrying(
            lambda: custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, fleet.namespace, "agentaccounts", name, patch
            )
        )

    bindings = s.DeletionWatch(fleet.cluster.api_client, fleet.namespace)
    bindings.start()
    bindings.ready.wait(10)
    s.in_parallel(16, names, shorten)
    timeout = at.timestamp() + 60 + n / 10 - time.time()
    try:
        s.wait_until(lambda: fleet.watch.count("Expired", names) == n, timeout, f"{n} Expired", 0.1)
        # A credential is refused once its RoleBinding is gone (403; its ServiceAccount goes in the
        # same round trip, then 401): the last such deletion is when every credential was refused.
        ours = [f"agentaccount-{name}" for name in names]
        s.wait_until(lambda: all(b in bindings.deleted for b in ours), 10, "every RoleBinding deletion seen")
    finally:
        bindings.stop()
    left = core.list_namespaced_service_account(fleet.namespace, label_selector=s.UID_LABEL).items
    assert not [sa for sa in left if sa.metadata.name.startswith(f"agentaccount-exp{n}-")]
    lag = max(bindings.deleted[b] for b in ours)
    floor_names = [f"fsa{n}-{i}" for i in range(n)]
    s.in_parallel(
        16,
        floor_names,
        lambda x: core.create_namespaced_service_account(elsewhere, {"metadata": {"name": x}}),
    )
    return lag - at.timestamp(), s.floor_delete_service_accounts(fleet.api, elsewhere, floor_names)


def _written_directly(fleet: Fleet, names: list[str]) -> float:
    """Grow an idle fleet without issuing: with the operator stopped (its webhooks gone with it), each
    account is created and given the status the operator writes for an issued one; the operator then
    resumes them all (adding its finalizer, and nothing else: they are up to date). What the operator
    keeps per account it watches is the same; issuing 9,000 more here would take 40 minutes. Returns
    the seconds until the operator had resumed every one."""
    started = time.time()
    fleet.operator.stop()
    custom = client.CustomObjectsApi(fleet.api)
    now = datetime.now(UTC)
    stamp = lambda t: t.isoformat().replace("+00:00", "Z")  # noqa: E731

    def write(name: str) -> None:
        body = s.account_body(fleet.namespace, name, fleet.provider, "2h")
        created = s.retrying(
            lambda: custom.create_namespaced_custom_object(
                GROUP, VERSION, fleet.namespace, "agentaccounts", body
            )
        )
        status = {
            "phase": "Ready",
            "observedGeneration": 1,
            "provider": "kubernetes",
            "issuedAt": stamp(now),
            "expiresAt": stamp(now + timedelta(hours=2)),
            "secretName": f"{name}-credentials",
            "accountRef": {
                "kind": "ServiceAccount",
                "name": f"agentaccount-{name}",
                "namespace": fleet.namespace,
            },
            # What kopf keeps of the spec it last handled (its diff base): without it kopf would
            # record it for each of them on resume, a write per account the operator never makes.
            "kopf": {"lastHandledConfiguration": json.dumps({"spec": created["spec"]})},
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Issued",
                    "message": "written by the bench",
                    "lastTransitionTime": stamp(now),
                    "observedGeneration": 1,
                }
            ],
        }
        s.retrying(
            lambda: custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, fleet.namespace, "agentaccounts", name, {"status": status}
            )
        )

    s.in_parallel(16, names, write)
    fleet.operator = OperatorProcess(fleet.cluster.kubeconfig, [fleet.namespace])
    trace_memory(fleet.operator)
    s.wait_until(lambda: fleet.watch.count_finalized(names) == len(names), 600, "every account resumed", 0.5)
    return time.time() - started


# Written by the control plane itself, never by the operator here (one replica, no Lease): the
# controller-manager's and API server's Lease renewals and the API server's own endpoints.
CONTROL_PLANE = ("leases", "endpoints", "endpointslices")


def _quiet(fleet: Fleet, seconds: float = 5.0) -> bool:
    """No AgentAccount written and under 5% of a core used for `seconds`: what the operator does right
    after a start (resuming 10,000 accounts takes it a minute of CPU here) is not idle."""
    before, cpu = s.apiserver_requests(fleet.api), s.cpu_seconds(fleet.operator.proc.pid)
    time.sleep(seconds)  # the observation window itself
    after = s.apiserver_requests(fleet.api) - before
    busy = (s.cpu_seconds(fleet.operator.proc.pid) - cpu) / seconds > 0.05
    return not busy and not any(
        v for (verb, res, _), v in after.items() if res == "agentaccounts" and verb in s.WRITES
    )


def _idle(fleet: Fleet, seconds: float) -> tuple[float, Counter[tuple[str, str, str]]]:
    """Operator CPU (% of one core) and the API requests served while the fleet sits idle. Waits first
    for earlier tests' namespaces to be gone: the namespace controller's deletions would be counted."""
    core = client.CoreV1Api(fleet.api)
    s.wait_until(
        lambda: not [n for n in core.list_namespace().items if n.status.phase == "Terminating"],
        600,
        "earlier namespaces deleted",
        1.0,
    )
    s.wait_until(lambda: _quiet(fleet), 600, "the operator to be done writing", 0.0)
    before, cpu0, t0 = s.apiserver_requests(fleet.api), s.cpu_seconds(fleet.operator.proc.pid), time.time()
    time.sleep(seconds)  # the measurement window itself (idle by design), not synchronisation
    after, cpu1, t1 = s.apiserver_requests(fleet.api), s.cpu_seconds(fleet.operator.proc.pid), time.time()
    return 100 * (cpu1 - cpu0) / (t1 - t0), after - before


def test_footprint_of_an_idle_fleet_and_restart_catch_up(
    fleet: Fleet, sizes: Sizes, report: s.Report
) -> None:
    names: list[str] = []
    trace_memory(fleet.operator)
    empty_rss = proc_kib(fleet.operator.proc.pid, "VmRSS") / 1024
    report.add(s.Figure("operator RSS, no accounts", empty_rss, "MiB", "—", None))
    for n, size in enumerate(sizes.fleets):
        more = [f"idle-{i:05d}" for i in range(len(names), size)]
        if n == 0:
            took = fleet.grow(more)
            how = f"issued by the operator in {took:.0f}s ({len(more) / took:.0f}/s)"
        else:
            took = _written_directly(fleet, more)
            how = (
                f"{len(names)} issued by the operator; {len(more)} written directly as it records an "
                f"issued account, while it was stopped, then resumed by it ({took:.0f}s)"
            )
        names += more
        cpu, requests = _idle(fleet, sizes.idle_seconds)
        rss = proc_kib(fleet.operator.proc.pid, "VmRSS") / 1024
        memory_dump(fleet.operator, str(size))
        per_minute = 60 / sizes.idle_seconds
        # The control plane's own heartbeats (kube-controller-manager's and kube-apiserver's Leases)
        # are counted apart: the operator here holds no Lease (one replica, no leader election).
        ours = Counter({k: v for k, v in requests.items() if k[1] not in CONTROL_PLANE})
        writes = sum(v for (verb, _, _), v in ours.items() if verb in s.WRITES) * per_minute
        reads = sum(v for (verb, _, _), v in ours.items() if verb not in s.WRITES) * per_minute
        leases = sum(v for k, v in requests.items() if k[1] in CONTROL_PLANE) * per_minute
        target = 250 if size >= 10000 else None
        report.add(
            s.Figure(
                f"operator RSS, {size} live accounts idle",
                rss,
                "MiB",
                "<= 250 MiB at 10,000",
                rss <= 250 if target else None,
                None,
                how,
            )
        )
        report.add(
            s.Figure(f"operator CPU, {size} live accounts idle", cpu, "% of a core", "<= 1%", cpu <= 1.0)
        )
        report.add(
            s.Figure(
                f"API writes per minute, {size} idle accounts",
                writes,
                "/min",
                "0",
                writes == 0,
                None,
                "from apiserver_request_total, every client but the control plane's own Lease renewals "
                f"and endpoints ({leases:.0f}/min); the bench makes none. Seen: "
                + (
                    ", ".join(f"{v} {verb} {res}" for (verb, res, _), v in ours.items() if verb in s.WRITES)
                    or "none"
                ),
            )
        )
        report.add(
            s.Figure(
                f"API reads per minute, {size} idle accounts",
                reads,
                "/min",
                "—",
                None,
                None,
                "watches count when they end (server timeout)",
            )
        )

    # Restart: some accounts become overdue while the operator is down (their expiresAt moved into
    # the past, as a long outage would leave them); the rest must not be written at all.
    fleet.operator.stop()
    custom = client.CustomObjectsApi(fleet.api)
    overdue = names[: sizes.overdue]
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    s.in_parallel(
        16,
        overdue,
        lambda name: s.retrying(
            lambda: custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, fleet.namespace, "agentaccounts", name, {"status": {"expiresAt": past}}
            )
        ),
    )
    healthy = names[sizes.overdue :]
    restarted = time.time()
    fleet.operator = OperatorProcess(fleet.cluster.kubeconfig, [fleet.namespace])
    ready = time.time()
    done = s.wait_until(
        lambda: fleet.watch.count("Expired", overdue) == len(overdue), 120, "overdue revoked", 0.1
    )
    time.sleep(5)  # a window in which a late write to a healthy account would show (measured, not waited on)
    touched = fleet.watch.changed_between(healthy, restarted, time.time())
    report.add(
        s.Figure(f"restart at {len(names)}: until the operator is ready", ready - restarted, "s", "—", None)
    )
    report.add(
        s.Figure(
            f"restart at {len(names)}: until every overdue credential ({len(overdue)}) is refused",
            done - restarted,
            "s",
            "<= 30 s",
            done - restarted <= 30,
        )
    )
    report.add(
        s.Figure(
            f"restart at {len(names)}: healthy accounts written", len(touched), "accounts", "0", not touched
        )
    )


ECONOMY_PURPOSE = {
    ("POST", "agentaccounts", ""): "the bench's own creates (subtracted)",
    ("PATCH", "agentaccounts", "status"): "status: expiry first, identity, Ready; Expired; kopf's progress",
    ("PATCH", "agentaccounts", ""): "finalizer added / removed",
    ("GET", "agentaccounts", ""): "fresh reads before issuing and before revoking",
    ("POST", "serviceaccounts", ""): "the identity",
    ("POST", "serviceaccounts", "token"): "the bound token",
    ("POST", "roles", ""): "its permissions",
    ("POST", "rolebindings", ""): "binding them",
    ("POST", "secrets", ""): "the credentials Secret",
    ("DELETE", "agentaccounts", ""): "the record, after keepExpiredFor",
    ("POST", "subjectaccessreviews", ""): "delegation: the requester may do what is granted",
    ("POST", "events", ""): "Events: Issued, Expired, Deleted",
}


def test_api_requests_per_account_lifecycle(fleet: Fleet, sizes: Sizes, report: s.Report) -> None:
    n = sizes.economy
    names = [f"life-{i:03d}" for i in range(n)]
    before = s.apiserver_requests(fleet.api)
    custom = client.CustomObjectsApi(fleet.api)
    for name in names:
        body = s.account_body(fleet.namespace, name, fleet.provider, "15s", keepExpiredFor="2s")
        custom.create_namespaced_custom_object(GROUP, VERSION, fleet.namespace, "agentaccounts", body)
    s.wait_until(lambda: len([x for x in names if x in fleet.watch.gone]) == n, 120, "every record gone", 0.2)
    time.sleep(3)  # let the last Events and deletions be counted (a measurement window, not a wait on state)
    counts = s.apiserver_requests(fleet.api) - before
    counts[("POST", "agentaccounts", "")] -= n
    rows = sorted(((k, v / n) for k, v in counts.items() if v > 0), key=lambda kv: -kv[1])
    total = sum(v for _, v in rows)
    detail = "; ".join(
        f"{verb} {res}{'/' + sub if sub else ''} {v:.1f} ({ECONOMY_PURPOSE.get((verb, res, sub), '?')})"
        for (verb, res, sub), v in rows
    )
    report.add(
        s.Figure(
            f"API requests per account lifecycle (create -> Ready -> expire -> gone, n={n})",
            total,
            "requests",
            "—",
            None,
            None,
            detail,
        )
    )
    writes = sum(v for (verb, _, _), v in rows if verb in s.WRITES)
    report.add(s.Figure("API writes per account lifecycle", writes, "requests", "—", None))
