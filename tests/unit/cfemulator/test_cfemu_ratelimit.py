"""Per-token rate limit, shrunk: the exceeding call is refused, then ALL calls block (retry-after)."""

from __future__ import annotations

import httpx

from cfemulator import Emulator
from cfemulator.helpers import bearer, wait_until
from cfemulator.ratelimit import RateLimiter


def test_limit_block_and_retry_after() -> None:
    with Emulator(limit=5, window=60, block=2) as emu, httpx.Client(base_url=emu.base_url) as api:
        account = emu.add_account()
        token = emu.mint_token(account, ["Account API Tokens Write", "Workers Scripts Read"])
        other = emu.mint_token(account, ["Workers Scripts Read"])
        token_id = emu.token_id(token)
        verify = f"/accounts/{account}/tokens/verify"

        remaining = [api.get(verify, headers=bearer(token)).headers["Ratelimit"] for _ in range(5)]
        assert remaining == [f'"default";r={n};t=60' for n in (4, 3, 2, 1, 0)]
        assert not emu.is_blocked(token_id)

        refused = api.get(verify, headers=bearer(token))
        assert refused.status_code == 429
        assert refused.json()["errors"][0]["code"] == 971
        assert "More than 5 requests per 60 seconds" in refused.json()["errors"][0]["message"]
        assert refused.headers["retry-after"] == "2"
        assert refused.headers["Ratelimit-Policy"] == '"default";q=5;w=60'
        assert emu.is_blocked(token_id)

        # ALL calls by that token are blocked, whatever the endpoint; other tokens are not.
        for path in (f"/accounts/{account}/tokens", f"/accounts/{account}/workers/scripts", "/no/such/route"):
            blocked = api.get(path, headers=bearer(token))
            assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) in (1, 2)
        assert api.get(f"/accounts/{account}/workers/scripts", headers=bearer(other)).status_code == 200
        assert emu.request_count(token_id) == 9

        wait_until(lambda: not emu.is_blocked(token_id), timeout=10, what="the block to end")
        assert api.get(verify, headers=bearer(token)).status_code == 200


def test_window_slides() -> None:
    now = [0.0]
    limiter = RateLimiter(limit=3, window=10, block=100, clock=lambda: now[0])
    for t in (0.0, 1.0, 2.0):
        now[0] = t
        assert limiter.hit("k").allowed
    now[0] = 9.0
    assert not limiter.hit("k").allowed  # 4 within 10 s: blocked for 100 s
    now[0] = 50.0
    verdict = limiter.hit("k")
    assert not verdict.allowed and verdict.retry_after == 59 and verdict.headers["retry-after"] == "59"
    now[0] = 109.5
    assert limiter.hit("k").allowed and limiter.count("k") == 6


def test_requests_just_inside_a_sliding_window_are_allowed() -> None:
    now = [0.0]
    limiter = RateLimiter(limit=2, window=10, block=100, clock=lambda: now[0])
    assert limiter.hit("k").allowed
    now[0] = 5.0
    assert limiter.hit("k").allowed
    now[0] = 10.0  # the first request has left the window
    assert limiter.hit("k").allowed
    now[0] = 12.0
    assert not limiter.hit("k").allowed


def test_forced_429_applies_to_everyone_and_ends(
    emu: Emulator, api: httpx.Client, account: str, parent: str
) -> None:
    emu.faults.force_429(seconds=2)
    for headers in (bearer(parent), {}):
        response = api.get(f"/accounts/{account}/tokens", headers=headers)
        assert response.status_code == 429 and response.json()["errors"][0]["code"] == 971
        assert int(response.headers["retry-after"]) in (1, 2)
    wait_until(
        lambda: api.get(f"/accounts/{account}/tokens", headers=bearer(parent)).status_code == 200,
        timeout=10,
        what="the forced 429 to end",
    )
