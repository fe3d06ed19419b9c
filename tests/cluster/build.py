"""Build the local control plane's binaries from the Go module proxy, cached per version.

Why this exists: these machines have no Docker engine (so no kind/k3d) and no package registry ships a
kube-apiserver, so the project builds etcd, kube-apiserver, kube-controller-manager, and for the real
node kube-scheduler and kubelet, itself.

`go install k8s.io/kubernetes/cmd/kube-apiserver@v1.34.4` fails because kubernetes' go.mod points its
staging modules at local directories (`k8s.io/api => ./staging/src/k8s.io/api`).  Replace directives
only apply in the main module, so we build through a tiny wrapper module whose go.mod is *generated*
from upstream's go.mod at the pinned tag: every local-path replace becomes a replace to the published
module at the matching version (kubernetes v1.34.4 -> staging v0.34.4; etcd v3.6.6 -> v3.6.6).  Its
`go` and `godebug` lines are copied so the binaries behave as upstream builds them.

Binaries land in ~/.cache/agentaccounts/bin/<name>-<version>; a second run finds them and returns at
once.  Usage: python tests/cluster/build.py [--print-dir]
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

KUBERNETES_VERSION = "v1.34.4"
ETCD_VERSION = "v3.6.6"
CACHE = Path(os.environ.get("AGENTACCOUNTS_CACHE", Path.home() / ".cache" / "agentaccounts"))
BIN_DIR = CACHE / "bin"


@dataclass(frozen=True)
class Target:
    """One upstream module whose main packages we build under the wrapper."""

    module: str
    version: str
    packages: dict[str, str]  # binary name -> import path of its main package

    def staging_version(self) -> str:
        # kubernetes publishes its staging modules as v0.<minor>.<patch>; etcd's siblings share its tag.
        if self.module == "k8s.io/kubernetes":
            return "v0." + self.version.removeprefix("v1.")
        return self.version


TARGETS = [
    Target(
        "go.etcd.io/etcd/server/v3",
        ETCD_VERSION,
        {"etcd": "go.etcd.io/etcd/server/v3"},
    ),
    Target(
        "k8s.io/kubernetes",
        KUBERNETES_VERSION,
        {
            "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
            "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
            # The node (tests/cluster/node.py): without a scheduler no pod is bound, without a kubelet
            # none runs. Same wrapper, same recipe; only suites that start a node need them.
            "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
            "kubelet": "k8s.io/kubernetes/cmd/kubelet",
        },
    ),
]


class BuildError(Exception):
    """A build step failed; the message says what to do."""


# Bump when the build recipe changes (flags, ldflags) so cached binaries from an older recipe are rebuilt.
RECIPE = "r2"


def binary_path(name: str) -> Path:
    version = next(t.version for t in TARGETS if name in t.packages)
    return BIN_DIR / f"{name}-{version}-{RECIPE}"


def _ldflags(target: Target) -> str:
    """Stamp the version the way upstream's release build does (kubectl's version skew check reads it)."""
    if target.module != "k8s.io/kubernetes":
        return "-s -w"
    major, minor = target.version.removeprefix("v").split(".")[:2]
    stamps = {
        "gitVersion": target.version,
        "gitMajor": major,
        "gitMinor": minor,
        "gitTreeState": "clean",
        "gitCommit": "0000000000000000000000000000000000000000",
        "buildDate": "1970-01-01T00:00:00Z",
    }
    pkgs = ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
    return " ".join(["-s", "-w", *(f"-X {p}.{k}={v}" for p in pkgs for k, v in stamps.items())])


def _go(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(["go", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        hint = ""
        if "proxy.golang.org" in proc.stderr or "dial tcp" in proc.stderr:
            hint = "\nThe Go module proxy is not reachable: check GOPROXY and the network."
        raise BuildError(f"`go {' '.join(args)}` failed in {cwd}:\n{tail}{hint}")
    return proc.stdout


def generate_go_mod(target: Target, env: dict[str, str], workdir: Path) -> str:
    """Wrapper go.mod for `target`, derived from upstream's own go.mod at the pinned tag."""
    info = json.loads(_go(["mod", "download", "-json", f"{target.module}@{target.version}"], workdir, env))
    upstream = Path(info["GoMod"]).read_text()
    header = [ln for ln in upstream.splitlines() if re.match(r"^(go|godebug) ", ln)]
    replaces = []
    for match in re.finditer(r"^\s*(?:replace\s+)?(\S+)\s*=>\s*(\.\.?/\S+)\s*$", upstream, re.M):
        module, local = match.groups()
        if "FORBIDDEN" in local:  # etcd's guard against importing its test modules; not a real module
            continue
        replaces.append(f"\t{module} => {module} {target.staging_version()}")
    lines = [
        "// Code generated by tests/cluster/build.py from "
        f"{target.module}@{target.version}'s go.mod. DO NOT EDIT.",
        "module agentaccounts.dev/localcluster",
        "",
        *header,
        "",
        f"require {target.module} {target.version}",
        "",
        "replace (",
        *sorted(replaces),
        ")",
        "",
        *(f"tool {pkg}" for pkg in target.packages.values()),
        "",
    ]
    return "\n".join(lines)


def build(target: Target) -> None:
    missing = [n for n in target.packages if not binary_path(n).exists()]
    if not missing:
        return
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
    BIN_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="agentaccounts-build-") as tmp:
        work = Path(tmp)
        _step(f"{target.module}@{target.version}: generating wrapper go.mod")
        (work / "go.mod").write_text(generate_go_mod(target, env, work))
        _step(f"{target.module}@{target.version}: resolving modules (downloads on first run)")
        _go(["mod", "tidy"], work, env)
        for name in missing:
            started = time.monotonic()
            _step(f"building {name} {target.version} (a cold build takes several minutes)")
            out = work / name
            _go(
                ["build", "-trimpath", f"-ldflags={_ldflags(target)}", "-o", str(out), target.packages[name]],
                work,
                env,
            )
            shutil.move(out, binary_path(name))  # atomic enough: only a finished binary gets the name
            _step(f"built {name} in {time.monotonic() - started:.0f}s -> {binary_path(name)}")


def _step(msg: str) -> None:
    print(f"[build] {msg}", file=sys.stderr, flush=True)


def main() -> int:
    if shutil.which("go") is None:
        print(
            "error: no Go toolchain on PATH; install Go >= 1.24 (https://go.dev/dl) and retry.",
            file=sys.stderr,
        )
        return 2
    try:
        for target in TARGETS:
            build(target)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if "--print-dir" in sys.argv:
        print(BIN_DIR)
    return 0


if __name__ == "__main__":
    sys.exit(main())
