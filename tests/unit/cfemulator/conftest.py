"""Fixtures for the emulator's own tests: a fresh emulator per test on a free loopback port.

Proof-of-work sizes are shrunk (k=4, g=500) so preview tests take milliseconds; rate limits keep their
real defaults unless a test builds its own ``Emulator`` with shrunken ones.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from cfemulator import Emulator, PreviewSettings

PARENT_PERMISSIONS = [
    "Account API Tokens Write",
    "Workers Scripts Read",
    "Workers KV Storage Read",
    "Workers R2 Storage Write",
    "Account Settings Read",
    "DNS Read",
]


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(previews=PreviewSettings(k=4, g=500)) as emulator:
        yield emulator


@pytest.fixture
def account(emu: Emulator) -> str:
    return emu.add_account()


@pytest.fixture
def parent(emu: Emulator, account: str) -> str:
    """A minting token: Account API Tokens Write plus a few read groups, all on the whole account."""
    return emu.mint_token(account, PARENT_PERMISSIONS, name="parent")


@pytest.fixture
def api(emu: Emulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.base_url, timeout=10.0) as client:
        yield client
