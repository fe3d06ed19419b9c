"""Agents asking for their own accounts from a shell: `agentaccounts request ... --output env|json`,
`status`, `extend`, `revoke`, `kubectl agentaccounts list`, and every error's exit code.

The callers are real identities: ServiceAccounts with exactly the RBAC a test gives them, talking to
the API server with their own token (a kubeconfig written here), so the operator's admission webhook
stamps and judges them as it would a person running the CLI.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from kubernetes import client

from integration.support import (
    GROUP,
    VERSION,
    agent_api,
    custom,
    get_account,
    phase,
    status_of,
    wait_for,
)

RBAC = "rbac.authorization.k8s.io"
VENV_BIN = Path(sys.executable).parent


def agentaccounts(
    kubeconfig: Path | str, *args: str, timeout: float = 90, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentaccounts", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "KUBECONFIG": str(kubeconfig), **(env or {})},
    )


def account_provider(api: client.ApiClient, namespace: str, name: str, **policy: Any) -> str:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AccountProvider",
        "metadata": {"name": name},
        "spec": {"kubernetes": {}, "policy": {"maxLifetime": "24h", **policy}},
    }
    custom(api).create_namespaced_custom_object(GROUP, VERSION, namespace, "accountproviders", body)
    return name


def identity(
    cluster: Any, api: client.ApiClient, namespace: str, rules: list[dict[str, Any]], directory: Path
) -> tuple[str, Path]:
    """A ServiceAccount holding exactly `rules` in `namespace`, and a kubeconfig that authenticates as
    it (context namespace `namespace`). Everything lives in the test's namespace and goes with it."""
    name = f"caller-{uuid.uuid4().hex[:6]}"
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
    if rules:
        rbac.create_namespaced_role(namespace, {"metadata": {"name": name}, "rules": rules})
        rbac.create_namespaced_role_binding(
            namespace,
            {
                "metadata": {"name": name},
                "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
            },
        )
    token = cluster.kubectl("create", "token", name, "-n", namespace, "--duration=1h").stdout.strip()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "caller",
        "clusters": [
            {
                "name": "local",
                "cluster": {"server": cluster.server, "certificate-authority": str(cluster.ca_file)},
            }
        ],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [
            {"name": "caller", "context": {"cluster": "local", "user": name, "namespace": namespace}}
        ],
    }
    path = directory / f"{name}.kubeconfig"
    path.write_text(json.dumps(config))
    return f"system:serviceaccount:{namespace}:{name}", path


def requester_rules(provider: str, *extra: dict[str, Any]) -> list[dict[str, Any]]:
    """What a person asking for accounts holds: AgentAccounts, `use` on the provider, and reading the
    credentials Secret (which is how the CLI hands them over)."""
    return [
        {"apiGroups": [GROUP], "resources": ["agentaccounts"], "verbs": ["create", "get", "list", "patch"]},
        {"apiGroups": [GROUP], "resources": ["accountproviders"], "verbs": ["get"]},
        {
            "apiGroups": [GROUP],
            "resources": ["accountproviders"],
            "verbs": ["use"],
            "resourceNames": [provider],
        },
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
        *extra,
    ]


READ_CONFIGMAPS = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}


def one_error_line(result: subprocess.CompletedProcess[str], progress: bool = False) -> str:
    """The one `error: ...` line; with nothing else on stderr unless progress was printed first."""
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.stderr and not result.stdout, result.stderr
    assert progress or lines == errors, result.stderr
    return errors[0]


def test_request_env_eval_gives_a_shell_exactly_the_granted_access(
    cluster: Any, api: client.ApiClient, namespace: str, start_operator: Any, tmp_path: Path
) -> None:
    start_operator(namespace)
    provider = account_provider(api, namespace, "local")
    _, kubeconfig = identity(cluster, api, namespace, requester_rules(provider, READ_CONFIGMAPS), tmp_path)
    script = (
        'eval "$(agentaccounts request --provider local --scope get,list:configmaps --lifetime 10m '
        '--output env)"\n'
        'echo "path=$KUBECONFIG"\n'
        "kubectl get configmaps -o name\n"
        "kubectl get secrets 2>&1 && exit 9\n"
        "exit 0\n"
    )
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=90)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "configmap/kube-root-ca.crt" in result.stdout  # granted: get, list configmaps
    assert "Forbidden" in result.stdout and 'cannot list resource "secrets"' in result.stdout  # not granted
    path = Path(result.stdout.split("path=", 1)[1].splitlines()[0])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    [account] = custom(api).list_namespaced_custom_object(GROUP, VERSION, namespace, "agentaccounts")["items"]
    assert account["metadata"]["name"].startswith("agent-")  # generated
    token = (
        client.CoreV1Api(api).read_namespaced_secret(account["status"]["secretName"], namespace).data["token"]
    )
    assert "Ready: expires at" in result.stderr
    assert (
        token not in result.stdout + result.stderr and "eyJ" not in result.stderr
    )  # no credential on stderr
    path.unlink()
    path.parent.rmdir()


def test_json_status_extend_revoke_and_the_kubectl_plugin(
    cluster: Any, api: client.ApiClient, namespace: str, in_cluster_provider: str, start_operator: Any
) -> None:
    start_operator(namespace)
    admin = cluster.kubeconfig
    created = agentaccounts(
        admin, "request", "--provider", in_cluster_provider, "--scope", "get,list:configmaps",
        "--lifetime", "30m", "--name", "probe", "-n", namespace, "--output", "json",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    answer = json.loads(created.stdout)
    status = (get_account(api, namespace, "probe") or {})["status"]
    assert answer["expiresAt"] == status["expiresAt"] and answer["phase"] == "Ready"
    assert answer["provider"] == {
        "kind": "ClusterAccountProvider",
        "name": "in-cluster",
        "type": "kubernetes",
    }
    assert answer["scopes"] == ["get,list:configmaps"] and answer["secretName"] == "probe-credentials"
    agent = client.CoreV1Api(agent_api(answer["credentials"]["data"]["kubeconfig"]))
    assert status_of(lambda: agent.list_namespaced_config_map(namespace)) == 200
    assert status_of(lambda: agent.list_namespaced_secret(namespace)) == 403

    shown = agentaccounts(admin, "status", "probe", "-n", namespace)
    assert shown.returncode == 0, shown.stderr
    for line in (
        "Phase:     Ready (Issued)",
        "Scope:     get,list:configmaps",
        f"Identity:  ServiceAccount {namespace}/agentaccount-probe (id ",
    ):
        assert line in shown.stdout, shown.stdout
    assert "token" not in shown.stdout.lower()

    extended = agentaccounts(admin, "extend", "probe", "--lifetime", "2h", "-n", namespace)
    assert extended.returncode == 0, extended.stderr
    issued = datetime.fromisoformat(status["issuedAt"])
    assert datetime.fromisoformat(extended.stdout.strip()) == issued + timedelta(hours=2)

    revoked = agentaccounts(admin, "revoke", "probe", "-n", namespace)
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked at" in revoked.stderr and "audit record" in revoked.stderr
    # access ends at once (403: the RoleBinding is gone), and within 10 s the token itself (401)
    wait_for(
        lambda: status_of(lambda: agent.list_namespaced_config_map(namespace)) in (401, 403), 10, "no access"
    )
    assert phase(api, namespace, "probe") == "Expired"  # the record stays

    plugin = subprocess.run(
        ["kubectl", "agentaccounts", "list", "-n", namespace], capture_output=True, text=True, timeout=60,
        env={**os.environ, "KUBECONFIG": str(admin), "PATH": f"{VENV_BIN}:{os.environ['PATH']}"},
    )  # fmt: skip
    assert plugin.returncode == 0, plugin.stderr
    header, row = plugin.stdout.splitlines()
    assert header.split() == ["NAME", "PHASE", "PROVIDER", "EXPIRES", "REQUESTER"]
    assert row.split()[:3] == ["probe", "Expired", "in-cluster"]


def test_anyone_who_may_update_an_account_may_end_it_but_not_extend_it(
    cluster: Any, api: client.ApiClient, namespace: str, start_operator: Any, tmp_path: Path
) -> None:
    # A janitor may patch AgentAccounts but holds neither the account's permissions nor `use`; the
    # provider requires approval, which revoking must keep (or the account would wait for a new one).
    start_operator(namespace)
    provider = account_provider(api, namespace, "gated", requireApproval=True)
    rules = [{"apiGroups": [GROUP], "resources": ["agentaccounts"], "verbs": ["get", "list", "patch"]}]
    janitor, kubeconfig = identity(cluster, api, namespace, rules, tmp_path)
    admin = cluster.kubeconfig
    created = agentaccounts(
        admin, "request", "--provider", provider, "--scope", "get:configmaps", "--lifetime", "30m",
        "--name", "owned", "-n", namespace, "--no-wait",
    )  # fmt: skip
    assert created.returncode == 0 and created.stdout.strip() == "owned-credentials", created.stderr
    approved = agentaccounts(admin, "approve", "owned", "-n", namespace)
    assert approved.returncode == 0, approved.stderr
    wait_for(lambda: phase(api, namespace, "owned") == "Ready", 20, "Ready once approved")
    before = (get_account(api, namespace, "owned") or {})["status"]

    longer = agentaccounts(kubeconfig, "extend", "owned", "--lifetime", "1h")
    assert longer.returncode == 4, longer.stderr
    assert f"rule provider-use: {janitor} may not use" in one_error_line(longer)

    ended = agentaccounts(kubeconfig, "revoke", "owned")
    assert ended.returncode == 0, ended.stderr
    account = get_account(api, namespace, "owned") or {}
    assert account["status"]["phase"] == "Expired"
    assert account["status"]["requester"] == before["requester"]  # the one it was issued on
    assert account["status"]["approval"] == before["approval"]
    payload = json.loads(account["metadata"]["annotations"]["agentaccounts.dev/requester"])
    assert payload["shortenedBy"]["username"] == janitor
    shown = agentaccounts(admin, "status", "owned", "-n", namespace)
    assert f"Shortened: by {janitor} at " in shown.stdout, shown.stdout


def test_every_error_has_its_exit_code_and_one_line(
    cluster: Any, api: client.ApiClient, namespace: str, in_cluster_provider: str, start_operator: Any,
    tmp_path: Path,
) -> None:  # fmt: skip
    start_operator(namespace)
    admin = cluster.kubeconfig
    ns, scope = ("-n", namespace), ("--scope", "get,list:configmaps", "-n", namespace)
    unreachable = tmp_path / "unreachable.kubeconfig"
    unreachable.write_text(Path(admin).read_text().replace(cluster.server, "https://127.0.0.1:9"))
    _, nobody = identity(cluster, api, namespace, [], tmp_path)
    local = account_provider(api, namespace, "local")
    _, limited = identity(cluster, api, namespace, requester_rules(local), tmp_path)  # no configmaps
    gated = account_provider(api, namespace, "gated", requireApproval=True)
    ask = ("request", "--provider")
    cases: dict[str, tuple[int, str, Path | str, tuple[str, ...]]] = {
        # what: (exit code, in the error line, kubeconfig, arguments)
        "usage": (2, "use PERMISSIONS:RESOURCES", admin, (*ask, "x", "--scope", "configmaps")),
        "no kubeconfig": (3, "no cluster credentials", tmp_path / "absent.kubeconfig", ("list",)),
        "unreachable": (3, "cannot reach the API server", unreachable, ("list", *ns)),
        "rbac": (4, "refused by RBAC", nobody, (*ask, in_cluster_provider, *scope)),
        "policy": (4, "admission: NotPermitted: rule delegation: ", limited, (*ask, local, *scope)),
        "unknown provider": (5, "no AccountProvider or ClusterAccountProvider", admin, (*ask, "no", *scope)),
        "failed": (6, "Failed: UnknownResource", admin, (*ask, "in-cluster", "--scope", "get:x.io", *ns)),
        "timeout": (7, "AwaitingApproval", admin, (*ask, gated, *scope, "--timeout", "2s")),
        "no such account": (8, "no AgentAccount 'nothing-here'", admin, ("status", "nothing-here", *ns)),
    }  # fmt: skip
    with ThreadPoolExecutor(max_workers=3) as pool:  # independent calls: at once, to keep the test short
        runs = pool.map(lambda case: agentaccounts(case[2], *case[3]), cases.values())
        results = dict(zip(cases, runs, strict=True))
    for what, (code, says, _, _) in cases.items():
        result = results[what]
        assert result.returncode == code, (what, result.stderr)
        assert says in one_error_line(result, progress=what in ("failed", "timeout")), (what, result.stderr)
    # Nothing was left behind by the refusals; the unknown provider's account was never created.
    phases = [
        (a.get("status") or {}).get("phase")
        for a in custom(api).list_namespaced_custom_object(GROUP, VERSION, namespace, "agentaccounts")[
            "items"
        ]
    ]
    assert sorted(phases, key=str) == ["Failed", "Pending"], phases
