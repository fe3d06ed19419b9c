"""A real node beside the local control plane: containerd, a kubelet, kube-scheduler, and the workload
controllers, so that Deployments and Jobs become running pods.

Why a module of its own: the control plane alone (launcher.py) never runs a pod, and most suites want
it that way (fast, and nothing can pull an image). Only the tests that need pods start a node, against
a cluster that is already up, and stop it again.

Decisions, each forced by this machine:
- Loopback only. The kubelet registers as `agentaccounts-node` at InternalIP 127.0.0.1 (set by
  initialize_node: the kubelet itself refuses a loopback --node-ip) and every pod uses the host
  network; the CNI configuration holds only the `loopback` plugin (containerd wants one to report its
  network ready; it creates nothing routable). A ValidatingAdmissionPolicy refuses any pod that
  could make containerd pull (imagePullPolicy other than Never) or that asks for a network of its
  own (it would have only `lo`): no registry is reachable,
  and trying would send packets off the machine. Images come from images.py through `ctr import`.
- Own everything: containerd gets its own root, state, socket and CNI dirs under the node directory,
  the kubelet its root dir, pod-log dir and a cgroup root of its own (cgroupfs driver: this VM has the
  cgroup v1 hierarchy and no systemd). Teardown kills the containers and their shims, unmounts what
  was mounted under the node directory, removes the cgroups, writes back the kernel settings the
  kubelet changed, and leaves nothing running.
- Credentials without the CA key (pki.py keeps it in memory only): the kubelet and the scheduler use
  ServiceAccount tokens bound to the built-in system:node and system:kube-scheduler roles; the workload
  controllers reuse the controller manager's certificate.
- The snapshotter is `native` (plain copies): overlayfs inside this VM's root filesystem is not
  something to depend on, and the images are small.

    python -m cluster.node up --cluster-dir .local [--dir /tmp/agentaccounts-node]   (`make node`)
    python -m cluster.node down [--dir /tmp/agentaccounts-node]                      (`make node-down`)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from cluster import build, images, launcher, node_config

NODE_NAME = "agentaccounts-node"
# `make node`'s directory: outside the repository (a kubelet root, container filesystems) and outside
# `.local/`, which `make cluster` may wipe while this node would still run against it.
DEFAULT_DIR = Path(tempfile.gettempdir()) / "agentaccounts-node"
READY_TIMEOUT = 120.0  # seconds from containerd's start to a Ready node; ~15 s warm on 2 cores


class NodeError(Exception):
    """The node did not start or stop; the message says which part and shows its log."""


@dataclass
class Node:
    dir: Path
    pids: dict[str, list[object]] = field(default_factory=dict)  # name -> [pid, binary name]
    images: dict[str, str] = field(default_factory=dict)  # role -> image reference
    kubelet_port: int = 0

    socket = property(lambda self: self.dir / "containerd" / "containerd.sock")
    logs = property(lambda self: self.dir / "logs")
    cgroup = property(lambda self: f"/agentaccounts-{self.dir.name}")

    def ctr(self) -> list[str]:
        return ["ctr", "--address", str(self.socket), "--namespace", "k8s.io"]

    def save(self) -> None:
        state = {"pids": self.pids, "images": self.images, "kubelet_port": self.kubelet_port}
        (self.dir / "state.json").write_text(json.dumps(state))

    @classmethod
    def load(cls, directory: Path) -> Node | None:
        try:
            state = json.loads((directory / "state.json").read_text())
        except (OSError, ValueError):
            return None
        return cls(directory, state["pids"], state["images"], state["kubelet_port"])

    def log_tail(self, name: str, lines: int = 15) -> str:
        try:
            return "\n".join((self.logs / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _spawn(node: Node, name: str, argv: list[str], die_with_parent: bool) -> None:
    with (node.logs / f"{name}.log").open("ab") as log:
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=launcher._die_with_parent if die_with_parent else None,
        )
    node.pids[name] = [proc.pid, Path(argv[0]).name]
    node.save()


def _wait(node: Node, what: str, check: object, deadline: float) -> None:
    """Poll `check()` until true; fail at once if one of our processes died meanwhile."""
    while time.monotonic() < deadline:
        for name, (pid, binary) in node.pids.items():
            if not launcher._alive(int(pid), str(binary)):  # type: ignore[call-overload]
                raise NodeError(
                    f"{name} exited while waiting for {what}. Last log lines:\n{node.log_tail(name)}"
                )
        if check():  # type: ignore[operator]
            return
        time.sleep(0.25)  # poll interval, bounded by `deadline`
    raise NodeError(f"timed out waiting for {what}; logs in {node.logs}")


def _kubectl(cluster: launcher.Cluster, *args: str, input: str | None = None) -> str:
    proc = subprocess.run(
        ["kubectl", f"--kubeconfig={cluster.kubeconfig}", *args],
        capture_output=True,
        text=True,
        input=input,
        timeout=60,
    )
    if proc.returncode != 0:
        raise NodeError(f"kubectl {' '.join(args[:3])} failed: {proc.stderr.strip()}")
    return proc.stdout


def node_ready(cluster: launcher.Cluster) -> bool:
    status, body = launcher._get(cluster, f"/api/v1/nodes/{NODE_NAME}")
    if status != 200:
        return False
    conditions = json.loads(body).get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def up(cluster: launcher.Cluster, directory: Path, die_with_parent: bool = False) -> Node:
    """Start a node for `cluster` in `directory` (wiped first) and return it once it is Ready."""
    if os.geteuid() != 0:
        raise NodeError("a node needs root: containerd, runc, mounts and cgroups (CI runs as root)")
    missing = [n for n in ("kubelet", "kube-scheduler") if not build.binary_path(n).exists()]
    if missing:
        raise NodeError(f"binaries missing: {', '.join(missing)}. Build them with `make binaries`.")
    for tool in ("containerd", "ctr", "runc"):
        if shutil.which(tool) is None:
            raise NodeError(f"{tool} not found: apt-get install containerd runc containernetworking-plugins")
    if directory.exists():
        down(directory)
    node = Node(directory)
    node.logs.mkdir(parents=True)
    try:
        wanted = [images.pause_image(), images.agent_image(), images.operator_image()]
        node.images = dict(zip(("pause", "agent", "operator"), (i.ref for i in wanted), strict=True))
        deadline = time.monotonic() + READY_TIMEOUT
        node_config.write_containerd(node, node.images["pause"])
        containerd = shutil.which("containerd") or "containerd"
        _spawn(
            node, "containerd", [containerd, "--config", str(directory / "containerd.toml")], die_with_parent
        )
        _wait(node, "containerd's socket", lambda: _ctr_ok(node), deadline)
        images.import_images(node.ctr(), wanted)

        _kubectl(cluster, "apply", "--server-side", "-f", "-", input=node_config.rbac_and_policy())
        kubelet_kc = node_config.token_kubeconfig(cluster, _token(cluster, "agentaccounts-kubelet"))
        scheduler_kc = node_config.token_kubeconfig(cluster, _token(cluster, "agentaccounts-scheduler"))
        (directory / "kubelet.kubeconfig").write_text(kubelet_kc)
        (directory / "scheduler.kubeconfig").write_text(scheduler_kc)
        node_config.make_cgroup_root(node.cgroup)
        node_config.save_sysctls(directory)
        node.kubelet_port = launcher.free_port()
        node_config.write_kubelet(node, cluster, launcher.free_port())
        _spawn(node, "kubelet", node_config.kubelet_argv(node, NODE_NAME), die_with_parent)
        _spawn(
            node,
            "kube-scheduler",
            [
                str(build.binary_path("kube-scheduler")),
                f"--kubeconfig={directory / 'scheduler.kubeconfig'}",
                "--bind-address=127.0.0.1",
                f"--secure-port={launcher.free_port()}",
                "--leader-elect=false",
            ],
            die_with_parent,
        )
        cm = cluster.dir / "controller-manager.kubeconfig"
        _spawn(
            node,
            "workload-controllers",
            [
                str(build.binary_path("kube-controller-manager")),
                f"--kubeconfig={cm}",
                f"--authentication-kubeconfig={cm}",
                f"--authorization-kubeconfig={cm}",
                "--bind-address=127.0.0.1",
                f"--secure-port={launcher.free_port()}",
                "--leader-elect=false",
                # What turns Deployments and Jobs into pods, and lifts the kubelet's not-ready taint once
                # the node is Ready. The control plane's own controller manager runs the rest (garbage
                # collection, namespaces, service accounts).
                "--controllers=deployment-controller,replicaset-controller,job-controller,"
                "pod-garbage-collector-controller,node-lifecycle-controller",
                "--use-service-account-credentials=true",
            ],
            die_with_parent,
        )
        _wait(
            node,
            f"node {NODE_NAME} registered",
            lambda: launcher._get(cluster, f"/api/v1/nodes/{NODE_NAME}")[0] == 200,
            deadline,
        )
        initialize_node(cluster)
        _wait(node, f"node {NODE_NAME} Ready", lambda: node_ready(cluster), deadline)
    except BaseException:
        down(directory, keep_logs=True)
        raise
    return node


def initialize_node(cluster: launcher.Cluster) -> None:
    """What a cloud controller does for a new node: give it its address, then lift the taint."""
    addresses = [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": NODE_NAME}]
    _kubectl(
        cluster,
        "patch",
        "node",
        NODE_NAME,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"addresses": addresses}}),
    )
    try:
        _kubectl(cluster, "taint", "node", NODE_NAME, "node.cloudprovider.kubernetes.io/uninitialized-")
    except NodeError as exc:
        if "not found" not in str(exc):  # a re-registered node keeps its lifted taint
            raise


def _ctr_ok(node: Node) -> bool:
    pid, binary = node.pids.get("containerd", [0, "containerd"])
    if not launcher._alive(int(pid), str(binary)):  # type: ignore[call-overload]
        return False  # ctr would wait for a dead socket until its own timeout
    try:
        return subprocess.run([*node.ctr(), "version"], capture_output=True, timeout=5).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _token(cluster: launcher.Cluster, account: str) -> str:
    # 24 h: longer than any session; the tokens die with the cluster's signing key anyway.
    return _kubectl(cluster, "-n", "kube-system", "create", "token", account, "--duration=24h").strip()


def down(directory: Path, keep_logs: bool = False) -> None:
    """Stop everything a node in `directory` started, then remove the directory (logs kept if asked)."""
    node = Node.load(directory) or Node(directory)
    for name in ("workload-controllers", "kube-scheduler", "kubelet"):
        _stop(node, name)
    if _ctr_ok(node):
        node_config.remove_containers(node)
    node_config.restore_sysctls(directory)
    _stop(node, "containerd")
    node_config.kill_shims(node)
    node_config.unmount_under(directory)
    node_config.remove_cgroup_root(node.cgroup)
    node_config.remove_log_links(directory)
    if keep_logs:
        for path in directory.glob("*"):
            if path.name != "logs":
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink()
    elif directory.exists():
        shutil.rmtree(directory, ignore_errors=True)


def _stop(node: Node, name: str) -> None:
    if name not in node.pids:
        return
    pid, binary = int(node.pids[name][0]), str(node.pids[name][1])  # type: ignore[call-overload]
    if launcher._alive(pid, binary):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while not launcher._exited(pid) and time.monotonic() < deadline:
        time.sleep(0.05)  # bounded by `deadline`
    if not launcher._exited(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        while not launcher._exited(pid) and time.monotonic() < deadline + 5:
            time.sleep(0.05)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.node")
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument("--cluster-dir", type=Path, default=Path(".local"))
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    args = parser.parse_args()
    directory = args.dir.resolve()
    try:
        if args.command == "up":
            cluster = launcher.Cluster.load(args.cluster_dir.resolve())
            if cluster is None or not cluster.running():
                raise NodeError(f"no running cluster in {args.cluster_dir}: run `make cluster` first")
            started = time.monotonic()
            node = up(cluster, directory)
            print(f"[node] {NODE_NAME} Ready in {time.monotonic() - started:.1f}s; images:", file=sys.stderr)
            for role, ref in node.images.items():
                print(f"[node]   {role}: {ref}", file=sys.stderr)
        else:
            down(directory)
            print(f"[node] stopped; {directory} removed", file=sys.stderr)
    except (NodeError, images.ImageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
