"""The chart's RBAC is exactly what its README documents, is enough for the whole job, and no more.

- `kubectl auth can-i --list` as the installed ServiceAccount, in each kind of namespace, equals the
  table between the rbac-rules markers in charts/agentaccounts/README.md (minus what every
  authenticated subject may do anyway), in cluster-wide and namespaced mode.
- The operator, run out of process with a token of that ServiceAccount and nothing else, issues an
  identity, expires it, deletes the expired AgentAccount and revokes a deleted one, with no 403.
- The same credentials are refused what the table does not list.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from e2e.helm import (
    CHART,
    Helm,
    Operator,
    apply_account,
    assert_no_permission_errors,
    gone,
    helm_binary,
    install,
    phase,
    service_account_kubeconfig,
    wait_for,
    webhooks_registered,
)

pytestmark = pytest.mark.cluster

Triple = tuple[str, str, str]  # (resource as kubectl prints it, resource name or "", verb)
ROW = re.compile(r"^(\S*)\s+\[(.*?)\]\s+\[(.*?)\]\s+\[(.*?)\]\s*$")


@dataclass(frozen=True)
class Rule:
    where: str  # cluster | watched | release | grantable
    group: str
    resources: tuple[str, ...]
    names: tuple[str, ...]
    verbs: tuple[str, ...]


def documented_rules(readme: Path = CHART / "README.md") -> list[Rule]:
    text = readme.read_text()
    table = text.split("<!-- rbac-rules:begin -->")[1].split("<!-- rbac-rules:end -->")[0]
    rules = []
    for line in table.strip().splitlines()[2:]:  # skip the header and the |---| line
        where, group, resources, names, verbs, _why = (cell.strip() for cell in line.strip("|").split("|"))

        def items(cell: str) -> tuple[str, ...]:
            return tuple(x.strip() for x in cell.split(",") if x.strip())

        rules.append(
            Rule(where, "" if group == "core" else group, items(resources), items(names), items(verbs))
        )
    return rules


def as_kubectl_prints(resource: str, group: str) -> str:
    """("agentaccounts/status", "agentaccounts.dev") -> "agentaccounts.agentaccounts.dev/status"."""
    base, _, sub = resource.partition("/")
    name = f"{base}.{group}" if group else base
    return f"{name}/{sub}" if sub else name


def expected(rules: list[Rule], wheres: set[str], lease: str) -> set[Triple]:
    out = set()
    for rule in rules:
        if rule.where not in wheres:
            continue
        for resource in rule.resources:
            for name in rule.names or ("",):
                for verb in rule.verbs:
                    out.add(
                        (as_kubectl_prints(resource, rule.group), name.replace("{leaseName}", lease), verb)
                    )
    return out


def can_i(helm: Helm, subject: str, namespace: str) -> set[Triple]:
    proc = helm.kubectl("auth", "can-i", "--list", "-n", namespace, f"--as={subject}")
    assert proc.returncode == 0, proc.stderr
    out = set()
    for line in proc.stdout.splitlines()[1:]:
        match = ROW.match(line)
        assert match, f"unparsable can-i line: {line!r}"
        resource, urls, names, verbs = match.groups()
        if urls:  # non-resource URLs (/healthz, /version, ...): granted to everyone by default roles
            continue
        for name in names.split() or [""]:
            out |= {(resource, name, verb) for verb in verbs.split()}
    return out


def granted(helm: Helm, release_ns: str, account: str, namespace: str) -> set[Triple]:
    """What the ServiceAccount may do in `namespace`, beyond what any ServiceAccount may."""
    nobody = can_i(helm, f"system:serviceaccount:{release_ns}:nobody-{uuid.uuid4().hex[:6]}", namespace)
    return can_i(helm, f"system:serviceaccount:{release_ns}:{account}", namespace) - nobody


@pytest.fixture(scope="module")
def helm(cluster: Any) -> Helm:
    return Helm(helm_binary(), cluster.kubeconfig)


@pytest.fixture
def other_namespaces(helm: Helm) -> Iterator[list[str]]:
    names = [f"rbac-{kind}-{uuid.uuid4().hex[:6]}" for kind in ("watched", "other")]
    for name in names:
        assert helm.kubectl("create", "namespace", name).returncode == 0
    yield names
    for name in names:
        helm.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture
def release(helm: Helm, namespace: str) -> Iterator[str]:
    """A unique release name in `namespace`, uninstalled afterwards."""
    name = f"rb-{uuid.uuid4().hex[:6]}"
    yield name
    helm.run("uninstall", name, "-n", namespace)


def test_the_documented_table_parses_and_matches_the_default_grantable_values() -> None:
    import yaml

    rules = documented_rules()
    assert {r.where for r in rules} == {"cluster", "cluster-namespaced", "watched", "release", "grantable"}
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())["rbac"]["grantable"]
    documented = [{"apiGroups": [r.group], "resources": list(r.resources), "verbs": list(r.verbs)}
                  for r in rules if r.where == "grantable"]  # fmt: skip
    assert documented == defaults
    assert not [r for r in rules if {"escalate", "bind", "impersonate", "*"} & set(r.verbs)]


def test_cluster_wide_permissions_are_the_documented_ones(
    helm: Helm, namespace: str, release: str, other_namespaces: list[str]
) -> None:
    install(helm, release, namespace)
    account, lease, rules = f"{release}-agentaccounts", f"{release}-agentaccounts-leader", documented_rules()
    everywhere = {"cluster", "watched", "grantable"}
    assert granted(helm, namespace, account, namespace) == expected(rules, everywhere | {"release"}, lease)
    assert granted(helm, namespace, account, other_namespaces[1]) == expected(rules, everywhere, lease)
    subject = f"--as=system:serviceaccount:{namespace}:{account}"
    for args in (
        ("list", "namespaces"),
        ("create", "clusterroles"),
        ("escalate", "roles"),
        ("bind", "roles"),
        ("patch", "validatingwebhookconfigurations/someone-elses"),
        ("delete", "mutatingwebhookconfigurations/agentaccounts.dev"),
    ):
        assert helm.kubectl("auth", "can-i", *args, subject).stdout.strip() == "no", args


def test_namespaced_permissions_are_the_documented_ones_and_nothing_else(
    helm: Helm, namespace: str, release: str, other_namespaces: list[str]
) -> None:
    watched, other = other_namespaces
    install(helm, release, namespace, "--set", f"watchNamespaces={{{watched}}}")
    account, lease, rules = f"{release}-agentaccounts", f"{release}-agentaccounts-leader", documented_rules()
    cluster = {"cluster", "cluster-namespaced"}
    assert granted(helm, namespace, account, watched) == expected(
        rules, cluster | {"watched", "grantable"}, lease
    )
    assert granted(helm, namespace, account, namespace) == expected(rules, cluster | {"release"}, lease)
    assert granted(helm, namespace, account, other) == expected(rules, cluster, lease)
    subject = f"--as=system:serviceaccount:{namespace}:{account}"
    for args in (
        ("get", "secrets", "-n", other),
        ("get", "secrets/another-secret", "-n", namespace),
        ("list", "secrets", "-n", namespace),
        ("patch", "validatingwebhookconfigurations/someone-elses"),
        ("create", "clusterroles"),
        ("create", "clusterrolebindings"),
        ("escalate", "roles", "-n", watched),
        ("bind", "roles", "-n", watched),
        ("delete", "namespaces"),
        ("create", "pods/exec", "-n", watched),
    ):
        assert helm.kubectl("auth", "can-i", *args, subject).stdout.strip() == "no", args


def test_operator_does_its_whole_job_with_only_the_namespaced_chart_rbac(
    helm: Helm, cluster: Any, namespace: str, release: str, other_namespaces: list[str], tmp_path: Path
) -> None:
    watched, other = other_namespaces
    provider = f"{release}-in-cluster"
    values = [f"watchNamespaces={{{watched}}}", "providers.inCluster.enabled=true",
              f"providers.inCluster.name={provider}"]  # fmt: skip
    install(helm, release, namespace, *(arg for value in values for arg in ("--set", value)))
    operator, as_operator = start_operator(
        helm, cluster, namespace, release, tmp_path, "--namespace", watched
    )
    try:
        # Issue, then expire: everything is deleted, and with keepExpiredFor 0s the AgentAccount too.
        apply_account(helm, watched, "short", provider, lifetime="20s", keep="0s")
        wait_for(lambda: phase(helm, watched, "short") == "Ready", 60, "AgentAccount short to be Ready")
        check_credentials(helm, watched, "short", tmp_path)
        wait_for(
            lambda: gone(helm, watched, "agentaccount", "short"), 90, "the expired AgentAccount's deletion"
        )
        assert_revoked(helm, watched, "short")

        # Delete a Ready AgentAccount: the finalizer revokes everything first.
        issue_and_delete(helm, watched, "deleted", provider)

        # The same credentials are refused what the chart does not grant.
        assert "forbidden" in as_operator.kubectl("get", "secrets", "-n", other).stderr.lower()
        refused = as_operator.kubectl("create", "clusterrole", "x", "--verb=get", "--resource=pods")
        assert "forbidden" in refused.stderr.lower(), refused.stderr
        escalation = as_operator.kubectl(
            "create", "role", "x", "--verb=delete", "--resource=pods", "-n", watched
        )
        assert "attempting to grant RBAC permissions not currently held" in escalation.stderr, (
            escalation.stderr
        )
    finally:
        operator.stop()
    assert_no_permission_errors(operator)


def test_operator_works_with_only_the_cluster_wide_chart_rbac(
    helm: Helm, cluster: Any, namespace: str, release: str, other_namespaces: list[str], tmp_path: Path
) -> None:
    provider = f"{release}-in-cluster"
    install(helm, release, namespace, "--set", "providers.inCluster.enabled=true",
            "--set", f"providers.inCluster.name={provider}")  # fmt: skip
    operator, _ = start_operator(helm, cluster, namespace, release, tmp_path, "--all-namespaces")
    try:
        issue_and_delete(helm, other_namespaces[1], "anywhere", provider)
    finally:
        operator.stop()
    assert_no_permission_errors(operator)


def start_operator(
    helm: Helm, cluster: Any, namespace: str, release: str, tmp_path: Path, *scope: str
) -> tuple[Operator, Helm]:
    """`agentaccounts run` with a token of the release's ServiceAccount; returns it and a kubectl as it."""
    account, lease = f"{release}-agentaccounts", f"{release}-agentaccounts-leader"
    kubeconfig = service_account_kubeconfig(
        helm, namespace, account, cluster.server, cluster.ca_file, tmp_path / "operator.kubeconfig"
    )
    operator = Operator(kubeconfig, tmp_path / "operator.log", *scope, "--leader-elect",
                        f"--leader-election-namespace={namespace}", f"--leader-election-name={lease}",
                        identity="chart-operator-0", namespace=namespace)  # fmt: skip
    try:
        wait_for(operator.healthy, 60, "the operator's /healthz")
        holder = helm.kubectl("get", "lease", lease, "-n", namespace, "-o", "jsonpath={.spec.holderIdentity}")
        assert holder.stdout == "chart-operator-0", holder.stderr
        # An AgentAccount admitted before the webhooks point here gets no requester stamp, and is
        # never issued.
        wait_for(lambda: webhooks_registered(helm, operator.webhook_port), 60, "the admission webhooks")
    except BaseException:
        operator.stop()
        raise
    return operator, Helm(helm.binary, kubeconfig)


def check_credentials(helm: Helm, namespace: str, name: str, tmp_path: Path) -> None:
    """The Secret has the documented keys, and its kubeconfig works for exactly the scopes."""
    got = helm.kubectl("get", "secret", f"{name}-credentials", "-n", namespace, "-o", "json")
    secret = json.loads(got.stdout)
    assert secret["type"] == "Opaque"
    assert set(secret["data"]) == {"kubeconfig", "token", "ca.crt", "server", "namespace", "expires-at"}
    config = tmp_path / f"{name}.kubeconfig"
    config.write_bytes(base64.b64decode(secret["data"]["kubeconfig"]))
    agent = Helm(helm.binary, config)
    assert agent.kubectl("get", "configmaps", "-n", namespace).returncode == 0
    assert "forbidden" in agent.kubectl("get", "secrets", "-n", namespace).stderr.lower()


def issue_and_delete(helm: Helm, namespace: str, name: str, provider: str) -> None:
    apply_account(helm, namespace, name, provider, lifetime="1h", keep="1h")
    wait_for(lambda: phase(helm, namespace, name) == "Ready", 60, f"AgentAccount {name} to be Ready")
    deleted = helm.kubectl("delete", "agentaccount", name, "-n", namespace, "--timeout=60s")
    assert deleted.returncode == 0, deleted.stderr
    assert_revoked(helm, namespace, name)


def assert_revoked(helm: Helm, namespace: str, name: str) -> None:
    objects = [(kind, f"agentaccount-{name}") for kind in ("serviceaccount", "role", "rolebinding")]
    for kind, object_name in [*objects, ("secret", f"{name}-credentials")]:
        assert gone(helm, namespace, kind, object_name), f"{kind}/{object_name} survived revocation"
