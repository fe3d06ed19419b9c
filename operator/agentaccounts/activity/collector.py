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
# Re-read an account before writing at least this often: what it holds may have changed underneath
# (revocation merged a provider's trail; the record was deleted). In between, the trail as last written
# is the base, so a write is one call, not two.
REREAD_SECONDS = 60.0
MAX_CACHED = 500  # trails kept in memory as the next write's base (~300 entries each); others re-read
REPORT_SECONDS = 60.0  # one log line a minute says what the collector did (only when it did something)
OURS = "agentaccount-"  # providers/kubernetes/rbac.py object_name: every agent ServiceAccount's prefix


class Collector:
    """Attributes audit events to AgentAccounts and writes their status.activity in batches."""

    def __init__(
        self,
        kube: Kube,
        now: Clock,
        namespaces: list[str],
        is_leader: Callable[[], bool] = lambda: True,
        flush_seconds: float = 2.0,
        writes_per_second: float = 2.0,
    ) -> None:
        self.kube, self.now, self.namespaces = kube, now, namespaces
        self.is_leader, self.flush_seconds = is_leader, flush_seconds
        self.writes_per_second = writes_per_second
        self.index = Index()
        self.pending: dict[str, list[Entry]] = defaultdict(list)
        self.where: dict[str, tuple[str, str]] = {}  # uid -> (namespace, name)
        self._uids: dict[tuple[str, str], str] = {}  # (namespace, name) -> the uid that has it now
        self._trails: dict[str, tuple[Trail, float]] = {}  # uid -> (as last written, when last read)
        self._written: dict[str, float] = {}  # uid -> when its trail was last written
        self._allowance, self._ticked = 0.0, time.monotonic()
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
            where = (identity.namespace, identity.name)
            previous = self._uids.get(where)
            if previous is not None and previous != identity.uid:
                self._forget(previous)  # deleted and recreated under its name: the old trail is gone
            self.index.learn(identity, ids)
            self.where[identity.uid], self._uids[where] = where, identity.uid

    def _forget(self, uid: str) -> None:
        self.index.forget(uid)
        where = self.where.pop(uid, None)
        if where is not None and self._uids.get(where) == uid:
            del self._uids[where]
        for kept in (self.pending, self._trails, self._written):
            kept.pop(uid, None)

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
                namespace, _, account = request.username[len(SA_PREFIX) :].partition(":")
                # Worth a second look only if it may be one of ours (the Kubernetes provider names every
                # ServiceAccount it makes so): a namespace's other ServiceAccounts (controllers, apps)
                # must not make the operator re-list it on every batch. Attribution itself never goes
                # by name: this only decides whether to look.
                if self._watched(namespace) and account.startswith(OURS):
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
    async def flush(self, paced: bool = False) -> int:
        """One merge patch per account with new entries; returns how many accounts were written.

        `paced` (the running operator): only accounts last written flush_seconds ago or more, longest
        waiting first, and no more than writes_per_second on average. Every status write is a watch
        event for every watcher (the operator's own kopf watch included) carrying the whole object, so
        the write rate, not the event rate, is what audit traffic costs everything else; with 200 busy
        accounts, one write each per 2 s made issuing and revoking measurably slower, and 10 writes a
        second cost the API server ~25% of a core (bench; at 2 a second, ~7%)."""
        if not self.is_leader() or not self.pending:
            return 0
        uids = list(self.pending)
        if paced:
            mono = time.monotonic()
            burst = max(1.0, self.writes_per_second * self.flush_seconds)
            self._allowance = min(burst, self._allowance + (mono - self._ticked) * self.writes_per_second)
            self._ticked = mono
            due = [u for u in uids if mono - self._written.get(u, 0.0) >= self.flush_seconds]
            uids = sorted(due, key=lambda u: self._written.get(u, 0.0))[: int(self._allowance)]
            self._allowance -= len(uids)
        batches = {uid: self.pending.pop(uid) for uid in uids}
        limit = asyncio.Semaphore(WRITERS)

        async def write(uid: str, entries: list[Entry]) -> bool:
            async with limit:
                return await self._write(uid, entries)

        done = await asyncio.gather(*(write(uid, entries) for uid, entries in batches.items()))
        return sum(done)

    async def _write(self, uid: str, entries: list[Entry]) -> bool:
        namespace, name = self.where.get(uid, ("", ""))
        mono = time.monotonic()
        try:
            cached = self._trails.pop(uid, None)
            if cached is None or mono - cached[1] >= REREAD_SECONDS:
                body = await self.kube.get_custom("AgentAccount", namespace, name)
                if body is None or body["metadata"].get("uid") != uid:
                    self._forget(uid)  # deleted (or replaced): its trail went with it
                    return False
                cached = (Trail((body.get("status") or {}).get("activity")), mono)
            trail = cached[0]
            trail.add(entries)
            await self.kube.patch_account_status(namespace, name, {"activity": trail.status(self.now())})
            self._trails[uid], self._written[uid] = cached, time.monotonic()
            if len(self._trails) > MAX_CACHED:  # least recently written first (insertion order)
                del self._trails[next(iter(self._trails))]
            return True
        except KubeApiError as exc:
            # The cached trail (if any) is dropped with the failed write: the next one re-reads status.
            log.warning("activity: cannot write the trail of %s/%s (retried): %s", namespace, name, exc)
            self.pending[uid][:0] = entries  # kept for the next flush, oldest first
            return False

    async def run(self, stopped: asyncio.Event) -> None:
        """Until `stopped`: load the index, re-list on demand, write paced batches."""
        reported, writes = time.monotonic(), 0
        while not stopped.is_set():
            try:
                if not self.loaded:
                    await self.load()
                await self._refresh()
                writes += await self.flush(paced=True)
                if time.monotonic() - reported >= REPORT_SECONDS and (self.received or writes):
                    log.info(
                        "Activity: %d agent requests received, %d attributed, %d held, %d accounts "
                        "waiting to be written; %d status writes in the last %.0fs",
                        self.received,
                        self.attributed,
                        len(self.held),
                        len(self.pending),
                        writes,
                        REPORT_SECONDS,
                    )
                    reported, writes = time.monotonic(), 0
            except KubeApiError as exc:
                log.warning("activity: %s (retrying)", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopped.wait(), timeout=min(0.25, self.flush_seconds))
        await self._refresh()
        await self.flush()  # what was received before the stop is written, not lost
