"""One scheduler for every account's due time: revoke at `expiresAt`, delete the record after
keepExpiredFor.

Why one and not a timer per account: a kopf daemon per AgentAccount is an asyncio task with its own
stop flag, kopf's daemon bookkeeping and a sleeping coroutine frame, measured at ~0.3 MiB per account
(376 MiB for 1,000; ~3 GiB at 10,000), and each woke every 5 minutes to re-read its account (an idle
fleet of 10,000 then reads 33 objects a second for nothing). Here an account costs one dict entry and
one heap item, and nothing runs until something is due.

The watch feeds it: every event kopf sees for an AgentAccount, the listing at start included, is
`observe`d, so identities whose `expiresAt` passed while the operator was down are due at once, and
the expiry metrics are rebuilt from status (status is the memory; nothing lives only in the process).
When something is due, the account is read fresh (a handler may have written a new expiry a
millisecond earlier, and the watch event saying so may not have arrived yet) and `policies.on_timer`
decides on that read. At most `workers` accounts are acted on at once, so 1,000 expiries in the same
second neither open 1,000 API calls at once nor wait behind each other one by one.

A failed step never ends anything: it is logged and the account is due again after a backoff
(TemporaryError: its own delay), and an `observe` of a newer version reschedules it earlier.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from agentaccounts import policies
from agentaccounts.conditions import Emit
from agentaccounts.errors import AgentAccountsError, TemporaryError
from agentaccounts.models import AgentAccount
from agentaccounts.reconcile import Reconciler

log = logging.getLogger(__name__)
ERROR_BACKOFF = 5.0  # seconds after an unexpected failure
REFUSED_BACKOFF = 30.0  # seconds after one of our own errors (a refusal that may be fixed by an edit)
MAX_SLEEP = 300.0  # a safety net for a clock that jumps; nothing depends on it

Emitter = Callable[[dict[str, Any]], Emit]  # an Event emitter for this account's body
Waiter = Callable[[asyncio.Event, float], Awaitable[None]]  # until the event is set or seconds pass


async def wait_or_timeout(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout=seconds)


@dataclass(frozen=True)
class Due:
    namespace: str
    name: str
    at: datetime
    action: str = "check"  # "revoke" (at expiresAt), "delete" (the record), "check" (decide on a read)


class Scheduler:
    """Due times of every account this operator watches, and the one loop that acts on them."""

    def __init__(
        self, reconciler: Reconciler, emitter: Emitter, workers: int = 32, wait: Waiter = wait_or_timeout
    ) -> None:
        self.reconciler = reconciler
        self._wait = wait
        self.emitter = emitter
        self.now = reconciler.now
        self._due: dict[str, Due] = {}  # uid -> its next due time; the heap may hold stale items
        self._heap: list[tuple[datetime, int, str]] = []
        self._seq = itertools.count()
        self._stamps: dict[str, int] = {}  # uid -> how often it was scheduled (see _step)
        self._busy: set[str] = set()  # uids with a step running
        self._changed = asyncio.Event()
        self._slots = asyncio.Semaphore(workers)
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return len(self._due)

    def due(self, uid: str) -> Due | None:
        return self._due.get(uid)

    # -- fed by the watch -------------------------------------------------------------------------
    def observe(self, body: dict[str, Any], deleted: bool = False, trusted: bool = False) -> None:
        """A version of an account: (re)schedule or forget it.

        `trusted` is what the operator itself just wrote (the issue handler's status). Any other
        version (a watch event) may carry a status written by hand, so for an account already
        scheduled it may only bring the due time earlier, never later: a hand-written later
        `expiresAt` or `phase: Expired` must not postpone a revocation (bad-input corpus)."""
        meta = body.get("metadata") or {}
        uid = str(meta.get("uid", ""))
        if not uid:
            return
        if deleted or meta.get("deletionTimestamp"):
            self.forget(uid)  # the finalizer (the delete handler) revokes
            return
        due, known = self._plan(body), self._due.get(uid)
        if known is not None and not trusted:
            if due is not None and due.at < known.at:
                self._schedule(uid, due)
            return
        if due is None:
            self.forget(uid)  # nothing issued yet: the issue handler's status write brings it back
        else:
            self._schedule(uid, due)

    def _plan(self, body: dict[str, Any]) -> Due | None:
        """When this version of the account next needs us (now, if something is overdue)."""
        meta = body.get("metadata") or {}
        namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        try:
            account = AgentAccount.for_revocation(body)  # an invalid spec still expires
        except Exception:  # a body we cannot read at all: look again later
            log.exception("%s/%s: cannot read the account's status; looking again later", namespace, name)
            return Due(namespace, name, self.now() + timedelta(seconds=REFUSED_BACKOFF))
        self.reconciler.remember(account)
        decision = policies.on_timer(account, self.now())
        if decision.action != "wait":
            return Due(namespace, name, self.now(), decision.action)
        if decision.at is None:
            return None
        return Due(namespace, name, decision.at, "delete" if account.status.phase == "Expired" else "revoke")

    def forget(self, uid: str) -> None:
        self._due.pop(uid, None)
        self._stamps.pop(uid, None)

    def _schedule(self, uid: str, due: Due) -> None:
        self._stamps[uid] = self._stamps.get(uid, 0) + 1
        if self._due.get(uid) == due:
            return
        self._due[uid] = due
        self._push(uid, due)

    def _push(self, uid: str, due: Due) -> None:
        earliest = not self._heap or due.at < self._heap[0][0]
        heapq.heappush(self._heap, (due.at, next(self._seq), uid))
        if earliest:
            self._changed.set()

    # -- the loop ---------------------------------------------------------------------------------
    def ensure_running(self) -> None:
        """Start the loop once, in the caller's context (see handlers.observe for why there)."""
        if self._runner is None or self._runner.done():
            self._runner = asyncio.ensure_future(self.run())

    async def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)

    async def run(self) -> None:
        """Until cancelled: start a step for every account whose time has come, then sleep until the
        next due time or until an earlier one is scheduled."""
        try:
            while True:
                now = self.now()
                while self._heap and self._heap[0][0] <= now:
                    item = heapq.heappop(self._heap)
                    uid, due = item[2], self._due.get(item[2])
                    if due is None or self._stale(item):
                        continue  # rescheduled or forgotten since this item was pushed
                    if uid not in self._busy:  # (a busy one is pushed again when its step ends)
                        self._start(uid, due)
                self._compact()
                while self._heap and self._stale(self._heap[0]):
                    heapq.heappop(self._heap)  # never wait for a due time that no longer holds
                self._changed.clear()
                wait = MAX_SLEEP if not self._heap else (self._heap[0][0] - self.now()).total_seconds()
                if wait > 0:
                    await self._wait(self._changed, min(wait, MAX_SLEEP))
                else:
                    await asyncio.sleep(0)  # let the steps just started run
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _stale(self, item: tuple[datetime, int, str]) -> bool:
        due = self._due.get(item[2])
        return due is None or due.at != item[0]

    def _compact(self) -> None:
        """Drop stale heap items when they outnumber the live entries (edits reschedule often)."""
        if len(self._heap) > 2 * len(self._due) + 64:
            self._heap = [(d.at, next(self._seq), uid) for uid, d in self._due.items()]
            heapq.heapify(self._heap)

    def _start(self, uid: str, due: Due) -> None:
        self._busy.add(uid)
        task = asyncio.ensure_future(self._step(uid, due))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _step(self, uid: str, due: Due) -> None:
        stamp = self._stamps.get(uid, 0)
        after: Due | None
        try:
            async with self._slots:
                after = await self._act(uid, due)
        except asyncio.CancelledError:
            raise
        except TemporaryError as exc:
            log.warning("%s/%s: %s, retrying in %.0fs", due.namespace, due.name, exc.message, exc.delay)
            after = Due(due.namespace, due.name, self.now() + timedelta(seconds=exc.delay), due.action)
        except AgentAccountsError as exc:
            log.error("%s/%s: %s: %s", due.namespace, due.name, exc.reason, exc.message)
            after = Due(due.namespace, due.name, self.now() + timedelta(seconds=REFUSED_BACKOFF), due.action)
        except Exception:
            log.exception("%s/%s: expiry step failed; retrying", due.namespace, due.name)
            after = Due(due.namespace, due.name, self.now() + timedelta(seconds=ERROR_BACKOFF), due.action)
        finally:
            self._busy.discard(uid)
        if self._stamps.get(uid, 0) != stamp:
            # Observed (or forgotten) while the step ran: that news is newer than the step's read.
            # Its due time may have been popped and skipped meanwhile, so it goes back on the heap.
            current = self._due.get(uid)
            if current is not None:
                self._push(uid, current)
        elif after is None:
            self.forget(uid)
        else:
            self._schedule(uid, after)

    async def _act(self, uid: str, due: Due) -> Due | None:
        """Read the account fresh and do what is due. Returns when it is due next (None: never)."""
        body = await self.reconciler.kube.get_custom("AgentAccount", due.namespace, due.name)
        if body is None or body["metadata"].get("uid") != uid or body["metadata"].get("deletionTimestamp"):
            return None  # gone, replaced (the new object has its own entry) or being deleted
        current = self._due.get(uid)
        if current is not None and current != due and current.at > self.now():
            return current  # rescheduled later while we read (the operator's own extension)
        account = AgentAccount.for_revocation(body)
        decision = policies.on_timer(account, self.now())
        if due.action == "revoke" or decision.action == "revoke":
            # A revocation the operator scheduled happens whatever the status says now: the read
            # only says the account still exists (see observe: a hand-written status cannot undo it).
            patch = await self.reconciler.revoke(body, "expired", self.emitter(body))
            body = {**body, "status": {**(body.get("status") or {}), **(patch or {})}}
        elif decision.action == "delete":
            await self.reconciler.delete_record(body, self.emitter(body))
            return None
        return self._plan(body)  # the next due time, from what is now true (the watch will agree)
