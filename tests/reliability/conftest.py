"""Fixtures of the fault-injection suites: the operators a test starts (and kills), a seeded random
source, and the figures each test reports (printed at the end of the session; with `--large` they are
what tests/reliability/RESULTS.md records).

The shared fixtures (`cluster`, `namespace`, `api`, `in_cluster_provider`, `large`) are in
tests/conftest.py; this file only adds what the reliability suites need on top.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reliability.faults_support import Operators

_FIGURES = pytest.StashKey[dict[str, dict[str, Any]]]()


@pytest.fixture
def operators(cluster: Any, request: pytest.FixtureRequest) -> Iterator[Operators]:
    """Start operators with `operators.start(ns, env=..., kubeconfig=...)`; every one is stopped at
    the end, its log printed if the test failed (and every log copied into the directory
    AGENTACCOUNTS_KEEP_OPERATOR_LOGS names, if set), and a killed operator's webhook registrations
    (pointing at a port nobody serves, failurePolicy Fail) are removed for the tests that follow."""
    ops = Operators(cluster.kubeconfig)
    yield ops
    failed = getattr(request.node, "rep_call", None)
    keep = os.environ.get("AGENTACCOUNTS_KEEP_OPERATOR_LOGS")  # a directory: every log is copied there
    for n, proc in enumerate(ops.all):
        proc.stop()
        if failed is not None and failed.failed and n >= len(ops.all) - 2:
            print(f"--- operator #{n} log {proc.log} ---\n{proc.output()[-8000:]}")
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(proc.log, Path(keep) / f"{request.node.name}-operator-{n}.log")
        proc.log.unlink(missing_ok=True)
    if ops.all:
        for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
            cluster.kubectl("delete", kind, "agentaccounts.dev", "--ignore-not-found", check=False)


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    """Random moments, reproducible: AGENTACCOUNTS_FAULT_SEED=<n> replays a run (the seed is printed)."""
    seed = int(os.environ.get("AGENTACCOUNTS_FAULT_SEED") or random.randrange(1 << 30))
    print(f"[{request.node.name}] fault seed {seed} (AGENTACCOUNTS_FAULT_SEED={seed} replays it)")
    return random.Random(seed)


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> dict[str, Any]:
    """What this test measured (accounts, kills, faults, orphans, duplicates, lags, leak hits)."""
    table = request.config.stash.setdefault(_FIGURES, {})
    return table.setdefault(request.node.name, {})


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    table = config.stash.get(_FIGURES, {})
    if not table:
        return
    terminalreporter.section("reliability figures")
    for test, values in table.items():
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in values.items())
        terminalreporter.write_line(f"{test}: {shown}")


def _fmt(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)
