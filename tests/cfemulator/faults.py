"""Fault injection knobs: 5xx answers, added latency, dropped connections, forced throttling.

Why it exists: the operator's three-way error model (permanent / temporary with delay / retry with
backoff) is only believable if it has met each failure on a real socket. The knobs are plain
attributes so a test can flip them mid-flow; a seeded ``random.Random`` makes rates reproducible.

Order of application per API request (mirrors where each failure happens in front of a real API):
latency, then drop (edge connection reset), then forced 429, then the per-token rate limit, then the
5xx rate (origin failure), then the handler. Faults never touch the control plane or claim URLs.
"""

from __future__ import annotations

import math
import random
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Faults:
    error_rate: float = 0.0  # fraction of API requests answered with `error_status`
    error_status: int = 500  # 500, 502 or 503 are the realistic ones
    latency: float = 0.0  # seconds added before every API request is handled
    drop_rate: float = 0.0  # fraction of API requests whose connection is closed without a response
    rng: random.Random = field(default_factory=random.Random)
    _forced_until: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def force_429(self, seconds: float) -> None:
        """Answer every API request with 429 (code 971) for the next ``seconds``."""
        with self._lock:
            self._forced_until = time.monotonic() + seconds

    def forced_retry_after(self) -> int:
        """Seconds (rounded up) a forced 429 has left; 0 when none is in force."""
        with self._lock:
            left = self._forced_until - time.monotonic()
        return math.ceil(left) if left > 0 else 0

    def roll_drop(self) -> bool:
        return self.drop_rate > 0 and self.rng.random() < self.drop_rate

    def roll_error(self) -> bool:
        return self.error_rate > 0 and self.rng.random() < self.error_rate

    def clear(self) -> None:
        self.error_rate = self.latency = self.drop_rate = 0.0
        self.error_status = 500
        with self._lock:
            self._forced_until = 0.0
