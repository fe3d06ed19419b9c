"""The provisioning-preview proof of work: solve it (as Wrangler does) and verify it (as the API must).

Why it exists: temporary accounts are gated by a chained-SHA-256 puzzle. The emulator verifies real
solutions, so a provider that gets the encoding wrong (base64url vs standard base64, h0 left out,
off-by-one segment length) fails here rather than against Cloudflare.

Puzzle: ``h0 = SHA-256(seed bytes)``; then ``k`` segments of ``g`` chained hashes (``h = SHA-256(h)``),
keeping the hash at the end of each; ``checkpoints`` = standard base64 of ``h0 || end1 || ... || endk``.
Every segment is verifiable on its own, which is how the verifier checks it (all of them).
"""

from __future__ import annotations

import base64
import binascii
import hashlib

MAX_WORK = 64_000_000  # Wrangler refuses challenges with k * g above this


def decode_seed(seed: str) -> bytes:
    """``seed`` is base64url of 32 bytes; padding is optional."""
    return base64.urlsafe_b64decode(seed + "=" * (-len(seed) % 4))


def encode_seed(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _chain(start: bytes, g: int) -> bytes:
    h = start
    sha = hashlib.sha256
    for _ in range(g):
        h = sha(h).digest()
    return h


def solve(seed: str, k: int, g: int) -> str:
    """The checkpoints string for a challenge, as a client would compute it."""
    if k * g > MAX_WORK:
        raise ValueError(f"challenge too expensive: k*g = {k * g} > {MAX_WORK}")
    points = [hashlib.sha256(decode_seed(seed)).digest()]
    for _ in range(k):
        points.append(_chain(points[-1], g))
    return base64.b64encode(b"".join(points)).decode()


def verify(seed: str, k: int, g: int, checkpoints: object) -> bool:
    if not isinstance(checkpoints, str):
        return False
    try:
        raw = base64.b64decode(checkpoints, validate=True)  # standard alphabet only, as specified
    except (binascii.Error, ValueError):
        return False
    if len(raw) != (k + 1) * 32:
        return False
    points = [raw[i : i + 32] for i in range(0, len(raw), 32)]
    if points[0] != hashlib.sha256(decode_seed(seed)).digest():
        return False
    return all(_chain(points[i], g) == points[i + 1] for i in range(k))
