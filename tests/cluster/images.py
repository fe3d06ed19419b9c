"""Container images for the real node, made on this machine: no registry is reachable from here.

Three images, each cached under ~/.cache/agentaccounts/images by a hash of everything it is made
from, so a warm run imports archives and builds nothing:

- pause: the pod sandbox. A 20-line Go program (wait for SIGTERM, reap children) built with the
  machine's Go toolchain into a one-file image — what registry.k8s.io/pause does, minus the registry.
- agent: busybox (Debian's busybox-static) and the machine's kubectl, both static binaries. It is the
  "AI agent" of the e2e tests: a shell that calls the API server with a mounted kubeconfig.
- operator: operator/Dockerfile itself, built by buildah (vfs storage, no daemon) on a python base
  that mmdebstrap makes from Debian's mirror. The base is a venv at /usr/local over Debian's python3,
  so it behaves like the official python image the Dockerfile names by default: `python` and `pip`
  on PATH, pip-installed pip (uninstallable, as the Dockerfile's last step wants), no PEP 668 marker.

The first two are written as docker-archive tarballs directly (a layer tar, a config, a manifest):
nothing to run, nothing to pull. Every archive is imported into containerd with `ctr images import`.
    python -m cluster.images   # build (or find) all three; prints their references
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cluster.build import CACHE

REPO = Path(__file__).resolve().parents[2]
IMAGES = CACHE / "images"
DEBIAN_MIRROR = "http://deb.debian.org/debian"  # the mirror apt uses here (/etc/apt/sources.list.d)
HOST_CA = "/etc/ssl/certs/ca-certificates.crt"
HOST_CA_IN_BUILD = "/run/agentaccounts-build-ca.crt"
# Bump when a recipe below changes, so every cached archive is rebuilt.
RECIPE = "i1"

PAUSE_GO = """package main

// The pod sandbox's only process: hold the pod's namespaces until told to stop.
import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	child := make(chan os.Signal, 8)
	signal.Notify(child, syscall.SIGCHLD)
	for {
		select {
		case <-stop:
			return
		case <-child:
			for {
				var ws syscall.WaitStatus
				if pid, _ := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil); pid <= 0 {
					break
				}
			}
		}
	}
}
"""


class ImageError(Exception):
    """An image could not be built; the message carries the failing command's output."""


@dataclass(frozen=True)
class Image:
    ref: str  # e.g. localhost/agentaccounts:3f2a...; the tag is the content hash
    archive: Path  # docker-archive tarball, ready for `ctr images import`


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256(RECIPE.encode())
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:16]


def _run(args: list[str], **kwargs: object) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise ImageError(f"`{' '.join(args[:6])} ...` failed ({proc.returncode}):\n{tail}")
    return str(proc.stdout)


def _step(msg: str) -> None:
    print(f"[images] {msg}", file=sys.stderr, flush=True)


def _tar_entry(
    tar: tarfile.TarFile, name: str, data: bytes | None = None, mode: int = 0o755, link: str | None = None
) -> None:
    info = tarfile.TarInfo(name)
    info.mtime = 0  # reproducible layers: the same inputs give the same digest
    info.mode = mode
    if link is not None:
        info.type, info.linkname = tarfile.SYMTYPE, link
        tar.addfile(info)
    elif data is None:
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    else:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def write_docker_archive(out: Path, ref: str, layer: Path, config: dict[str, object]) -> None:
    """One-layer docker-archive (manifest.json + config + layer.tar), the format `ctr import` reads."""
    h = hashlib.sha256()
    with layer.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    image_config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{h.hexdigest()}"]},
        }
    ).encode()
    config_name = hashlib.sha256(image_config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [ref], "Layers": ["layer.tar"]}]).encode()
    tmp = out.with_suffix(".partial")
    with tarfile.open(tmp, "w") as tar:
        _tar_entry(tar, config_name, image_config, 0o644)
        _tar_entry(tar, "manifest.json", manifest, 0o644)
        tar.add(layer, "layer.tar")
    tmp.replace(out)  # only a complete archive gets the cached name


def _cached(name: str, key: str) -> tuple[str, Path]:
    IMAGES.mkdir(parents=True, exist_ok=True)
    return f"localhost/agentaccounts-{name}:{key}", IMAGES / f"{name}-{key}.tar"


def _prune(keep: Path) -> None:
    """Only the newest archive of each image stays: an operator archive is ~400 MB, and every source
    edit makes a new one."""
    name = keep.name.rsplit("-", 1)[0]
    for old in IMAGES.glob(f"{name}-*.tar"):
        if old != keep and old.name.rsplit("-", 1)[0] == name:
            old.unlink(missing_ok=True)


def pause_image() -> Image:
    ref, out = _cached("pause", _digest(PAUSE_GO.encode(), _run(["go", "version"]).encode()))
    if out.exists():
        return Image(ref, out)
    _step("building the pause image")
    with tempfile.TemporaryDirectory(prefix="agentaccounts-pause-") as tmp:
        work = Path(tmp)
        (work / "main.go").write_text(PAUSE_GO)
        env = {**os.environ, "CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GOFLAGS": "", "GO111MODULE": "off"}
        _run(
            ["go", "build", "-trimpath", "-ldflags=-s -w", "-o", str(work / "pause"), "main.go"],
            cwd=work,
            env=env,
        )
        layer = work / "layer.tar"
        with tarfile.open(layer, "w") as tar:
            _tar_entry(tar, "pause", (work / "pause").read_bytes())
        write_docker_archive(out, ref, layer, {"Entrypoint": ["/pause"], "User": "65535:65535"})
    return Image(ref, out)


def _kubectl() -> Path:
    """The machine's kubectl binary. Google's SDK ships a dispatcher plus versioned binaries beside it;
    the image gets the newest of those (the dispatcher would look for its siblings)."""
    found = shutil.which("kubectl")
    if found is None:
        raise ImageError("kubectl not found on PATH")
    real = Path(found).resolve()
    versioned = sorted(real.parent.glob("kubectl.1.*"), key=lambda p: int(p.name.rsplit(".", 1)[1]))
    return versioned[-1] if versioned else real


# busybox applets the agent's scripts use; each is a symlink to /bin/busybox.
APPLETS = ("sh", "sleep", "date", "echo", "cat", "grep", "test", "[", "true", "false", "ls", "wc", "tr")


def agent_image() -> Image:
    busybox, kubectl = Path("/bin/busybox"), _kubectl()
    if not busybox.exists():
        raise ImageError("/bin/busybox missing: apt-get install busybox-static")
    ref, out = _cached(
        "agent", _digest(busybox.read_bytes(), kubectl.read_bytes(), " ".join(APPLETS).encode())
    )
    if out.exists():
        return Image(ref, out)
    _step(f"building the agent image (busybox + {kubectl})")
    with tempfile.TemporaryDirectory(prefix="agentaccounts-agent-") as tmp:
        layer = Path(tmp) / "layer.tar"
        with tarfile.open(layer, "w") as tar:
            for d in ("bin", "usr", "usr/local", "usr/local/bin", "etc"):
                _tar_entry(tar, d)
            _tar_entry(tar, "tmp", mode=0o1777)
            _tar_entry(tar, "bin/busybox", busybox.read_bytes())
            for applet in APPLETS:
                _tar_entry(tar, f"bin/{applet}", link="busybox")
            _tar_entry(tar, "usr/local/bin/kubectl", kubectl.read_bytes())
            _tar_entry(
                tar, "etc/passwd", b"root:x:0:0::/:/bin/sh\nagent:x:65532:65532::/tmp:/bin/sh\n", 0o644
            )
        config = {
            "Env": ["PATH=/usr/local/bin:/bin", "HOME=/tmp"],
            "Entrypoint": ["/bin/sh", "-c"],
            "User": "65532:65532",
        }
        write_docker_archive(out, ref, layer, config)
    return Image(ref, out)


BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates", "passwd")


def python_base() -> Image:
    """Debian bookworm with python3, a venv at /usr/local: a stand-in for python:3.x-slim-bookworm."""
    recipe = f"{DEBIAN_MIRROR} bookworm minbase {' '.join(BASE_PACKAGES)} venv=/usr/local".encode()
    ref, out = _cached("python", _digest(recipe))
    if out.exists():
        return Image(ref, out)
    started = time.monotonic()
    _step(f"building the python base with mmdebstrap from {DEBIAN_MIRROR} (about a minute)")
    with tempfile.TemporaryDirectory(prefix="agentaccounts-base-") as tmp:
        layer = Path(tmp) / "rootfs.tar"
        _run(
            [
                "mmdebstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                '--customize-hook=chroot "$1" python3 -m venv /usr/local',
                # Leave out what an image never uses: docs, man pages, apt lists.
                *(f"--dpkgopt=path-exclude=/usr/share/{d}/*" for d in ("doc", "man", "info")),
                "bookworm",
                str(layer),
                DEBIAN_MIRROR,
            ]
        )
        path = "/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"
        write_docker_archive(out, ref, layer, {"Env": [f"PATH={path}", "LANG=C.UTF-8"], "Cmd": ["python3"]})
    _step(f"python base built in {time.monotonic() - started:.0f}s")
    return Image(ref, out)


def _operator_inputs() -> list[Path]:
    """Exactly what operator/Dockerfile COPYs, plus the Dockerfile: their bytes key the image."""
    sources = sorted(
        p
        for p in (REPO / "operator" / "agentaccounts").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )
    return [REPO / "operator" / "Dockerfile", REPO / "pyproject.toml", REPO / "README.md", *sources]


def operator_image() -> Image:
    base = python_base()
    inputs = _operator_inputs()
    parts = [base.ref.encode()] + [str(p.relative_to(REPO)).encode() + p.read_bytes() for p in inputs]
    ref, out = _cached("operator", _digest(*parts))
    if out.exists():
        return Image(ref, out)
    if shutil.which("buildah") is None:
        raise ImageError("buildah missing: apt-get install buildah")
    started = time.monotonic()
    _step("building the operator image from operator/Dockerfile with buildah (a few minutes cold)")
    with tempfile.TemporaryDirectory(prefix="agentaccounts-buildah-") as tmp:
        storage = ["--storage-driver", "vfs", "--root", f"{tmp}/root", "--runroot", f"{tmp}/run"]
        buildah = ["buildah", *storage]
        _run([*buildah, "pull", "--quiet", f"docker-archive:{base.archive}"])
        # pip in the build trusts what this machine trusts (its egress may re-sign TLS with a local CA):
        # the host's bundle and a pip.conf naming it are bind-mounted into RUN steps, never into a layer.
        pip_conf = Path(tmp) / "pip.conf"
        pip_conf.write_text(f"[global]\ncert = {HOST_CA_IN_BUILD}\n")
        mounts = ["-v", f"{HOST_CA}:{HOST_CA_IN_BUILD}:ro", "-v", f"{pip_conf}:/etc/pip.conf:ro"]
        _run(
            [
                *buildah,
                "bud",
                "--pull=never",
                "--layers=false",
                "--network=host",
                *mounts,
                "-f",
                str(REPO / "operator" / "Dockerfile"),
                "--build-arg",
                f"PYTHON_IMAGE={base.ref}",
                "-t",
                ref,
                str(REPO),
            ],
            env={**os.environ, "BUILDAH_FORMAT": "docker"},
        )
        partial = out.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        _run([*buildah, "push", "--quiet", ref, f"docker-archive:{partial}:{ref}"])
        partial.replace(out)
    _prune(out)
    _step(f"operator image built in {time.monotonic() - started:.0f}s -> {ref}")
    return Image(ref, out)


def import_images(ctr: list[str], images: list[Image]) -> None:
    """`ctr` is the command prefix that reaches the node's containerd (address and namespace)."""
    for image in images:
        _run([*ctr, "images", "import", str(image.archive)])


def main() -> int:
    try:
        for make in (pause_image, agent_image, operator_image):
            started = time.monotonic()
            image = make()
            print(f"{image.ref}  {image.archive}  ({time.monotonic() - started:.1f}s)")
    except ImageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
