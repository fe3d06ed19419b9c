"""Least privilege, enforced, on the real API server with the operator's admission webhook registered.

The users here are impersonated (`kubectl --as=<user>`) by the admin, so the API server authenticates
and authorizes them exactly as it would a real person: RBAC decides what they hold, the webhook sees
their userInfo, and the operator's SubjectAccessReviews ask about them.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
from kubernetes import client

from integration.support import (
    GROUP,
    VERSION,
    OperatorProcess,
    agent_api,
    condition,
    create_account,
    custom,
    get_account,
    labelled,
    phase,
    secret_data,
    status_of,
    wait_for,
)

Start = Callable[..., OperatorProcess]
RBAC = "rbac.authorization.k8s.io"


def _manifest(namespace: str, name: str, **spec: Any) -> str:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AgentAccount",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"providerRef": {"kind": "ClusterAccountProvider", "name": "in-cluster"}, **spec},
    }
    return json.dumps(body)


def _scope(verbs: list[str], resources: list[str], names: list[str] | None = None) -> list[dict[str, Any]]:
    scope: dict[str, Any] = {"permissions": verbs, "resources": resources}
    if names:
        scope["resourceNames"] = names
    return [scope]


class User:
    """An impersonated user with exactly the rights a test gives them."""

    def __init__(self, cluster: Any, api: client.ApiClient, namespace: str) -> None:
        self.cluster, self.api, self.namespace = cluster, api, namespace
        self.name = f"user-{uuid.uuid4().hex[:8]}"
        self.cluster_bindings: list[str] = []

    def kubectl(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl(f"--as={self.name}", *args, check=False, input=input)  # type: ignore[no-any-return]

    def create(self, name: str, **spec: Any) -> subprocess.CompletedProcess[str]:
        return self.kubectl("create", "-f", "-", input=_manifest(self.namespace, name, **spec))

    def grant(self, role: str, rules: list[dict[str, Any]]) -> None:
        rbac = client.RbacAuthorizationV1Api(self.api)
        rbac.create_namespaced_role(self.namespace, {"metadata": {"name": role}, "rules": rules})
        rbac.create_namespaced_role_binding(
            self.namespace,
            {
                "metadata": {"name": role},
                "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": role},
                "subjects": [{"apiGroup": RBAC, "kind": "User", "name": self.name}],
            },
        )

    def grant_cluster(self, rules: list[dict[str, Any]]) -> None:
        rbac, name = client.RbacAuthorizationV1Api(self.api), f"{self.name}-{len(self.cluster_bindings)}"
        rbac.create_cluster_role({"metadata": {"name": name}, "rules": rules})
        rbac.create_cluster_role_binding(
            {
                "metadata": {"name": name},
                "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": name},
                "subjects": [{"apiGroup": RBAC, "kind": "User", "name": self.name}],
            }
        )
        self.cluster_bindings.append(name)

    def cleanup(self) -> None:
        rbac = client.RbacAuthorizationV1Api(self.api)
        for name in self.cluster_bindings:
            rbac.delete_cluster_role_binding(name)
            rbac.delete_cluster_role(name)


@pytest.fixture
def user(cluster: Any, api: client.ApiClient, namespace: str, in_cluster_provider: str) -> Iterator[User]:
    """A user who may create AgentAccounts here, use the in-cluster provider, and read ConfigMaps."""
    person = User(cluster, api, namespace)
    person.grant(
        "requester",
        [
            {
                "apiGroups": [GROUP],
                "resources": ["agentaccounts"],
                "verbs": ["create", "get", "list", "patch"],
            },
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]},
        ],
    )
    person.grant_cluster(
        [
            {
                "apiGroups": [GROUP],
                "resources": ["clusteraccountproviders"],
                "verbs": ["use"],
                "resourceNames": [in_cluster_provider],
            }
        ]
    )
    yield person
    person.cleanup()


def _account_provider(api: client.ApiClient, namespace: str, name: str, spec: dict[str, Any]) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AccountProvider",
        "metadata": {"name": name},
        "spec": spec,
    }
    custom(api).create_namespaced_custom_object(GROUP, VERSION, namespace, "accountproviders", body)


def _refused(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode != 0, f"expected a refusal, got: {result.stdout}"
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def test_a_requester_delegates_what_they_hold_and_nothing_more(
    api: client.ApiClient, namespace: str, user: User, start_operator: Start
) -> None:
    start_operator(namespace)
    core = client.CoreV1Api(api)
    core.create_namespaced_secret(namespace, {"metadata": {"name": "victim-token"}, "stringData": {"t": "x"}})
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "app-config"}})

    wants_secret = user.create("thief", scopes=_scope(["get"], ["secrets"], ["victim-token"]))
    _refused(
        wants_secret,
        "NotPermitted",
        "rule delegation",
        f"{user.name} may not get secrets named 'victim-token'",
    )
    _refused(user.create("pods", scopes=_scope(["list"], ["pods"])), "rule delegation", "list pods")
    assert get_account(api, namespace, "thief") is None

    forged = json.loads(_manifest(namespace, "reader", scopes=_scope(["get", "list"], ["configmaps"])))
    forged["metadata"]["annotations"] = {"agentaccounts.dev/requested-by": "system:admin"}
    created = user.kubectl("create", "-f", "-", input=json.dumps(forged))
    assert created.returncode == 0, created.stderr
    wait_for(lambda: phase(api, namespace, "reader") == "Ready", 20, "Ready")
    body = get_account(api, namespace, "reader") or {}
    assert body["metadata"]["annotations"]["agentaccounts.dev/requested-by"] == user.name  # not the forgery
    assert body["status"]["requester"]["username"] == user.name
    assert "system:authenticated" in body["status"]["requester"]["groups"]
    printed = user.kubectl("get", "aga", "reader", "-n", namespace)
    assert user.name in printed.stdout  # the Requester printer column

    # An edit of the stamp is put back; the account stays the requester's.
    user.kubectl(
        "annotate", "aga", "reader", "-n", namespace, "--overwrite", "agentaccounts.dev/requested-by=root"
    )
    body = get_account(api, namespace, "reader") or {}
    assert body["metadata"]["annotations"]["agentaccounts.dev/requested-by"] == user.name

    agent = agent_api(secret_data(api, namespace, "reader-credentials")["kubeconfig"])
    try:
        agent_core = client.CoreV1Api(agent)
        assert status_of(lambda: agent_core.read_namespaced_config_map("app-config", namespace)) == 200
        assert status_of(lambda: agent_core.read_namespaced_secret("victim-token", namespace)) == 403
        assert status_of(lambda: agent_core.list_namespaced_pod(namespace)) == 403
    finally:
        agent.close()

    other = user.create("elsewhere", scopes=_scope(["get"], ["configmaps"]))
    assert other.returncode == 0  # same provider: fine
    foreign = json.loads(_manifest(namespace, "sneaky", scopes=_scope(["get"], ["configmaps"])))
    foreign["spec"]["providerRef"] = {"kind": "AccountProvider", "name": "team-only"}
    _account_provider(api, namespace, "team-only", {"kubernetes": {}})
    _refused(user.kubectl("create", "-f", "-", input=json.dumps(foreign)), "rule provider-use", "team-only")


def test_never_grantable_whoever_asks_and_provider_policy_at_apply(
    cluster: Any, api: client.ApiClient, namespace: str, in_cluster_provider: str, start_operator: Start
) -> None:
    start_operator(namespace)
    admin = User(cluster, api, namespace)
    admin.kubectl = lambda *args, input=None: cluster.kubectl(*args, check=False, input=input)  # type: ignore[method-assign]
    assert admin.create("first", scopes=_scope(["get"], ["configmaps"])).returncode == 0
    wait_for(lambda: phase(api, namespace, "first") == "Ready", 20, "first Ready")

    cases = {
        "other-credentials": (
            _scope(["get"], ["secrets"], ["first-credentials"]),
            "credentials Secret of AgentAccount first",
        ),
        "unnamed-secrets": (_scope(["list"], ["secrets"]), "without resourceNames"),
        "own-kind": (_scope(["patch"], ["agentaccounts.agentaccounts.dev"]), "nothing in agentaccounts.dev"),
        "providers": (_scope(["get"], ["clusteraccountproviders.agentaccounts.dev"]), "agentaccounts.dev"),
        "tokens": (_scope(["create"], ["serviceaccounts/token"]), "serviceaccounts/token"),
        "write-roles": (_scope(["create"], ["roles.rbac.authorization.k8s.io"]), "escalate"),
    }
    for name, (scopes, fragment) in cases.items():
        _refused(admin.create(name, scopes=scopes), "rule never-grantable", fragment)
    _refused(
        admin.create("too-long", lifetime="48h", scopes=_scope(["get"], ["configmaps"])), "rule max-lifetime"
    )

    policy = {
        "maxLifetime": "1h",
        "allowedScopes": [{"permissions": ["get", "list"], "resources": ["configmaps", "pods/log"]}],
        "maxActiveAccounts": 1,
    }
    _account_provider(api, namespace, "strict", {"kubernetes": {}, "policy": policy})

    def strict(name: str, scopes: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
        body = json.loads(_manifest(namespace, name, scopes=scopes))
        body["spec"]["providerRef"] = {"kind": "AccountProvider", "name": "strict"}
        return cluster.kubectl("create", "-f", "-", check=False, input=json.dumps(body))  # type: ignore[no-any-return]

    _refused(strict("outside", _scope(["get"], ["services"])), "rule allowed-scopes", "'get' on 'services'")
    assert strict("logs", _scope(["get"], ["pods/log"])).returncode == 0  # a subresource, by RBAC's grammar
    wait_for(lambda: phase(api, namespace, "logs") == "Ready", 20, "logs Ready")
    role = client.RbacAuthorizationV1Api(api).read_namespaced_role("agentaccount-logs", namespace)
    assert [(r.resources, r.resource_names) for r in role.rules] == [(["pods/log"], None)]
    _refused(strict("second", _scope(["get"], ["configmaps"])), "QuotaExceeded", "rule max-active-accounts")

    capname = f"selective-{uuid.uuid4().hex[:6]}"
    custom(api).create_cluster_custom_object(
        GROUP,
        VERSION,
        "clusteraccountproviders",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ClusterAccountProvider",
            "metadata": {"name": capname},
            "spec": {"kubernetes": {}, "policy": {"allowedNamespaces": {"matchLabels": {"team": "blue"}}}},
        },
    )
    try:
        body = json.loads(_manifest(namespace, "unselected", scopes=_scope(["get"], ["configmaps"])))
        body["spec"]["providerRef"]["name"] = capname
        refused = cluster.kubectl("create", "-f", "-", check=False, input=json.dumps(body))
        _refused(refused, "rule allowed-namespaces", namespace)
    finally:
        custom(api).delete_cluster_custom_object(GROUP, VERSION, "clusteraccountproviders", capname)


def test_with_admission_bypassed_nothing_beyond_the_requester_is_issued(
    cluster: Any, api: client.ApiClient, namespace: str, user: User, start_operator: Start
) -> None:
    # 1. Stamped through the webhook (an operator that serves admission but watches elsewhere), then the
    #    requester loses the right before any operator issues: the reconcile-time check refuses.
    bystander = f"bystander-{uuid.uuid4().hex[:6]}"
    client.CoreV1Api(api).create_namespace({"metadata": {"name": bystander}})
    try:
        webhook_only = start_operator(bystander)
        admission_probe = user.create("stale-rights", scopes=_scope(["get"], ["configmaps"]))
        assert admission_probe.returncode == 0, admission_probe.stderr
        client.RbacAuthorizationV1Api(api).delete_namespaced_role_binding("requester", namespace)
        webhook_only.stop()
    finally:
        client.CoreV1Api(api).delete_namespace(bystander)
    for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
        cluster.kubectl("delete", kind, "agentaccounts.dev", "--ignore-not-found")

    # 2. No admission at all from here on.
    start_operator(namespace, env={"AGENTACCOUNTS_WEBHOOK_PORT": "0"})
    wait_for(lambda: phase(api, namespace, "stale-rights") == "Failed", 20, "Failed")
    ready = condition(api, namespace, "stale-rights")
    assert ready["reason"] == "NotPermitted"
    assert f"rule delegation: {user.name} may not get configmaps" in ready["message"]

    unstamped = create_account(
        api,
        namespace,
        "unstamped",
        providerRef={"kind": "ClusterAccountProvider", "name": "in-cluster"},
        scopes=_scope(["get"], ["secrets"], ["victim"]),
    )
    forged = json.loads(_manifest(namespace, "forged", scopes=_scope(["get"], ["configmaps"])))
    forged["metadata"]["annotations"] = {
        "agentaccounts.dev/requested-by": "admin",
        "agentaccounts.dev/requester": json.dumps(
            {"username": "admin", "groups": ["system:masters"], "at": "2099-01-01T00:00:00+00:00"}
        ),
        "agentaccounts.dev/requester-signature": "v1:" + "0" * 64,
    }
    cluster.kubectl("create", "-f", "-", input=json.dumps(forged))
    for name in ("unstamped", "forged"):
        wait_for(lambda name=name: phase(api, namespace, name) == "Failed", 20, f"{name} Failed")
        ready = condition(api, namespace, name)
        assert ready["reason"] == "NotPermitted" and "rule requester-recorded" in ready["message"]
    for body in (
        unstamped,
        get_account(api, namespace, "forged") or {},
        get_account(api, namespace, "stale-rights") or {},
    ):
        assert labelled(api, namespace, body["metadata"]["uid"]) == {
            "ServiceAccount": [],
            "Role": [],
            "RoleBinding": [],
            "Secret": [],
        }


def _token_exp(token: str) -> float:
    payload = token.split(".")[1]
    return float(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"])


def test_provider_and_scopes_are_immutable_once_issued_and_lifetime_moves_both_expiries(
    cluster: Any, api: client.ApiClient, namespace: str, in_cluster_provider: str, start_operator: Start
) -> None:
    start_operator(namespace)
    create_account(
        api,
        namespace,
        "fixed",
        providerRef={"kind": "ClusterAccountProvider", "name": in_cluster_provider},
        lifetime="20m",
        scopes=_scope(["get"], ["configmaps"]),
    )
    wait_for(lambda: phase(api, namespace, "fixed") == "Ready", 20, "Ready")
    before = get_account(api, namespace, "fixed") or {}
    for patch in (
        '{"spec":{"scopes":[{"permissions":["list"],"resources":["configmaps"]}]}}',
        '{"spec":{"providerRef":{"kind":"ClusterAccountProvider","name":"other"}}}',
    ):
        refused = cluster.kubectl(
            "patch", "aga", "fixed", "-n", namespace, "--type=merge", "-p", patch, check=False
        )
        _refused(refused, "cannot change once the identity is issued")

    old_token = secret_data(api, namespace, "fixed-credentials")["token"]
    cluster.kubectl(
        "patch", "aga", "fixed", "-n", namespace, "--type=merge", "-p", '{"spec":{"lifetime":"40m"}}'
    )
    old_expiry = datetime.fromisoformat(before["status"]["expiresAt"])

    def extended() -> bool:
        status = (get_account(api, namespace, "fixed") or {}).get("status") or {}
        return bool(status.get("expiresAt")) and datetime.fromisoformat(status["expiresAt"]) > old_expiry

    wait_for(extended, 20, "expiresAt to move")
    after = get_account(api, namespace, "fixed") or {}
    new_expiry = datetime.fromisoformat(after["status"]["expiresAt"])
    assert (new_expiry - old_expiry).total_seconds() == 20 * 60
    wait_for(
        lambda: secret_data(api, namespace, "fixed-credentials")["token"] != old_token, 20, "a new token"
    )
    data = secret_data(api, namespace, "fixed-credentials")
    assert data["expires-at"] == after["status"]["expiresAt"]
    assert _token_exp(data["token"]) >= new_expiry.timestamp()  # the provider-side expiry moved too
    assert _token_exp(old_token) < new_expiry.timestamp()


def _agentaccounts(*args: str, kubeconfig: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": kubeconfig}
    cmd = [sys.executable, "-m", "agentaccounts", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, check=False)


def test_approval_and_denial(
    cluster: Any, api: client.ApiClient, namespace: str, user: User, start_operator: Start
) -> None:
    start_operator(namespace)
    _account_provider(api, namespace, "gated", {"kubernetes": {}, "policy": {"requireApproval": True}})
    for name in ("wanted", "unwanted"):
        body = json.loads(_manifest(namespace, name, scopes=_scope(["get"], ["configmaps"])))
        body["spec"]["providerRef"] = {"kind": "AccountProvider", "name": "gated"}
        cluster.kubectl("create", "-f", "-", input=json.dumps(body))
    wait_for(
        lambda: condition(api, namespace, "wanted").get("reason") == "AwaitingApproval",
        20,
        "AwaitingApproval",
    )
    assert phase(api, namespace, "wanted") == "Pending"
    uid = (get_account(api, namespace, "wanted") or {})["metadata"]["uid"]
    assert labelled(api, namespace, uid)["ServiceAccount"] == []

    # The requester may patch the account but holds no `approve` on the provider.
    self_approval = user.kubectl(
        "annotate", "aga", "wanted", "-n", namespace, "agentaccounts.dev/approval=approve"
    )
    _refused(self_approval, "rule provider-approve")

    kubeconfig = str(cluster.kubeconfig)
    approved = _agentaccounts("approve", "wanted", "-n", namespace, kubeconfig=kubeconfig)
    assert approved.returncode == 0, approved.stderr
    wait_for(lambda: phase(api, namespace, "wanted") == "Ready", 20, "Ready after approval")
    approval = (get_account(api, namespace, "wanted") or {})["status"]["approval"]
    assert approval["decision"] == "Approved" and approval["by"] and approval["at"]

    denied = _agentaccounts("deny", "unwanted", "-n", namespace, kubeconfig=kubeconfig)
    assert denied.returncode == 0, denied.stderr
    wait_for(lambda: phase(api, namespace, "unwanted") == "Failed", 20, "Failed after denial")
    assert condition(api, namespace, "unwanted")["reason"] == "Denied"


def test_dry_run_reports_the_plan_and_creates_nothing(
    api: client.ApiClient, namespace: str, in_cluster_provider: str, start_operator: Start
) -> None:
    start_operator(namespace)
    body = create_account(
        api,
        namespace,
        "rehearsal",
        providerRef={"kind": "ClusterAccountProvider", "name": in_cluster_provider},
        dryRun=True,
        scopes=_scope(["get", "list"], ["configmaps", "deployments.apps"]),
    )
    wait_for(lambda: phase(api, namespace, "rehearsal") == "DryRun", 20, "DryRun")
    status = (get_account(api, namespace, "rehearsal") or {})["status"]
    assert status["plan"]["role"]["rules"] == [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]},
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list"]},
    ]
    assert status["plan"]["lifetime"] == "1h"
    assert labelled(api, namespace, body["metadata"]["uid"]) == {
        "ServiceAccount": [],
        "Role": [],
        "RoleBinding": [],
        "Secret": [],
    }


def test_a_forged_account_ref_never_deletes_someone_elses_service_account(
    api: client.ApiClient, namespace: str, in_cluster_provider: str, start_operator: Start
) -> None:
    start_operator(namespace)
    core = client.CoreV1Api(api)
    bystander = core.create_namespaced_service_account(namespace, {"metadata": {"name": "bystander"}})
    create_account(
        api,
        namespace,
        "victim",
        providerRef={"kind": "ClusterAccountProvider", "name": in_cluster_provider},
        scopes=_scope(["get"], ["configmaps"]),
    )
    wait_for(lambda: phase(api, namespace, "victim") == "Ready", 20, "Ready")
    forged = {
        "kind": "ServiceAccount",
        "name": "bystander",
        "namespace": namespace,
        "id": bystander.metadata.uid,
    }
    custom(api).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "agentaccounts", "victim", {"status": {"accountRef": forged}}
    )
    custom(api).delete_namespaced_custom_object(GROUP, VERSION, namespace, "agentaccounts", "victim")
    wait_for(lambda: get_account(api, namespace, "victim") is None, 20, "the account to go")
    assert core.read_namespaced_service_account("bystander", namespace).metadata.uid == bystander.metadata.uid
    assert status_of(lambda: core.read_namespaced_service_account("agentaccount-victim", namespace)) == 404
