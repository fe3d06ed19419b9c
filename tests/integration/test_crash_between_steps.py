"""A crash between any two steps of an issue never leaves duplicates: the next attempt adopts.

The operator is driven in-process here so the crash can be placed exactly: a Kube adapter that dies
("SIGKILL") after its N-th write to the API server, for every N the issue path has. Then a fresh
reconciler, as after a restart, finishes the job.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from kubernetes import client

from agentaccounts.kube import Kube
from agentaccounts.models import Requester
from agentaccounts.providers.base import Deps
from agentaccounts.reconcile import Reconciler
from agentaccounts.settings import Settings
from agentaccounts.stamps import Signer
from integration.support import GROUP, VERSION, custom, get_account, labelled, secret_data

WRITES = ("create", "replace", "patch_status", "request_token", "delete")


class Crash(BaseException):
    """Stands for the process dying: not an Exception, so nothing on the way catches it."""


class CrashingKube(Kube):
    def __init__(self, api_client: client.ApiClient, crash_after: int) -> None:
        super().__init__(api_client)
        self.writes, self.crash_after = 0, crash_after

    def __getattribute__(self, name: str) -> Any:
        attr = super().__getattribute__(name)
        if name in WRITES:

            async def counted(*args: Any, **kwargs: Any) -> Any:
                self.writes += 1
                if self.writes > self.crash_after:
                    raise Crash(f"killed before write #{self.writes} ({name})")
                return await attr(*args, **kwargs)

            return counted
        return attr


def _now() -> datetime:
    return datetime.now(UTC)


def _noop(*_: str) -> None:
    pass


async def _operator_signer(cluster: Any) -> Signer:
    settings, kube = Settings(), Kube(cluster.api_client())
    try:
        key = await kube.ensure_secret_key(
            settings.operator_namespace, settings.signing_key_secret, "key", lambda: os.urandom(32)
        )
    finally:
        kube.close()
    return Signer(key)


@pytest.mark.parametrize("crash_after", range(0, 8))
async def test_crash_after_any_write_then_restart_leaves_exactly_one_of_everything(
    cluster: Any, api: client.ApiClient, namespace: str, in_cluster_provider: str, crash_after: int
) -> None:
    name = "crashy"
    signer = await _operator_signer(cluster)
    spec = {
        "providerRef": {"kind": "ClusterAccountProvider", "name": in_cluster_provider},
        "lifetime": "1h",
        "scopes": [{"permissions": ["get"], "resources": ["configmaps"]}],
    }
    # No operator runs here, so no admission webhook either: the stamp it would write is made with the
    # operator's own key, for the admin who creates the account.
    admin = Requester(username="admin", groups=["system:masters", "system:authenticated"])
    body = custom(api).create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "agentaccounts",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "AgentAccount",
            "metadata": {"name": name, "annotations": signer.requester_stamp(namespace, spec, admin, _now())},
            "spec": spec,
        },
    )
    crashing = CrashingKube(cluster.api_client(), crash_after)
    try:
        with pytest.raises(Crash):
            await _reconciler(crashing, signer).ensure_issued(body, _noop)
    except pytest.fail.Exception:
        # No crash: the issue path has fewer writes than `crash_after`; nothing to prove for this N.
        assert crashing.writes <= crash_after
    finally:
        crashing.close()

    restarted = Kube(cluster.api_client())
    try:
        fresh = get_account(api, namespace, name)
        assert fresh is not None
        await _reconciler(restarted, signer).ensure_issued(fresh, _noop)
    finally:
        restarted.close()

    final = get_account(api, namespace, name) or {}
    assert final["status"]["phase"] == "Ready"
    owned = labelled(api, namespace, body["metadata"]["uid"])
    assert owned == {
        "ServiceAccount": ["agentaccount-crashy"],
        "Role": ["agentaccount-crashy"],
        "RoleBinding": ["agentaccount-crashy"],
        "Secret": ["crashy-credentials"],
    }
    assert secret_data(api, namespace, "crashy-credentials")["token"]
    if fresh.get("status", {}).get("expiresAt"):  # a restart never extends the lifetime
        assert final["status"]["expiresAt"] == fresh["status"]["expiresAt"]


def _reconciler(kube: Kube, signer: Signer) -> Reconciler:
    # The Kubernetes provider sends no HTTP request of its own: an unused client suffices.
    return Reconciler(Deps(kube=kube, settings=Settings(), http=httpx.AsyncClient(), now=_now), signer)
