"""Leader election against an in-memory Lease store and a virtual clock (no cluster, no real sleeps)."""

from __future__ import annotations

import asyncio
import copy
import heapq
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agentaccounts import leader

NS, NAME = "agentaccounts-system", "agentaccounts-leader"
START = datetime(2030, 1, 1, tzinfo=UTC)


class MemoryStore:
    """A Lease API with resourceVersion checks, like the API server's; `fail` injects errors."""

    def __init__(self) -> None:
        self.leases: dict[tuple[str, str], dict[str, Any]] = {}
        self.version = itertools.count(1)
        self.fail: list[BaseException] = []  # raised (in order) by the next calls
        self.writes = 0

    def _maybe_fail(self) -> None:
        if self.fail:
            raise self.fail.pop(0)

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._maybe_fail()
        lease = self.leases.get((namespace, name))
        return copy.deepcopy(lease) if lease else None

    async def create(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        self._maybe_fail()
        if (namespace, name) in self.leases:
            raise leader.Conflict("already exists")
        return self._store(namespace, name, body)

    async def replace(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        self._maybe_fail()
        current = self.leases[(namespace, name)]
        if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise leader.Conflict("the object has been modified")
        return self._store(namespace, name, body)

    def _store(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        stored = copy.deepcopy(body)
        stored["metadata"]["resourceVersion"] = str(next(self.version))
        self.leases[(namespace, name)] = stored
        self.writes += 1
        return copy.deepcopy(stored)

    def holder(self) -> str:
        return leader.holder_of(self.leases.get((NS, NAME)))

    def spec(self) -> dict[str, Any]:
        return dict(self.leases[(NS, NAME)]["spec"])


class VirtualClock:
    """now() and sleep() in virtual time; `advance` runs every task until all wait, then jumps."""

    def __init__(self) -> None:
        self.t = START
        self._sleepers: list[tuple[datetime, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> datetime:
        return self.t

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.t + timedelta(seconds=seconds), next(self._seq), future))
        await future

    async def advance(self, seconds: float) -> None:
        end = self.t + timedelta(seconds=seconds)
        while True:
            await _settle()
            if not self._sleepers or self._sleepers[0][0] > end:
                break
            wake, _, future = heapq.heappop(self._sleepers)
            self.t = wake
            if not future.done():
                future.set_result(None)
        self.t = end
        await _settle()


async def _settle() -> None:
    for _ in range(50):  # the in-memory store never really waits, so a few turns run everyone
        await asyncio.sleep(0)


def parse_micro_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def kwargs(clock: VirtualClock, **extra: Any) -> dict[str, Any]:
    return {"lease_seconds": 15, "renew_every": 5, "now": clock.now, "sleep": clock.sleep, **extra}


async def campaign(store: MemoryStore, clock: VirtualClock, identity: str) -> None:
    """What the CLI does: acquire, then hold until leadership is lost."""
    await leader.acquire(store, identity, NS, NAME, **kwargs(clock))
    await leader.hold(store, identity, NS, NAME, **kwargs(clock))


async def test_first_candidate_creates_the_lease() -> None:
    store, clock = MemoryStore(), VirtualClock()
    lease = await leader.acquire(store, "pod-a", NS, NAME, **kwargs(clock))
    assert lease["metadata"]["resourceVersion"] == "1"
    assert store.spec() == {
        "holderIdentity": "pod-a",
        "leaseDurationSeconds": 15,
        "acquireTime": "2030-01-01T00:00:00.000000Z",
        "renewTime": "2030-01-01T00:00:00.000000Z",
        "leaseTransitions": 0,
    }


async def test_one_leader_among_many_candidates() -> None:
    store, clock = MemoryStore(), VirtualClock()
    names = [f"pod-{i}" for i in range(5)]
    tasks = [asyncio.create_task(campaign(store, clock, n)) for n in names]
    await clock.advance(120)  # eight lease durations
    first = store.holder()
    assert first in names
    assert [t.done() for t in tasks] == [False] * 5  # leader holding, four standbys waiting
    assert store.spec()["leaseTransitions"] == 0
    assert store.spec()["renewTime"] == leader.format_micro_time(START + timedelta(seconds=120))
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_standby_takes_over_after_the_leader_stops_renewing() -> None:
    store, clock = MemoryStore(), VirtualClock()
    first = asyncio.create_task(campaign(store, clock, "pod-a"))
    await clock.advance(1)
    second = asyncio.create_task(campaign(store, clock, "pod-b"))
    await clock.advance(30)
    assert store.holder() == "pod-a"
    first.cancel()  # killed: no release, the lease just stops changing
    last_renewal = parse_micro_time(store.spec()["renewTime"])
    await clock.advance((last_renewal + timedelta(seconds=14.9) - clock.t).total_seconds())
    assert store.holder() == "pod-a", "took over before the lease duration passed"
    await clock.advance(10)
    assert store.holder() == "pod-b"
    spec = store.spec()
    assert spec["leaseTransitions"] == 1
    took_over = parse_micro_time(spec["acquireTime"])
    # expiry is measured from the standby's own observation, which lags by at most one poll
    assert timedelta(seconds=15) <= took_over - last_renewal <= timedelta(seconds=15 + 5)
    second.cancel()
    await asyncio.gather(first, second, return_exceptions=True)


async def test_release_hands_over_without_waiting_for_expiry() -> None:
    store, clock = MemoryStore(), VirtualClock()
    await leader.acquire(store, "pod-a", NS, NAME, **kwargs(clock))
    standby = asyncio.create_task(leader.acquire(store, "pod-b", NS, NAME, **kwargs(clock)))
    await clock.advance(6)
    assert await leader.release(store, "pod-a", NS, NAME, now=clock.now) is True
    await clock.advance(5)  # one poll, not a lease duration
    assert standby.done() and store.holder() == "pod-b"
    assert await leader.release(store, "pod-a", NS, NAME, now=clock.now) is False  # not ours any more


async def test_hold_raises_when_another_identity_took_the_lease() -> None:
    store, clock = MemoryStore(), VirtualClock()
    await leader.acquire(store, "pod-a", NS, NAME, **kwargs(clock))
    holding = asyncio.create_task(leader.hold(store, "pod-a", NS, NAME, **kwargs(clock)))
    await clock.advance(11)
    assert not holding.done()
    store.leases[(NS, NAME)]["spec"]["holderIdentity"] = "intruder"
    await clock.advance(5)
    with pytest.raises(leader.LeadershipLost, match="held by intruder"):
        holding.result()


async def test_hold_gives_up_at_the_renew_deadline_before_anyone_may_take_over() -> None:
    store, clock = MemoryStore(), VirtualClock()
    await leader.acquire(store, "pod-a", NS, NAME, **kwargs(clock))
    holding = asyncio.create_task(leader.hold(store, "pod-a", NS, NAME, **kwargs(clock)))
    store.fail = [ConnectionError("API server unreachable")] * 10
    await clock.advance(9)
    assert not holding.done()  # one failure is tolerated
    await clock.advance(1)  # 10 s = lease 15 s - renew 5 s
    with pytest.raises(leader.LeadershipLost, match="not renewed for 10s"):
        holding.result()


async def test_conflicts_and_transient_errors_are_retried() -> None:
    store, clock = MemoryStore(), VirtualClock()
    store.fail = [RuntimeError("500"), leader.Conflict("lost the create race")]
    task = asyncio.create_task(leader.acquire(store, "pod-a", NS, NAME, **kwargs(clock)))
    await clock.advance(4)
    assert not task.done()
    await clock.advance(6)  # two retries later
    assert task.done() and store.holder() == "pod-a"


async def test_a_racing_replace_loses_with_conflict() -> None:
    store, clock = MemoryStore(), VirtualClock()
    await leader.acquire(store, "pod-a", NS, NAME, **kwargs(clock))
    stale = await store.get(NS, NAME)
    await store.replace(NS, NAME, copy.deepcopy(stale) or {})  # someone else wrote in between
    with pytest.raises(leader.Conflict):
        await store.replace(NS, NAME, stale or {})


async def test_restarted_leader_with_the_same_identity_resumes_at_once() -> None:
    store, clock = MemoryStore(), VirtualClock()
    await leader.acquire(store, "pod-a", NS, NAME, **kwargs(clock))
    await clock.advance(3)
    await leader.acquire(store, "pod-a", NS, NAME, **kwargs(clock))  # container restart, same pod
    assert store.spec()["leaseTransitions"] == 0
    assert store.spec()["acquireTime"] == "2030-01-01T00:00:00.000000Z"


@pytest.mark.parametrize(("lease_seconds", "renew_every"), [(15, 15), (15, 0), (5, 10)])
async def test_renew_period_must_be_shorter_than_the_lease(lease_seconds: int, renew_every: float) -> None:
    with pytest.raises(ValueError, match="renew_every"):
        await leader.acquire(MemoryStore(), "a", NS, NAME, lease_seconds, renew_every)


class HangingStore(MemoryStore):
    """A half-open connection: the renewal's read never answers."""

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        if self.leases:
            await asyncio.Event().wait()
        return await super().get(namespace, name)


async def test_a_renewal_that_hangs_loses_leadership_at_the_deadline() -> None:
    # Before: the hung read never returned, so the deadline check was never reached and the old
    # leader kept acting after a standby could take over. Real time here, one second of it.
    store = HangingStore()
    await leader.acquire(store, "pod-a", NS, NAME, lease_seconds=2, renew_every=1)
    started = asyncio.get_running_loop().time()
    with pytest.raises(leader.LeadershipLost, match="not renewed"):
        await asyncio.wait_for(leader.hold(store, "pod-a", NS, NAME, lease_seconds=2, renew_every=1), 10)
    assert asyncio.get_running_loop().time() - started < 5
