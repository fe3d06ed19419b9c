"""The one expiry scheduler over the in-memory Kube, in virtual time: revoke at expiresAt, delete
the record after keepExpiredFor, retry what failed, and never act on a stale version.

The scheduler's wait is a FakeWaiter on a FakeClock, so "it sleeps for 60 s" is observable
(`settle()` returns the timeout of the wait it reached once every step has ended) and "60 s pass" is
`clock.advance(60)`: nothing here waits in real time.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import httpx
import pytest

from agentaccounts import metrics, ownership, scheduler
from agentaccounts.clock import rfc3339
from agentaccounts.conditions import Emit
from agentaccounts.kube import Kube, KubeApiError
from agentaccounts.providers.base import Deps
from agentaccounts.reconcile import Reconciler
from agentaccounts.settings import Settings
from agentaccounts.stamps import Signer
from unit.fakes import FakeClock, FakeKube, FakeWaiter

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
NS, NAME, UID = "agents", "bot", "7f1c1e52-0000-4000-8000-000000000002"
SPEC: dict[str, Any] = {
    "providerRef": {"kind": "AccountProvider", "name": "k8s"},
    "lifetime": "30m",
    "scopes": [{"permissions": ["get"], "resources": ["configmaps"]}],
    "keepExpiredFor": "1h",
}
KINDS = ("ServiceAccount", "Role", "RoleBinding", "Secret")
Emitted = tuple[str, str, str, str]  # (account name, type, reason, message)


class Rig:
    """The scheduler on a FakeKube and a FakeClock; accounts are added to the fake and observed."""

    def __init__(self, http: httpx.AsyncClient, workers: int = 32) -> None:
        self.clock = FakeClock(NOW)
        self.kube = FakeKube(now=self.clock.now)
        self.waiter = FakeWaiter(self.clock)
        self.events: list[Emitted] = []
        deps = Deps(kube=cast(Kube, self.kube), settings=Settings(), http=http, now=self.clock.now)
        self.reconciler = Reconciler(deps, Signer(b"k" * 32))
        self.scheduler = scheduler.Scheduler(self.reconciler, self.emitter, workers=workers, wait=self.waiter)
        self.kube.add(
            "AccountProvider", {"metadata": {"name": "k8s", "namespace": NS}, "spec": {"kubernetes": {}}}
        )
        self.task: asyncio.Task[None] | None = None

    def emitter(self, body: dict[str, Any]) -> Emit:
        def emit(kind: str, reason: str, message: str) -> None:
            self.events.append((body["metadata"]["name"], kind, reason, message))

        return emit

    def reasons(self) -> list[str]:
        return [reason for _, _, reason, _ in self.events]

    def account(self, status: dict[str, Any], name: str = NAME, uid: str = UID) -> dict[str, Any]:
        body = {
            "metadata": {"name": name, "namespace": NS, "uid": uid},
            "spec": copy.deepcopy(SPEC),
            "status": status,
        }
        return self.kube.add("AgentAccount", body)

    def ready(self, expires_in: float, name: str = NAME, uid: str = UID) -> dict[str, Any]:
        """A Ready account expiring `expires_in` seconds from now, with the objects it owns; observed."""
        for kind in KINDS:
            obj = f"{name}-credentials" if kind == "Secret" else f"agentaccount-{name}"
            self.kube.add_object(kind, {"metadata": ownership.metadata(obj, NS, name, uid)})
        expires = self.clock.now() + timedelta(seconds=expires_in)
        body = self.account(
            {
                "phase": "Ready",
                "provider": "kubernetes",
                "issuedAt": rfc3339(expires - timedelta(minutes=30)),
                "expiresAt": rfc3339(expires),
                "accountRef": {"kind": "ServiceAccount", "name": f"agentaccount-{name}", "namespace": NS},
            },
            name,
            uid,
        )
        self.scheduler.observe(copy.deepcopy(body))
        return body

    def expired(self, revoked_ago: float) -> dict[str, Any]:
        revoked = self.clock.now() - timedelta(seconds=revoked_ago)
        body = self.account(
            {"phase": "Expired", "expiresAt": rfc3339(revoked), "revokedAt": rfc3339(revoked)}
        )
        self.scheduler.observe(copy.deepcopy(body))
        return body

    def stored(self, name: str = NAME) -> dict[str, Any]:
        return copy.deepcopy(self.kube.stored("AgentAccount", NS, name) or {})

    def start(self) -> None:
        self.task = asyncio.create_task(self.scheduler.run())

    async def settle(self) -> float:
        """Run until every step has ended and the loop waits; the timeout of that wait."""
        async with asyncio.timeout(10):  # a safety net against a hung loop, never reached when it works
            while True:
                await asyncio.sleep(0)
                assert self.task is not None and not self.task.done(), "the scheduler loop ended"
                if (
                    self.waiter.waiting is not None
                    and not self.scheduler._tasks
                    and not self.scheduler._changed.is_set()
                ):
                    return self.waiter.waiting

    def phase(self, name: str = NAME) -> str | None:
        stored = self.kube.stored("AgentAccount", NS, name)
        return None if stored is None else (stored.get("status") or {}).get("phase")

    def owned(self, uid: str = UID) -> list[str]:
        return [kind for kind in KINDS if self.kube.names(kind, NS, ownership.selector(uid))]

    def reads(self) -> int:
        return len(self.kube.called("get_custom", "AgentAccount"))


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(lambda _: httpx.Response(599))) as http:
        rig = Rig(http)
        rig.start()
        yield rig
        assert rig.task is not None
        rig.task.cancel()
        await asyncio.gather(rig.task, return_exceptions=True)


@pytest.fixture(autouse=True)
def forget_expiry_metrics() -> Iterator[None]:
    yield
    metrics.EXPIRY.discard(UID)


def expiry_labels() -> set[tuple[str, str]]:
    family = next(f for f in metrics.EXPIRY.collect() if f.name.endswith("expiry_timestamp_seconds"))
    return {(s.labels["namespace"], s.labels["name"]) for s in family.samples}


# -- revocation -----------------------------------------------------------------------------------


async def test_an_account_past_its_expiry_is_revoked_at_once(rig: Rig) -> None:
    rig.ready(expires_in=-1)

    assert await rig.settle() == scheduler.MAX_SLEEP  # revoked; the record is kept for 1h (capped wait)
    assert rig.phase() == "Expired"
    assert rig.owned() == []
    assert rig.reasons() == ["Expired"]
    assert rig.scheduler.due(UID) is not None  # due again when keepExpiredFor ends


async def test_a_future_expiry_is_waited_for_and_revoked_after_one_fresh_read(rig: Rig) -> None:
    rig.ready(expires_in=60)

    assert await rig.settle() == 60
    assert rig.phase() == "Ready" and rig.reads() == 0  # nothing is read while nothing is due
    rig.clock.advance(60)

    assert await rig.settle() == scheduler.MAX_SLEEP
    assert rig.phase() == "Expired" and rig.owned() == []
    assert rig.reads() == 1


async def test_a_newer_version_with_a_later_expiry_moves_the_due_time(rig: Rig) -> None:
    rig.ready(expires_in=60)
    assert await rig.settle() == 60

    later = rig.stored()
    later["status"]["expiresAt"] = rfc3339(NOW + timedelta(seconds=120))
    rig.kube.custom[("AgentAccount", NS, NAME)] = copy.deepcopy(later)
    rig.scheduler.observe(later, trusted=True)  # the issue handler's own write (an extension)
    rig.clock.advance(60)

    assert await rig.settle() == 60  # the stale due time passed and did nothing
    assert rig.phase() == "Ready" and rig.reads() == 0
    rig.clock.advance(60)
    await rig.settle()
    assert rig.phase() == "Expired"


async def test_an_expiry_shortened_into_the_past_is_revoked_at_once(rig: Rig) -> None:
    rig.ready(expires_in=200)
    assert await rig.settle() == 200

    now = rig.stored()
    now["status"]["expiresAt"] = rfc3339(NOW)
    rig.kube.custom[("AgentAccount", NS, NAME)] = copy.deepcopy(now)
    rig.scheduler.observe(now)

    await rig.settle()
    assert rig.phase() == "Expired" and rig.owned() == []


async def test_a_hand_written_later_expiry_or_phase_never_postpones_revocation(rig: Rig) -> None:
    # A watch event may carry a status written by hand (bad-input corpus: expiresAt moved to 2099,
    # phase Expired on a live account): the revocation the operator scheduled still happens on time.
    rig.ready(expires_in=60)
    forged = rig.stored()
    forged["status"]["expiresAt"] = rfc3339(NOW + timedelta(days=365))
    forged["status"]["phase"] = "Expired"
    rig.kube.custom[("AgentAccount", NS, NAME)] = copy.deepcopy(forged)
    rig.scheduler.observe(forged)
    assert rig.scheduler.due(UID) == scheduler.Due(NS, NAME, NOW + timedelta(seconds=60), "revoke")
    rig.clock.advance(60)

    await rig.settle()
    assert rig.owned() == [] and rig.phase() == "Expired"


async def test_observing_a_ready_account_rebuilds_its_expiry_metric(rig: Rig) -> None:
    rig.ready(expires_in=60)
    assert (NS, NAME) in expiry_labels()


async def test_an_account_not_issued_yet_is_not_scheduled(rig: Rig) -> None:
    rig.scheduler.observe(rig.account({}))
    assert len(rig.scheduler) == 0


# -- the audit record -----------------------------------------------------------------------------


async def test_an_expired_record_past_keep_expired_for_is_deleted(rig: Rig) -> None:
    rig.expired(revoked_ago=3601)

    await rig.settle()
    assert rig.kube.stored("AgentAccount", NS, NAME) is None
    assert rig.kube.called("delete_account", NS, NAME, UID)
    assert rig.reasons() == ["Deleted"]
    assert len(rig.scheduler) == 0


async def test_an_expired_record_is_kept_until_keep_expired_for_passes(rig: Rig) -> None:
    rig.expired(revoked_ago=3600 - 100)

    assert await rig.settle() == 100
    assert rig.kube.stored("AgentAccount", NS, NAME) is not None
    rig.clock.advance(100)
    await rig.settle()
    assert rig.kube.stored("AgentAccount", NS, NAME) is None


# -- forgetting -----------------------------------------------------------------------------------


async def test_an_account_gone_at_its_due_time_is_forgotten_without_a_write(rig: Rig) -> None:
    rig.ready(expires_in=10)
    del rig.kube.custom[("AgentAccount", NS, NAME)]
    rig.clock.advance(10)

    await rig.settle()
    assert rig.kube.writes == [] and len(rig.scheduler) == 0


async def test_an_account_replaced_by_a_newer_one_is_left_to_the_newer_entry(rig: Rig) -> None:
    rig.ready(expires_in=-1)
    rig.kube.custom[("AgentAccount", NS, NAME)]["metadata"]["uid"] = "uid-newer"

    await rig.settle()
    assert rig.kube.writes == [] and rig.scheduler.due(UID) is None


async def test_a_deleted_event_forgets_the_account(rig: Rig) -> None:
    body = rig.ready(expires_in=60)
    rig.scheduler.observe(body, deleted=True)
    rig.clock.advance(60)

    await rig.settle()
    assert len(rig.scheduler) == 0 and rig.reads() == 0


async def test_an_account_being_deleted_is_left_to_the_finalizer(rig: Rig) -> None:
    body = rig.ready(expires_in=-1)
    body["metadata"]["deletionTimestamp"] = rfc3339(NOW)
    rig.scheduler.observe(body)

    await rig.settle()
    assert rig.kube.writes == [] and rig.owned() == list(KINDS)


async def test_cancelling_the_loop_is_not_expiring(rig: Rig) -> None:
    rig.ready(expires_in=60)
    await rig.settle()
    assert rig.task is not None
    rig.task.cancel()
    await asyncio.gather(rig.task, return_exceptions=True)
    assert rig.phase() == "Ready"


async def test_thousands_of_forgotten_accounts_leave_nothing_behind(rig: Rig) -> None:
    for n in range(2000):
        body = {
            "metadata": {"name": f"a{n}", "namespace": NS, "uid": f"uid-{n}"},
            "spec": copy.deepcopy(SPEC),
        }
        body["status"] = {"phase": "Ready", "expiresAt": rfc3339(NOW + timedelta(seconds=60 + n))}
        rig.scheduler.observe(body)
        rig.scheduler.observe(body, deleted=True)
        metrics.EXPIRY.discard(f"uid-{n}")
    await rig.settle()
    assert len(rig.scheduler) == 0
    assert len(rig.scheduler._heap) <= 64 + 1  # compacted: stale items do not pile up


# -- errors ---------------------------------------------------------------------------------------


async def test_an_api_error_while_revoking_is_logged_and_retried(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    rig.kube.fail("delete", KubeApiError("delete: HTTP 500 boom", 500), when=lambda c: c[1] == "Secret")
    rig.ready(expires_in=-1)

    assert await rig.settle() == scheduler.ERROR_BACKOFF
    assert "expiry step failed; retrying" in caplog.text
    assert rig.phase() == "Ready"
    rig.clock.advance(scheduler.ERROR_BACKOFF)

    assert await rig.settle() == scheduler.MAX_SLEEP
    assert rig.phase() == "Expired" and rig.owned() == []


async def test_a_temporary_provider_error_waits_its_delay_and_retries(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    rig.kube.fail("delete", KubeApiError("delete: HTTP 503 unavailable", 503), when=lambda c: c[1] == "Role")
    with caplog.at_level(logging.WARNING, logger="agentaccounts.scheduler"):
        rig.ready(expires_in=-1)
        assert await rig.settle() == 5.0  # ProviderUnavailable's delay
    assert "HTTP 503 unavailable, retrying in 5s" in caplog.text
    rig.clock.advance(5)

    assert await rig.settle() == scheduler.MAX_SLEEP
    assert rig.phase() == "Expired" and rig.owned() == []


async def test_a_newer_version_cuts_an_error_backoff_short(rig: Rig) -> None:
    rig.kube.fail("delete", KubeApiError("delete: HTTP 500 boom", 500), when=lambda c: c[1] == "Secret")
    rig.ready(expires_in=-1)
    assert await rig.settle() == scheduler.ERROR_BACKOFF

    rig.scheduler.observe(rig.stored())

    assert await rig.settle() == scheduler.MAX_SLEEP
    assert rig.phase() == "Expired"


async def test_an_account_whose_spec_no_longer_validates_is_still_revoked(rig: Rig) -> None:
    body = rig.ready(expires_in=-1)
    body["spec"]["scopes"] = []
    rig.scheduler.observe(copy.deepcopy(body))

    await rig.settle()
    assert rig.phase() == "Expired" and rig.owned() == []


async def test_an_api_error_reading_the_account_is_retried(rig: Rig) -> None:
    rig.kube.fail("get_custom", KubeApiError("get AgentAccount: HTTP 500 etcd timeout", 500))
    rig.ready(expires_in=-1)

    assert await rig.settle() == scheduler.ERROR_BACKOFF
    rig.clock.advance(scheduler.ERROR_BACKOFF)
    await rig.settle()
    assert rig.phase() == "Expired"


# -- many at once ---------------------------------------------------------------------------------


async def test_simultaneous_expiries_are_all_revoked_never_more_than_workers_at_once() -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(lambda _: httpx.Response(599))) as http:
        rig = Rig(http, workers=8)
        running, most = 0, 0
        revoke = rig.reconciler.revoke

        async def counted(body: dict[str, Any], why: Any, emit: Emit) -> dict[str, Any] | None:
            nonlocal running, most
            running += 1
            most = max(most, running)
            try:
                await asyncio.sleep(0)  # let the others in, if the scheduler would
                return await revoke(body, why, emit)
            finally:
                running -= 1

        rig.reconciler.revoke = counted  # type: ignore[method-assign]
        for n in range(200):
            rig.ready(expires_in=30, name=f"a{n}", uid=f"uid-{n}")
        rig.start()
        assert await rig.settle() == 30
        rig.clock.advance(30)
        await rig.settle()
        try:
            assert all(rig.phase(f"a{n}") == "Expired" for n in range(200))
            assert most == 8
            assert rig.reads() == 200  # one fresh read each, no more
        finally:
            assert rig.task is not None
            rig.task.cancel()
            await asyncio.gather(rig.task, return_exceptions=True)
            for n in range(200):
                metrics.EXPIRY.discard(f"uid-{n}")


async def test_a_version_observed_while_its_step_runs_wins_over_the_steps_read(rig: Rig) -> None:
    # The step reads, then (before it acts) an edit moves the expiry later and is observed: the
    # step's own plan must not overwrite the newer one, and nothing is revoked early.
    rig.ready(expires_in=0)
    gate = asyncio.Event()
    get = rig.kube.get_custom

    async def slow_get(kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        await gate.wait()
        return await get(kind, namespace, name)

    rig.kube.get_custom = slow_get  # type: ignore[method-assign]
    for _ in range(50):
        await asyncio.sleep(0)
    assert rig.scheduler._busy == {UID}
    later = rig.stored()
    later["status"]["expiresAt"] = rfc3339(NOW + timedelta(seconds=90))
    rig.kube.custom[("AgentAccount", NS, NAME)] = copy.deepcopy(later)
    rig.scheduler.observe(later, trusted=True)  # the issue handler's extension
    gate.set()

    assert await rig.settle() == 90
    assert rig.phase() == "Ready" and rig.owned() == list(KINDS)
