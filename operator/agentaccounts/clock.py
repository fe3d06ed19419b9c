"""Time, in one place: the operator's clock and the one timestamp format it writes.

Decisions take the clock as a parameter (`Clock`) so tests pass a virtual one; this module is where the
real one comes from. Every timestamp the operator writes (status, annotations, Cloudflare's
`expires_on`) is RFC 3339 in UTC with whole seconds, rounded down, so a written expiry is never later
than the one decided.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    """UTC, whole seconds (rounded down: never later than asked), `Z` suffix; naive means UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
