"""What the benchmarks report about the machine and the operator process (Linux /proc)."""

from __future__ import annotations

from pathlib import Path


def proc_kib(pid: int, field: str) -> int:
    """A KiB field of /proc/PID/status (VmRSS, VmHWM, ...); 0 once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def mem_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024 / 1024
    return 0.0
