"""timer.run over the in-memory Kube, in virtual time: revoke at expiresAt, delete after keepExpiredFor.

kopf's stop flag is a FakeStopped on a FakeClock, so "the timer sleeps for 60 s" is observable
(`next_sleep`) and "60 s pass" is `clock.advance(60)`: nothing here waits in real time. Each test
starts the timer as a task, lets it reach a sleep (or finish), then looks at what it wrote.
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

from agentaccounts import metrics, ownership, timer
from agentaccounts.clock import rfc3339
from agentaccounts.kube import Kube, KubeApiError
from agentaccounts.providers.base import Deps
from agentaccounts.reconcile import Reconciler
from agentaccounts.settings import Settings
from agentaccounts.stamps import Signer
from unit.fakes import FakeClock, FakeKube, FakeStopped

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
NS, NAME, UID = "agents", "bot", "7f1c1e52-0000-4000-8000-000000000002"
SPEC: dict[str, Any] = {
    "providerRef": {"kind": "AccountProvider", "name": "k8s"},
    "lifetime": "30m",
    "scopes": [{"permissions": ["get"], "resources": ["configmaps"]}],
    "keepExpiredFor": "1h",
}
KINDS = ("ServiceAccount", "Role", "RoleBinding", "Secret")
KINDS_OWNED = list(KINDS)  # what `Rig.owned` says while nothing has been revoked
Emitted = tuple[str, str, str]


class Rig:
    """One account's timer on a FakeKube, a FakeClock and a FakeStopped."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.clock = FakeClock(NOW)
        self.kube = FakeKube(now=self.clock.now)
        self.stopped = FakeStopped(self.clock)
        self.wakeups = timer.Wakeups()
        self.events: list[Emitted] = []
        deps = Deps(kube=cast(Kube, self.kube), settings=Settings(), http=http, now=self.clock.now)
        self.reconciler = Reconciler(deps, Signer(b"k" * 32))
        self.kube.add(
            "AccountProvider", {"metadata": {"name": "k8s", "namespace": NS}, "spec": {"kubernetes": {}}}
        )
        self.task: asyncio.Task[None] | None = None

    def emit(self, kind: str, reason: str, message: str) -> None:
        self.events.append((kind, reason, message))

    def account(self, status: dict[str, Any], uid: str = UID) -> dict[str, Any]:
        body = {
            "metadata": {"name": NAME, "namespace": NS, "uid": uid},
            "spec": copy.deepcopy(SPEC),
            "status": status,
        }
        return self.kube.add("AgentAccount", body)

    def ready(self, expires_in: float) -> dict[str, Any]:
        """A Ready account expiring `expires_in` seconds from now, with the objects it owns."""
        for kind in KINDS:
            name = f"{NAME}-credentials" if kind == "Secret" else f"agentaccount-{NAME}"
            self.kube.add_object(kind, {"metadata": ownership.metadata(name, NS, NAME, UID)})
        expires = self.clock.now() + timedelta(seconds=expires_in)
        return self.account(
            {
                "phase": "Ready",
                "provider": "kubernetes",
                "issuedAt": rfc3339(expires - timedelta(minutes=30)),
                "expiresAt": rfc3339(expires),
                "accountRef": {"kind": "ServiceAccount", "name": f"agentaccount-{NAME}", "namespace": NS},
            }
        )

    def expired(self, revoked_ago: float) -> dict[str, Any]:
        revoked = self.clock.now() - timedelta(seconds=revoked_ago)
        return self.account(
            {"phase": "Expired", "expiresAt": rfc3339(revoked), "revokedAt": rfc3339(revoked)}
        )

    def start(self, uid: str = UID) -> asyncio.Task[None]:
        self.task = asyncio.create_task(
            timer.run(self.reconciler, NS, NAME, uid, self.stopped, self.wakeups, self.emit)
        )
        return self.task

    async def asleep(self) -> float | None:
        """Let the timer run until it sleeps; the timeout it sleeps for. Fails if it ends instead."""
        assert self.task is not None
        sleep = asyncio.ensure_future(self.stopped.next_sleep())
        async with asyncio.timeout(10):  # a safety net against a hung timer, never reached when it works
            done, _ = await asyncio.wait({sleep, self.task}, return_when=asyncio.FIRST_COMPLETED)
        if sleep not in done:
            sleep.cancel()
            raise AssertionError(f"the timer ended instead of sleeping: {self.task.result()!r}")
        return sleep.result()

    async def finished(self) -> None:
        assert self.task is not None
        async with asyncio.timeout(10):
            await self.task

    def phase(self) -> str | None:
        stored = self.kube.stored("AgentAccount", NS, NAME)
        return None if stored is None else (stored.get("status") or {}).get("phase")

    def owned(self) -> list[str]:
        return [kind for kind in KINDS if self.kube.names(kind, NS, ownership.selector(UID))]

    def reads(self) -> int:
        return len(self.kube.called("get_custom", "AgentAccount"))


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(lambda _: httpx.Response(599))) as http:
        rig = Rig(http)
        yield rig
        if rig.task is not None and not rig.task.done():
            rig.stopped.stop()
            await rig.finished()


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
    rig.start()

    assert await rig.asleep() == timer.MAX_SLEEP  # revoked, now keeping the record (1h, capped)
    assert rig.phase() == "Expired"
    assert rig.owned() == []
    assert [reason for _, reason, _ in rig.events] == ["Expired"]


async def test_a_future_expiry_is_slept_until_and_revoked_without_reading_again(rig: Rig) -> None:
    rig.ready(expires_in=60)
    rig.start()

    assert await rig.asleep() == 60
    assert rig.phase() == "Ready" and rig.reads() == 1
    rig.clock.advance(60)

    assert await rig.asleep() == timer.MAX_SLEEP
    assert rig.phase() == "Expired" and rig.owned() == []
    revoked_at = next(i for i, c in enumerate(rig.kube.calls) if c[0] == "delete_labelled")
    second_read = [i for i, c in enumerate(rig.kube.calls) if c[:2] == ("get_custom", "AgentAccount")][1]
    assert revoked_at < second_read  # at expiresAt, the body it slept on was enough


async def test_a_wakeup_makes_the_timer_read_the_account_again(rig: Rig) -> None:
    rig.ready(expires_in=60)
    rig.start()
    assert await rig.asleep() == 60

    rig.kube.custom[("AgentAccount", NS, NAME)]["status"]["expiresAt"] = rfc3339(NOW + timedelta(seconds=120))
    rig.wakeups.wake(UID)

    assert await rig.asleep() == 120  # the new expiry, read from the API server
    assert rig.reads() == 2 and rig.phase() == "Ready"


async def test_a_wakeup_after_an_early_expiry_edit_revokes_at_once(rig: Rig) -> None:
    rig.ready(expires_in=200)
    rig.start()
    assert await rig.asleep() == 200

    rig.kube.custom[("AgentAccount", NS, NAME)]["status"]["expiresAt"] = rfc3339(NOW)
    rig.wakeups.wake(UID)

    assert await rig.asleep() == timer.MAX_SLEEP
    assert rig.phase() == "Expired" and rig.owned() == []


async def test_a_long_expiry_is_slept_in_capped_steps(rig: Rig) -> None:
    rig.ready(expires_in=3 * timer.MAX_SLEEP)
    rig.start()

    assert await rig.asleep() == timer.MAX_SLEEP
    rig.clock.advance(timer.MAX_SLEEP)
    assert await rig.asleep() == timer.MAX_SLEEP  # still capped, after a re-read
    assert rig.reads() == 2 and rig.phase() == "Ready"


async def test_the_timer_rebuilds_the_expiry_metric_of_a_ready_account(rig: Rig) -> None:
    rig.ready(expires_in=60)
    rig.start()
    await rig.asleep()
    assert (NS, NAME) in expiry_labels()


# -- the audit record -----------------------------------------------------------------------------


async def test_an_expired_record_past_keep_expired_for_is_deleted(rig: Rig) -> None:
    rig.expired(revoked_ago=3601)
    rig.start()

    await rig.finished()
    assert rig.kube.stored("AgentAccount", NS, NAME) is None
    assert rig.kube.called("delete_account", NS, NAME, UID)
    assert [reason for _, reason, _ in rig.events] == ["Deleted"]


async def test_an_expired_record_is_kept_until_keep_expired_for_passes(rig: Rig) -> None:
    rig.expired(revoked_ago=3600 - 100)
    rig.start()

    assert await rig.asleep() == 100
    assert rig.kube.stored("AgentAccount", NS, NAME) is not None
    rig.clock.advance(100)
    await rig.finished()
    assert rig.kube.stored("AgentAccount", NS, NAME) is None


# -- ending ---------------------------------------------------------------------------------------


async def test_an_account_that_is_gone_ends_the_timer(rig: Rig) -> None:
    first = rig.wakeups.event(UID)
    rig.start()

    await rig.finished()
    assert rig.kube.writes == []
    assert rig.wakeups.event(UID) is not first  # its wake-up was forgotten


async def test_an_account_replaced_by_a_newer_one_ends_the_timer(rig: Rig) -> None:
    rig.account({"phase": "Ready", "expiresAt": rfc3339(NOW - timedelta(seconds=5))}, uid="uid-newer")
    rig.start()

    await rig.finished()
    assert rig.kube.writes == []  # the newer object's own timer revokes it, not this one


async def test_an_account_deleted_while_the_timer_sleeps_ends_it(rig: Rig) -> None:
    rig.ready(expires_in=60)
    rig.start()
    await rig.asleep()

    del rig.kube.custom[("AgentAccount", NS, NAME)]
    rig.wakeups.wake(UID)

    await rig.finished()
    assert rig.owned() == KINDS_OWNED


async def test_an_account_being_deleted_is_left_to_the_finalizer(rig: Rig) -> None:
    rig.ready(expires_in=-1)
    rig.kube.custom[("AgentAccount", NS, NAME)]["metadata"]["deletionTimestamp"] = rfc3339(NOW)
    rig.start()

    await rig.finished()
    assert rig.kube.writes == [] and rig.owned() == KINDS_OWNED


async def test_stopping_ends_the_timer(rig: Rig) -> None:
    rig.ready(expires_in=60)
    rig.start()
    await rig.asleep()

    rig.stopped.stop()
    await rig.finished()
    assert rig.phase() == "Ready"  # stopping is not expiring


# -- errors ---------------------------------------------------------------------------------------


async def test_an_api_error_while_revoking_is_logged_and_retried(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    rig.ready(expires_in=-1)
    rig.kube.fail(
        "delete_labelled", KubeApiError("delete: HTTP 500 boom", 500), when=lambda c: c[1] == "Secret"
    )
    rig.start()

    assert await rig.asleep() == timer.ERROR_BACKOFF
    assert "timer step failed; retrying" in caplog.text
    assert rig.phase() == "Ready"
    rig.clock.advance(timer.ERROR_BACKOFF)

    assert await rig.asleep() == timer.MAX_SLEEP
    assert rig.phase() == "Expired" and rig.owned() == []


async def test_a_temporary_provider_error_waits_its_delay_and_retries(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    rig.ready(expires_in=-1)
    rig.kube.fail(
        "delete_labelled", KubeApiError("delete: HTTP 503 unavailable", 503), when=lambda c: c[1] == "Role"
    )
    rig.start()

    with caplog.at_level(logging.WARNING, logger="agentaccounts.timer"):
        assert await rig.asleep() == 5.0  # ProviderUnavailable's delay
    assert "HTTP 503 unavailable, retrying in 5s" in caplog.text
    rig.clock.advance(5)

    assert await rig.asleep() == timer.MAX_SLEEP
    assert rig.phase() == "Expired" and rig.owned() == []


async def test_a_wakeup_cuts_an_error_backoff_short(rig: Rig) -> None:
    rig.ready(expires_in=-1)
    rig.kube.fail(
        "delete_labelled", KubeApiError("delete: HTTP 500 boom", 500), when=lambda c: c[1] == "Secret"
    )
    rig.start()
    assert await rig.asleep() == timer.ERROR_BACKOFF

    rig.wakeups.wake(UID)

    assert await rig.asleep() == timer.MAX_SLEEP
    assert rig.phase() == "Expired"


async def test_an_account_whose_spec_no_longer_validates_is_still_revoked_and_its_record_kept(
    rig: Rig,
) -> None:
    # Before: the timer failed to parse it every 30 s forever and never revoked a live identity.
    body = rig.ready(expires_in=-1)
    body["spec"]["scopes"] = []
    rig.start()

    assert await rig.asleep() == timer.MAX_SLEEP  # revoked; the record stays (no valid keepExpiredFor)
    assert rig.phase() == "Expired"
    assert rig.owned() == []


async def test_an_api_error_reading_the_account_is_retried(rig: Rig) -> None:
    rig.ready(expires_in=-1)
    rig.kube.fail("get_custom", KubeApiError("get AgentAccount: HTTP 500 etcd timeout", 500))
    rig.start()

    sleep = await rig.asleep()
    assert sleep == timer.ERROR_BACKOFF


def test_waking_accounts_without_a_running_timer_keeps_nothing() -> None:
    # Before: every wake (one per issue-handler run, for any uid) created an event that only a
    # running timer's end ever removed, so wake-ups of finished timers piled up without bound.
    wakeups = timer.Wakeups()
    for n in range(1000):
        wakeups.wake(f"uid-{n}")
    assert len(wakeups) == 0
    running = wakeups.event("uid-live")
    wakeups.wake("uid-live")
    assert running.is_set() and len(wakeups) == 1
