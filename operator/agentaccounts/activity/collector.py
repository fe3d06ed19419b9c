"""From audit events to status.activity: attribute each event, write each account's trail in batches.

Why batches: an agent may make hundreds of requests a second, and one status write per request would
make the operator the API server's busiest client. Each changed account gets one merge patch per
`flush_seconds` (2 s by default), built on a fresh read of its status, so the trail continues from
whatever status holds (after a restart, or after revocation merged a provider's own trail) and an
account deleted (or deleted and recreated under its name) meanwhile is never written to: the uid must
match.

Why a hold: the token reaches the agent (the Secret) a moment before status records its credential id,
so the first events of a new token can arrive before the index knows it. Events of an unknown
credential id are held for HOLD_SECONDS while the account's namespace is re-listed (at most once per
REFRESH_SECONDS), then attributed or dropped. The account's own issue also tells the index at once
(`learn`), so the re-list is the exception.

Only the leader writes (`is_leader`); the receiver refuses batches while this replica does not lead,
so the API server retries them against the leader.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict, deque
from collections.abc import Callable
from typing import Any

from agentaccounts.activity import stream
from agentaccounts.activity.attribution import SA_PREFIX, Index, Request, identity_of, parse_event
from agentaccounts.activity.trail import Entry, Trail
from agentaccounts.clock import Clock
from agentaccounts.kube import Kube, KubeApiError

log = logging.getLogger(__name__)
HOLD_SECONDS = 30.0
REFRESH_SECONDS = 1.0
MAX_HELD = 20_000  # unknown-credential events kept for a second look; the oldest go first
MAX_PENDING = 50_000  # attributed, not yet written; a writer stuck this long loses the oldest
WRITERS = 16  # concurrent status writes per flush


class Collector:
    """Attributes audit events to AgentAccounts and writes their status.activity in batches."""

    def __init__(
        self,
        kube: Kube,
        now: Clock,
        namespaces: list[str],
        is_leader: Callable[[], bool] = lambda: True,
        flush_seconds: float = 2.0,
    ) -> None:
        self.kube, self.now, self.namespaces = kube, now, namespaces
        self.is_leader, self.flush_seconds = is_leader, flush_seconds
        self.index = Index()
        self.pending: dict[str, list[Entry]] = defaultdict(list)
        self.where: dict[str, tuple[str, str]] = {}  # uid -> (namespace, name)
        self.held: deque[tuple[float, Request]] = deque(maxlen=MAX_HELD)
        self._wanted: set[str] = set()
        self._refreshed: dict[str, float] = {}
        self.loaded = False
        self.received = self.attributed = 0

    # -- the index -------------------------------------------------------------------------------
    def learn(self, body: dict[str, Any]) -> None:
        """An account's identity and credential ids, from its object (or what was just written)."""
        found = identity_of(body)
        if found is not None:
            identity, ids = found
            self.index.learn(identity, ids)
            self.where[identity.uid] = (identity.namespace, identity.name)

    async def load(self, namespace: str = "") -> None:
        """Learn every account (in one namespace, or in every watched one)."""
        for where in [namespace] if namespace else self.namespaces or [""]:
            for body in await self.kube.list_custom("AgentAccount", where):
                self.learn(body)
        self.loaded = True

    def _watched(self, namespace: str) -> bool:
        return not self.namespaces or namespace in self.namespaces

    # -- events ----------------------------------------------------------------------------------
    def accept(self, events: list[Any]) -> int:
        """Attribute a batch (an audit EventList's items); returns how many were attributed now."""
        attributed = 0
        for event in events:
            request = parse_event(event)
            if request is None:
                continue
            self.received += 1
            if self._attribute(request):
                attributed += 1
            else:
                namespace = request.username[len(SA_PREFIX) :].partition(":")[0]
                if self._watched(namespace):
                    self._wanted.add(namespace)
                    self.held.append((time.monotonic(), request))
        return attributed

    def _attribute(self, request: Request) -> bool:
        identity = self.index.attribute(request)
        if identity is None:
            return False
        self.attributed += 1
        stream.request(identity, request.entry)
        pending = self.pending[identity.uid]
        pending.append(request.entry)
        if len(pending) > MAX_PENDING:
            del pending[: len(pending) - MAX_PENDING]
        return True

    async def _refresh(self) -> None:
        """Re-list the namespaces of unknown credential ids, then give held events a second look."""
        due = [
            ns for ns in self._wanted if time.monotonic() - self._refreshed.get(ns, 0.0) >= REFRESH_SECONDS
        ]
        for namespace in due:
            self._wanted.discard(namespace)
            self._refreshed[namespace] = time.monotonic()
            try:
                await self.load(namespace)
            except KubeApiError as exc:
                log.warning("activity: cannot list AgentAccounts in %s: %s", namespace, exc)
        cutoff, held = time.monotonic() - HOLD_SECONDS, list(self.held)
        self.held.clear()
        for arrived, request in held:
            if not self._attribute(request) and arrived > cutoff:
                self.held.append((arrived, request))

    # -- writing ---------------------------------------------------------------------------------
    async def flush(self) -> int:
        """One merge patch per account with new entries; returns how many accounts were written."""
        if not self.is_leader() or not self.pending:
            return 0
        batches, self.pending = self.pending, defaultdict(list)
        limit = asyncio.Semaphore(WRITERS)

        async def write(uid: str, entries: list[Entry]) -> bool:
            async with limit:
                return await self._write(uid, entries)

        done = await asyncio.gather(*(write(uid, entries) for uid, entries in batches.items()))
        return sum(done)

    async def _write(self, uid: str, entries: list[Entry]) -> bool:
        namespace, name = self.where.get(uid, ("", ""))
        try:
            body = await self.kube.get_custom("AgentAccount", namespace, name)
            if body is None or body["metadata"].get("uid") != uid:
                self.index.forget(uid)  # deleted: its trail went with it
                self.where.pop(uid, None)
                return False
            trail = Trail((body.get("status") or {}).get("activity"))
            trail.add(entries)
            await self.kube.patch_account_status(namespace, name, {"activity": trail.status(self.now())})
            return True
        except KubeApiError as exc:
            log.warning("activity: cannot write the trail of %s/%s (retried): %s", namespace, name, exc)
            self.pending[uid][:0] = entries  # kept for the next flush, oldest first
            return False

    async def run(self, stopped: asyncio.Event) -> None:
        """Until `stopped`: load the index, re-list on demand, flush every flush_seconds."""
        last_flush = time.monotonic()
        while not stopped.is_set():
            try:
                if not self.loaded:
                    await self.load()
                await self._refresh()
                if time.monotonic() - last_flush >= self.flush_seconds:
                    last_flush = time.monotonic()
                    await self.flush()
            except KubeApiError as exc:
                log.warning("activity: %s (retrying)", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopped.wait(), timeout=min(0.25, self.flush_seconds))
        await self._refresh()
        await self.flush()  # what was received before the stop is written, not lost
