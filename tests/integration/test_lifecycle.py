"""An AgentAccount's whole life on the real control plane, with the operator in a child process."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

from kubernetes import client

from integration.support import (
    OperatorProcess,
    agent_api,
    condition,
    create_account,
    get_account,
    labelled,
    phase,
    secret_data,
    status_of,
    wait_event,
    wait_for,
)

READ_CONFIGMAPS = [{"permissions": ["get", "list"], "resources": ["configmaps"]}]
Start = Callable[..., OperatorProcess]


def _ref(provider: str) -> dict[str, str]:
    return {"kind": "ClusterAccountProvider", "name": provider}


def _expires_at(api: client.ApiClient, ns: str, name: str) -> float:
    return datetime.fromisoformat((get_account(api, ns, name) or {})["status"]["expiresAt"]).timestamp()


def test_agent_gets_exactly_what_was_granted_until_expiry(
    api: client.ApiClient, namespace: str, in_cluster_provider: str, start_operator: Start
) -> None:
    operator = start_operator(namespace)
    client.CoreV1Api(api).create_namespaced_config_map(namespace, {"metadata": {"name": "app-config"}})
    account = create_account(
        api,
        namespace,
        "triage",
        providerRef=_ref(in_cluster_provider),
        lifetime="6s",
        scopes=READ_CONFIGMAPS,
        keepExpiredFor="1h",
    )
    wait_for(lambda: phase(api, namespace, "triage") == "Ready", 20, "Ready")
    assert condition(api, namespace, "triage")["status"] == "True"
    data = secret_data(api, namespace, "triage-credentials")
    assert set(data) == {"kubeconfig", "token", "ca.crt", "server", "namespace", "expires-at"}
    assert data["namespace"] == namespace

    agent = agent_api(data["kubeconfig"])
    core = client.CoreV1Api(agent)
    try:
        assert status_of(lambda: core.read_namespaced_config_map("app-config", namespace)) == 200
        assert status_of(lambda: core.list_namespaced_secret(namespace)) == 403
        assert status_of(lambda: core.delete_namespaced_config_map("app-config", namespace)) == 403
        assert status_of(lambda: core.list_namespaced_config_map("default")) == 403

        wait_for(
            lambda: status_of(lambda: core.list_namespaced_config_map(namespace)) != 200, 20, "access to end"
        )
        revoked_after = time.time() - _expires_at(api, namespace, "triage")
        wait_for(lambda: phase(api, namespace, "triage") == "Expired", 5, "Expired")
        # The Role is gone at once (403). kube-apiserver caches a successful token authentication for
        # 10 s, so the deleted ServiceAccount's token turns 401 within that: poll for it.
        wait_for(
            lambda: status_of(lambda: core.list_namespaced_config_map(namespace)) == 401,
            12,
            "the token to be rejected",
        )
    finally:
        agent.close()
    assert revoked_after < 2.0  # access ends within about a second (plus polling) of expiresAt
    assert labelled(api, namespace, account["metadata"]["uid"]) == {
        "ServiceAccount": [],
        "Role": [],
        "RoleBinding": [],
        "Secret": [],
    }
    wait_event(api, namespace, "triage", ("Normal", "Issued"))
    wait_event(api, namespace, "triage", ("Normal", "Expired"))
    assert 'agentaccounts_revoked_total{provider="kubernetes",reason="expired"} 1.0' in operator.metrics()
    assert get_account(api, namespace, "triage") is not None  # kept as the audit record


def test_expired_record_is_deleted_after_keep_expired_for(
    api: client.ApiClient, namespace: str, in_cluster_provider: str, start_operator: Start
) -> None:
    start_operator(namespace)
    create_account(
        api,
        namespace,
        "brief",
        providerRef=_ref(in_cluster_provider),
        lifetime="2s",
        scopes=READ_CONFIGMAPS,
        keepExpiredFor="0s",
    )
    wait_for(lambda: get_account(api, namespace, "brief") is None, 30, "the AgentAccount to be deleted")


def test_deleting_the_account_mid_life_revokes_everything(
    api: client.ApiClient, namespace: str, in_cluster_provider: str, start_operator: Start
) -> None:
    start_operator(namespace)
    account = create_account(
        api,
        namespace,
        "deleted",
        providerRef=_ref(in_cluster_provider),
        lifetime="1h",
        scopes=READ_CONFIGMAPS,
    )
    wait_for(lambda: phase(api, namespace, "deleted") == "Ready", 20, "Ready")
    agent = agent_api(secret_data(api, namespace, "deleted-credentials")["kubeconfig"])
    try:
        assert status_of(lambda: client.CoreV1Api(agent).list_namespaced_config_map(namespace)) == 200
        client.CustomObjectsApi(api).delete_namespaced_custom_object(
            "agentaccounts.dev", "v1alpha1", namespace, "agentaccounts", "deleted"
        )
        wait_for(lambda: get_account(api, namespace, "deleted") is None, 20, "the finalizer to finish")
        assert status_of(lambda: client.CoreV1Api(agent).list_namespaced_config_map(namespace)) in (401, 403)
        wait_for(
            lambda: status_of(lambda: client.CoreV1Api(agent).list_namespaced_config_map(namespace)) == 401,
            12,
            "the token to be rejected (after the API server's 10 s authentication cache)",
        )
    finally:
        agent.close()
    assert labelled(api, namespace, account["metadata"]["uid"]) == {
        "ServiceAccount": [],
        "Role": [],
        "RoleBinding": [],
        "Secret": [],
    }


def test_sigkilled_operator_restarted_after_expiry_revokes_at_once(
    api: client.ApiClient, namespace: str, in_cluster_provider: str, start_operator: Start
) -> None:
    first = start_operator(namespace)
    create_account(
        api,
        namespace,
        "survivor",
        providerRef=_ref(in_cluster_provider),
        lifetime="1h",
        scopes=READ_CONFIGMAPS,
    )
    create_account(
        api,
        namespace,
        "crashed",
        providerRef=_ref(in_cluster_provider),
        lifetime="4s",
        scopes=READ_CONFIGMAPS,
    )
    wait_for(
        lambda: phase(api, namespace, "crashed") == "Ready" and phase(api, namespace, "survivor") == "Ready",
        20,
        "both Ready",
    )
    survivor_token = secret_data(api, namespace, "survivor-credentials")["token"]
    agent = agent_api(secret_data(api, namespace, "crashed-credentials")["kubeconfig"])
    first.kill()
    expires = _expires_at(api, namespace, "crashed")
    wait_for(lambda: time.time() > expires + 1, 15, "expiresAt to pass while the operator is down")
    try:
        # The operator is down: the token is still valid (the TokenRequest minimum is 10 minutes).
        assert status_of(lambda: client.CoreV1Api(agent).list_namespaced_config_map(namespace)) == 200
        restarted_at = time.time()
        start_operator(namespace)
        wait_for(
            lambda: status_of(lambda: client.CoreV1Api(agent).list_namespaced_config_map(namespace)) != 200,
            10,
            "the restarted operator to revoke the expired identity",
        )
        assert time.time() - restarted_at < 10
        wait_for(
            lambda: status_of(lambda: client.CoreV1Api(agent).list_namespaced_config_map(namespace)) == 401,
            12,
            "the token to be rejected",
        )
    finally:
        agent.close()
    assert phase(api, namespace, "crashed") == "Expired"
    # ...and nothing healthy was re-issued: same token, still Ready.
    assert phase(api, namespace, "survivor") == "Ready"
    assert secret_data(api, namespace, "survivor-credentials")["token"] == survivor_token


def test_foreign_secret_with_the_target_name_fails_the_account_untouched(
    api: client.ApiClient, namespace: str, in_cluster_provider: str, start_operator: Start
) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_secret(namespace, {"metadata": {"name": "mine"}, "stringData": {"keep": "me"}})
    start_operator(namespace)
    create_account(
        api,
        namespace,
        "conflicted",
        providerRef=_ref(in_cluster_provider),
        scopes=READ_CONFIGMAPS,
        secretName="mine",
    )
    wait_for(lambda: phase(api, namespace, "conflicted") == "Failed", 20, "Failed")
    cond = condition(api, namespace, "conflicted")
    assert cond["reason"] == "SecretConflict" and "mine" in cond["message"]
    assert secret_data(api, namespace, "mine") == {"keep": "me"}
    assert core.read_namespaced_secret("mine", namespace).metadata.labels is None
    wait_event(api, namespace, "conflicted", ("Warning", "IssueFailed"))


def test_operator_judged_errors_become_precise_conditions(
    api: client.ApiClient, namespace: str, in_cluster_provider: str, start_operator: Start
) -> None:
    start_operator(namespace)
    # Over the provider's maxLifetime: refused at apply by the admission webhook, naming the rule.
    refused = status_of(
        lambda: create_account(
            api,
            namespace,
            "greedy",
            providerRef=_ref(in_cluster_provider),
            lifetime="2d",
            scopes=READ_CONFIGMAPS,
        )
    )
    assert refused == 403
    assert get_account(api, namespace, "greedy") is None
    create_account(
        api,
        namespace,
        "confused",
        providerRef=_ref(in_cluster_provider),
        scopes=[{"permissions": ["get"], "resources": ["gizmos.example.com"]}],
    )
    wait_for(lambda: phase(api, namespace, "confused") == "Failed", 20, "confused Failed")
    confused = condition(api, namespace, "confused")
    assert confused["reason"] == "UnknownResource" and "gizmos" in confused["message"]
    wait_event(api, namespace, "confused", ("Warning", "IssueFailed"))

    # Fixing the spec (nothing was issued, so scopes may still change) re-issues without a restart.
    client.CustomObjectsApi(api).patch_namespaced_custom_object(
        "agentaccounts.dev",
        "v1alpha1",
        namespace,
        "agentaccounts",
        "confused",
        {"spec": {"scopes": READ_CONFIGMAPS}},
    )
    wait_for(lambda: phase(api, namespace, "confused") == "Ready", 20, "confused Ready after the fix")


def test_missing_provider_waits_and_is_picked_up_when_it_appears(
    api: client.ApiClient, namespace: str, start_operator: Start
) -> None:
    start_operator(namespace, env={"AGENTACCOUNTS_PROVIDER_RETRY_SECONDS": "1"})
    create_account(api, namespace, "patient", providerRef={"name": "later"}, scopes=READ_CONFIGMAPS)
    wait_for(
        lambda: condition(api, namespace, "patient").get("reason") == "ProviderNotFound",
        20,
        "ProviderNotFound condition",
    )
    assert phase(api, namespace, "patient") == "Pending"
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        "agentaccounts.dev",
        "v1alpha1",
        namespace,
        "accountproviders",
        {
            "apiVersion": "agentaccounts.dev/v1alpha1",
            "kind": "AccountProvider",
            "metadata": {"name": "later"},
            "spec": {"kubernetes": {}},
        },
    )
    wait_for(lambda: phase(api, namespace, "patient") == "Ready", 20, "Ready once the provider exists")


def test_scope_edit_after_issue_is_refused_and_the_role_stays(
    api: client.ApiClient, namespace: str, in_cluster_provider: str, start_operator: Start
) -> None:
    # Scopes are fixed once issued (least privilege: an edit must not widen a live identity, and
    # whoever asks for more makes a new AgentAccount, checked as its own requester).
    start_operator(namespace)
    create_account(api, namespace, "growing", providerRef=_ref(in_cluster_provider), scopes=READ_CONFIGMAPS)
    wait_for(lambda: phase(api, namespace, "growing") == "Ready", 20, "Ready")
    refused = status_of(
        lambda: client.CustomObjectsApi(api).patch_namespaced_custom_object(
            "agentaccounts.dev",
            "v1alpha1",
            namespace,
            "agentaccounts",
            "growing",
            {"spec": {"scopes": [{"permissions": ["list"], "resources": ["services"]}]}},
        )
    )
    assert refused == 422
    role = client.RbacAuthorizationV1Api(api).read_namespaced_role("agentaccount-growing", namespace)
    assert [r.resources for r in role.rules] == [["configmaps"]]
