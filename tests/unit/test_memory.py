"""memory.trim_periodically: glibc's malloc_trim on a timer (a no-op where there is none)."""

from __future__ import annotations

import asyncio

import pytest

from agentaccounts import memory


def test_the_trimmer_is_found_on_glibc_and_returns_memory() -> None:
    trim = memory._trimmer()
    assert trim is not None  # this project's machines run glibc (Debian)
    assert trim() in (0, 1)  # 1: memory was released, 0: none could be


async def test_trimming_runs_until_cancelled_and_zero_means_never(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    three = asyncio.Event()

    def trim() -> int:
        calls.append(1)
        if len(calls) == 3:
            three.set()
        return 0

    monkeypatch.setattr(memory, "_trimmer", lambda: trim)
    task = asyncio.ensure_future(memory.trim_periodically(0.01))
    await asyncio.wait_for(three.wait(), timeout=10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await memory.trim_periodically(0)  # returns at once: never trims
