"""Sharding: operators on disjoint namespace sets (the chart's watchNamespaces, one release each) share
one cluster and one ClusterAccountProvider, and no account is handled twice.

"Handled" is judged from what the API server keeps: each account's Events (exactly one Issued, one
Expired), the operator that wrote them (each operator's log names only its own namespace's accounts),
and the tokens (one ServiceAccount each, never replaced). Each shard registers its own webhook
configuration (AGENTACCOUNTS_WEBHOOK_CONFIGURATION); every shard's webhooks stamp and check every
AgentAccount write, so the shards share one signing key (the same Secret).
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from kubernetes import client

from conftest import RunningCluster
from integration.support import GROUP, VERSION, OperatorProcess, create_account, phase, wait_for

Start = Callable[..., OperatorProcess]
SHARD_B_WEBHOOKS = "agentaccounts.dev-shard-b"


@pytest.fixture
def other_namespace(cluster: RunningCluster) -> Iterator[str]:
    api = cluster.api_client()
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    name = f"shard-b-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": name}})
    yield name
    for account in custom.list_namespaced_custom_object(GROUP, VERSION, name, "agentaccounts")["items"]:
        custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            name,
            "agentaccounts",
            account["metadata"]["name"],
            {"metadata": {"finalizers": None}},
        )
    core.delete_namespace(name, propagation_policy="Background")
    for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
        cluster.kubectl("delete", kind, SHARD_B_WEBHOOKS, "--ignore-not-found", check=False)
    api.close()


def _reasons(api: client.ApiClient, namespace: str) -> dict[str, Counter[str]]:
    events = client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector="involvedObject.kind=AgentAccount"
    )
    found: dict[str, Counter[str]] = {}
    for e in events.items:
        found.setdefault(e.involved_object.name, Counter())[e.reason] += e.count or 1
    return found


def test_two_shards_on_disjoint_namespaces_handle_every_account_exactly_once(
    api: client.ApiClient,
    namespace: str,
    other_namespace: str,
    in_cluster_provider: str,
    start_operator: Start,
) -> None:
    shard_a = start_operator(namespace)
    # As two chart releases would be: each its own webhook configuration, one shared signing key.
    shard_b = start_operator(other_namespace, env={"AGENTACCOUNTS_WEBHOOK_CONFIGURATION": SHARD_B_WEBHOOKS})
    names = [f"agent-{i}" for i in range(6)]
    for ns in (namespace, other_namespace):
        for name in names:
            create_account(
                api,
                ns,
                name,
                providerRef={"kind": "ClusterAccountProvider", "name": in_cluster_provider},
                lifetime="12s",
                scopes=[{"permissions": ["list"], "resources": ["configmaps"]}],
                keepExpiredFor="1h",
            )
    for ns in (namespace, other_namespace):
        wait_for(
            lambda ns=ns: all(phase(api, ns, n) == "Expired" for n in names),
            60,
            f"every account in {ns} Expired",
        )
        wait_for(
            lambda ns=ns: all(_reasons(api, ns).get(n, Counter())["Expired"] >= 1 for n in names),
            15,
            f"the Expired Events in {ns}",
        )

    for ns in (namespace, other_namespace):
        reasons = _reasons(api, ns)
        for name in names:
            assert reasons[name]["Issued"] == 1, (ns, name, reasons[name])
            assert reasons[name]["Expired"] == 1, (ns, name, reasons[name])
    # Each shard wrote about its own namespace only.
    for shard, own, other in ((shard_a, namespace, other_namespace), (shard_b, other_namespace, namespace)):
        log = shard.output()
        assert re.search(rf"\b{re.escape(own)}/agent-\d", log), f"shard for {own} logged none of its accounts"
        assert not re.search(rf"\b{re.escape(other)}/", log), (
            f"shard for {own} touched {other}:\n{log[-3000:]}"
        )
    # Both webhook configurations exist, each pointing at its own shard.
    for config in ("agentaccounts.dev", SHARD_B_WEBHOOKS):
        hooks = client.AdmissionregistrationV1Api(api).read_mutating_webhook_configuration(config).webhooks
        assert hooks, config
