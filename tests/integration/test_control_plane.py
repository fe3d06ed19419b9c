"""Proof that the local control plane is real: schema validation, RBAC, TokenRequest, GC, namespaces."""

from __future__ import annotations

import uuid
from typing import Any

from kubernetes import client

from integration.support import status_of, wait_for

WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.proof.example.com"},
    "spec": {
        "group": "proof.example.com",
        "scope": "Namespaced",
        "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "properties": {"size": {"type": "integer", "minimum": 1}},
                            }
                        },
                    }
                },
            }
        ],
    },
}


def _token_client(cluster: Any, token: str) -> client.ApiClient:
    cfg = client.Configuration()
    cfg.host, cfg.ssl_ca_cert = cluster.server, str(cluster.ca_file)
    cfg.api_key = {"authorization": f"Bearer {token}"}
    return client.ApiClient(cfg)


def test_crd_with_structural_schema_rejects_a_malformed_object(
    cluster: Any, api: client.ApiClient, namespace: str
) -> None:
    ext = client.ApiextensionsV1Api(api)
    try:
        ext.create_custom_resource_definition(WIDGET_CRD)
    except client.ApiException as exc:
        assert exc.status == 409
    wait_for(
        lambda: any(
            c.type == "Established" and c.status == "True"
            for c in ext.read_custom_resource_definition("widgets.proof.example.com").status.conditions or []
        ),
        30,
        "Widget CRD established",
    )
    objects = client.CustomObjectsApi(api)

    def create(spec: dict[str, Any]) -> None:
        body = {
            "apiVersion": "proof.example.com/v1",
            "kind": "Widget",
            "metadata": {"name": f"w-{uuid.uuid4().hex[:6]}"},
            "spec": spec,
        }
        objects.create_namespaced_custom_object("proof.example.com", "v1", namespace, "widgets", body)

    assert status_of(lambda: create({"size": "big"})) == 422
    assert status_of(lambda: create({})) == 422
    assert status_of(lambda: create({"size": 3})) == 200


def test_service_account_token_is_denied_until_a_rolebinding_grants(
    cluster: Any, api: client.ApiClient, namespace: str
) -> None:
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "reader"}})
    token = core.create_namespaced_service_account_token(
        "reader", namespace, {"spec": {"expirationSeconds": 600}}
    ).status.token
    agent = _token_client(cluster, token)
    try:
        assert status_of(lambda: client.CoreV1Api(agent).list_namespaced_config_map(namespace)) == 403
        rbac.create_namespaced_role(
            namespace,
            {
                "metadata": {"name": "reader"},
                "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}],
            },
        )
        rbac.create_namespaced_role_binding(
            namespace,
            {
                "metadata": {"name": "reader"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
                "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
            },
        )
        wait_for(
            lambda: status_of(lambda: client.CoreV1Api(agent).list_namespaced_config_map(namespace)) == 200,
            10,
            "RoleBinding to take effect",
        )
    finally:
        agent.close()


def test_token_request_with_expiration_authenticates(
    cluster: Any, api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "short"}})
    result = core.create_namespaced_service_account_token(
        "short", namespace, {"spec": {"expirationSeconds": 600}}
    )
    lifetime = (
        result.status.expiration_timestamp.timestamp() - result.metadata.creation_timestamp.timestamp()
        if result.metadata.creation_timestamp
        else None
    )
    agent = _token_client(cluster, result.status.token)
    try:
        review = client.AuthenticationV1Api(agent).create_self_subject_review(
            {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
        )
        assert review.status.user_info.username == f"system:serviceaccount:{namespace}:short"
    finally:
        agent.close()
    assert lifetime is None or 590 <= lifetime <= 610


def test_deleting_an_owner_garbage_collects_its_dependent(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    core.create_namespaced_config_map(
        namespace,
        {
            "metadata": {
                "name": "dependent",
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
                ],
            }
        },
    )
    core.delete_namespaced_config_map("owner", namespace)
    wait_for(
        lambda: status_of(lambda: core.read_namespaced_config_map("dependent", namespace)) == 404,
        30,
        "the garbage collector to delete the dependent",
    )


def test_deleting_a_namespace_completes(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    name = f"doomed-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": name}})
    core.create_namespaced_config_map(name, {"metadata": {"name": "content"}})
    core.delete_namespace(name)
    wait_for(lambda: status_of(lambda: core.read_namespace(name)) == 404, 60, "the namespace to be gone")
