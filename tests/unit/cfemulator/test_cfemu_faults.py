"""Fault knobs over real sockets: 5xx rate, latency, dropped connections — from sync and async clients."""

from __future__ import annotations

import asyncio
import random
import time

import httpx
import pytest

from cfemulator import Emulator
from cfemulator.helpers import bearer
from cfemulator.schema import validate_exchange


def test_error_rate_one_answers_5xx_envelope(
    emu: Emulator, api: httpx.Client, account: str, parent: str
) -> None:
    emu.faults.error_rate, emu.faults.error_status = 1.0, 503
    response = api.get(f"/accounts/{account}/tokens", headers=bearer(parent))
    assert response.status_code == 503
    assert response.json() == {
        "success": False,
        "errors": [{"code": 10001, "message": "Internal server error"}],
        "messages": [],
        "result": None,
    }
    request_half, response_half = validate_exchange(emu.requests[-1])
    assert request_half.ok and response_half.skipped and "503" in response_half.skipped
    emu.faults.clear()
    assert api.get(f"/accounts/{account}/tokens", headers=bearer(parent)).status_code == 200


def test_drop_closes_the_connection_without_a_response(
    emu: Emulator, api: httpx.Client, account: str
) -> None:
    emu.faults.drop_rate = 1.0
    with pytest.raises(httpx.RemoteProtocolError):
        api.get(f"/accounts/{account}/tokens/verify")
    dropped = emu.requests[-1]
    assert (dropped.method, dropped.status, dropped.response) == ("GET", None, None)
    assert "dropped" in (validate_exchange(dropped)[1].skipped or "")
    emu.faults.drop_rate = 0.0
    assert api.get(f"/accounts/{account}/tokens/verify").status_code == 400  # the server is still fine


def test_latency_is_added(emu: Emulator, api: httpx.Client, account: str, parent: str) -> None:
    emu.faults.latency = 0.3
    started = time.monotonic()
    assert api.get(f"/accounts/{account}/tokens/verify", headers=bearer(parent)).status_code == 200
    assert time.monotonic() - started >= 0.3


async def test_error_rate_is_reproducible_from_an_async_client(
    emu: Emulator, account: str, parent: str
) -> None:
    emu.faults.error_rate, emu.faults.rng = 0.5, random.Random(1234)
    replay = random.Random(1234)
    expected = sum(replay.random() < 0.5 for _ in range(40))  # one draw per request, whatever the order
    async with httpx.AsyncClient(base_url=emu.base_url, headers=bearer(parent)) as client:
        responses = await asyncio.gather(
            *(client.get(f"/accounts/{account}/tokens/verify") for _ in range(40))
        )
    statuses = [r.status_code for r in responses]
    assert set(statuses) == {200, 500}
    assert statuses.count(500) == expected
    assert len(emu.requests) == 40
