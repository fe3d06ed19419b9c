"""A faithful Cloudflare API v4 emulator, for tests only.

Why it exists: the Cloudflare provider must be tested against something that behaves like Cloudflare
— real HTTP, the v4 envelope, real status and error codes, policy evaluation, per-token rate limits,
expiry on the wall clock, proof-of-work previews — without touching the real service.

    from cfemulator import Emulator
    from cfemulator.helpers import bearer
    with Emulator(limit=20, window=5, block=3) as emu:      # real defaults: 1200 / 300 s / 300 s
        account = emu.add_account()
        parent = emu.mint_token(account, ["Account API Tokens Write", "Workers Scripts Read"])
        httpx.get(f"{emu.base_url}/accounts/{account}/tokens/verify", headers=bearer(parent))

As a process: ``python -m cfemulator --port 0`` prints its base URL (see ``__main__``).
Schema checks: ``cfemulator.schema``. Error codes: ``cfemulator.envelope`` and ``cfemulator.auth``.
"""

from .context import Exchange, PreviewSettings
from .emulator import Emulator
from .faults import Faults

__all__ = ["Emulator", "Exchange", "Faults", "PreviewSettings"]
