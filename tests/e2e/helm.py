"""Build helm from the Go module proxy, cached per version, and run it, for the chart tests.

Why this exists: no package registry reachable here ships a helm binary, but helm's command is an
ordinary Go main package with no replace directives, so `go install helm.sh/helm/v3/cmd/helm@VERSION`
works.  We point GOBIN at a private temporary directory and move the finished binary to
~/.cache/agentaccounts/bin/helm-<version>, so a half-built binary never gets the cached name and a
second run returns at once.  A cold build takes a few minutes on 2 cores.

`Helm` runs that binary against one kubeconfig; `install` first hands the CRDs that were applied
with kubectl (as the test session does) to the release, which Helm requires before it manages them.
`service_account_kubeconfig` and `Operator` run `agentaccounts run` out of process with exactly a
release's ServiceAccount's permissions, which is how the e2e tests prove the chart's RBAC sufficient.
Out of a cluster the operator registers its admission webhooks by URL (https://127.0.0.1:PORT), each
`Operator` on a port of its own; `webhooks_registered` tells when the API server calls that one.

Usage: python tests/e2e/helm.py   (prints the binary's path on stdout, progress on stderr)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

HELM_MODULE = "helm.sh/helm/v3"
HELM_VERSION = "v3.19.5"  # served by the Go module proxy; see the note on v3 below
# helm's own Makefile stamps these with -X; without them `helm version` says "v3.19" and `helm template`
# pretends the cluster is Kubernetes 1.20 (failing our kubeVersion constraint). 1.34 = helm v3.19.5's
# client-go v0.34.2, per helm's Makefile rule (major 0+1, minor 34).
KUBE_MAJOR, KUBE_MINOR = "1", "34"
# Why v3 and not v4: helm 4 applies manifests server-side by default, which conflicts with the
# kubectl field manager that owns the CRDs the test session applies; v3's client-side patches do not.
CACHE = Path(os.environ.get("AGENTACCOUNTS_CACHE", Path.home() / ".cache" / "agentaccounts"))
BIN_DIR = CACHE / "bin"
REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "agentaccounts"
AGENTACCOUNTS = REPO / ".venv" / "bin" / "agentaccounts"


class HelmBuildError(Exception):
    """`go install` failed; the message carries the tail of its output."""


def cached_path(version: str = HELM_VERSION) -> Path:
    return BIN_DIR / f"helm-{version}"


def helm_binary(version: str = HELM_VERSION) -> Path:
    """Path of a working helm `version`, building it first if it is not cached."""
    target = cached_path(version)
    if target.exists():
        return target
    if shutil.which("go") is None:
        raise HelmBuildError("no Go toolchain on PATH; install Go >= 1.24 to build helm")
    BIN_DIR.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOTOOLCHAIN": "local", "CGO_ENABLED": "0"}
    with tempfile.TemporaryDirectory(prefix="helm-build-", dir=BIN_DIR) as tmp:
        env["GOBIN"] = tmp
        started = time.monotonic()
        _step(f"building helm {version} from {HELM_MODULE} (a cold build takes several minutes)")
        stamps = [
            f"-X {HELM_MODULE}/internal/version.version={version}",
            f"-X {HELM_MODULE}/pkg/chartutil.k8sVersionMajor={KUBE_MAJOR}",
            f"-X {HELM_MODULE}/pkg/chartutil.k8sVersionMinor={KUBE_MINOR}",
            f"-X {HELM_MODULE}/pkg/lint/rules.k8sVersionMajor={KUBE_MAJOR}",
            f"-X {HELM_MODULE}/pkg/lint/rules.k8sVersionMinor={KUBE_MINOR}",
        ]
        proc = subprocess.run(
            [
                "go",
                "install",
                "-trimpath",
                f"-ldflags=-s -w {' '.join(stamps)}",
                f"{HELM_MODULE}/cmd/helm@{version}",
            ],
            env=env,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
            raise HelmBuildError(f"go install helm {version} failed:\n{tail}")
        # Same filesystem (tmp is inside BIN_DIR), so this rename is atomic.
        os.replace(Path(tmp) / "helm", target)
        _step(f"built helm in {time.monotonic() - started:.0f}s -> {target}")
    return target


@dataclass(frozen=True)
class Helm:
    """helm (and kubectl) against one cluster; `run` returns the finished process, never raises."""

    binary: Path
    kubeconfig: Path | None = None

    def run(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        config = [f"--kubeconfig={self.kubeconfig}"] if self.kubeconfig else []
        return subprocess.run(
            [str(self.binary), *config, *args], capture_output=True, text=True, timeout=timeout
        )

    def ok(self, *args: str, timeout: float = 180) -> str:
        """Run and return stdout; fail with helm's stderr if it exits non-zero."""
        proc = self.run(*args, timeout=timeout)
        if proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc.stdout

    def template(self, release: str, namespace: str, *args: str, chart: Path = CHART) -> list[dict[str, Any]]:
        """`helm template`, parsed: every rendered object, in Helm's install order."""
        out = self.ok("template", release, str(chart), "--namespace", namespace, *args)
        return [doc for doc in yaml.safe_load_all(out) if doc]

    def kubectl(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        config = [f"--kubeconfig={self.kubeconfig}"] if self.kubeconfig else []
        return subprocess.run(
            ["kubectl", *config, *args], capture_output=True, text=True, input=input, timeout=120
        )


def adopt_crds(helm: Helm, release: str, namespace: str) -> None:
    """Give the agentaccounts.dev CRDs Helm's ownership metadata for `release`, so it may manage them."""
    names = [n for n in helm.kubectl("get", "crd", "-o", "name").stdout.split() if "agentaccounts.dev" in n]
    for name in names:
        for args in (
            ("label", "--overwrite", name, "app.kubernetes.io/managed-by=Helm"),
            (
                "annotate",
                "--overwrite",
                name,
                f"meta.helm.sh/release-name={release}",
                f"meta.helm.sh/release-namespace={namespace}",
            ),
        ):
            proc = helm.kubectl(*args)
            assert proc.returncode == 0, proc.stderr


def install(helm: Helm, release: str, namespace: str, *args: str, chart: Path = CHART) -> str:
    """`helm install` (no --wait: no kubelet runs the pods here), adopting the CRDs first."""
    adopt_crds(helm, release, namespace)
    return helm.ok("install", release, str(chart), "--namespace", namespace, *args)


def wait_for(check: Callable[[], object], timeout: float, what: str, every: float = 0.5) -> object:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def service_account_kubeconfig(
    helm: Helm, namespace: str, account: str, server: str, ca_file: Path, target: Path
) -> Path:
    """A kubeconfig holding a fresh TokenRequest token of `namespace/account`, context namespace
    `namespace` (so kopf posts Events about cluster-scoped objects there, as it does in the pod)."""
    token = helm.kubectl("create", "token", account, "-n", namespace, "--duration=2h")
    assert token.returncode == 0, token.stderr
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "sa",
        "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority": str(ca_file)}}],
        "users": [{"name": account, "user": {"token": token.stdout.strip()}}],
        "contexts": [
            {"name": "sa", "context": {"cluster": "local", "user": account, "namespace": namespace}}
        ],
    }
    target.write_text(json.dumps(config))
    return target


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


WEBHOOK_CONFIGURATION = "agentaccounts.dev"  # kopf's managed admission: both configurations' name


class Operator:
    """`agentaccounts run ...` as a child process, its output in `log`; `stop()` is SIGTERM, then KILL.

    `namespace` is the operator's own (AGENTACCOUNTS_OPERATOR_NAMESPACE: its signing-key Secret), as
    the chart sets it to the release namespace; `env` adds or overrides AGENTACCOUNTS_* settings."""

    def __init__(
        self,
        kubeconfig: Path,
        log: Path,
        *args: str,
        identity: str = "operator",
        namespace: str = "default",
        env: dict[str, str] | None = None,
    ) -> None:
        self.log = log
        self.health_port, self.webhook_port = free_port(), free_port()
        env = {**os.environ, "POD_NAME": identity, "AGENTACCOUNTS_OPERATOR_NAMESPACE": namespace,
               "AGENTACCOUNTS_WEBHOOK_PORT": str(self.webhook_port), **(env or {})}  # fmt: skip
        argv = [str(AGENTACCOUNTS), "--kubeconfig", str(kubeconfig), "run", "--metrics-port=0",
                f"--liveness=http://127.0.0.1:{self.health_port}/healthz", *args]  # fmt: skip
        with log.open("wb") as out:
            self.process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)

    def healthy(self) -> bool:
        url = f"http://127.0.0.1:{self.health_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: a crash, no chance to release the Lease."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)

    def stop(self, timeout: float = 20) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return int(self.process.returncode)


# -- AgentAccounts, as the tests create and watch them ------------------------------------------


def webhooks_registered(helm: Helm, port: int) -> bool:
    """Both webhook configurations exist and every webhook in them calls the operator on `port`."""
    for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
        proc = helm.kubectl("get", kind, WEBHOOK_CONFIGURATION, "-o", "json")
        if proc.returncode != 0:
            return False
        webhooks = json.loads(proc.stdout).get("webhooks") or []
        urls = [str((hook.get("clientConfig") or {}).get("url", "")) for hook in webhooks]
        if not urls or not all(re.match(rf"^https://[^/]+:{port}(/|$)", url) for url in urls):
            return False
    return True


def apply_account(helm: Helm, namespace: str, name: str, provider: str, lifetime: str, keep: str) -> None:
    body = {
        "apiVersion": "agentaccounts.dev/v1alpha1",
        "kind": "AgentAccount",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "providerRef": {"kind": "ClusterAccountProvider", "name": provider},
            "lifetime": lifetime,
            "keepExpiredFor": keep,
            "scopes": [{"permissions": ["get", "list"], "resources": ["configmaps"]}],
        },
    }
    proc = helm.kubectl("apply", "-f", "-", input=json.dumps(body))
    assert proc.returncode == 0, proc.stderr


def phase(helm: Helm, namespace: str, name: str) -> str:
    proc = helm.kubectl("get", "agentaccount", name, "-n", namespace, "-o", "jsonpath={.status.phase}")
    return proc.stdout


def gone(helm: Helm, namespace: str, kind: str, name: str) -> bool:
    proc = helm.kubectl("get", kind, name, "-n", namespace, "--ignore-not-found", "-o", "name")
    return proc.returncode == 0 and not proc.stdout.strip()


def assert_no_permission_errors(operator: Operator) -> None:
    # A 403 for writing into a namespace that is being deleted (another test's, seen by a cluster-wide
    # operator) is the namespace lifecycle admission talking, not RBAC.
    lines = [ln for ln in operator.output().splitlines() if "because it is being terminated" not in ln]
    log = "\n".join(lines)
    # Not after "," or ".": a log line's milliseconds (`06:29:46,403`) or a JSON line's (`:02.403Z`).
    assert not re.search(r"(?<![,.])\b403\b|Forbidden", log), (
        f"the operator hit a permission error:\n{log[-4000:]}"
    )


def _step(msg: str) -> None:
    print(f"[helm] {msg}", file=sys.stderr, flush=True)


def main() -> int:
    try:
        print(helm_binary())
    except HelmBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
