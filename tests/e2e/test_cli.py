"""The command line as a user runs it: `agentaccounts demo` and `agentaccounts request`.

The agent-facing commands (every output, every exit code, revoke, the kubectl plugin) are in
test_agent_cli.py; the MCP server in test_mcp.py."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from integration.support import OperatorProcess


def _cli(cluster: Any, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentaccounts", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)},
    )


def test_demo_walks_through_a_whole_life_and_says_so(cluster: Any) -> None:
    result = _cli(cluster, "demo")
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "(granted) -> HTTP 200 (allowed)" in out
    assert "(not granted) -> HTTP 403 (forbidden)" in out
    assert "(other namespace) -> HTTP 403 (forbidden)" in out
    assert "HTTP 401 (rejected: token no longer valid)" in out
    assert out.count(": 0 left") == 4
    assert "Normal  Issued" in out and "Normal  Expired" in out
    assert "token:" not in out.lower() and "ey" + "J" not in out  # no token (JWTs start with eyJ)
    # At the default log level kopf's per-handler chatter is DEBUG; our own lines say what happened.
    logs = result.stderr
    assert " INFO kopf" not in logs and "succeeded" not in logs, logs
    assert "INFO agentaccounts.reconcile: Issued" in logs, logs


def test_request_waits_for_ready_and_prints_the_secret_name(
    cluster: Any, namespace: str, in_cluster_provider: str, start_operator: Callable[..., OperatorProcess]
) -> None:
    start_operator(namespace)
    result = _cli(
        cluster, "request", "--name", "helper", "-n", namespace, "--provider", in_cluster_provider,
        "--kind", "ClusterAccountProvider", "--scope", "get,list:configmaps", "--lifetime", "5m",
        "--timeout", "30s",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "helper-credentials"  # --output secret, the default: no credential
    assert f"agentaccount {namespace}/helper: created" in result.stderr


def test_request_with_a_malformed_scope_fails_clearly(cluster: Any, namespace: str) -> None:
    result = _cli(cluster, "request", "--provider", "p", "-n", namespace, "--scope", "configmaps")
    assert result.returncode == 2
    assert result.stderr.startswith("error: scope 'configmaps': use PERMISSIONS:RESOURCES[:NAMES]")


def test_help_shows_examples_and_the_exit_codes() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agentaccounts", "request", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    assert 'eval "$(agentaccounts request' in result.stdout
    for code in range(9):
        assert f"\n  {code}  " in result.stdout
