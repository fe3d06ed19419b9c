"""Start/stop from sync and async code, bind errors reach the caller, stop really closes the server."""

from __future__ import annotations

import httpx
import pytest

from cfemulator import Emulator
from cfemulator.helpers import bearer


async def test_start_and_stop_inside_a_running_event_loop() -> None:
    emu = Emulator()
    base_url = emu.start()  # setup runs on the emulator's own thread, not on this test's loop
    try:
        account = emu.add_account()
        token = emu.mint_token(account, ["Workers Scripts Read"])
        async with httpx.AsyncClient(base_url=base_url) as client:
            response = await client.get(f"/accounts/{account}/workers/scripts", headers=bearer(token))
        assert response.status_code == 200 and response.json()["success"] is True
    finally:
        emu.stop()


def test_stop_closes_the_port_and_is_idempotent() -> None:
    emu = Emulator()
    base_url = emu.start()
    with httpx.Client(base_url=base_url) as client:
        assert client.get("/accounts/x/tokens").status_code == 400  # keep-alive connection now open
        emu.stop()
        emu.stop()
        with pytest.raises(httpx.TransportError):
            client.get("/accounts/x/tokens")
    with pytest.raises(RuntimeError), Emulator() as running:
        running.start()


def test_a_busy_port_fails_in_the_caller() -> None:
    with Emulator() as first:
        port = int(first.origin.rsplit(":", 1)[1])
        with pytest.raises(OSError):
            Emulator(port=port).start()


def test_bucket_groups_need_explicit_resources(emu: Emulator, account: str) -> None:
    with pytest.raises(ValueError, match="bucket-scoped"):
        emu.mint_token(account, ["Workers R2 Storage Bucket Item Read"])
    with pytest.raises(KeyError):
        emu.mint_token(account, ["No Such Group"])
