"""``python -m cfemulator``: run the emulator as its own process (integration tests, manual poking).

Prints the API base URL as the first stdout line (flushed), e.g. ``http://127.0.0.1:40123/client/v4``.
With ``--bootstrap "Account API Tokens Write,Workers Scripts Read"`` it also creates an account and a
token holding those groups on it, and prints one JSON line ``{"account_id", "token_id", "token"}``.
Everything else is driven through the HTTP control plane under ``<origin>/_emulator`` (see
``cfemulator.control``). Runs until SIGTERM or SIGINT, then shuts down cleanly.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from .context import PreviewSettings
from .emulator import Emulator


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cfemulator", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    p.add_argument("--limit", type=int, default=1200, help="requests per window per token")
    p.add_argument("--window", type=float, default=300.0, help="rate-limit window, seconds")
    p.add_argument("--block", type=float, default=300.0, help="block after exceeding, seconds")
    p.add_argument("--token-quota", type=int, default=500, help="account-owned tokens per account")
    p.add_argument("--pow-k", type=int, default=PreviewSettings.k, help="proof-of-work segments")
    p.add_argument("--pow-g", type=int, default=PreviewSettings.g, help="hashes per segment")
    p.add_argument("--preview-ttl", type=float, default=3600.0, help="unclaimed preview account lifetime, s")
    p.add_argument("--bootstrap", default="", help="comma-separated permission group names for a seed token")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    previews = PreviewSettings(k=args.pow_k, g=args.pow_g, account_ttl=args.preview_ttl)
    emu = Emulator(
        limit=args.limit,
        window=args.window,
        block=args.block,
        token_quota=args.token_quota,
        previews=previews,
        host=args.host,
        port=args.port,
    )
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    print(emu.start(), flush=True)
    try:
        if args.bootstrap:
            account = emu.add_account("bootstrap")
            token = emu.mint_token(
                account, [n.strip() for n in args.bootstrap.split(",") if n.strip()], name="bootstrap"
            )
            seed = {"account_id": account, "token_id": emu.token_id(token), "token": token}
            print(json.dumps(seed), flush=True)
        while not done.wait(0.5):  # a timeout keeps the main thread responsive to signals
            pass
    finally:
        emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
