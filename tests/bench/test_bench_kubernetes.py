"""Benchmark: issue latency (create -> Ready) and revocation lag (expiresAt -> token refused) for the
Kubernetes provider, over N AgentAccounts created at once, on the local control plane.

    make bench            # or: PYTHONPATH=tests .venv/bin/pytest tests/bench/test_bench_kubernetes.py -q -s

Writes tests/bench/results/kubernetes.md. Not part of `make test`: numbers, not pass/fail, are the
product; the assertions only check that every account completed its life.
"""

from __future__ import annotations

import os
import platform
import statistics
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, watch

from bench.machine import mem_gib, proc_kib
from integration.support import (
    GROUP,
    VERSION,
    OperatorProcess,
    agent_api,
    create_account,
    secret_data,
    status_of,
)

N = int(os.environ.get("BENCH_ACCOUNTS", "50"))
PROBED = 10  # agents that probe their token around expiry
LIFETIME = 40  # seconds: long enough that every account is Ready before the first expires
RESULTS = Path(__file__).parent / "results" / "kubernetes.md"


@pytest.fixture
def provider(cluster: Any) -> Iterator[str]:
    api = cluster.api_client()
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ClusterAccountProvider",
        "metadata": {"name": "bench"},
        "spec": {"kubernetes": {}},
    }
    client.CustomObjectsApi(api).create_cluster_custom_object(GROUP, VERSION, "clusteraccountproviders", body)
    yield "bench"
    client.CustomObjectsApi(api).delete_cluster_custom_object(
        GROUP, VERSION, "clusteraccountproviders", "bench"
    )
    api.close()


def _percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return (
        f"{statistics.median(ordered) * 1000:.0f} ms | {pick(0.95) * 1000:.0f} ms | "
        f"{ordered[-1] * 1000:.0f} ms"
    )


def test_bench_issue_latency_and_revocation_lag(cluster: Any, namespace: str, provider: str) -> None:
    api = cluster.api_client()
    operator = OperatorProcess(cluster.kubeconfig, [namespace])
    ready_at: dict[str, float] = {}
    stop = threading.Event()

    def watch_ready() -> None:
        w = watch.Watch()
        for event in w.stream(
            client.CustomObjectsApi(cluster.api_client()).list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            "agentaccounts",
            timeout_seconds=120,
        ):
            obj = event["object"]
            if (obj.get("status") or {}).get("phase") == "Ready":
                ready_at.setdefault(obj["metadata"]["name"], time.time())
            if stop.is_set() or len(ready_at) == N:
                w.stop()

    watcher = threading.Thread(target=watch_ready, daemon=True)
    watcher.start()
    time.sleep(0.5)  # let the watch establish before the burst (setup, not synchronisation)
    created_at: dict[str, float] = {}
    burst_start = time.time()
    for i in range(N):
        name = f"bench-{i:03d}"
        created_at[name] = time.time()
        create_account(
            api,
            namespace,
            name,
            providerRef={"kind": "ClusterAccountProvider", "name": provider},
            lifetime=f"{LIFETIME}s",
            scopes=[{"permissions": ["list"], "resources": ["configmaps"]}],
        )
    watcher.join(timeout=LIFETIME)
    sequential = _one_at_a_time(api, namespace, provider, 10)
    stop.set()
    assert len(ready_at) == N, f"only {len(ready_at)}/{N} Ready; operator log:\n{operator.output()[-3000:]}"
    all_ready = max(ready_at.values()) - burst_start
    issue = [ready_at[n] - created_at[n] for n in created_at]

    denied: dict[str, float] = {}
    rejected: dict[str, float] = {}

    def probe(name: str) -> None:
        obj = client.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, "agentaccounts", name
        )
        expires = datetime.fromisoformat(obj["status"]["expiresAt"]).timestamp()
        agent = agent_api(secret_data(api, namespace, obj["status"]["secretName"])["kubeconfig"])
        core = client.CoreV1Api(agent)
        while time.time() < expires - 0.3:
            time.sleep(0.05)  # wait for the expiry window (setup, bounded by expiresAt)
        deadline = expires + 30
        while time.time() < deadline:
            code = status_of(lambda: core.list_namespaced_config_map(namespace))
            if code != 200 and name not in denied:
                denied[name] = time.time() - expires
            if code == 401:
                rejected[name] = time.time() - expires
                break
            time.sleep(0.1)  # 50 agents x 10 probes/s: gentle enough not to load the API server much
        agent.close()

    # Probe a sample: 50 agents polling at once would load the 2-CPU machine the operator runs on.
    sample = sorted(created_at)[:PROBED]
    threads = [threading.Thread(target=probe, args=(n,)) for n in sample]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=LIFETIME + 60)
    rss = proc_kib(operator.proc.pid, "VmRSS")
    lag = _histogram(operator.metrics(), "agentaccounts_revocation_lag_seconds")
    operator.stop()
    assert len(denied) == PROBED and len(rejected) == PROBED

    ended, refused = list(denied.values()), list(rejected.values())
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(f"""# Kubernetes provider: issue latency and revocation lag

Measured {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())} on `{platform.node()}`: {os.cpu_count()} CPUs,
{mem_gib():.0f} GiB RAM, Python {platform.python_version()}, local control plane (etcd 3.6.6,
kube-apiserver/kube-controller-manager v1.34.4), the operator in one process watching one namespace.

Command: `PYTHONPATH=tests .venv/bin/pytest tests/bench/test_bench_kubernetes.py -q -s` ({N} accounts,
created back to back, lifetime {LIFETIME}s).

| measure | median | p95 | max |
|---|---|---|---|
| issue latency, one account at a time (create -> phase Ready) | {_percentiles(sequential)} |
| issue latency, {N} created back to back (create -> phase Ready) | {_percentiles(issue)} |
| access ends, {PROBED} probing agents (expiresAt -> first refused call) | {_percentiles(ended)} |
| token rejected, {PROBED} probing agents (expiresAt -> 401) | {_percentiles(refused)} |

All {N} Ready {all_ready:.2f}s after the first create. Operator RSS at the end: {rss / 1024:.0f} MiB.

Operator-side revocation lag (expiresAt -> ServiceAccount, Role, RoleBinding, Secret deleted and status
written), from its `agentaccounts_revocation_lag_seconds` histogram: mean {lag[0] * 1000:.0f} ms over
{lag[1]:.0f} revocations; {lag[2]:.0f} of them within 0.5 s, {lag[3]:.0f} within 1 s. The probe columns
above add the agents' own polling (every 100 ms, on the same 2 CPUs).

The gap between "access ends" and "token rejected" is kube-apiserver's cache of successful token
authentications (10 s): the operator deletes the ServiceAccount, Role and RoleBinding at expiresAt,
so the token can do nothing from then on, and the API server stops accepting it at all within 10 s.
""")
    print(RESULTS.read_text())
    api.close()


def _one_at_a_time(api: client.ApiClient, namespace: str, provider: str, count: int) -> list[float]:
    """Issue latency without a burst: create one account, poll until Ready, repeat."""
    latencies = []
    for i in range(count):
        name = f"solo-{i:02d}"
        started = time.time()
        create_account(
            api,
            namespace,
            name,
            providerRef={"kind": "ClusterAccountProvider", "name": provider},
            lifetime="1h",
            scopes=[{"permissions": ["list"], "resources": ["configmaps"]}],
        )
        while time.time() - started < 30:
            obj = client.CustomObjectsApi(api).get_namespaced_custom_object(
                GROUP, VERSION, namespace, "agentaccounts", name
            )
            if (obj.get("status") or {}).get("phase") == "Ready":
                latencies.append(time.time() - started)
                break
            time.sleep(0.01)  # poll interval, bounded by the 30 s deadline
    assert len(latencies) == count
    return latencies


def _histogram(text: str, name: str) -> tuple[float, float, float, float]:
    """(mean, count, count <= 0.5 s, count <= 1 s) of a Prometheus histogram summed over labels."""
    total = count = le_half = le_one = 0.0
    for line in text.splitlines():
        if line.startswith(f"{name}_sum"):
            total += float(line.split()[-1])
        elif line.startswith(f"{name}_count"):
            count += float(line.split()[-1])
        elif line.startswith(f"{name}_bucket") and 'le="0.5"' in line:
            le_half += float(line.split()[-1])
        elif line.startswith(f"{name}_bucket") and 'le="1.0"' in line:
            le_one += float(line.split()[-1])
    return (total / count if count else 0.0), count, le_half, le_one
