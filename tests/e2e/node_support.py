"""The real node for the e2e story (tests/e2e/test_node_story.py) and `make demo-node`.

Why this exists: only these tests run pods, so only they start a node (containerd + kubelet +
scheduler, tests/cluster/node.py) — session-scoped, on top of the session's control plane, stopped
with it. Everything else here is the vocabulary the story is told in: install the chart as a pod,
run an agent pod that mounts its Secret, read what the kubelet saw.

Every pod on the node uses the host network and `imagePullPolicy: Never` (the node's admission
policy refuses anything else), so agent pods are built here with both.
"""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import sys
import tempfile
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster import images
from cluster import node as node_mod
from e2e.helm import CHART, Helm, adopt_crds, free_port

REPO = Path(__file__).resolve().parents[2]
VALUES = Path(__file__).with_name("node-values.yaml")
# Beside conftest's .local/test-logs, which the cluster fixture replaces after this one's teardown.
LOGS_ON_FAILURE = REPO / ".local" / "test-logs-node"


@pytest.fixture(scope="session")
def node(cluster: Any, request: pytest.FixtureRequest) -> Iterator[node_mod.Node]:
    directory = Path(tempfile.mkdtemp(prefix="agentaccounts-node-"))
    try:
        started = node_mod.up(cluster.handle, directory, die_with_parent=True)
    except (node_mod.NodeError, images.ImageError) as exc:
        _keep_logs(directory)
        node_mod.down(directory)
        pytest.fail(f"the node did not start: {exc}", pytrace=False)
    try:
        yield started
    finally:
        if request.session.testsfailed:
            _keep_logs(directory)
        node_mod.down(directory)


def _keep_logs(directory: Path) -> None:
    if (directory / "logs").exists():
        shutil.rmtree(LOGS_ON_FAILURE, ignore_errors=True)
        shutil.copytree(directory / "logs", LOGS_ON_FAILURE)


def install_operator(
    helm: Helm, node: node_mod.Node, cluster: Any, release: str, namespace: str, provider: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, int]]:
    """`helm install --wait` of the chart with the node's operator image; returns helm's result and
    the ports the pod listens on (host ports: chosen free)."""
    repository, tag = node.images["operator"].rsplit(":", 1)
    ports = {"metrics": free_port(), "health": free_port(), "webhook": free_port()}
    api_port = cluster.server.rsplit(":", 1)[1]
    env = [
        {"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
        {"name": "KUBERNETES_SERVICE_PORT", "value": api_port},
    ]
    adopt_crds(helm, release, namespace)
    proc = helm.run(
        "install",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "-f",
        str(VALUES),
        "--set",
        f"image.repository={repository}",
        "--set",
        f"image.tag={tag}",
        "--set",
        f"metrics.port={ports['metrics']}",
        "--set",
        f"metrics.service.port={ports['metrics']}",
        "--set",
        f"healthPort={ports['health']}",
        "--set",
        f"webhook.port={ports['webhook']}",
        "--set",
        f"providers.inCluster.name={provider}",
        "--set-json",
        f"extraEnv={json.dumps(env)}",
        "--wait",
        "--timeout=5m",
        timeout=330,
    )
    return proc, ports


def agent_pod(name: str, namespace: str, image: str, secret: str, script: str, kind: str = "Pod") -> str:
    """An agent: a shell with kubectl, its AgentAccount's Secret mounted at /credentials."""
    spec: dict[str, Any] = {
        "hostNetwork": True,
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,  # the agent's identity is the mounted one, nothing else
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "runAsGroup": 65532,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": "agent",
                "image": image,
                "imagePullPolicy": "Never",
                "args": [script],
                "env": [{"name": "KUBECONFIG", "value": "/credentials/kubeconfig"}],
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                },
                "volumeMounts": [
                    {"name": "credentials", "mountPath": "/credentials", "readOnly": True},
                    {"name": "tmp", "mountPath": "/tmp"},
                ],
            }
        ],
        "volumes": [
            {"name": "credentials", "secret": {"secretName": secret}},
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    meta = {"name": name, "namespace": namespace, "labels": {"app": "agent", "agent": name}}
    if kind == "Job":
        body = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": meta,
            "spec": {"backoffLimit": 0, "template": {"metadata": {"labels": meta["labels"]}, "spec": spec}},
        }
    else:
        body = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}
    return json.dumps(body)


# `kubectl -v=6` logs each response's status ("... 403 Forbidden in 3 milliseconds" or
# status="403 Forbidden"); the agent's scripts keep only that code, so assertions read what the API
# server answered, not kubectl's wording.
CODE = "grep -o -E '(200 OK|401 Unauthorized|403 Forbidden)' | tail -n 1"


def call(args: str) -> str:
    """Shell: run one kubectl call as the agent and print the HTTP status it got."""
    return f"kubectl {args} -v=6 2>&1 | {CODE}"


def pod(helm: Helm, namespace: str, name: str) -> dict[str, Any]:
    proc = helm.kubectl("get", "pod", name, "-n", namespace, "-o", "json")
    return dict(json.loads(proc.stdout)) if proc.returncode == 0 else {}


def pods(helm: Helm, namespace: str, selector: str) -> list[dict[str, Any]]:
    proc = helm.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json")
    assert proc.returncode == 0, proc.stderr
    return list(json.loads(proc.stdout)["items"])


def ready(p: dict[str, Any]) -> bool:
    conditions = p.get("status", {}).get("conditions", [])
    deleting = "deletionTimestamp" in p.get("metadata", {})
    return not deleting and any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def logs(helm: Helm, namespace: str, name: str) -> str:
    """Through the API server to the kubelet, as `kubectl logs` always goes."""
    proc = helm.kubectl("logs", name, "-n", namespace)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def stats_summary(helm: Helm) -> dict[str, Any]:
    """The kubelet's own accounting (/stats/summary), through the API server's node proxy."""
    proc = helm.kubectl("get", "--raw", f"/api/v1/nodes/{node_mod.NODE_NAME}/proxy/stats/summary")
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def kubelet_get(node: node_mod.Node, cluster: Any, path: str) -> str:
    """GET from the kubelet's own API on 127.0.0.1, as the API server does: the admin's client
    certificate (the kubelet authorizes it by SubjectAccessReview), the kubelet's self-signed serving
    certificate as the only trust root. (The API server's node proxy refuses loopback addresses.)"""
    ctx = ssl.create_default_context(cafile=str(node.dir / "kubelet-pki" / "kubelet.crt"))
    ctx.check_hostname = False  # its certificate names the node, not 127.0.0.1
    pki = cluster.handle.dir / "pki"
    ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    url = f"https://127.0.0.1:{node.kubelet_port}{path}"
    with urllib.request.urlopen(url, context=ctx, timeout=10) as resp:
        return str(resp.read().decode())


def pod_memory(node: node_mod.Node, cluster: Any, namespace: str, name: str) -> int:
    """The pod's working-set bytes in the kubelet's /stats/summary (what `kubectl top` would show)."""
    summary = json.loads(kubelet_get(node, cluster, "/stats/summary"))
    for entry in summary["pods"]:
        if entry["podRef"]["namespace"] == namespace and entry["podRef"]["name"] == name:
            return int(entry.get("memory", {}).get("workingSetBytes", 0))
    return 0


def probe_successes(node: node_mod.Node, cluster: Any, namespace: str, name: str, kind: str) -> int:
    """prober_probe_total{result="successful"} for one pod and probe type, from the kubelet's
    /metrics/probes: proof that the kubelet really called the probe and got an answer."""
    total = 0
    for line in kubelet_get(node, cluster, "/metrics/probes").splitlines():
        if (
            line.startswith("prober_probe_total{")
            and f'pod="{name}"' in line
            and f'namespace="{namespace}"' in line
            and f'probe_type="{kind}"' in line
            and 'result="successful"' in line
        ):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


# -- `make demo-node`: the story told to a person, on `make cluster` + `make node` ----------------


def _say(text: str) -> None:
    print(f"\n\033[1m{text}\033[0m", flush=True)


def _account(helm: Helm, namespace: str, name: str, provider: str, lifetime: str) -> None:
    body = {
        "apiVersion": "agentaccounts.dev/v1alpha1",
        "kind": "AgentAccount",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "providerRef": {"kind": "ClusterAccountProvider", "name": provider},
            "lifetime": lifetime,
            "scopes": [{"permissions": ["get", "list"], "resources": ["configmaps"]}],
        },
    }
    proc = helm.kubectl("apply", "-f", "-", input=json.dumps(body))
    assert proc.returncode == 0, proc.stderr


def demo(cluster_dir: Path, node_dir: Path) -> int:
    from cluster import launcher
    from e2e.helm import helm_binary, phase, wait_for

    cluster, node = launcher.Cluster.load(cluster_dir), node_mod.Node.load(node_dir)
    if cluster is None or node is None:
        print("error: run `make node` first (it starts `make cluster` too)", file=sys.stderr)
        return 1
    helm = Helm(helm_binary(), cluster.kubeconfig)
    ops, agents, provider = unique("demo-ops"), unique("demo-agents"), unique("demo-provider")
    for ns in (ops, agents):
        helm.kubectl("create", "namespace", ns)
    _say(f"1. helm install --wait: the operator from image {node.images['operator']}, as a pod")
    proc, _ = install_operator(helm, node, cluster, "demo", ops, provider)
    if proc.returncode != 0:
        print(proc.stderr, file=sys.stderr)
        return 1
    print(helm.kubectl("get", "pods", "-n", ops, "-o", "wide").stdout)
    lease = helm.kubectl(
        "get", "lease", "demo-agentaccounts-leader", "-n", ops, "-o", "jsonpath={.spec.holderIdentity}"
    )
    print(f"Lease held by {lease.stdout}")

    _say("2. An AgentAccount may get and list ConfigMaps for 10 minutes; an agent Job mounts its Secret")
    _account(helm, agents, "reader", provider, "10m")
    wait_for(lambda: phase(helm, agents, "reader") == "Ready", 90, "reader Ready")
    script = (
        f'echo "kubectl get configmaps -> $({call(f"get configmaps -n {agents}")})"\n'
        f'echo "kubectl get secrets    -> $({call(f"get secrets -n {agents}")})"'
    )
    helm.kubectl(
        "apply",
        "-f",
        "-",
        input=agent_pod("reader-job", agents, node.images["agent"], "reader-credentials", script, "Job"),
    )
    helm.kubectl("wait", "--for=condition=Complete", "job/reader-job", "-n", agents, "--timeout=120s")
    print(helm.kubectl("logs", "job/reader-job", "-n", agents).stdout)

    _say("3. A 30-second account, and an agent that calls every 2 seconds across its expiry")
    _account(helm, agents, "brief", provider, "30s")
    wait_for(lambda: phase(helm, agents, "brief") == "Ready", 90, "brief Ready")
    expires = helm.kubectl(
        "get", "agentaccount", "brief", "-n", agents, "-o", "jsonpath={.status.expiresAt}"
    ).stdout
    print(f"expiresAt {expires}")
    loop = f'while true; do echo "$(date -u +%T) $({call(f"get configmaps -n {agents}")})"; sleep 2; done'
    helm.kubectl(
        "apply", "-f", "-", input=agent_pod("caller", agents, node.images["agent"], "brief-credentials", loop)
    )
    wait_for(lambda: "401" in helm.kubectl("logs", "caller", "-n", agents).stdout, 150, "the agent's 401")
    print(helm.kubectl("logs", "caller", "-n", agents).stdout)
    print(helm.kubectl("get", "agentaccounts", "-n", agents).stdout)

    _say("4. helm uninstall: the operator pod goes, the CRDs (and AgentAccounts) stay")
    helm.kubectl("delete", "pod", "caller", "-n", agents, "--wait=false")
    print(helm.run("uninstall", "demo", "-n", ops).stdout)
    wait_for(lambda: not pods(helm, ops, "app.kubernetes.io/instance=demo"), 120, "the operator pod to go")
    print(helm.kubectl("get", "pods", "-n", ops).stderr.strip())
    # Known limit (test_node_story.py test_7): the chart's provider keeps the operator's finalizer.
    helm.kubectl(
        "patch", "clusteraccountprovider", provider, "--type=merge", "-p", '{"metadata":{"finalizers":null}}'
    )
    for ns in (agents, ops):
        for name in helm.kubectl("get", "agentaccounts", "-n", ns, "-o", "name").stdout.split():
            helm.kubectl("patch", name, "-n", ns, "--type=merge", "-p", '{"metadata":{"finalizers":null}}')
        helm.kubectl("delete", "namespace", ns, "--wait=false")
    return 0


if __name__ == "__main__":
    sys.exit(demo(REPO / ".local", node_mod.DEFAULT_DIR))
