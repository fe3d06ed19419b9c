"""Lease-based leader election, so that running more than one replica never freezes the operator.

Why this exists: kopf's own "peering" pauses every operator of equal priority when it sees another
one, so two replicas of the chart's Deployment would both stand still. Instead, each replica first
wins a `coordination.k8s.io/v1` Lease (the same object client-go's leader election uses, so
`kubectl get lease` shows who leads) and only then starts kopf, with peering off. A replica that
loses the lease exits; its pod restarts and queues up as a standby.

The algorithm is client-go's `leaderelection`, reduced to what we need:
- A lease is *free* when it has no holder, or when its record (holder, renewTime, resourceVersion)
  has not changed for `leaseDurationSeconds` *as observed by this process*. Measuring from our own
  observation, not from the record's `renewTime`, keeps clock skew between nodes out of the decision
  (the price: a candidate that starts after the leader died waits one full lease duration).
- Every write carries the `resourceVersion` it read, so of N candidates racing for a free lease the
  API server lets exactly one through; the others get 409 (`Conflict`) and go back to waiting.
- The leader renews every `renew_every` seconds. If it cannot renew for `lease_seconds -
  renew_every` seconds (its *renew deadline*), it gives up *before* any standby may take over, so
  two leaders never act at once as long as clocks tick at the same rate.

This module does no I/O of its own: the Lease API comes in as a `LeaseStore` (implemented in
`kube.py`, the only module that uses the kubernetes client), time as `now`/`sleep`. Tests pass an
in-memory store and a fake clock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from agentaccounts.clock import Clock, utcnow

logger = logging.getLogger(__name__)

Sleeper = Callable[[float], Awaitable[None]]


class Conflict(Exception):
    """The store refused a write because the Lease changed since it was read (HTTP 409).

    `create` raises it when the Lease already exists, `replace` when the body's
    `metadata.resourceVersion` is no longer current.
    """


class LeadershipLost(Exception):
    """`hold` could not keep the lease: another identity holds it, or renewing failed for too long."""


class LeaseStore(Protocol):
    """The three Lease API calls election needs; bodies are plain `coordination.k8s.io/v1` dicts.

    `get` returns None for 404. `create` and `replace` return the stored object (with its new
    `metadata.resourceVersion`) and raise `Conflict` on 409. Any other error propagates; `acquire`
    and `hold` treat it as transient and retry.
    """

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def create(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]: ...

    async def replace(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]: ...


def format_micro_time(value: datetime) -> str:
    """Kubernetes MicroTime: RFC 3339 with exactly six fractional digits, in UTC."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def holder_of(lease: dict[str, Any] | None) -> str:
    """The lease's holderIdentity, "" when free or missing."""
    return str(((lease or {}).get("spec") or {}).get("holderIdentity") or "")


def _record(lease: dict[str, Any] | None) -> tuple[str, str, str]:
    """What must change for a lease to count as alive: holder, renewTime, resourceVersion."""
    spec = (lease or {}).get("spec") or {}
    version = ((lease or {}).get("metadata") or {}).get("resourceVersion", "")
    return holder_of(lease), str(spec.get("renewTime") or ""), str(version)


def _claimed(
    lease: dict[str, Any] | None, namespace: str, name: str, identity: str, lease_seconds: int, at: datetime
) -> dict[str, Any]:
    """The body that makes `identity` the holder, renewed `at`; keeps resourceVersion for the 409 check."""
    spec = dict((lease or {}).get("spec") or {})
    stamp = format_micro_time(at)
    if spec.get("holderIdentity") != identity:
        spec["acquireTime"] = stamp
        if spec.get("holderIdentity"):
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
    spec.update(holderIdentity=identity, leaseDurationSeconds=lease_seconds, renewTime=stamp)
    spec.setdefault("leaseTransitions", 0)
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if lease is not None:
        metadata["resourceVersion"] = lease["metadata"]["resourceVersion"]
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec}


def _check(lease_seconds: float, renew_every: float) -> None:
    if not 0 < renew_every < lease_seconds:
        raise ValueError(f"need 0 < renew_every ({renew_every}) < lease_seconds ({lease_seconds})")


async def acquire(
    store: LeaseStore,
    identity: str,
    namespace: str,
    name: str,
    lease_seconds: int = 15,
    renew_every: float = 5,
    now: Clock = utcnow,
    sleep: Sleeper = asyncio.sleep,
) -> dict[str, Any]:
    """Block until `identity` holds the Lease `namespace/name`; return the Lease as stored."""
    _check(lease_seconds, renew_every)

    def claim(lease: dict[str, Any] | None) -> dict[str, Any]:
        return _claimed(lease, namespace, name, identity, lease_seconds, now())

    observed: tuple[str, str, str] | None = None
    observed_at = now()
    announced = ""
    while True:
        try:
            lease = await store.get(namespace, name)
            record = _record(lease)
            if record != observed:
                observed, observed_at = record, now()
            holder = holder_of(lease)
            free = not holder or now() - observed_at >= timedelta(seconds=lease_seconds)
            if lease is None:
                won = await store.create(namespace, name, claim(None))
            elif holder == identity or free:
                won = await store.replace(namespace, name, claim(lease))
            else:
                if holder != announced:
                    logger.info("Lease %s/%s is held by %s; %s is standby", namespace, name, holder, identity)
                    announced = holder
                await sleep(renew_every)
                continue
            logger.info("Lease %s/%s acquired: %s is the leader", namespace, name, identity)
            return won
        except Conflict:
            logger.debug("Lease %s/%s: lost a race for it, waiting", namespace, name)
        except Exception as exc:  # transient API trouble: keep trying, never crash a standby
            logger.warning("Lease %s/%s: cannot read or claim it (%s); retrying", namespace, name, exc)
        await sleep(renew_every)


async def hold(
    store: LeaseStore,
    identity: str,
    namespace: str,
    name: str,
    lease_seconds: int = 15,
    renew_every: float = 5,
    now: Clock = utcnow,
    sleep: Sleeper = asyncio.sleep,
) -> None:
    """Renew the Lease every `renew_every` seconds while `identity` leads; raise `LeadershipLost`.

    Call it right after `acquire`, concurrently with the work. It never returns normally: it raises
    when another identity holds the lease, or when no renewal succeeded within the renew deadline
    (`lease_seconds - renew_every`), which is before any standby may consider the lease free.
    """
    _check(lease_seconds, renew_every)
    deadline = timedelta(seconds=lease_seconds - renew_every)
    renewed_at = now()
    while True:
        await sleep(renew_every)
        # A renewal may take no longer than what is left of the deadline: a hung read (a half-open
        # connection) must not keep an old leader acting after a standby may have taken over.
        remaining = max((deadline - (now() - renewed_at)).total_seconds(), 0.001)
        try:
            await asyncio.wait_for(
                _renew(store, identity, namespace, name, lease_seconds, now), timeout=remaining
            )
            renewed_at = now()
            continue
        except LeadershipLost:
            raise
        except TimeoutError:
            logger.warning("Lease %s/%s: renewal timed out after %.1fs", namespace, name, remaining)
        except Conflict:
            logger.debug("Lease %s/%s changed while renewing; re-reading", namespace, name)
        except Exception as exc:  # transient: retry until the renew deadline
            logger.warning("Lease %s/%s: renewal failed (%s)", namespace, name, exc)
        if now() - renewed_at >= deadline:
            raise LeadershipLost(f"Lease {namespace}/{name} not renewed for {deadline.total_seconds():.0f}s")


async def _renew(
    store: LeaseStore, identity: str, namespace: str, name: str, lease_seconds: int, now: Clock
) -> None:
    lease = await store.get(namespace, name)
    holder = holder_of(lease)
    if holder != identity:
        raise LeadershipLost(f"Lease {namespace}/{name} is now held by {holder or 'nobody'}")
    await store.replace(namespace, name, _claimed(lease, namespace, name, identity, lease_seconds, now()))


async def release(store: LeaseStore, identity: str, namespace: str, name: str, now: Clock = utcnow) -> bool:
    """Give the lease up on a clean shutdown, so a standby takes over at once instead of after expiry.

    Clears holderIdentity only if `identity` still holds it; returns whether it did. Errors are
    swallowed: a lease we cannot release simply expires.
    """
    try:
        lease = await store.get(namespace, name)
        if lease is None or holder_of(lease) != identity:
            return False
        body = _claimed(lease, namespace, name, identity, 1, now())
        body["spec"]["holderIdentity"] = None
        await store.replace(namespace, name, body)
    except Exception as exc:
        logger.warning("Lease %s/%s: could not release it (%s); it will expire", namespace, name, exc)
        return False
    logger.info("Lease %s/%s released by %s", namespace, name, identity)
    return True
