"""Start and stop a real single-node control plane on loopback: etcd, kube-apiserver, controller manager.

No kubelet and no scheduler: pods are never run, but everything this operator relies on is real — CRD
schema validation, RBAC, the TokenRequest API, finalizers, owner-reference garbage collection,
namespace deletion and watch semantics.

A cluster lives in one state directory (`.local/` for `make cluster`, a temporary one per pytest
session). `state.json` there records the PID of every process we started, so `down` stops exactly
those and a stale directory from a killed run is recognised (its PIDs are dead, or are not our
binaries any more) and cleaned. Ports are chosen free by the kernel, never fixed.

The API server sends audit events (Metadata level, ServiceAccount requests only: AUDIT_POLICY) in
batches to https://127.0.0.1:<audit_port>, the port recorded in state.json and exposed as
`Cluster.audit_port`; an operator started with `audit_operator_env` serves its audit-webhook endpoint
there (mutual TLS: the API server presents pki's audit client certificate). While nobody listens the
API server retries and drops, which is harmless.

    python -m cluster.launcher up [--dir .local]      # prints the kubeconfig path when ready
    python -m cluster.launcher down [--dir .local]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from cluster import build, pki

READY_TIMEOUT = 90.0  # seconds; a warm start on 2 cores takes ~5-10 s, a loaded CI machine more


class ClusterError(Exception):
    """Starting or stopping failed; the message says what is wrong and what to do."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(pid: int, binary: str) -> bool:
    """True if `pid` runs and is still our `binary` (a recycled PID belongs to someone else)."""
    if _exited(pid):
        return False
    try:
        # The exe link, not cmdline: cmdline can read empty for a moment while a Go runtime maps memory.
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return False
    return Path(exe.removesuffix(" (deleted)")).name.startswith(binary)


def _exited(pid: int) -> bool:
    """Gone, or a zombie waiting to be reaped: either way it holds no ports and does no work."""
    try:
        return "State:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True


# Metadata for requests by ServiceAccounts (agents), nothing else; the controllers' own ServiceAccounts
# (kube-system, --use-service-account-credentials) are not agents. RequestReceived would double every
# event.
AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: None
  userGroups: ["system:serviceaccounts:kube-system"]
- level: Metadata
  userGroups: ["system:serviceaccounts"]
- level: None
"""


@dataclass
class Cluster:
    dir: Path
    server: str = ""
    pids: dict[str, int] = field(default_factory=dict)
    audit_port: int = 0  # where the API server's audit webhook backend posts (see the module docstring)

    def audit_operator_env(self) -> dict[str, str]:
        """The settings that make an operator serve the audit-webhook endpoint this cluster posts to."""
        certs = pki.Pki(self.dir / "pki")
        return {
            "AGENTACCOUNTS_AUDIT_WEBHOOK_PORT": str(self.audit_port),
            "AGENTACCOUNTS_AUDIT_WEBHOOK_CERT_FILE": str(certs.audit_serving_cert),
            "AGENTACCOUNTS_AUDIT_WEBHOOK_KEY_FILE": str(certs.audit_serving_key),
            "AGENTACCOUNTS_AUDIT_WEBHOOK_CLIENT_CA_FILE": str(certs.ca),
            "AGENTACCOUNTS_AUDIT_WEBHOOK_CLIENT_CN": pki.AUDIT_CLIENT_CN,
        }

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    @property
    def ca_file(self) -> Path:
        return self.dir / "pki" / "ca.crt"

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    @property
    def audit_log(self) -> Path:
        """The same audit events as the log backend writes them (JSON lines), for `activity ingest`."""
        return self.logs / "audit.log"

    def _state_file(self) -> Path:
        return self.dir / "state.json"

    def save(self) -> None:
        self._state_file().write_text(
            json.dumps({"server": self.server, "pids": self.pids, "audit_port": self.audit_port})
        )

    @classmethod
    def load(cls, directory: Path) -> Cluster | None:
        try:
            state = json.loads((directory / "state.json").read_text())
        except (OSError, ValueError):
            return None
        return cls(directory, state.get("server", ""), state.get("pids", {}), state.get("audit_port", 0))

    def running(self) -> bool:
        return bool(self.pids) and all(_alive(pid, name) for name, pid in self.pids.items())

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}


def _spawn(cluster: Cluster, name: str, args: list[str], die_with_parent: bool) -> None:
    binary = build.binary_path(name)
    log = (cluster.logs / f"{name}.log").open("ab")
    preexec = _die_with_parent if die_with_parent else None
    proc = subprocess.Popen(
        [str(binary), *args], stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=preexec
    )
    log.close()
    cluster.pids[name] = proc.pid
    cluster.save()


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG: if the test runner is SIGKILLed, the kernel kills its control plane too.
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


def _log_tail(cluster: Cluster, name: str, lines: int = 12) -> str:
    try:
        text = (cluster.logs / f"{name}.log").read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


def _get(cluster: Cluster, path: str) -> tuple[int, str]:
    ctx = ssl.create_default_context(cafile=str(cluster.ca_file))
    ctx.load_cert_chain(str(cluster.dir / "pki" / "admin.crt"), str(cluster.dir / "pki" / "admin.key"))
    try:
        with urllib.request.urlopen(cluster.server + path, context=ctx, timeout=3) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


def _wait_ready(cluster: Cluster, deadline: float) -> None:
    while time.monotonic() < deadline:
        for name in cluster.pids:
            if not _alive(cluster.pids[name], name):
                raise ClusterError(
                    f"{name} exited during start-up. Last log lines:\n{_log_tail(cluster, name)}"
                )
        if _get(cluster, "/readyz")[0] == 200 and _get(cluster, "/api/v1/namespaces/default")[0] == 200:
            return
        time.sleep(0.2)  # poll interval, not synchronisation: the loop is bounded by `deadline`
    raise ClusterError(
        f"kube-apiserver was not ready within {READY_TIMEOUT:.0f}s. Last log lines:\n"
        f"{_log_tail(cluster, 'kube-apiserver')}\nLogs: {cluster.logs}"
    )


def _wait_healthy(cluster: Cluster, name: str, url: str, deadline: float) -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # its serving certificate is self-signed and in-memory
    while time.monotonic() < deadline:
        if not _alive(cluster.pids[name], name):
            raise ClusterError(f"{name} exited during start-up. Last log lines:\n{_log_tail(cluster, name)}")
        try:
            with urllib.request.urlopen(url, context=ctx, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)  # bounded by `deadline`
    raise ClusterError(f"{name} was not healthy within {READY_TIMEOUT:.0f}s. Logs: {cluster.logs}")


def up(directory: Path, die_with_parent: bool = False) -> Cluster:
    """Start a cluster in `directory` (reusing a healthy one) and return it once ready."""
    existing = Cluster.load(directory)
    if existing and existing.running() and _get(existing, "/readyz")[0] == 200:
        return existing
    if existing:
        print(f"[cluster] cleaning stale state in {directory}", file=sys.stderr)
        down(directory)
    missing = [
        n for n in ("etcd", "kube-apiserver", "kube-controller-manager") if not build.binary_path(n).exists()
    ]
    if missing:
        raise ClusterError(f"binaries missing: {', '.join(missing)}. Build them with `make binaries`.")
    if directory.exists():
        shutil.rmtree(directory)
    cluster = Cluster(directory)
    cluster.logs.mkdir(parents=True)
    certs = pki.make_pki(directory / "pki")
    etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
    cluster.server = f"https://127.0.0.1:{api_port}"
    cluster.audit_port = free_port()
    audit_policy = directory / "audit-policy.yaml"
    audit_policy.write_text(AUDIT_POLICY)
    audit_kubeconfig = directory / "audit-webhook.kubeconfig"
    audit_kubeconfig.write_text(
        pki.kubeconfig(
            f"https://127.0.0.1:{cluster.audit_port}/audit",
            certs,
            certs.audit_client_cert,
            certs.audit_client_key,
            pki.AUDIT_CLIENT_CN,
        )
    )
    cluster.kubeconfig.write_text(
        pki.kubeconfig(cluster.server, certs, certs.admin_cert, certs.admin_key, "admin")
    )
    cm_kubeconfig = directory / "controller-manager.kubeconfig"
    cm_kubeconfig.write_text(
        pki.kubeconfig(cluster.server, certs, certs.cm_cert, certs.cm_key, "system:kube-controller-manager")
    )
    try:
        _spawn(
            cluster,
            "etcd",
            [
                "--name=local",
                f"--data-dir={directory / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=local=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync=true",  # a throwaway test store: durability is not worth the fsyncs
                "--log-level=warn",
            ],
            die_with_parent,
        )
        _spawn(
            cluster,
            "kube-apiserver",
            [
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--tls-cert-file={certs.serving_cert}",
                f"--tls-private-key-file={certs.serving_key}",
                f"--client-ca-file={certs.ca}",
                f"--cert-dir={directory / 'pki'}",
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={certs.sa_pub}",
                f"--service-account-signing-key-file={certs.sa_key}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--profiling=false",
                f"--audit-policy-file={audit_policy}",
                f"--audit-webhook-config-file={audit_kubeconfig}",
                "--audit-webhook-mode=batch",
                "--audit-webhook-batch-max-wait=1s",  # tests see an agent's requests within ~1 s
                "--audit-webhook-initial-backoff=1s",  # a refused batch (no endpoint yet) is retried soon
                f"--audit-log-path={cluster.audit_log}",
                # For a real node (tests/cluster/node.py; harmless without one): `kubectl logs/exec` reach
                # the kubelet with the admin's client certificate (kubeadm's apiserver-kubelet-client is
                # system:masters too), at the node's InternalIP 127.0.0.1 (its name is not in any DNS).
                f"--kubelet-client-certificate={certs.admin_cert}",
                f"--kubelet-client-key={certs.admin_key}",
                "--kubelet-preferred-address-types=InternalIP",
                "--v=0",
            ],
            die_with_parent,
        )
        deadline = time.monotonic() + READY_TIMEOUT
        _wait_ready(cluster, deadline)
        # The controller manager starts once RBAC is bootstrapped (part of /readyz): earlier, its
        # delegated authentication cannot read kube-system/extension-apiserver-authentication.
        cm_port = free_port()
        _spawn(
            cluster,
            "kube-controller-manager",
            [
                f"--kubeconfig={cm_kubeconfig}",
                f"--authentication-kubeconfig={cm_kubeconfig}",
                f"--authorization-kubeconfig={cm_kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={cm_port}",
                "--controllers=garbage-collector-controller,namespace-controller,serviceaccount-controller,"
                "serviceaccount-token-controller,root-ca-certificate-publisher-controller",
                f"--service-account-private-key-file={certs.sa_key}",
                f"--root-ca-file={certs.ca}",
                "--leader-elect=false",
                "--use-service-account-credentials=true",  # per-controller RBAC, as kubeadm runs it
            ],
            die_with_parent,
        )
        _wait_healthy(cluster, "kube-controller-manager", f"https://127.0.0.1:{cm_port}/healthz", deadline)
    except BaseException:
        down(directory, keep_logs=True)
        raise
    return cluster


def down(directory: Path, keep_logs: bool = False) -> None:
    """Stop exactly the processes recorded in `directory`, then remove it (logs kept if asked)."""
    cluster = Cluster.load(directory)
    if cluster:
        for name, pid in reversed(list(cluster.pids.items())):
            if _alive(pid, name):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for pid in cluster.pids.values():
            while not _exited(pid) and time.monotonic() < deadline:
                time.sleep(0.05)  # bounded by `deadline`
            if not _exited(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            while not _exited(pid) and time.monotonic() < deadline + 5:
                time.sleep(0.05)
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)  # reap it if it is our child; harmless otherwise
    if keep_logs:
        for path in directory.glob("*"):
            if path.name != "logs":
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    elif directory.exists():
        shutil.rmtree(directory)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.launcher")
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--dir", type=Path, default=Path(".local"))
    args = parser.parse_args()
    directory = args.dir.resolve()
    try:
        if args.command == "up":
            started = time.monotonic()
            cluster = up(directory)
            print(
                f"[cluster] ready in {time.monotonic() - started:.1f}s at {cluster.server}", file=sys.stderr
            )
            print(f"[cluster] export KUBECONFIG={cluster.kubeconfig}", file=sys.stderr)
            print(cluster.kubeconfig)
        elif args.command == "down":
            down(directory)
            print(f"[cluster] stopped; {directory} removed", file=sys.stderr)
        else:
            cluster = Cluster.load(directory)
            ok = bool(cluster and cluster.running())
            print("running" if ok else "stopped")
            return 0 if ok else 1
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
