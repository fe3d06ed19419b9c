"""The launcher stops exactly what it started and recognises a stale state directory."""

from __future__ import annotations

import json
import os
from pathlib import Path

from cluster import launcher


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status").read_text()
    return "State:\tZ" not in status  # a zombie is dead, merely not reaped yet


def test_down_leaves_no_process_and_stale_state_is_cleaned(tmp_path: Path) -> None:
    directory = tmp_path / "cp"
    cluster = launcher.up(directory, die_with_parent=True)
    pids = dict(cluster.pids)
    assert set(pids) == {"etcd", "kube-apiserver", "kube-controller-manager"}
    assert all(_alive(pid) for pid in pids.values())
    assert launcher.up(directory).server == cluster.server  # a healthy cluster is reused, not restarted

    launcher.down(directory)
    assert not any(_alive(pid) for pid in pids.values())
    assert not directory.exists()

    # A killed run leaves state.json with dead PIDs behind: `up` must notice and start afresh.
    directory.mkdir()
    (directory / "state.json").write_text(json.dumps({"server": "https://127.0.0.1:1", "pids": pids}))
    fresh = launcher.up(directory, die_with_parent=True)
    try:
        assert fresh.server != "https://127.0.0.1:1"
        assert fresh.running()
    finally:
        launcher.down(directory)
