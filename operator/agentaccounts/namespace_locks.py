"""Per-namespace critical sections for issuing: shared for the common case, exclusive where a check
must not race another issue.

Two checks look at what other accounts in the namespace do. An account that asks for Secrets by name
(or counts against a quota) must see every other account's Secret name and Role, so from its check
through its own Secret write it holds the namespace *exclusively*. Every other account checks, just
before writing its Secret, that no other agent's Role grants that Secret's name; it only has to keep
an exclusive holder out meanwhile, not the other accounts doing the same. So it holds the namespace
*shared*: a burst of ordinary accounts in one namespace is no longer issued one Secret at a time
(measured: 200 accounts spent most of 25 s queued on a single per-namespace lock).

Writers are preferred (a waiting exclusive holder stops new shared ones), so a burst of ordinary
issues cannot starve an account that asks for a Secret by name. Namespaces hash onto a fixed number
of stripes: bounded memory whatever names users choose.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

STRIPES = 64


class SharedOrExclusive:
    """An asyncio readers-writer lock, writer-preferring."""

    def __init__(self) -> None:
        self._shared = 0
        self._exclusive = False
        self._writers_waiting = 0
        self._changed = asyncio.Condition()

    @asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        async with self._changed:
            await self._changed.wait_for(lambda: not self._exclusive and not self._writers_waiting)
            self._shared += 1
        try:
            yield
        finally:
            async with self._changed:
                self._shared -= 1
                self._changed.notify_all()

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        async with self._changed:
            self._writers_waiting += 1
            try:
                await self._changed.wait_for(lambda: not self._exclusive and not self._shared)
            finally:
                self._writers_waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            async with self._changed:
                self._exclusive = False
                self._changed.notify_all()


class NamespaceLocks:
    def __init__(self, stripes: int = STRIPES) -> None:
        self._locks = [SharedOrExclusive() for _ in range(stripes)]

    def __call__(self, namespace: str) -> SharedOrExclusive:
        return self._locks[zlib.crc32(namespace.encode()) % len(self._locks)]
