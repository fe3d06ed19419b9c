"""Fixtures for the emulator's own tests: a fresh emulator per test on a free loopback port.

Proof-of-work sizes are shrunk (cfemulator.fixtures.SMALL_POW) so preview tests take milliseconds; rate
limits keep their real defaults unless a test builds its own ``Emulator`` with shrunken ones. The parent
token's permissions are the shared ones (cfemulator.fixtures.PARENT_PERMISSIONS).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from cfemulator import Emulator
from cfemulator.fixtures import SMALL_POW, mint_parent


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(previews=SMALL_POW) as emulator:
        yield emulator


@pytest.fixture
def account(emu: Emulator) -> str:
    return emu.add_account()


@pytest.fixture
def parent(emu: Emulator, account: str) -> str:
    """A minting token: Account API Tokens Write plus a few read groups, all on the whole account."""
    return mint_parent(emu, account).value


@pytest.fixture
def api(emu: Emulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.base_url, timeout=10.0) as client:
        yield client
