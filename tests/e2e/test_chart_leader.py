"""Two replicas never freeze: a standby takes over when the leader dies, and at once when it stops.

Two `agentaccounts run --leader-elect` processes run with a token of the chart's ServiceAccount (so
the Lease RBAC is exercised too) against a namespaced installation. Only the Lease holder
reconciles; after the holder is SIGKILLed the standby wins the Lease within one lease duration plus
one poll, and issues the next AgentAccount.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from e2e.helm import (
    Helm,
    Operator,
    apply_account,
    assert_no_permission_errors,
    helm_binary,
    install,
    phase,
    service_account_kubeconfig,
    wait_for,
    webhooks_registered,
)

pytestmark = pytest.mark.cluster

LEASE_SECONDS, POLL_SECONDS = 15, 5  # leader.acquire's defaults, which `agentaccounts run` uses


@dataclass(frozen=True)
class Release:
    namespace: str
    watched: str
    provider: str
    lease: str
    kubeconfig: Path


@pytest.fixture(scope="module")
def helm(cluster: Any) -> Helm:
    return Helm(helm_binary(), cluster.kubeconfig)


@pytest.fixture
def release(helm: Helm, cluster: Any, namespace: str, tmp_path: Path) -> Iterator[Release]:
    """A namespaced release watching a fresh namespace, and a kubeconfig for its ServiceAccount."""
    name, watched = f"le-{uuid.uuid4().hex[:6]}", f"leader-watched-{uuid.uuid4().hex[:6]}"
    assert helm.kubectl("create", "namespace", watched).returncode == 0
    provider = f"{name}-in-cluster"
    values = [f"watchNamespaces={{{watched}}}", "providers.inCluster.enabled=true",
              f"providers.inCluster.name={provider}"]  # fmt: skip
    install(helm, name, namespace, *(arg for value in values for arg in ("--set", value)))
    kubeconfig = service_account_kubeconfig(
        helm, namespace, f"{name}-agentaccounts", cluster.server, cluster.ca_file, tmp_path / "sa.kubeconfig"
    )
    yield Release(namespace, watched, provider, f"{name}-agentaccounts-leader", kubeconfig)
    helm.run("uninstall", name, "-n", namespace)
    helm.kubectl("delete", "namespace", watched, "--wait=false")


def replica(release: Release, tmp_path: Path, identity: str) -> Operator:
    return Operator(release.kubeconfig, tmp_path / f"{identity}.log", "--namespace", release.watched,
                    "--leader-elect", f"--leader-election-namespace={release.namespace}",
                    f"--leader-election-name={release.lease}", identity=identity,
                    namespace=release.namespace)  # fmt: skip


def holder(helm: Helm, release: Release) -> str:
    proc = helm.kubectl(
        "get", "lease", release.lease, "-n", release.namespace, "-o", "jsonpath={.spec.holderIdentity}"
    )
    return proc.stdout


def test_standby_takes_over_when_the_leader_dies(helm: Helm, release: Release, tmp_path: Path) -> None:
    first = replica(release, tmp_path, "replica-a")
    second: Operator | None = None
    try:
        wait_for(lambda: holder(helm, release) == "replica-a", 60, "replica-a to lead")
        second = replica(release, tmp_path, "replica-b")
        wait_for(lambda: "is standby" in second.output(), 30, "replica-b to stand by")
        wait_for(lambda: webhooks_registered(helm, first.webhook_port), 60, "the leader's webhooks")
        apply_account(helm, release.watched, "before", release.provider, lifetime="1h", keep="1h")
        wait_for(lambda: phase(helm, release.watched, "before") == "Ready", 60, "the leader to issue")
        assert "Issued" in first.output() and "Issued" not in second.output(), "the standby reconciled"

        first.kill()  # a crash: the Lease is not released, it has to expire
        wait_for(lambda: holder(helm, release) == "replica-b", LEASE_SECONDS + 2 * POLL_SECONDS + 10,
                 "replica-b to take over the expired Lease")  # fmt: skip
        # Admission follows the leader: only a running kopf serves it, and it re-registers the webhooks.
        wait_for(lambda: webhooks_registered(helm, second.webhook_port), 60, "the new leader's webhooks")
        apply_account(helm, release.watched, "after", release.provider, lifetime="1h", keep="1h")
        wait_for(lambda: phase(helm, release.watched, "after") == "Ready", 60, "the new leader to issue")
        assert "Issued" in second.output()
        deleted = helm.kubectl("delete", "agentaccount", "before", "-n", release.watched, "--timeout=60s")
        assert deleted.returncode == 0, "the new leader did not revoke the old leader's AgentAccount"
    finally:
        first.kill()
        if second is not None:
            second.stop()
    assert_no_permission_errors(second)


def test_a_stopping_leader_hands_over_at_once(helm: Helm, release: Release, tmp_path: Path) -> None:
    first = replica(release, tmp_path, "replica-a")
    second: Operator | None = None
    try:
        wait_for(lambda: holder(helm, release) == "replica-a", 60, "replica-a to lead")
        second = replica(release, tmp_path, "replica-b")
        wait_for(lambda: "is standby" in second.output(), 30, "replica-b to stand by")
        assert first.stop() == 0
        assert "released" in first.output()
        # One poll, not a lease duration: SIGTERM released the Lease.
        wait_for(lambda: holder(helm, release) == "replica-b", POLL_SECONDS + 5, "an immediate hand-over")
    finally:
        first.kill()
        if second is not None:
            second.stop()


def test_a_standby_answers_its_liveness_probe(helm: Helm, release: Release, tmp_path: Path) -> None:
    """The chart probes /healthz on every replica; a standby that did not answer would be restarted
    forever, and a rolling update (maxUnavailable 0) would wait for it to become ready forever."""
    first = replica(release, tmp_path, "replica-a")
    second: Operator | None = None
    try:
        wait_for(first.healthy, 60, "the leader's /healthz")
        second = replica(release, tmp_path, "replica-b")
        wait_for(lambda: "is standby" in second.output(), 30, "replica-b to stand by")
        wait_for(second.healthy, 20, "the standby's /healthz")
    finally:
        first.stop()
        if second is not None:
            second.stop()
