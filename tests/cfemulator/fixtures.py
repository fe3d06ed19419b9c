"""The one set of emulator test fixtures, shared by the emulator's own tests, the integration tests and
the Cloudflare benchmark: the same proof-of-work size and the same parent-token permissions everywhere.

`PARENT_PERMISSIONS` is what every test's parent token holds: mint and list account tokens, plus every
permission group any test grants to an agent or checks against. A test that needs a parent WITHOUT
some right mints its own with `mint_parent(emu, permissions=[...])`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .context import PreviewSettings
from .emulator import Emulator

PARENT_PERMISSIONS = [
    "Account API Tokens Write",
    "Workers Scripts Read",
    "Workers KV Storage Read",
    "Workers R2 Storage Write",
    "Account Settings Read",
    "DNS Read",
]
# Small proof of work: the flow is the real one, the hashing takes milliseconds.
SMALL_POW = PreviewSettings(k=4, g=500)
PARENT_TOKEN_NAME = "agentaccounts parent token"


@dataclass
class Parent:
    """An emulated Cloudflare account and the parent token the operator mints with."""

    emu: Emulator
    account: str
    value: str
    id: str
    permissions: list[str] = field(default_factory=list)


def mint_parent(emu: Emulator, account: str | None = None, permissions: list[str] | None = None) -> Parent:
    """A parent token (in a new emulated account unless `account` is given)."""
    account = account or emu.add_account()
    perms = list(PARENT_PERMISSIONS if permissions is None else permissions)
    value = emu.mint_token(account, perms, name=PARENT_TOKEN_NAME)
    token_id = emu.token_id(value)
    assert token_id is not None
    return Parent(emu, account, value, token_id, perms)
