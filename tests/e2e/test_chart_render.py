"""The chart renders, lints and validates: helm lint, bad values, CRD copies, server-side dry runs, PSS.

Rendering needs only helm (built from the Go module proxy by tests/e2e/helm.py); the dry runs need the
local control plane, which validates every rendered object against the real API schemas, RBAC rules
and admission (Pod Security) without persisting anything.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from e2e.helm import CHART, Helm, helm_binary

ALL_OPTIONS = CHART / "ci" / "all-options-values.yaml"
SOURCE_CRDS = CHART.parents[1] / "crds"
CRD_CAPABILITY = "agentaccounts.dev/v1alpha1/ClusterAccountProvider"

# A stand-in for the Prometheus Operator's ServiceMonitor CRD, so that the optional ServiceMonitor can
# be dry-run too: it checks apiVersion/kind/metadata, not the spec (the real CRD is not installable
# here: no registry reachable ships it).
SERVICEMONITOR_STUB = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
    "spec": {
        "group": "monitoring.coreos.com",
        "scope": "Namespaced",
        "names": {"kind": "ServiceMonitor", "plural": "servicemonitors", "listKind": "ServiceMonitorList"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                },
            }
        ],
    },
}


@pytest.fixture(scope="module")
def offline() -> Helm:
    return Helm(helm_binary())


@pytest.fixture(scope="module")
def helm(cluster: Any) -> Helm:
    return Helm(helm_binary(), cluster.kubeconfig)


@pytest.fixture
def extra_namespaces(helm: Helm) -> Iterator[list[str]]:
    """Two more fresh namespaces (watched namespaces, a provider-secret namespace), deleted afterwards."""
    names = [f"chart-extra-{uuid.uuid4().hex[:6]}" for _ in range(2)]
    for name in names:
        assert helm.kubectl("create", "namespace", name).returncode == 0
    yield names
    for name in names:
        helm.kubectl("delete", "namespace", name, "--wait=false")


def dry_run(helm: Helm, objects: list[dict[str, Any]]) -> str:
    """Server-side dry-run apply; returns stderr (warnings), fails with the server's message."""
    proc = helm.kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "--field-manager=chart-dry-run",
        "--force-conflicts",
        "-f",
        "-",
        input=yaml.safe_dump_all(objects),
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


def test_helm_lint_default_and_all_options(offline: Helm) -> None:
    offline.ok("lint", "--strict", str(CHART))
    offline.ok("lint", "--strict", str(CHART), "-f", str(ALL_OPTIONS))


@pytest.mark.cluster
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "replicaCount=-1"], "at '/replicaCount': minimum: got -1, want 0"),
        (["--set-json", "replicaCount=1.5"], "at '/replicaCount': got number, want integer"),
        (["--set", "bogus=1"], "additional properties 'bogus' not allowed"),
        (["--set", "metrics.bogus=1"], "at '/metrics': additional properties 'bogus' not allowed"),
        (["--set", "watchNamespaces={Not_A_Namespace}"], "at '/watchNamespaces/0'"),
        (["--set", "webhook.port=0"], "at '/webhook/port': minimum: got 0, want 1"),
        (
            ["--set", "replicaCount=2", "--set", "leaderElection.enabled=false"],
            "replicaCount > 1 needs leaderElection.enabled=true",
        ),
        (
            [
                "--set-json",
                'rbac.grantable=[{"apiGroups":["rbac.authorization.k8s.io"],"resources":["roles"],'
                '"verbs":["escalate"]}]',
            ],
            "at '/rbac/grantable/0/verbs/0': value must be one of",
        ),
    ],
    ids=[
        "negative-replicas",
        "fractional-replicas",
        "unknown-top-level-key",
        "unknown-nested-key",
        "bad-namespace",
        "webhook-disabled",
        "replicas-without-leader",
        "grant-escalate",
    ],
)
def test_bad_values_fail_template_and_install_with_a_clear_message(
    helm: Helm, namespace: str, args: list[str], message: str
) -> None:
    rendered = helm.run("template", "bad", str(CHART), "-n", namespace, *args)
    assert rendered.returncode != 0 and message in rendered.stderr, rendered.stderr
    installed = helm.run("install", "bad", str(CHART), "-n", namespace, *args)
    assert installed.returncode != 0 and message in installed.stderr, installed.stderr
    assert helm.run("status", "bad", "-n", namespace).returncode != 0, "a failed install left a release"


def test_rendered_crds_are_the_repository_crds_plus_labels_and_keep(offline: Helm) -> None:
    rendered = {
        o["metadata"]["name"]: o
        for o in offline.template("t", "ops")
        if o["kind"] == "CustomResourceDefinition"
    }
    source = {}
    for path in sorted(SOURCE_CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        source[crd["metadata"]["name"]] = crd
    assert rendered.keys() == source.keys()
    for name, crd in rendered.items():
        meta = crd["metadata"]
        assert meta.pop("annotations") == {"helm.sh/resource-policy": "keep"}
        assert meta.pop("labels")["app.kubernetes.io/part-of"] == "agentaccounts"
        assert crd == source[name], f"{name}: rendering changed the CRD"
    without_keep = offline.template("t", "ops", "--set", "crds.keep=false")
    assert all(
        "annotations" not in o["metadata"] for o in without_keep if o["kind"] == "CustomResourceDefinition"
    )
    assert not [
        o
        for o in offline.template("t", "ops", "--set", "crds.enabled=false")
        if o["kind"] == "CustomResourceDefinition"
    ]


@pytest.mark.cluster
def test_default_render_passes_server_side_dry_run(helm: Helm, namespace: str) -> None:
    objects = helm.template("dflt", namespace)
    kinds = sorted({o["kind"] for o in objects})
    assert kinds == [
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "Deployment",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ]
    dry_run(helm, objects)


@pytest.mark.cluster
def test_all_options_render_passes_server_side_dry_run(
    helm: Helm, namespace: str, extra_namespaces: list[str]
) -> None:
    watched, secrets_ns = extra_namespaces
    objects = helm.template(
        "every", namespace, "-f", str(ALL_OPTIONS),
        "--set-json", f"watchNamespaces={json.dumps([watched, namespace])}",
        "--set-json", f'rbac.providerSecrets=[{{"namespace":"{secrets_ns}","name":"parent-token"}}]',
        "--set", f"providers.inCluster.name=prov-{namespace}",
        "--api-versions", CRD_CAPABILITY,
    )  # fmt: skip
    kinds = {o["kind"] for o in objects}
    assert {"ServiceMonitor", "PodDisruptionBudget", "NetworkPolicy", "ClusterAccountProvider"} <= kinds
    roles = {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in objects if o["kind"] == "Role"}
    assert roles == {
        (watched, "agentaccounts-all"), (watched, "agentaccounts-all-grantable"),
        (namespace, "agentaccounts-all"), (namespace, "agentaccounts-all-grantable"),
        (namespace, "agentaccounts-all-release"), (secrets_ns, "agentaccounts-all-provider-secrets"),
    }  # fmt: skip
    assert sorted(o["metadata"]["name"] for o in objects if o["kind"] == "ClusterRole") == [
        "agentaccounts-all-cluster", "agentaccounts-all-requester",
        f"agentaccounts-all-use-prov-{namespace}", "agentaccounts-all-viewer",
    ]  # fmt: skip
    stub = helm.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(SERVICEMONITOR_STUB))
    assert stub.returncode == 0, stub.stderr
    helm.kubectl("wait", "--for=condition=Established", "crd/servicemonitors.monitoring.coreos.com")
    dry_run(helm, objects)


@pytest.mark.cluster
def test_pod_passes_the_restricted_pod_security_standard(helm: Helm, namespace: str) -> None:
    labels = [f"pod-security.kubernetes.io/{mode}=restricted" for mode in ("enforce", "warn")]
    assert helm.kubectl("label", "namespace", namespace, *labels).returncode == 0
    objects = helm.template("pss", namespace)
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    warnings = dry_run(helm, [deployment])  # warn mode: a violating Deployment prints a warning
    assert "violate PodSecurity" not in warnings, warnings
    # enforce mode applies to Pods: create the Deployment's pod, for real admission, as a dry run
    # (its ServiceAccount must really exist for the ServiceAccount admission plugin).
    account = next(o for o in objects if o["kind"] == "ServiceAccount")
    assert helm.kubectl("create", "-f", "-", input=json.dumps(account)).returncode == 0
    template = deployment["spec"]["template"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {**template["metadata"], "name": "pss-probe", "namespace": namespace},
        "spec": template["spec"],
    }
    proc = helm.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(pod))
    assert proc.returncode == 0 and "violate" not in proc.stderr, proc.stderr
    # ...and the check is real: the same pod without its securityContext is refused.
    loose = json.loads(json.dumps(pod))
    loose["spec"].pop("securityContext")
    loose["spec"]["containers"][0].pop("securityContext")
    refused = helm.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(loose))
    assert refused.returncode != 0 and 'violates PodSecurity "restricted' in refused.stderr, refused.stderr


def test_deployment_runs_the_documented_command_line(offline: Helm) -> None:
    def args(*values: str) -> list[str]:
        objects = offline.template("cli", "ops", *values)
        return next(o for o in objects if o["kind"] == "Deployment")["spec"]["template"]["spec"][
            "containers"
        ][0]["args"]

    assert args() == [
        "run", "--all-namespaces", "--metrics-port=8080", "--liveness=http://0.0.0.0:8081/healthz",
        "--leader-elect", "--leader-election-namespace=ops",
        "--leader-election-name=cli-agentaccounts-leader",
    ]  # fmt: skip
    assert args("--set", "watchNamespaces={a,b}", "--set", "leaderElection.enabled=false")[:3] == [
        "run", "--namespace=a", "--namespace=b",
    ]  # fmt: skip


def by_kind_and_name(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "webhook.port=70000"], "at '/webhook/port': maximum: got 70,000, want 65,535"),
        (["--set", "webhook.bogus=1"], "at '/webhook': additional properties 'bogus' not allowed"),
        (
            ["--set", "providers.inCluster.maxLifetime=1h"],  # moved under policy with the CRD
            "at '/providers/inCluster': additional properties 'maxLifetime' not allowed",
        ),
        (["--set", "providers.inCluster.policy.maxLifetime=a day"], "/inCluster/policy/maxLifetime'"),
        (["--set", "providers.inCluster.policy.bogus=1"], "additional properties 'bogus' not allowed"),
        (["--set", "providers.inCluster.aggregateUseToEdit=yes"], "/inCluster/aggregateUseToEdit'"),
    ],
    ids=["webhook-port-range", "webhook-unknown-key", "old-lifetime-key", "bad-policy-duration",
         "unknown-policy-key", "aggregate-flag-type"],
)  # fmt: skip
def test_new_values_are_validated_by_the_schema(offline: Helm, args: list[str], message: str) -> None:
    rendered = offline.run("template", "bad", str(CHART), "-n", "ops", *args)
    assert rendered.returncode != 0 and message in rendered.stderr, rendered.stderr


def test_webhook_service_env_and_port(offline: Helm) -> None:
    def render(*values: str) -> tuple[dict[str, Any], dict[str, Any]]:
        objects = by_kind_and_name(offline.template("wh", "ops", *values))
        return objects[("Service", "wh-agentaccounts-webhook")], objects[("Deployment", "wh-agentaccounts")]

    service, deployment = render()
    assert service["metadata"]["namespace"] == "ops"
    assert service["spec"]["ports"] == [
        {"name": "https", "port": 443, "targetPort": "webhook", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "webhook", "containerPort": 9443, "protocol": "TCP"} in container["ports"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert {k: v for k, v in env.items() if k.startswith("AGENTACCOUNTS_")} == {
        "AGENTACCOUNTS_OPERATOR_NAMESPACE": "ops",
        "AGENTACCOUNTS_SIGNING_KEY_SECRET": "agentaccounts-signing-key",
        "AGENTACCOUNTS_WEBHOOK_PORT": "9443",
        "AGENTACCOUNTS_WEBHOOK_LISTEN": "0.0.0.0",
        "AGENTACCOUNTS_WEBHOOK_CONFIGURATION": "agentaccounts.dev",
        "AGENTACCOUNTS_WEBHOOK_SERVICE": "ops/wh-agentaccounts-webhook",
    }

    service, deployment = render("--set", "webhook.port=10443", "--set", "metrics.port=0")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert [p["containerPort"] for p in container["ports"] if p["name"] == "webhook"] == [10443]
    assert {"name": "AGENTACCOUNTS_WEBHOOK_PORT", "value": "10443"} in container["env"]
    assert service["spec"]["ports"][0]["port"] == 443, "the API server always calls 443"


def test_network_policy_admits_the_api_server_to_the_webhook(offline: Helm) -> None:
    objects = offline.template("np", "ops", "-f", str(ALL_OPTIONS))
    policy = next(o for o in objects if o["kind"] == "NetworkPolicy")
    webhook = [r for r in policy["spec"]["ingress"] if {"port": "webhook", "protocol": "TCP"} in r["ports"]]
    assert webhook == [{"ports": [{"port": "webhook", "protocol": "TCP"}]}], "from anywhere: no `from`"
    metrics = [r for r in policy["spec"]["ingress"] if r is not webhook[0]]
    assert metrics and all(r["from"] for r in metrics), "metrics and health stay restricted"


AGGREGATE = "rbac.authorization.k8s.io/aggregate-to-"


def aggregated_to(role: dict[str, Any]) -> set[str]:
    labels = role["metadata"]["labels"]
    return {k.removeprefix(AGGREGATE) for k, v in labels.items() if k.startswith(AGGREGATE) and v == "true"}


def test_requester_and_viewer_cluster_roles_aggregate_into_the_builtin_roles(offline: Helm) -> None:
    objects = by_kind_and_name(offline.template("rq", "ops"))
    requester = objects[("ClusterRole", "rq-agentaccounts-requester")]
    assert aggregated_to(requester) == {"edit", "admin"}
    assert requester["rules"] == [
        {"apiGroups": ["agentaccounts.dev"], "resources": ["agentaccounts"],
         "verbs": ["create", "get", "list", "watch", "update", "patch", "delete"]},
    ]  # fmt: skip
    viewer = objects[("ClusterRole", "rq-agentaccounts-viewer")]
    assert aggregated_to(viewer) == {"view", "edit", "admin"}
    assert viewer["rules"] == [
        {"apiGroups": ["agentaccounts.dev"],
         "resources": ["agentaccounts", "accountproviders", "clusteraccountproviders"],
         "verbs": ["get", "list", "watch"]},
    ]  # fmt: skip
    bound = {o["roleRef"]["name"] for o in objects.values() if o["kind"].endswith("Binding")}
    assert not bound & {"rq-agentaccounts-requester", "rq-agentaccounts-viewer"}, "aggregated, not bound"
    without_rbac = offline.template("rq", "ops", "--set", "rbac.create=false")
    assert not [o for o in without_rbac if o["kind"] in ("ClusterRole", "Role")]


def test_the_default_provider_gets_an_unbound_use_role_and_its_policy(offline: Helm) -> None:
    def render(*values: str) -> dict[tuple[str, str], dict[str, Any]]:
        return by_kind_and_name(offline.template("pv", "ops", *values, "--api-versions", CRD_CAPABILITY))

    assert not [k for k in render() if "-use-" in k[1]], "no provider, no use role"
    objects = render("--set", "providers.inCluster.enabled=true", "--set", "providers.inCluster.name=shared")
    use = objects[("ClusterRole", "pv-agentaccounts-use-shared")]
    assert use["rules"] == [
        {"apiGroups": ["agentaccounts.dev"], "resources": ["clusteraccountproviders"],
         "resourceNames": ["shared"], "verbs": ["use"]},
    ]  # fmt: skip
    assert aggregated_to(use) == set(), "bound to nobody by default"
    assert not [
        o
        for o in objects.values()
        if o["kind"].endswith("Binding") and o["roleRef"]["name"] == use["metadata"]["name"]
    ]
    provider = objects[("ClusterAccountProvider", "shared")]
    assert provider["spec"] == {"policy": {"maxLifetime": "24h", "defaultLifetime": "1h"}, "kubernetes": {}}

    aggregated = render(
        "--set", "providers.inCluster.enabled=true", "--set", "providers.inCluster.aggregateUseToEdit=true"
    )
    assert aggregated_to(aggregated[("ClusterRole", "pv-agentaccounts-use-in-cluster")]) == {"edit", "admin"}
    disabled = render("--set", "providers.inCluster.enabled=true", "--set", "rbac.create=false")
    assert not [k for k in disabled if k[0] == "ClusterRole"]
    assert ("ClusterAccountProvider", "in-cluster") in disabled

    every = by_kind_and_name(
        offline.template("pv", "ops", "-f", str(ALL_OPTIONS), "--api-versions", CRD_CAPABILITY)
    )
    values = yaml.safe_load(ALL_OPTIONS.read_text())["providers"]["inCluster"]
    assert every[("ClusterAccountProvider", values["name"])]["spec"]["policy"] == values["policy"]
    assert aggregated_to(every[("ClusterRole", f"agentaccounts-all-use-{values['name']}")]) == {
        "edit",
        "admin",
    }
