"""The node's configuration files and its clean-up, kept apart from node.py's start/stop sequence.

Everything here is written for one node directory and touches nothing outside it except four things
a kubelet cannot do without, each undone by the functions at the bottom: a cgroup root of its own in
every cgroup v1 hierarchy, mounts (secret and token volumes, container root filesystems) under the
node directory, the symlinks the kubelet puts in /var/log/containers, and six kernel settings.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from cluster import build, launcher

if TYPE_CHECKING:
    from cluster.node import Node

CNI_BIN = "/usr/lib/cni"  # Debian's containernetworking-plugins
RUNC = "/usr/sbin/runc"
CGROUP_V1 = Path("/sys/fs/cgroup")


def write_containerd(node: Node, pause_ref: str) -> None:
    d = node.dir / "containerd"
    cni = node.dir / "cni"
    (cni / "net.d").mkdir(parents=True)
    # Only `loopback`: the CRI plugin reports NetworkReady once it has loaded a network config, and
    # host-network pods never call it; no bridge, no veth, no address that routes anywhere.
    (cni / "net.d" / "10-loopback.conflist").write_text(
        json.dumps({"cniVersion": "1.0.0", "name": "loopback-only", "plugins": [{"type": "loopback"}]})
    )
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    (node.dir / "containerd.toml").write_text(
        f"""version = 2
root = "{d}/root"
state = "{d}/state"
# Snapshotters this VM cannot use would only log errors at start.
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{node.socket}"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[{cri}]
  sandbox_image = "{pause_ref}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  # Root here lacks CAP_SYS_RESOURCE, so runc cannot lower a container's oom_score_adj below ours
  # (the pause container asks for -998: "failed to update /proc/self/oom_score_adj: Permission denied").
  restrict_oom_score_adj = true
  [{cri}.containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        BinaryName = "{RUNC}"
        SystemdCgroup = false
  [{cri}.cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{cni}/net.d"
"""
    )


def rbac_and_policy() -> str:
    """ServiceAccounts for the kubelet and the scheduler, bound to the built-in roles made for them, and
    the admission policy that keeps every pod from pulling. One List, for one `kubectl apply`."""
    docs: list[dict[str, object]] = []
    for account, roles in (
        ("agentaccounts-kubelet", ["system:node"]),
        ("agentaccounts-scheduler", ["system:kube-scheduler", "system:volume-scheduler"]),
    ):
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": account, "namespace": "kube-system"},
            }
        )
        for role in roles:
            docs.append(
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "ClusterRoleBinding",
                    "metadata": {"name": f"{account}:{role.removeprefix('system:')}"},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                    "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": "kube-system"}],
                }
            )
    every = "object.spec.containers + (has(object.spec.initContainers) ? object.spec.initContainers : [])"
    docs.append(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": "agentaccounts-node-never-pull"},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE"],
                            "resources": ["pods"],
                        }
                    ]
                },
                "validations": [
                    {
                        "expression": f"({every}).all(c, c.imagePullPolicy == 'Never')",
                        "message": "this node has no registry: every container needs imagePullPolicy: Never "
                        "(images are imported by tests/cluster/images.py)",
                    },
                    {
                        "expression": "has(object.spec.hostNetwork) && object.spec.hostNetwork",
                        "message": "this node is loopback only: pods need hostNetwork: true",
                    },
                ],
            },
        }
    )
    docs.append(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": "agentaccounts-node-never-pull"},
            "spec": {"policyName": "agentaccounts-node-never-pull", "validationActions": ["Deny"]},
        }
    )
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})


def token_kubeconfig(cluster: launcher.Cluster, token: str) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "local",
                    "cluster": {"server": cluster.server, "certificate-authority": str(cluster.ca_file)},
                }
            ],
            "users": [{"name": "node", "user": {"token": token}}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": "node"}}],
            "current-context": "local",
        }
    )


def write_kubelet(node: Node, cluster: launcher.Cluster, healthz_port: int) -> None:
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": "127.0.0.1",
        "port": node.kubelet_port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "containerRuntimeEndpoint": f"unix://{node.socket}",
        "cgroupDriver": "cgroupfs",  # no systemd here; cgroup v1
        "cgroupRoot": node.cgroup,
        "failCgroupV1": False,
        "failSwapOn": False,
        "makeIPTablesUtilChains": False,  # leave the machine's iptables alone
        # The API server reaches the kubelet (logs, exec) with a client certificate from the cluster CA.
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(cluster.ca_file)},
        },
        "authorization": {"mode": "Webhook"},
        "podLogsDir": str(node.dir / "pod-logs"),
        "volumePluginDir": str(node.dir / "volume-plugins"),
        "resolvConf": "/etc/resolv.conf",
        # A shared CI disk is not this node's to police: never evict, never collect the imported images.
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "maxPods": 30,
        "serializeImagePulls": True,
    }
    (node.dir / "kubelet.json").write_text(json.dumps(config, indent=2))


def kubelet_argv(node: Node, name: str) -> list[str]:
    return [
        str(build.binary_path("kubelet")),
        f"--config={node.dir / 'kubelet.json'}",
        f"--kubeconfig={node.dir / 'kubelet.kubeconfig'}",
        f"--root-dir={node.dir / 'kubelet'}",
        f"--cert-dir={node.dir / 'kubelet-pki'}",
        f"--hostname-override={name}",
        # Not --node-ip=127.0.0.1: the kubelet refuses a loopback node IP ("nodeIP can't be loopback
        # address") and would publish no address at all. As an external cloud provider's node, it
        # publishes only its hostname and waits; node.py then sets InternalIP 127.0.0.1 (as a cloud
        # controller would), which the kubelet keeps, and removes the uninitialized taint.
        "--cloud-provider=external",
        "--v=1",
    ]


# The kernel settings a kubelet sets at start (container_manager_linux.go setupKernelTunables: e.g.
# kernel.panic_on_oops=1, vm.overcommit_memory=1). A real node keeps them; this one is a guest on a
# shared machine, so they are recorded before the kubelet starts and written back when it is gone.
KUBELET_SYSCTLS = ("vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
                   "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes")  # fmt: skip


def save_sysctls(directory: Path) -> None:
    record = directory / "sysctls.json"
    if not record.exists():
        values = {key: (Path("/proc/sys") / key).read_text().strip() for key in KUBELET_SYSCTLS}
        record.write_text(json.dumps(values))


def restore_sysctls(directory: Path) -> None:
    try:
        values = json.loads((directory / "sysctls.json").read_text())
    except (OSError, ValueError):
        return
    for key, value in values.items():
        with contextlib.suppress(OSError):
            (Path("/proc/sys") / key).write_text(value)


def _hierarchies() -> list[Path]:
    """Every mounted cgroup v1 hierarchy (cpu, memory, ..., name=systemd), not the unified one."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split(" - ")
        if len(fields) == 2 and fields[1].split()[0] == "cgroup":
            found.append(Path(line.split()[4]))
    return found


def make_cgroup_root(root: str) -> None:
    for hierarchy in _hierarchies():
        path = hierarchy / root.lstrip("/")
        path.mkdir(exist_ok=True)
        if (hierarchy / "cpuset.cpus").exists():  # a v1 cpuset child starts empty: give it the parent's
            for knob in ("cpuset.cpus", "cpuset.mems"):
                (path / knob).write_text((hierarchy / knob).read_text())


def remove_cgroup_root(root: str) -> None:
    for hierarchy in _hierarchies():
        top = hierarchy / root.lstrip("/")
        if not top.exists():
            continue
        for path in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                path.rmdir()  # cgroup directories are removed with rmdir, deepest first
        with contextlib.suppress(OSError):
            top.rmdir()


def remove_containers(node: Node) -> None:
    """Kill every task and delete every container (pod sandboxes included) in the node's containerd."""
    ctr = node.ctr()
    ids = subprocess.run([*ctr, "containers", "ls", "-q"], capture_output=True, text=True).stdout.split()
    for cid in ids:
        subprocess.run([*ctr, "tasks", "kill", "--all", "--signal", "SIGKILL", cid], capture_output=True)
    for cid in ids:
        subprocess.run([*ctr, "tasks", "delete", "--force", cid], capture_output=True)
        subprocess.run([*ctr, "containers", "delete", cid], capture_output=True)


def kill_shims(node: Node) -> None:
    """A shim outlives containerd by design; ours name our socket in their command line."""
    marker = str(node.socket).encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"containerd-shim" in cmdline and marker in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)


def unmount_under(directory: Path) -> None:
    prefix = str(directory.resolve()) + "/"
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for point in sorted({p for p in points if p.startswith(prefix)}, key=len, reverse=True):
        subprocess.run(["umount", "--lazy", point], capture_output=True)


def remove_log_links(directory: Path) -> None:
    """The kubelet links each container's log into /var/log/containers; drop the links into ours."""
    prefix = str(directory.resolve()) + "/"
    logs = Path("/var/log/containers")
    if not logs.is_dir():
        return
    for link in logs.iterdir():
        with contextlib.suppress(OSError):
            if link.is_symlink() and os.readlink(link).startswith(prefix):
                link.unlink()
