"""The API server misbehaving, as the operator sees it: watches dropped, the API server restarted
(every connection reset, new ones refused for a while), the API server slow, and a partition
(open connections go silent without closing, new ones hang) longer than liveness tolerates. The
operator must notice, resume, and miss no expiry; liveness must fail when it cannot recover on its
own, and only then.

Why a proxy: the control plane is shared by the whole session, so the faults are injected between the
operator and the API server (faults_support.ApiProxy) rather than by restarting it. Expiries are
spread across every fault, accounts are created after each fault (issued?), one is deleted after the
partition (noticed through a re-established watch?), and each account's revocation lag (expiresAt
-> seen Expired, by a watch that does not pass the proxy) is held to a bound that depends on the
fault it fell into (FaultLog.allowed_lag). The worst lag, per fault, is reported.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from kubernetes import client

from cfemulator import Emulator
from integration.cloudflare_support import (
    create_token_provider,
    emulator_fixture,  # noqa: F401  (the `emulator` fixture)
    parent,
    provider_condition,
)
from integration.support import events_for, wait_for
from reliability.faults_support import (
    ApiProxy,
    LeakScan,
    Operators,
    PhaseWatch,
    SecretWatch,
    accounts,
    create_retrying,
    delete_quietly,
    inventory,
    kubeconfig_via,
    leak_hits,
    liveness,
    until_none,
    when,
)

READ_CONFIGMAPS = [{"permissions": ["get", "list"], "resources": ["configmaps"]}]
READ_SCRIPTS = [{"permissions": ["Workers Scripts Read"]}]
WATCH_SERVER_TIMEOUT, WATCH_CLIENT_TIMEOUT = 10, 15  # the settings' minimum is 10
RESTART = 8.0  # seconds the API server refuses connections while it restarts
LATENCY = 0.25  # seconds added to every chunk, each way: a 0.5 s round trip
# The partition lasts until liveness fails (handlers.LIVENESS_STALE_SECONDS, plus kopf's 10 s probe
# cache, plus the probe's own call timing out), at most this long.
PARTITION = 100.0
LIVENESS_STALE = 60.0  # handlers.LIVENESS_STALE_SECONDS: no answer for this long, and none now, is unhealthy
READ_TIMEOUT = 30.0  # kube.REQUEST_TIMEOUT's read timeout: how long a silent connection holds a call
BASE_LAG = 5.0  # what a healthy revocation may take on this loaded 2-core machine, with margin


class FaultLog:
    """When each fault began and ended (wall clock), to judge each account by what it expired into."""

    def __init__(self) -> None:
        self.windows: list[tuple[str, float, float]] = []
        self.counts: dict[str, int] = {}

    def record(self, kind: str, start: float, end: float | None = None) -> None:
        self.windows.append((kind, start, end if end is not None else start))
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def allowed_lag(self, expires: float) -> float:
        """BASE_LAG, plus what each fault that began before the revocation was due to be done adds:
        a reset connection's retry; the rest of an outage; a slow API server's round trips; the rest
        of a partition plus the read timeouts of the silent connections it left in the client's pool
        (a revocation may meet two of them; they poison calls until each has been used once, so
        this holds for every expiry after a partition). Faults compose in time order."""
        allowed = BASE_LAG
        for kind, start, end in sorted(self.windows, key=lambda w: w[1]):
            if start > expires + allowed:
                continue  # began after this revocation was due to be done
            if kind == "drop" and expires - BASE_LAG <= start:
                allowed += BASE_LAG
            elif kind == "outage" and expires - BASE_LAG <= end:
                allowed += max(0.0, end - max(start, expires)) + BASE_LAG
            elif kind == "latency" and expires - BASE_LAG <= end:
                allowed += 10.0
            elif kind == "partition":
                allowed += max(0.0, end - max(start, expires)) + 2 * READ_TIMEOUT + BASE_LAG
        return allowed

    def kind_at(self, expires: float) -> str:
        """The fault an expiry fell into (for the figures)."""
        for kind, start, end in self.windows:
            if start - BASE_LAG <= expires <= end + BASE_LAG:
                return kind
        return "after a partition" if any(k == "partition" for k, _, _ in self.windows) else "none"


class LivenessProbe:
    """Samples the operator's liveness endpoint every half second, as a kubelet would."""

    def __init__(self, operators: Operators) -> None:
        self.operators = operators
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="liveness", daemon=True)

    def __enter__(self) -> LivenessProbe:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(0.5):  # the probe period
            self.samples.append((time.time(), liveness(self.operators.current)))

    def unhealthy(self) -> list[tuple[float, int]]:
        return [(t, code) for t, code in self.samples if code != 200]


def _spec(provider: str, lifetime: float, in_cluster: str) -> dict[str, Any]:
    if provider == "kubernetes":
        ref, scopes = {"kind": "ClusterAccountProvider", "name": in_cluster}, READ_CONFIGMAPS
    else:
        ref, scopes = {"name": "cloudflare"}, READ_SCRIPTS
    return {"providerRef": ref, "lifetime": f"{lifetime:.0f}s", "scopes": scopes, "keepExpiredFor": "1h"}


def _operator_env(cluster: Any) -> dict[str, str]:
    return {
        "AGENTACCOUNTS_WATCH_SERVER_TIMEOUT": str(WATCH_SERVER_TIMEOUT),
        "AGENTACCOUNTS_WATCH_CLIENT_TIMEOUT": str(WATCH_CLIENT_TIMEOUT),
        # Agents get the real API server in their kubeconfig, not the operator's proxy.
        "AGENTACCOUNTS_KUBECONFIG_SERVER": cluster.server,
    }


def test_dropped_watches_restart_slowness_and_a_partition_miss_no_expiry(
    cluster: Any,
    api: client.ApiClient,
    namespace: str,
    in_cluster_provider: str,
    emulator: Emulator,
    operators: Operators,
    large: bool,
    figures: dict[str, Any],
    tmp_path: Path,
) -> None:
    scale = 4 if large else 1
    proxy = ApiProxy(cluster.server).start()
    try:
        via_proxy = kubeconfig_via(cluster.kubeconfig, proxy.server, tmp_path / "via-proxy.kubeconfig")
        p = parent(emulator)
        leaks = LeakScan()
        leaks.add(p.value)
        operators.start(namespace, env=_operator_env(cluster), kubeconfig=via_proxy)
        create_token_provider(api, namespace, "cloudflare", p)
        wait_for(
            lambda: provider_condition(api, namespace, "cloudflare").get("status") == "True", 20, "provider"
        )

        # The plan (seconds after the start; a phase that waits for something starts the next later):
        # drops, a restart, slowness, a partition longer than liveness tolerates, then the aftermath.
        # Expiries are spread over all of it.
        n = 24 * scale
        planned_end = 12 + 3 + RESTART + 25 + LIVENESS_STALE + 25
        expiries = [6.0 + (planned_end - 6) * i / n for i in range(n)]
        names = [f"a-{i:03d}" for i in range(n)]
        fault_log = FaultLog()
        with (
            PhaseWatch(cluster.api_client, namespace) as phases,
            SecretWatch(cluster.api_client, namespace) as secrets,
            LivenessProbe(operators) as probe,
        ):
            start = time.monotonic()
            for i, offset in enumerate(expiries):
                provider = "cloudflare" if i % 3 == 2 else "kubernetes"
                create_retrying(api, namespace, names[i], _spec(provider, offset, in_cluster_provider))
            create_retrying(api, namespace, "watched-delete", _spec("kubernetes", 3600, in_cluster_provider))
            until_none(
                lambda: [x for x in [*names, "watched-delete"] if not phases.seen(x, "Ready")],
                30,
                "every account Ready before the faults",
            )

            def at(offset: float) -> None:
                time.sleep(max(0.0, start + offset - time.monotonic()))  # the fault schedule

            def create_now(name: str, lifetime: float) -> float:
                create_retrying(api, namespace, name, _spec("kubernetes", lifetime, in_cluster_provider))
                names.append(name)
                return time.time()

            def issued(name: str, timeout: float, what: str) -> float:
                """Seconds until the operator finished issuing `name` (its Issued Event)."""
                created = create_now(name, 15)
                wait_for(lambda: ("Normal", "Issued") in events_for(api, namespace, name), timeout, what)
                return (phases.seen(name, "Ready") or time.time()) - created

            # Watches dropped: every open connection reset, three times.
            for k in range(3):
                at(6.0 + 3 * k)
                fault_log.record("drop", time.time())
                proxy.drop_all()
            issued_after_drops = issued("after-drops", 30, "an account issued after the drops")

            # The API server restarts: connections reset, new ones refused for a few seconds.
            at(15)
            down = time.time()
            proxy.refuse()
            time.sleep(RESTART)  # the restart's duration
            proxy.accept()
            fault_log.record("outage", down, time.time())
            issued_after_restart = issued("after-restart", 60, "an account issued after the restart")

            # The API server is slow: the operator still issues, and revokes.
            began = time.time()
            proxy.latency = LATENCY
            issued_slow = issued("during-slowness", 60, "an account issued while the API server is slow")
            proxy.latency = 0.0
            fault_log.record("latency", began, time.time())

            # A partition: every open connection goes silent (nothing closed), new ones hang, for
            # longer than liveness tolerates; then the network heals, leaving the silent connections
            # in the operator's pools.
            partition = time.time()
            proxy.blackhole = True
            silenced = proxy.stall()
            wait_for(
                lambda: probe.unhealthy() and probe.unhealthy()[-1][0] > partition,
                PARTITION,
                "liveness to fail while the operator cannot reach the API server",
                interval=0.5,
            )
            proxy.blackhole = False
            healed = time.time()
            fault_log.record("partition", partition, healed)
            healthy_again = wait_for(
                lambda: liveness(operators.current) == 200 and time.time(), 30, "liveness healthy again"
            )
            # A deletion reaches the operator only through a watch it re-established on its own.
            delete_quietly(api, namespace, "watched-delete")
            deleted = time.time()
            wait_for(
                lambda: phases.gone.get("watched-delete"),
                WATCH_CLIENT_TIMEOUT + 2 * READ_TIMEOUT + 15,
                "the operator to notice a deletion after the partition",
                interval=0.2,
            )
            deletion_seen = phases.gone["watched-delete"] - deleted
            issued_after_partition = issued(
                "after-partition", 2 * READ_TIMEOUT + 60, "an account issued after the partition"
            )

            until_none(
                lambda: [x for x in names if not phases.seen(x, "Expired")],
                max(0.0, planned_end - (time.monotonic() - start)) + 2 * READ_TIMEOUT + 30,
                "every account to expire",
            )
            lags, late = {}, []
            for name in names:
                expires = when(phases.bodies[name]["status"]["expiresAt"])
                lags[name] = (phases.seen(name, "Expired") or 0.0) - expires
                if lags[name] > fault_log.allowed_lag(expires):
                    late.append(
                        f"{name}: expired {expires - partition:+.1f}s from the partition, revoked "
                        f"{lags[name]:.1f}s after expiresAt, allowed {fault_log.allowed_lag(expires):.1f}s"
                    )
            assert not late, f"revoked later than its fault allows: {late}"
            for name in names:
                conditions = accounts(api, namespace)[name]["status"]["conditions"]
                ready = next(c for c in conditions if c["type"] == "Ready")
                assert ready["reason"] == "Expired", (name, ready)
            inv = inventory(api, namespace, emulator, p.account)
            assert inv.clean, inv

            # Liveness: healthy through the drops, the restart and the slowness, and through the first
            # minute of the partition (an API server away briefly must not get the operator killed);
            # unhealthy before the partition ended (on its own it could not recover); healthy again
            # once the network healed.
            early = [(t, c) for t, c in probe.unhealthy() if t < partition + LIVENESS_STALE - 5]
            assert not early, f"liveness failed early: {early}"
            during = [(t, c) for t, c in probe.unhealthy() if partition < t <= healed]
            assert during, "liveness never failed while the API server was unreachable"
            assert liveness(operators.current) == 200
            leaks.collect(secrets)
        hits = leak_hits(leaks, api, [namespace], operators)
        by_fault: dict[str, float] = {}
        overdue = []
        for name, lag in lags.items():
            expires = when(phases.bodies[name]["status"]["expiresAt"])
            kind = fault_log.kind_at(expires)
            by_fault[kind] = max(by_fault.get(kind, 0.0), lag)
            if partition <= expires <= healed:
                overdue.append((phases.seen(name, "Expired") or 0.0) - healed)
        figures.update(
            accounts=len(names) + 1,
            faults=dict(fault_log.counts),
            connections_reset=proxy.dropped,
            connections_silenced=silenced,
            restart_s=RESTART,
            latency_each_way_s=LATENCY,
            partition_s=healed - partition,
            worst_revocation_lag_s=max(lags.values()),
            worst_lag_by_fault={k: round(v, 1) for k, v in by_fault.items()},
            overdue_revoked_after_heal_s=max(overdue) if overdue else None,
            liveness_unhealthy_after_s=min(t for t, _ in during) - partition,
            liveness_healthy_after_heal_s=healthy_again - healed,
            issued_after_drops_s=issued_after_drops,
            issued_after_restart_s=issued_after_restart,
            issued_while_slow_s=issued_slow,
            issued_after_partition_s=issued_after_partition,
            deletion_seen_after_heal_s=deletion_seen,
            leak_hits=len(hits),
        )
        assert not hits, hits
    finally:
        for proc in operators.all:
            proc.stop()
        proxy.stop()
