"""namespace_locks: ordinary issues share a namespace; an exclusive one waits for them and keeps new
ones out, and is never starved by a stream of shared holders."""

from __future__ import annotations

import asyncio

from agentaccounts.namespace_locks import NamespaceLocks, SharedOrExclusive


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_shared_holders_run_together() -> None:
    lock, inside, both = SharedOrExclusive(), 0, asyncio.Event()

    async def hold() -> None:
        nonlocal inside
        async with lock.shared():
            inside += 1
            if inside == 2:
                both.set()
            await asyncio.wait_for(both.wait(), timeout=5)  # would time out if they were serialised

    await asyncio.gather(hold(), hold())


async def test_an_exclusive_holder_waits_for_shared_ones_and_keeps_new_ones_out() -> None:
    lock, order = SharedOrExclusive(), []
    release = asyncio.Event()

    async def reader(name: str, wait: asyncio.Event | None) -> None:
        async with lock.shared():
            order.append(f"{name} in")
            if wait:
                await wait.wait()
            order.append(f"{name} out")

    async def writer() -> None:
        async with lock.exclusive():
            order.append("writer in")
            order.append("writer out")

    first = asyncio.ensure_future(reader("r1", release))
    await _settle()
    w = asyncio.ensure_future(writer())
    await _settle()
    late = asyncio.ensure_future(reader("r2", None))  # arrives while the writer waits
    await _settle()
    assert order == ["r1 in"]  # neither the writer nor the late reader got in
    release.set()
    await asyncio.gather(first, w, late)
    assert order == ["r1 in", "r1 out", "writer in", "writer out", "r2 in", "r2 out"]


async def test_exclusive_holders_exclude_each_other() -> None:
    lock, inside, most = SharedOrExclusive(), 0, 0

    async def writer() -> None:
        nonlocal inside, most
        async with lock.exclusive():
            inside += 1
            most = max(most, inside)
            await _settle()
            inside -= 1

    await asyncio.gather(*(writer() for _ in range(5)))
    assert most == 1


def test_namespaces_map_to_a_bounded_set_of_locks() -> None:
    locks = NamespaceLocks(stripes=8)
    assert locks("team-a") is locks("team-a")
    assert len({id(locks(f"ns-{n}")) for n in range(1000)}) <= 8
