"""Benchmark: does audit traffic slow issuing or revoking? 200 accounts issued and expired, twice: once
with no audit traffic, once while ~1,000 audit events a second are posted to the operator's
audit-webhook endpoint for 60 s. Issue latency (create -> Ready) and revocation lag (expiresAt ->
phase Expired seen) are compared; operator RSS is reported.

    PYTHONPATH=tests .venv/bin/pytest tests/bench/test_bench_activity.py -q -s

Writes tests/bench/results/activity.md. Not part of `make test`. The events are posted as the API server
posts them (audit.k8s.io/v1 EventList, batch mode, over mutual TLS with the API server's own client
certificate) and name the bench accounts' real credential ids, so every one is attributed and lands in
a status write; generating 1,000 real agent requests a second on the same 2 CPUs would measure the
load generator instead.
"""

from __future__ import annotations

import http.client
import json
import os
import platform
import queue
import ssl
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, watch

from bench.machine import mem_gib, proc_kib
from cluster import pki
from integration.support import GROUP, VERSION, OperatorProcess, create_account, wait_for

N = int(os.environ.get("BENCH_ACCOUNTS", "200"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
RATE = int(os.environ.get("BENCH_EVENTS_PER_SECOND", "1000"))
TRAFFIC_SECONDS = 60.0
LIFETIME = 30  # seconds: every account is Ready, then expires, inside the traffic window
BATCH = 100  # events per POST (the API server's default batch is up to 400)
RESULTS = Path(__file__).parent / "results" / "activity.md"


@pytest.fixture
def provider(cluster: Any) -> Iterator[str]:
    api = cluster.api_client()
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ClusterAccountProvider",
        "metadata": {"name": "bench-activity"},
        "spec": {"kubernetes": {}},
    }
    client.CustomObjectsApi(api).create_cluster_custom_object(GROUP, VERSION, "clusteraccountproviders", body)
    yield "bench-activity"
    client.CustomObjectsApi(api).delete_cluster_custom_object(
        GROUP, VERSION, "clusteraccountproviders", "bench-activity"
    )
    api.close()


class Observer(threading.Thread):
    """Watches the namespace: when each account became Ready and Expired, and its credential id."""

    def __init__(self, cluster: Any, namespace: str, prefix: str, identities: Any) -> None:
        super().__init__(daemon=True)
        self.cluster, self.namespace, self.prefix = cluster, namespace, prefix
        self.feed = identities  # the load generator's stdin: each account's identity as it is Ready
        self.ready: dict[str, float] = {}
        self.expired: dict[str, float] = {}
        self.expires_at: dict[str, float] = {}
        self.identities: dict[str, tuple[str, str]] = {}  # name -> (username, credential id)
        self.stop = threading.Event()

    def run(self) -> None:
        api = self.cluster.api_client()
        w = watch.Watch()
        for event in w.stream(
            client.CustomObjectsApi(api).list_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            "agentaccounts",
            timeout_seconds=300,
        ):
            obj, now = event["object"], time.time()
            name, status = obj["metadata"]["name"], obj.get("status") or {}
            if not name.startswith(self.prefix):
                continue  # the other run's accounts
            if status.get("phase") == "Ready":
                self.ready.setdefault(name, now)
                ref, ids = status.get("accountRef") or {}, status.get("credentialIds") or []
                if ids and name not in self.identities:
                    username = f"system:serviceaccount:{self.namespace}:{ref.get('name')}"
                    self.identities[name] = (username, ids[-1])
                    if self.feed is not None:
                        self.feed.write(json.dumps([username, ids[-1]]) + "\n")
                        self.feed.flush()
            if status.get("phase") == "Expired":
                self.expired.setdefault(name, now)
                expires = datetime.fromisoformat(status["expiresAt"].replace("Z", "+00:00"))
                self.expires_at[name] = expires.timestamp()
            if self.stop.is_set() or len(self.expired) == N:
                w.stop()
        api.close()


def _events(namespace: str, identities: list[tuple[str, str]], count: int, seq: int) -> list[dict[str, Any]]:
    """`count` Metadata-level events as the API server writes them, spread over these identities."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    out = []
    for i in range(count):
        username, credential = identities[(seq + i) % len(identities)]
        out.append(
            {
                "kind": "Event",
                "apiVersion": "audit.k8s.io/v1",
                "level": "Metadata",
                "auditID": str(uuid.uuid4()),
                "stage": "ResponseComplete",
                "requestURI": f"/api/v1/namespaces/{namespace}/configmaps",
                "verb": ("list", "get", "watch", "create")[i % 4],
                "user": {
                    "username": username,
                    "groups": ["system:serviceaccounts", "system:authenticated"],
                    "extra": {"authentication.kubernetes.io/credential-id": [credential]},
                },
                "sourceIPs": ["127.0.0.1"],
                "userAgent": "bench-agent/1.0",
                "objectRef": {
                    "resource": "configmaps",
                    "namespace": namespace,
                    "name": f"cm-{i % 7}",
                    "apiVersion": "v1",
                },
                "responseStatus": {"metadata": {}, "code": 403 if i % 10 == 0 else 200},
                "requestReceivedTimestamp": now,
                "stageTimestamp": now,
            }
        )
    return out


def _traffic(port: int, certs_dir: str, namespace: str) -> None:
    """The load generator, run as its own process (`python test_bench_activity.py ...`: a thread would
    take the GIL from the Observer and delay the very timestamps being measured): RATE events a second
    for TRAFFIC_SECONDS, in batches, over one kept-alive mutual-TLS connection. Reads the identities
    ([username, credential id] JSON lines) from stdin as the accounts become Ready; prints
    [posted, refused, seconds] at the end."""
    certs = pki.Pki(Path(certs_dir))
    context = ssl.create_default_context(cafile=str(certs.ca))
    context.load_cert_chain(str(certs.audit_client_cert), str(certs.audit_client_key))
    known: list[tuple[str, str]] = [("system:serviceaccount:unwatched:nobody", "JTI=none")]
    identities: queue.Queue[tuple[str, str]] = queue.Queue()

    def read() -> None:
        for line in sys.stdin:
            username, credential = json.loads(line)
            identities.put((username, credential))

    threading.Thread(target=read, daemon=True).start()
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    posted = refused = 0
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < TRAFFIC_SECONDS:
        while not identities.empty():
            known.append(identities.get())
        batch = _events(namespace, known[1:] or known, BATCH, posted + refused)
        body = json.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": batch})
        try:
            connection.request("POST", "/audit", body, {"Content-Type": "application/json"})
            answer = connection.getresponse()
            answer.read()
            posted, refused = (posted + BATCH, refused) if answer.status == 200 else (posted, refused + BATCH)
        except (OSError, http.client.HTTPException):
            refused += BATCH
            connection.close()
            connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
        ahead = (posted + refused) / RATE - elapsed
        if ahead > 0:
            time.sleep(min(ahead, BATCH / RATE))  # pacing the generator, not synchronisation
    connection.close()
    print(json.dumps([posted, refused, time.monotonic() - started]), flush=True)


def _run(cluster: Any, namespace: str, provider: str, traffic: bool, round_: str) -> dict[str, Any]:
    api = cluster.api_client()
    env = {**cluster.handle.audit_operator_env(), "AGENTACCOUNTS_AUDIT_LOG": os.devnull}
    operator = OperatorProcess(cluster.kubeconfig, [namespace], env)
    prefix = f"{round_}-{'loaded' if traffic else 'quiet'}-"
    generator = None
    if traffic:
        where = [str(cluster.handle.audit_port), str(cluster.handle.dir / "pki"), namespace]
        generator = subprocess.Popen(
            [sys.executable, __file__, *where],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
        )
    observer = Observer(cluster, namespace, prefix, generator.stdin if generator else None)
    observer.start()
    time.sleep(0.5)  # let the watch establish before the burst (setup, not synchronisation)
    created: dict[str, float] = {}
    peak = 0
    for i in range(N):
        name = f"{prefix}{i:03d}"
        created[name] = time.time()
        create_account(
            api,
            namespace,
            name,
            providerRef={"kind": "ClusterAccountProvider", "name": provider},
            lifetime=f"{LIFETIME}s",
            scopes=[{"permissions": ["list"], "resources": ["configmaps"]}],
        )
    deadline = time.time() + LIFETIME + 90
    while len(observer.expired) < N and time.time() < deadline:
        peak = max(peak, proc_kib(operator.proc.pid, "VmRSS"))
        time.sleep(0.5)  # sampling RSS; the loop is bounded by `deadline`
    posted = refused = seconds = 0.0
    if generator is not None:
        out, _ = generator.communicate(timeout=TRAFFIC_SECONDS + 60)
        posted, refused, seconds = json.loads(out.splitlines()[-1])
    rss = proc_kib(operator.proc.pid, "VmRSS")
    lag_metric = _mean(operator.metrics(), "agentaccounts_revocation_lag_seconds")
    observer.stop.set()
    custom = client.CustomObjectsApi(api)
    mine = [
        o
        for o in custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "agentaccounts")["items"]
        if o["metadata"]["name"].startswith(prefix)
    ]
    written = sum(((o.get("status") or {}).get("activity") or {}).get("requests", 0) for o in mine)
    # This run's records go before the next run starts, so it does not list and watch them too.
    for o in mine:
        custom.delete_namespaced_custom_object(
            GROUP, VERSION, namespace, "agentaccounts", o["metadata"]["name"]
        )
    wait_for(
        lambda: (
            not any(
                o["metadata"]["name"].startswith(prefix)
                for o in custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "agentaccounts")[
                    "items"
                ]
            )
        ),
        120,
        f"the {prefix}* records deleted",
        interval=1.0,
    )
    output = operator.output()
    operator.stop()
    assert len(observer.expired) == N, f"only {len(observer.expired)}/{N} expired; log:\n{output[-3000:]}"
    api.close()
    return {
        "issue": [observer.ready[n] - created[n] for n in created],
        "lag": [observer.expired[n] - observer.expires_at[n] for n in created],
        "rss_kib": max(peak, rss),
        "lag_metric": lag_metric,
        "load": os.getloadavg()[0],
        "posted": posted,
        "refused": refused,
        "seconds": seconds,
        "report": [line for line in output.splitlines() if "Activity: " in line][-1:],
        "attributed_in_status": written,
    }


def _mean(text: str, name: str) -> float:
    """The mean of a Prometheus histogram, summed over its labels."""
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith(f"{name}_sum"):
            total += float(line.split()[-1])
        elif line.startswith(f"{name}_count"):
            count += float(line.split()[-1])
    return total / count if count else 0.0


def _ms(pair: tuple[float, float]) -> str:
    return f"{pair[0] * 1000:.0f} / {pair[1] * 1000:.0f} ms"


def _stats(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def test_bench_audit_traffic_does_not_slow_issue_or_revocation(
    cluster: Any, namespace: str, provider: str
) -> None:
    # Alternating rounds: the machine is shared, so its background load drifts; each condition's
    # samples are pooled over rounds that ran next to each other.
    runs: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    for round_ in range(ROUNDS):
        for traffic in (False, True):
            runs[traffic].append(_run(cluster, namespace, provider, traffic, f"r{round_}"))
    quiet, loaded = (_pooled(runs[False]), _pooled(runs[True]))
    assert loaded["posted"] > 0
    rows = []
    for label, key in (
        ("issue latency (create -> Ready)", "issue"),
        ("revocation lag (expiresAt -> Expired seen)", "lag"),
    ):
        q, t = _stats(quiet[key]), _stats(loaded[key])
        change = f"{(t[0] / q[0] - 1) * 100:+.0f}% / {(t[1] / q[1] - 1) * 100:+.0f}%"
        rounds = ", ".join(
            f"{_stats(a[key])[0] * 1000:.0f}/{_stats(b[key])[0] * 1000:.0f}"
            for a, b in zip(runs[False], runs[True], strict=True)
        )
        rows.append(f"| {label} | {_ms(q)} | {_ms(t)} | {change} | {rounds} ms |")
    rate = loaded["posted"] / loaded["seconds"] if loaded["seconds"] else 0.0
    report = "; ".join(line.split("Activity: ", 1)[1] for run in runs[True] for line in run["report"])
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(f"""# Activity: audit traffic vs. issue latency and revocation lag

Measured {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())} on `{platform.node()}`: {os.cpu_count()} CPUs
(shared with other work), {mem_gib():.0f} GiB RAM, Python {platform.python_version()}, local control plane
(kube-apiserver v1.34.4), the operator in one process watching one namespace, its audit-webhook
endpoint on, status.activity written with the defaults (each account at most every 2 s, at most 2
writes a second in all).

Command: `PYTHONPATH=tests .venv/bin/pytest tests/bench/test_bench_activity.py -q -s`: {ROUNDS} rounds,
each {N} accounts created back to back (lifetime {LIFETIME}s) without audit traffic, then {N} more
while {RATE} events/s are posted for {TRAFFIC_SECONDS:.0f} s (batches of {BATCH}, as the API server's
batch backend posts them, from a separate process). Samples pooled per condition.

| measure (median / p95) | no audit traffic | with audit traffic | change | medians per round (without/with) |
|---|---|---|---|---|
{chr(10).join(rows)}

Audit traffic: {loaded["posted"]:.0f} events accepted in {loaded["seconds"]:.0f} s ({rate:.0f}/s),
{loaded["refused"]:.0f} refused or failed; {loaded["attributed_in_status"]} counted in the accounts'
status.activity at the end (the rest were still waiting for their paced write when the run ended).
The operator's last report: {report or "(none)"}.
The operator's own revocation lag (expiresAt -> revoked and status written; its
`agentaccounts_revocation_lag_seconds` histogram): mean {quiet["lag_metric"] * 1000:.0f} ms without,
{loaded["lag_metric"] * 1000:.0f} ms with audit traffic. One-minute load average at the end of the runs:
{quiet["load"]:.1f} without and {loaded["load"]:.1f} with (other work shares the machine).
Operator RSS (peak of 0.5 s samples): {quiet["rss_kib"] / 1024:.0f} MiB without,
{loaded["rss_kib"] / 1024:.0f} MiB with audit traffic.
""")
    print(RESULTS.read_text())


def _pooled(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "issue": [v for r in runs for v in r["issue"]],
        "lag": [v for r in runs for v in r["lag"]],
        "lag_metric": statistics.mean(r["lag_metric"] for r in runs),
        "load": statistics.mean(r["load"] for r in runs),
        "rss_kib": max(r["rss_kib"] for r in runs),
        "posted": sum(r["posted"] for r in runs),
        "refused": sum(r["refused"] for r in runs),
        "seconds": sum(r["seconds"] for r in runs),
        "attributed_in_status": sum(r["attributed_in_status"] for r in runs),
    }


if __name__ == "__main__":  # the load generator's own process (see _traffic)
    _traffic(int(sys.argv[1]), sys.argv[2], sys.argv[3])
