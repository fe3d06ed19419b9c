"""The request budget shared by every call made with one Cloudflare parent token.

Why it exists: Cloudflare allows 1200 requests per 5 minutes per token, cumulatively, and a token that
exceeds it is blocked for the next 5 minutes with HTTP 429 -- for ALL its calls, including the ones
other AgentAccounts need. One operator process may reconcile hundreds of accounts through the same
parent token, so the limit has to be enforced in one place per token, not per account:

- `RequestBudget` is a sliding-window limiter. `acquire()` returns only when a request may be sent
  without the window (default 1100 per 300 s: a 100-request margin for clock skew between us and
  Cloudflare and for anything else using the token) going over its limit. Callers wait for budget
  rather than exceed it, and `settle()` each request when its answer arrives, so the window counts
  it from then on (see `settle` for why).
- `hold(seconds)` is called on a 429: every caller of this budget waits until `retry-after` passed.
- A wait longer than `max_wait` is not slept through: `acquire()` raises `RateLimited(delay=...)` so the
  AgentAccount is retried later with a `RateLimited` condition instead of pinning a worker.
- `BudgetRegistry` hands out one budget per parent token, keyed by the SHA-256 of the token value (the
  value itself is never kept). Build one registry per process and pass its budgets to the providers.

Single event loop only: `acquire` checks and takes a slot without awaiting in between, which is what
makes it safe under many concurrent callers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import deque
from collections.abc import Awaitable, Callable

from agentaccounts.errors import RateLimited

Sleep = Callable[[float], Awaitable[None]]

# 1200 per 300 s is Cloudflare's limit; 1100 keeps a margin (see the module docstring).
DEFAULT_LIMIT = 1100
DEFAULT_WINDOW = 300.0
# Waits up to this long happen inline; longer ones become RateLimited so the worker is freed.
DEFAULT_MAX_WAIT = 10.0


class RequestBudget:
    """A sliding window of at most `limit` requests per `window` seconds, plus 429 holds."""

    def __init__(
        self,
        limit: int = DEFAULT_LIMIT,
        window: float = DEFAULT_WINDOW,
        *,
        max_wait: float = DEFAULT_MAX_WAIT,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("a request budget needs limit >= 1 and window > 0")
        self.limit = limit
        self.window = window
        self.max_wait = max_wait
        self._clock = clock
        self._sleep = sleep
        self._sent: deque[float] = deque()  # when each request in the current window was let through
        self._held_until = 0.0

    @property
    def in_window(self) -> int:
        """Requests let through during the last `window` seconds."""
        self._forget(self._clock())
        return len(self._sent)

    def held_for(self) -> float:
        """Seconds left of the current 429 hold (0 when not held)."""
        return max(0.0, self._held_until - self._clock())

    def hold(self, seconds: float) -> None:
        """Stop every caller until `seconds` from now (a 429's retry-after); holds never shrink."""
        self._held_until = max(self._held_until, self._clock() + max(0.0, seconds))

    async def acquire(self) -> float:
        """Wait until one more request fits, then count it; raise RateLimited if that takes too long.

        Returns the request's slot: pass it to `settle` once the answer (or a transport error) is in.
        """
        started = self._clock()
        while True:
            now = self._clock()
            wait = self._wait_needed(now)
            if wait <= 0:
                self._sent.append(now)
                return now
            if (now - started) + wait > self.max_wait:
                raise RateLimited(
                    f"Cloudflare request budget for this parent token is exhausted "
                    f"({self.limit} per {self.window:g}s, or held after HTTP 429); retry in {wait:.0f}s",
                    delay=max(1.0, wait),
                )
            await self._sleep(wait)

    def settle(self, slot: float) -> None:
        """The request that took `slot` is answered: count it from now rather than from when it left.

        Why: Cloudflare counts a request when it arrives, which is after we let it through by the
        request's latency -- under load also by queueing in our event loop and connection pool
        (measured: a burst of 12 let through at once reached the emulator over 0.2 s). Slots counted
        from send time expire before Cloudflare forgets the requests, so one window later the next
        burst lands inside Cloudflare's window and overshoots it. An answer never comes before
        Cloudflare counted the request, so counting from the answer always errs on the safe side.
        """
        with contextlib.suppress(ValueError):  # already aged out: the request took over a window
            self._sent.remove(slot)
        self._sent.append(self._clock())  # the latest reading: the deque stays sorted

    def _wait_needed(self, now: float) -> float:
        if self._held_until > now:
            return self._held_until - now
        self._forget(now)
        if len(self._sent) < self.limit:
            return 0.0
        return self._sent[0] + self.window - now

    def _forget(self, now: float) -> None:
        while self._sent and self._sent[0] + self.window <= now:
            self._sent.popleft()


def budget_key(parent_token: str | None) -> str:
    """Registry key for a token: its SHA-256 (never the value); "anonymous" for unauthenticated calls."""
    if not parent_token or not parent_token.strip():
        return "anonymous"
    return hashlib.sha256(parent_token.strip().encode()).hexdigest()  # strip: as the provider sends it


class BudgetRegistry:
    """One RequestBudget per parent token, for the whole process. Create once in main."""

    def __init__(
        self,
        limit: int = DEFAULT_LIMIT,
        window: float = DEFAULT_WINDOW,
        *,
        max_wait: float = DEFAULT_MAX_WAIT,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._limit, self._window, self._max_wait = limit, window, max_wait
        self._clock, self._sleep = clock, sleep
        self._budgets: dict[str, RequestBudget] = {}

    def for_token(self, parent_token: str | None) -> RequestBudget:
        """The budget shared by every call authenticated with `parent_token` (None: no auth header)."""
        key = budget_key(parent_token)
        if key not in self._budgets:
            self._budgets[key] = RequestBudget(
                self._limit, self._window, max_wait=self._max_wait, clock=self._clock, sleep=self._sleep
            )
        return self._budgets[key]

    def __len__(self) -> int:
        return len(self._budgets)
