"""The product as it is used: the operator as a pod from its image, agents as pods mounting its Secret.

A real node (containerd + kubelet + scheduler, tests/cluster/node.py) runs everything here; one
`helm install --wait` serves the whole story, whose steps run in order:
1. the operator pod becomes Ready (the kubelet's probes answered), holds the Lease, and runs with
   the restricted security context on a read-only root filesystem;
2. an agent Job mounts the generated Secret: its granted call gets 200, a denied one 403;
3. a long-running agent keeps calling across `expiresAt`: refused (then 401) from then on, and the
   Secret, ServiceAccount, Role and RoleBinding are gone;
4. a pod created before its account is Ready waits for the Secret and starts once it exists;
5. the operator pod is deleted: its replacement takes the Lease and misses no expiry;
6. `helm uninstall --wait` leaves no operator pod and keeps the CRDs, as documented; 7. it removes the
   chart's ClusterAccountProvider (the sweep timer's finalizer once kept it Terminating forever).
The operator's startup time and memory, as the kubelet saw them, land in .local/node-figures.json.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from cluster.node import Node
from e2e.helm import Helm, gone, helm_binary, phase, wait_for
from e2e.node_support import (
    REPO,
    agent_pod,
    call,
    install_operator,
    logs,
    node,
    pod,
    pod_memory,
    pods,
    probe_successes,
    ready,
    unique,
)

pytestmark = pytest.mark.cluster
__all__ = ["node"]  # the session fixture, imported so that pytest finds it here

FIGURES = REPO / ".local" / "node-figures.json"
PSS_LABELS = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("warn", "audit")}


@dataclass
class Story:
    helm: Helm
    node: Node
    cluster: Any
    ops: str  # the release namespace
    agents: str  # where the AgentAccounts and agent pods live
    release: str
    provider: str
    install: Any  # helm's CompletedProcess
    figures: dict[str, float] = field(default_factory=dict)

    @property
    def selector(self) -> str:
        return f"app.kubernetes.io/instance={self.release}"

    def operator_pods(self) -> list[dict[str, Any]]:
        return pods(self.helm, self.ops, self.selector)

    def kubectl_ok(self, *args: str, input: str | None = None) -> str:
        proc = self.helm.kubectl(*args, input=input)
        assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
        return proc.stdout

    def account(self, name: str, lifetime: str, resources: str = "configmaps") -> None:
        body = {
            "apiVersion": "agentaccounts.dev/v1alpha1",
            "kind": "AgentAccount",
            "metadata": {"name": name, "namespace": self.agents},
            "spec": {
                "providerRef": {"kind": "ClusterAccountProvider", "name": self.provider},
                "lifetime": lifetime,
                "keepExpiredFor": "1h",
                "scopes": [{"permissions": ["get", "list"], "resources": [resources]}],
            },
        }
        self.kubectl_ok("apply", "-f", "-", input=json.dumps(body))

    def agent(self, name: str, secret: str, script: str, kind: str = "Pod") -> None:
        body = agent_pod(name, self.agents, self.node.images["agent"], secret, script, kind)
        self.kubectl_ok("apply", "-f", "-", input=body)

    def status(self, name: str) -> dict[str, Any]:
        got = self.kubectl_ok("get", "agentaccount", name, "-n", self.agents, "-o", "json")
        return dict(json.loads(got).get("status", {}))


def _namespace(helm: Helm, name: str, labels: dict[str, str]) -> str:
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}
    proc = helm.kubectl("apply", "-f", "-", input=json.dumps(body))
    assert proc.returncode == 0, proc.stderr
    return name


@pytest.fixture(scope="module")
def story(cluster: Any, node: Node) -> Iterator[Story]:
    helm = Helm(helm_binary(), cluster.kubeconfig)
    ops = _namespace(helm, unique("node-ops"), PSS_LABELS)
    agents = _namespace(helm, unique("node-agents"), {})
    release, provider = unique("op"), unique("node-provider")
    proc, _ = install_operator(helm, node, cluster, release, ops, provider)
    assert proc.returncode == 0, f"helm install --wait failed:\n{proc.stderr}"
    told = Story(helm, node, cluster, ops, agents, release, provider, proc)
    try:
        yield told
    finally:
        FIGURES.parent.mkdir(exist_ok=True)
        FIGURES.write_text(json.dumps(told.figures, indent=2) + "\n")
        helm.run("uninstall", release, "-n", ops)  # a no-op after step 6
        # Should the chart's provider outlive the operator with a finalizer (test_7 fails), lift it.
        helm.kubectl(
            "patch",
            "clusteraccountprovider",
            provider,
            "--type=merge",
            "-p",
            '{"metadata":{"finalizers":null}}',
        )
        for ns in (agents, ops):  # the operator is gone: lift its finalizers, as conftest's namespace does
            for name in helm.kubectl("get", "agentaccounts", "-n", ns, "-o", "name").stdout.split():
                helm.kubectl(
                    "patch", name, "-n", ns, "--type=merge", "-p", '{"metadata":{"finalizers":null}}'
                )
            helm.kubectl("delete", "namespace", ns, "--wait=false")


def _seconds(stamp: str) -> float:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def test_1_operator_pod_is_ready_leads_and_runs_restricted(story: Story) -> None:
    (operator,) = story.operator_pods()
    name = operator["metadata"]["name"]
    assert ready(operator) and operator["spec"]["nodeName"] == "agentaccounts-node"
    holder = story.kubectl_ok(
        "get",
        "lease",
        f"{story.release}-agentaccounts-leader",
        "-n",
        story.ops,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    )
    assert holder == name

    # The kubelet called both probes and got answers (Ready alone proves only readiness).
    for kind in ("Readiness", "Liveness"):
        wait_for(
            lambda k=kind: probe_successes(story.node, story.cluster, story.ops, name, k) > 0,  # type: ignore[misc]
            60,
            f"a successful {kind} probe of {name}",
        )

    # Restricted, as the kernel sees it: uid/gid 65532, no capabilities, no_new_privs, seccomp
    # filtering, and / mounted read-only (a write fails with EROFS, 30); /tmp is the writable emptyDir.
    script = (
        "import os\n"
        "print(os.getuid(), os.getgid())\n"
        "status = dict(l.split(':', 1) for l in open('/proc/self/status'))\n"
        "print(status['CapEff'].strip(), status['NoNewPrivs'].strip(), status['Seccomp'].strip())\n"
        "print([m.split()[3].split(',')[0] for m in open('/proc/mounts') if m.split()[1] == '/'])\n"
        "try:\n    open('/probe', 'w')\nexcept OSError as e:\n    print(e.errno)\n"
        "open('/tmp/probe', 'w').write('ok')\n"
    )
    seen = story.kubectl_ok("exec", name, "-n", story.ops, "--", "python", "-c", script).split("\n")
    assert seen[:4] == ["65532 65532", "0000000000000000 1 2", "['ro']", "30"], seen

    # Pod Security: the namespace warns and audits at `restricted`. The only findings are the two
    # that a loopback-only node forces (host network, and so host ports); everything else passes.
    # (helm logs the API server's warning quoted: \"restricted:latest\": ...")
    stderr = story.install.stderr.replace('\\"', '"')
    warning = re.search(r'would violate PodSecurity "restricted:latest": (.*?)"?$', stderr, re.M)
    assert warning, stderr
    rest = re.sub(
        r'host namespaces \(hostNetwork=true\)|hostPort \(container "?operator"? uses hostPorts [\d, ]+\)',
        "",
        warning.group(1),
    )
    assert "host namespaces (hostNetwork=true)" in warning.group(1)
    assert rest.replace(",", "").strip() == "", f"other restricted violations: {warning.group(1)}"

    created = _seconds(operator["metadata"]["creationTimestamp"])
    became_ready = next(c for c in operator["status"]["conditions"] if c["type"] == "Ready")
    story.figures["operator_pod_created_to_ready_s"] = _seconds(became_ready["lastTransitionTime"]) - created
    memory = pod_memory(story.node, story.cluster, story.ops, name)
    assert 0 < memory < 256 * 2**20, f"working set {memory} bytes (limit 256Mi)"
    story.figures["operator_pod_working_set_mib"] = round(memory / 2**20, 1)


def test_2_agent_job_mounts_the_secret_and_gets_exactly_its_scopes(story: Story) -> None:
    story.account("job-agent", lifetime="10m")
    wait_for(lambda: phase(story.helm, story.agents, "job-agent") == "Ready", 90, "job-agent Ready")
    script = (
        f'granted=$({call(f"get configmaps -n {story.agents}")}); echo "granted: $granted"\n'
        f'denied=$({call(f"get secrets -n {story.agents}")}); echo "denied: $denied"\n'
        '[ "$granted" = "200 OK" ] && [ "$denied" = "403 Forbidden" ]'
    )
    story.agent("job-agent-run", "job-agent-credentials", script, kind="Job")

    def finished() -> dict[str, Any] | None:
        found = pods(story.helm, story.agents, "agent=job-agent-run")
        return found[0] if found and found[0]["status"].get("phase") in ("Succeeded", "Failed") else None

    done = wait_for(finished, 120, "the agent Job's pod to finish")
    assert isinstance(done, dict)
    exit_code = done["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"]
    output = logs(story.helm, story.agents, done["metadata"]["name"])
    assert "granted: 200 OK" in output and "denied: 403 Forbidden" in output, output
    assert exit_code == 0, output
    complete = "jsonpath={.status.conditions[?(@.type=='Complete')].status}"
    wait_for(
        lambda: story.kubectl_ok("get", "job", "job-agent-run", "-n", story.agents, "-o", complete) == "True",
        60,
        "the Job's Complete condition",
    )


def test_3_a_running_agent_is_cut_off_at_expiry_and_everything_is_revoked(story: Story) -> None:
    story.account("short", lifetime="40s")
    wait_for(lambda: phase(story.helm, story.agents, "short") == "Ready", 90, "short Ready")
    expires = _seconds(story.status("short")["expiresAt"])
    # The agent's own pacing (one call every 2 s) is its behaviour, not the test's synchronisation.
    loop = (
        f'while true; do echo "$(date -u +%s) $({call(f"get configmaps -n {story.agents}")})"; sleep 2; done'
    )
    story.agent("caller", "short-credentials", loop)

    def calls() -> list[tuple[float, str]]:
        proc = story.helm.kubectl("logs", "caller", "-n", story.agents)
        out = proc.stdout if proc.returncode == 0 else ""
        return [
            (float(t), code) for t, _, code in (ln.partition(" ") for ln in out.splitlines()) if t.isdigit()
        ]

    wait_for(lambda: any(code == "200 OK" for _, code in calls()), 90, "the agent's first granted call")
    wait_for(lambda: phase(story.helm, story.agents, "short") == "Expired", 120, "short Expired")
    wait_for(lambda: any(code == "401 Unauthorized" for _, code in calls()), 60, "a 401 in the agent's log")
    seen = calls()
    granted = [t for t, code in seen if code == "200 OK"]
    refused = [(t, code) for t, code in seen if code != "200 OK"]
    assert granted and refused, seen
    # Second-resolution timestamps and a 2 s pace: allow 3 s either side of expiresAt.
    assert max(granted) <= expires + 3, f"a call succeeded {max(granted) - expires:.0f}s after expiresAt"
    assert min(t for t, _ in refused) >= expires - 3, "refused before its time"
    assert all(t < min(t for t, _ in refused) for t in granted), "granted again after a refusal"
    assert {code for _, code in refused} <= {"403 Forbidden", "401 Unauthorized"}, refused
    story.figures["agent_first_refusal_after_expiry_s"] = min(t for t, _ in refused) - expires
    for kind, obj in (
        ("secret", "short-credentials"),
        ("serviceaccount", "agentaccount-short"),
        ("role", "agentaccount-short"),
        ("rolebinding", "agentaccount-short"),
    ):
        assert gone(story.helm, story.agents, kind, obj), f"{kind}/{obj} survived expiry"
    story.kubectl_ok("delete", "pod", "caller", "-n", story.agents, "--wait=false")


def test_4_a_pod_waits_for_its_secret_and_starts_once_the_account_is_ready(story: Story) -> None:
    story.agent("early", "late-credentials", f'echo "call: $({call(f"get configmaps -n {story.agents}")})"')

    def mount_failed() -> bool:
        events = story.kubectl_ok(
            "get",
            "events",
            "-n",
            story.agents,
            "-o",
            "json",
            "--field-selector",
            "involvedObject.name=early,reason=FailedMount",
        )
        return any('secret "late-credentials" not found' in e["message"] for e in json.loads(events)["items"])

    wait_for(mount_failed, 90, "the kubelet's FailedMount for the missing Secret")
    assert pod(story.helm, story.agents, "early")["status"]["phase"] == "Pending"
    story.account("late", lifetime="10m")
    wait_for(lambda: phase(story.helm, story.agents, "late") == "Ready", 90, "late Ready")
    wait_for(
        lambda: pod(story.helm, story.agents, "early")["status"]["phase"] == "Succeeded",
        180,
        "the waiting pod to run once its Secret exists",
    )
    assert logs(story.helm, story.agents, "early").strip() == "call: 200 OK"


def test_5_a_replacement_operator_pod_takes_over_and_misses_no_expiry(story: Story) -> None:
    (old,) = story.operator_pods()
    story.account("across", lifetime="30s")
    wait_for(lambda: phase(story.helm, story.agents, "across") == "Ready", 90, "across Ready")
    expires = _seconds(story.status("across")["expiresAt"])
    story.kubectl_ok("delete", "pod", old["metadata"]["name"], "-n", story.ops, "--wait=false")
    started = time.monotonic()

    def successor() -> str:
        fresh = [p for p in story.operator_pods() if p["metadata"]["uid"] != old["metadata"]["uid"]]
        return fresh[0]["metadata"]["name"] if fresh and ready(fresh[0]) else ""

    new = wait_for(successor, 180, "a new operator pod to become Ready")
    story.figures["operator_replacement_ready_s"] = round(time.monotonic() - started, 1)
    lease = f"{story.release}-agentaccounts-leader"
    wait_for(
        lambda: (
            story.kubectl_ok("get", "lease", lease, "-n", story.ops, "-o", "jsonpath={.spec.holderIdentity}")
            == new
        ),
        120,
        "the new pod to hold the Lease",
    )
    wait_for(lambda: phase(story.helm, story.agents, "across") == "Expired", 120, "across Expired")
    revoked_at = time.time()
    assert gone(story.helm, story.agents, "secret", "across-credentials")
    assert gone(story.helm, story.agents, "serviceaccount", "agentaccount-across")
    story.figures["expiry_revoked_after_takeover_lag_s"] = round(max(0.0, revoked_at - expires), 1)


def test_6_helm_uninstall_leaves_no_operator_pod_and_keeps_the_crds(story: Story) -> None:
    # --wait: it used to wait forever for the chart's provider (test_7).
    proc = story.helm.run("uninstall", story.release, "-n", story.ops, "--wait", timeout=180)
    assert proc.returncode == 0, proc.stderr
    wait_for(lambda: not story.operator_pods(), 120, "the operator pods to be gone")
    for crd in ("agentaccounts", "accountproviders", "clusteraccountproviders"):
        assert story.kubectl_ok("get", "crd", f"{crd}.agentaccounts.dev", "-o", "name").strip()
    # Kept CRDs keep their AgentAccounts (README): the expired one is still there to read.
    assert phase(story.helm, story.agents, "short") == "Expired"


def test_7_helm_uninstall_removes_the_chart_provider(story: Story) -> None:
    wait_for(
        lambda: gone(story.helm, "", "clusteraccountprovider", story.provider),
        20,  # a working uninstall deletes it within seconds
        "the chart's ClusterAccountProvider to be deleted",
    )
