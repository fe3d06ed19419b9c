"""Integration fixtures: an admin API client, the `in-cluster` provider, and an operator per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from integration.support import GROUP, VERSION, OperatorProcess


@pytest.fixture
def api(cluster: Any) -> Iterator[client.ApiClient]:
    api = cluster.api_client()
    yield api
    api.close()


@pytest.fixture(scope="session")
def in_cluster_provider(cluster: Any) -> str:
    api = cluster.api_client()
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ClusterAccountProvider",
        "metadata": {"name": "in-cluster"},
        "spec": {"kubernetes": {}, "maxLifetime": "24h"},
    }
    try:
        client.CustomObjectsApi(api).create_cluster_custom_object(
            GROUP, VERSION, "clusteraccountproviders", body
        )
    except client.ApiException as exc:
        if exc.status != 409:
            raise
    api.close()
    return "in-cluster"


@pytest.fixture
def start_operator(cluster: Any, request: pytest.FixtureRequest) -> Iterator[Callable[..., OperatorProcess]]:
    started: list[OperatorProcess] = []

    def start(*namespaces: str, env: dict[str, str] | None = None) -> OperatorProcess:
        proc = OperatorProcess(cluster.kubeconfig, list(namespaces), env)
        started.append(proc)
        return proc

    yield start
    failed = getattr(request.node, "rep_call", None)
    for proc in started:
        proc.stop()
        if failed is not None and failed.failed:
            print(f"--- operator log {proc.log} ---\n{proc.output()[-5000:]}")
        proc.log.unlink(missing_ok=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)
