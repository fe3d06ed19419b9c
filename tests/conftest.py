"""Shared fixtures: the real control plane (one per test session) and a fresh namespace per test.

The control plane starts only when a test asks for `cluster`, so `pytest tests/unit` needs no binaries.
Its processes die with the session — on success, failure, Ctrl-C (fixture teardown) and even SIGKILL of
pytest (PR_SET_PDEATHSIG in the launcher). When any test failed, the control-plane logs are kept in
`.local/test-logs/` for reading.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from cluster import launcher
from integration.support import GROUP, VERSION, OperatorProcess

REPO = Path(__file__).resolve().parent.parent
LOGS_ON_FAILURE = REPO / ".local" / "test-logs"


class RunningCluster:
    """What tests get: where the cluster is and convenient ways to talk to it."""

    def __init__(self, handle: launcher.Cluster) -> None:
        self.handle = handle
        self.kubeconfig: Path = handle.kubeconfig
        self.server: str = handle.server
        self.ca_file: Path = handle.ca_file

    def api_client(self) -> client.ApiClient:
        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["kubectl", f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            check=check,
            input=input,
            timeout=120,
        )


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--large",
        action="store_true",
        help="reliability suites at full size, for the figures in tests/reliability/RESULTS.md",
    )
    parser.addoption(
        "--quick",
        action="store_true",
        help="benchmarks at a small size (make test runs them so they cannot rot; figures not kept)",
    )


@pytest.fixture(scope="session")
def large(request: pytest.FixtureRequest) -> bool:
    """True with --large: reliability suites run at the size their RESULTS.md figures come from."""
    return bool(request.config.getoption("--large"))


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)  # start_operator prints the operator log on failure
    if report.failed:
        item.session.config.stash[_FAILED] = True


_FAILED = pytest.StashKey[bool]()


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[RunningCluster]:
    directory = Path(tempfile.mkdtemp(prefix="agentaccounts-cluster-"))
    try:
        handle = launcher.up(directory, die_with_parent=True)
    except launcher.ClusterError as exc:
        _keep_logs(directory)
        pytest.fail(f"local control plane did not start: {exc}", pytrace=False)
    crds = subprocess.run(
        ["kubectl", f"--kubeconfig={handle.kubeconfig}", "apply", "--server-side", "-f", str(REPO / "crds")],
        capture_output=True,
        text=True,
    )
    assert crds.returncode == 0, crds.stderr
    subprocess.run(
        [
            "kubectl",
            f"--kubeconfig={handle.kubeconfig}",
            "wait",
            "--for=condition=Established",
            "crd",
            "--all",
            "--timeout=60s",
        ],
        capture_output=True,
        check=True,
    )
    try:
        yield RunningCluster(handle)
    finally:
        if request.config.stash.get(_FAILED, False):
            _keep_logs(directory)
        launcher.down(directory)


def _keep_logs(directory: Path) -> None:
    if (directory / "logs").exists():
        shutil.rmtree(LOGS_ON_FAILURE, ignore_errors=True)
        shutil.copytree(directory / "logs", LOGS_ON_FAILURE)


@pytest.fixture
def namespace(cluster: RunningCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (without waiting for it to finish)."""
    stem = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40].strip("-")
    name = f"{stem}-{uuid.uuid4().hex[:6]}"
    api = cluster.api_client()
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        # AgentAccounts carry the operator's finalizer; with this test's operator gone they would keep
        # the namespace Terminating and be picked up by a later test's cluster-wide operator.
        custom = client.CustomObjectsApi(api)
        for account in custom.list_namespaced_custom_object(
            "agentaccounts.dev", "v1alpha1", name, "agentaccounts"
        )["items"]:
            custom.patch_namespaced_custom_object(
                "agentaccounts.dev",
                "v1alpha1",
                name,
                "agentaccounts",
                account["metadata"]["name"],
                {"metadata": {"finalizers": None}},
            )
        core.delete_namespace(name, propagation_policy="Background")
        api.close()


# -- operator fixtures shared by integration and e2e tests -------------------------------------


@pytest.fixture
def api(cluster: RunningCluster) -> Iterator[client.ApiClient]:
    api = cluster.api_client()
    yield api
    api.close()


@pytest.fixture(scope="session")
def in_cluster_provider(cluster: RunningCluster) -> str:
    api = cluster.api_client()
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ClusterAccountProvider",
        "metadata": {"name": "in-cluster"},
        "spec": {"kubernetes": {}, "policy": {"maxLifetime": "24h"}},
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
def start_operator(
    cluster: RunningCluster, request: pytest.FixtureRequest
) -> Iterator[Callable[..., OperatorProcess]]:
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
    if started:
        # An operator that was killed (not stopped) leaves its webhooks registered, pointing at a port
        # nobody serves; failurePolicy Fail would then refuse every AgentAccount write of later tests.
        for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
            cluster.kubectl("delete", kind, "agentaccounts.dev", "--ignore-not-found", check=False)
