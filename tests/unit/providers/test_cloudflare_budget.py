"""The shared request budget: never over the window limit, holds after 429, RateLimited on long waits."""

from __future__ import annotations

import asyncio
import random

import pytest

from agentaccounts.errors import RateLimited
from agentaccounts.providers.cloudflare.budget import BudgetRegistry, RequestBudget, budget_key
from unit.fakes import VirtualTime


def _assert_window(grants: list[float], limit: int, window: float) -> None:
    grants = sorted(grants)
    for first, later in zip(grants, grants[limit:], strict=False):
        assert later - first >= window, f"{limit + 1} requests within {later - first}s"


async def test_many_concurrent_callers_never_exceed_the_window() -> None:
    vt = VirtualTime()
    budget = RequestBudget(limit=50, window=10.0, max_wait=1e9, clock=vt.clock, sleep=vt.sleep)
    grants: list[float] = []
    rng = random.Random(7)

    async def caller() -> None:
        for _ in range(5):
            await budget.acquire()
            grants.append(vt.now)
            if rng.random() < 0.5:
                await asyncio.sleep(0)  # interleave differently from the other callers

    await asyncio.gather(*(caller() for _ in range(120)))
    assert len(grants) == 600
    _assert_window(grants, 50, 10.0)
    assert vt.now >= 110.0  # 600 requests at 50 per 10 s: callers waited instead of bursting


async def test_sliding_window_frees_slots_as_they_age() -> None:
    vt = VirtualTime()
    budget = RequestBudget(limit=2, window=10.0, max_wait=60, clock=vt.clock, sleep=vt.sleep)
    await budget.acquire()
    vt.now = 4.0
    await budget.acquire()
    await budget.acquire()  # waits for the first slot to age out at t=10
    assert vt.now == 10.0
    assert budget.in_window == 2


async def test_a_long_wait_raises_rate_limited_instead_of_blocking() -> None:
    vt = VirtualTime()
    budget = RequestBudget(limit=2, window=300.0, max_wait=10, clock=vt.clock, sleep=vt.sleep)
    await budget.acquire()
    await budget.acquire()
    with pytest.raises(RateLimited) as caught:
        await budget.acquire()
    assert caught.value.delay == pytest.approx(300.0)
    assert vt.slept == []  # nothing slept: the account waits, the worker does not


async def test_hold_stops_every_caller_until_it_passes() -> None:
    vt = VirtualTime()
    budget = RequestBudget(limit=100, window=300.0, max_wait=10, clock=vt.clock, sleep=vt.sleep)
    budget.hold(3.0)
    budget.hold(1.0)  # holds never shrink
    assert budget.held_for() == 3.0
    await asyncio.gather(budget.acquire(), budget.acquire())
    assert vt.now == 3.0
    assert budget.held_for() == 0.0


async def test_a_long_hold_raises_rate_limited_with_its_delay() -> None:
    vt = VirtualTime()
    budget = RequestBudget(limit=100, window=300.0, max_wait=10, clock=vt.clock, sleep=vt.sleep)
    budget.hold(120.0)
    for _ in range(3):
        with pytest.raises(RateLimited) as caught:
            await budget.acquire()
        assert caught.value.delay == pytest.approx(120.0)
    assert budget.in_window == 0


def test_registry_shares_one_budget_per_token_and_never_keeps_the_value() -> None:
    registry = BudgetRegistry(limit=10, window=60.0)
    first = registry.for_token("cfat_parent-token-one")
    assert registry.for_token("cfat_parent-token-one") is first
    assert registry.for_token("cfat_parent-token-two") is not first
    assert registry.for_token(None) is registry.for_token("")
    assert len(registry) == 3
    assert first.limit == 10 and first.window == 60.0
    key = budget_key("cfat_parent-token-one")
    assert len(key) == 64 and "parent" not in key
    assert "cfat_parent" not in repr(vars(registry))


def test_invalid_budget_is_refused() -> None:
    with pytest.raises(ValueError):
        RequestBudget(limit=0)
