"""One wake-up per AgentAccount: revoke at `expiresAt`, delete the audit record after keepExpiredFor.

Revocation must land within about a second of `expiresAt`, so nothing polls coarsely: each account's
timer sleeps exactly until its next due time (from policies.on_timer), or until it is woken because a
handler just changed its status (a new or edited expiry). On waking it re-reads the object from the
API server rather than trusting a cached body, because the status it must act on may have been
written a millisecond earlier by a handler. A 5-minute cap on every sleep is a safety net only.

On operator start every account gets its timer at once, so identities whose `expiresAt` passed while
the operator was down are revoked immediately, and the expiry metrics of every live account are
rebuilt from its status (status is the memory; nothing is kept only in the process).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from datetime import datetime
from typing import Any, Protocol

from agentaccounts import policies
from agentaccounts.conditions import Emit
from agentaccounts.errors import AgentAccountsError, TemporaryError
from agentaccounts.models import AgentAccount
from agentaccounts.reconcile import Reconciler

log = logging.getLogger(__name__)
MAX_SLEEP = 300.0
ERROR_BACKOFF = 5.0


class Stopped(Protocol):
    """kopf's daemon stop flag, or anything alike: falsy until stopped, awaitable with a timeout."""

    def __bool__(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> Awaitable[Any]: ...


class Wakeups:
    """Per-account events a handler sets to make the timer look again now.

    Only a running timer has an event (`event`, at its start; `forget`, at its end): waking an
    account without one does nothing, so wake-ups for finished or never-started timers cannot pile
    up (a timer reads the account fresh when it starts, so nothing is missed)."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def event(self, uid: str) -> asyncio.Event:
        return self._events.setdefault(uid, asyncio.Event())

    def wake(self, uid: str) -> None:
        event = self._events.get(uid)
        if event is not None:
            event.set()

    def __len__(self) -> int:
        return len(self._events)

    def forget(self, uid: str) -> None:
        self._events.pop(uid, None)


async def _sleep(stopped: Stopped, wake: asyncio.Event, seconds: float) -> bool:
    """Sleep up to `seconds`; True if it ran the full time (nobody woke us, nothing stopped us)."""
    if seconds <= 0:
        return True
    waiters = {asyncio.ensure_future(stopped.wait(seconds)), asyncio.ensure_future(wake.wait())}
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    woken = wake.is_set()
    wake.clear()
    return not woken and not stopped


def _seconds_until(at: datetime | None, now: datetime) -> float:
    return MAX_SLEEP if at is None else min(MAX_SLEEP, max(0.0, (at - now).total_seconds()))


async def run(
    reconciler: Reconciler,
    namespace: str,
    name: str,
    uid: str,
    stopped: Stopped,
    wakeups: Wakeups,
    emit: Emit,
) -> None:
    """One account's timer, until it is stopped, deleted or its record is removed. Never raises on a
    failed step: it logs, backs off and tries again (an error must not end revocation)."""
    wake = wakeups.event(uid)
    body: dict[str, Any] | None = None
    try:
        while not stopped:
            try:
                # Re-read unless we slept undisturbed until a due time: then nothing changed the status
                # (its only other writer, the issue handler, wakes us), and at expiresAt every call
                # saved is revocation lag saved. Inside the `try`: a failed read (a 429 during a
                # restart stampede, a 5xx during an API-server rollout) is retried, never the end.
                if body is None:
                    body = await reconciler.kube.get_custom("AgentAccount", namespace, name)
                    if body is None or body["metadata"]["uid"] != uid:
                        return  # gone (or replaced by a newer object, which has its own timer)
                    if body["metadata"].get("deletionTimestamp"):
                        return  # the finalizer revokes
                current, body = body, None
                account = AgentAccount.for_revocation(current)  # an invalid spec still expires
                reconciler.remember(account)
                decision = policies.on_timer(account, reconciler.now())
                if decision.action == "revoke":
                    await reconciler.revoke(current, "expired", emit)
                elif decision.action == "delete":
                    await reconciler.delete_record(current, emit)
                    return
                else:
                    undisturbed = await _sleep(stopped, wake, _seconds_until(decision.at, reconciler.now()))
                    if undisturbed and decision.at is not None and reconciler.now() >= decision.at:
                        body = current  # slept undisturbed until the due time: act on what we have
            except TemporaryError as exc:
                log.warning("%s/%s: %s, retrying in %.0fs", namespace, name, exc.message, exc.delay)
                await _sleep(stopped, wake, exc.delay)
            except AgentAccountsError as exc:
                log.error("%s/%s: %s: %s", namespace, name, exc.reason, exc.message)
                await _sleep(stopped, wake, ERROR_BACKOFF * 6)
            except Exception:
                log.exception("%s/%s: timer step failed; retrying", namespace, name)
                await _sleep(stopped, wake, ERROR_BACKOFF)
    finally:
        wakeups.forget(uid)
