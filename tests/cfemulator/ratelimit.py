"""Cloudflare's per-token request limit: 1200 requests per 5 minutes, then a 5-minute block.

Why it exists: the operator must survive being throttled (honour ``retry-after``, not hammer), and the
only way to test that is a limiter with the real shape but shrinkable numbers.

Decisions:
* a sliding window (a log of request times), "cumulative" as Cloudflare words it;
* the request that exceeds the limit is itself refused (429) and starts the block;
* while blocked, ALL calls by that token are refused, and refused calls do not extend the block;
* every request is counted for the control plane, refused ones included;
* headers follow Cloudflare's 2025 rate-limit changelog: ``Ratelimit: "default";r=<left>;t=<reset s>``
  and ``Ratelimit-Policy: "default";q=<limit>;w=<window s>`` always, ``retry-after`` (whole seconds,
  rounded up) only on 429.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    headers: dict[str, str]
    retry_after: int = 0


class RateLimiter:
    def __init__(
        self,
        limit: int = 1200,
        window: float = 300.0,
        block: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit, self.window, self.block = limit, window, block
        self._clock = clock
        self._lock = threading.Lock()
        self._log: dict[str, deque[float]] = {}
        self._blocked_until: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    def hit(self, key: str) -> Verdict:
        now = self._clock()
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1
            until = self._blocked_until.get(key, 0.0)
            if until > now:
                return self._refuse(until - now)
            log = self._log.setdefault(key, deque())
            while log and log[0] <= now - self.window:
                log.popleft()
            log.append(now)
            if len(log) > self.limit:
                self._blocked_until[key] = now + self.block
                log.clear()  # after the block the token starts afresh
                return self._refuse(self.block)
            reset = log[0] + self.window - now
            return Verdict(True, self._headers(self.limit - len(log), reset))

    def _refuse(self, remaining: float) -> Verdict:
        retry_after = max(1, math.ceil(remaining))
        headers = self._headers(0, remaining) | {"retry-after": str(retry_after)}
        return Verdict(False, headers, retry_after)

    def _headers(self, left: int, reset: float) -> dict[str, str]:
        return {
            "Ratelimit": f'"default";r={max(0, left)};t={max(0, math.ceil(reset))}',
            "Ratelimit-Policy": f'"default";q={self.limit};w={math.ceil(self.window)}',
        }

    def blocked_for(self, key: str) -> float:
        with self._lock:
            return max(0.0, self._blocked_until.get(key, 0.0) - self._clock())

    def count(self, key: str) -> int:
        with self._lock:
            return self._counts.get(key, 0)

    def reset(self, key: str | None = None) -> None:
        with self._lock:
            for table in (self._log, self._blocked_until, self._counts):
                if key is None:
                    table.clear()
                else:
                    table.pop(key, None)
