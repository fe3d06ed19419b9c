"""Every branch of the pure decisions, clock injected: tables of (account, provider, now) -> decision."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agentaccounts import policies
from agentaccounts.models import AgentAccount, ProviderSpec
from agentaccounts.policies import Decision

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
MIN, HOUR = timedelta(minutes=1), timedelta(hours=1)


def rfc(moment: datetime | None) -> str | None:
    """RFC 3339 as the API server stores it (sub-second digits kept, so lags can be exact)."""
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def account(
    *,
    lifetime: str | None = None,
    keep: str | None = None,
    generation: int = 1,
    phase: str | None = None,
    issued_at: datetime | None = None,
    expires_at: datetime | None = None,
    revoked_at: datetime | None = None,
    observed: int | None = None,
) -> AgentAccount:
    spec: dict[str, Any] = {"providerRef": {"name": "in-cluster"}, "scopes": [{"permissions": ["get"]}]}
    if lifetime is not None:
        spec["lifetime"] = lifetime
    if keep is not None:
        spec["keepExpiredFor"] = keep
    status = {
        "phase": phase,
        "issuedAt": rfc(issued_at),
        "expiresAt": rfc(expires_at),
        "revokedAt": rfc(revoked_at),
        "observedGeneration": observed,
    }
    return AgentAccount.from_body(
        {
            "metadata": {"name": "bot", "namespace": "agents", "uid": "uid-1", "generation": generation},
            "spec": spec,
            "status": {k: v for k, v in status.items() if v is not None},
        }
    )


def provider(max_lifetime: str = "24h", default_lifetime: str = "1h") -> ProviderSpec:
    return ProviderSpec.model_validate(
        {"kubernetes": {}, "maxLifetime": max_lifetime, "defaultLifetime": default_lifetime}
    )


# -- check_lifetime -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lifetime", "default", "maximum"),
    [
        (None, "1h", "24h"),  # the provider's default
        ("30m", "1h", "24h"),
        ("24h", "1h", "24h"),  # exactly the maximum is allowed
        ("1ms", "1h", "24h"),
        ("2h", "48h", "24h"),  # an over-long default does not matter when spec.lifetime is set
    ],
)
def test_lifetimes_within_the_maximum_pass(lifetime: str | None, default: str, maximum: str) -> None:
    assert policies.check_lifetime(account(lifetime=lifetime), provider(maximum, default)) is None


@pytest.mark.parametrize(
    ("lifetime", "default", "maximum", "reason", "fragments"),
    [
        ("2h", "1h", "1h30m", "LifetimeExceeded", ["lifetime 2h", "maxLifetime 1h30m"]),
        ("24h1s", "1h", "24h", "LifetimeExceeded", ["lifetime 1d1s", "maxLifetime 1d"]),
        (None, "48h", "24h", "LifetimeExceeded", ["lifetime 2d", "maxLifetime 1d"]),
        ("0s", "1h", "24h", "InvalidSpec", ["greater than zero"]),
        ("0m0s", "1h", "24h", "InvalidSpec", ["greater than zero"]),
        (None, "0s", "24h", "InvalidSpec", ["greater than zero"]),
    ],
)
def test_lifetimes_that_fail(
    lifetime: str | None, default: str, maximum: str, reason: str, fragments: list[str]
) -> None:
    decision = policies.check_lifetime(account(lifetime=lifetime), provider(maximum, default))

    assert decision is not None
    assert (decision.action, decision.reason) == ("fail", reason)
    for fragment in fragments:
        assert fragment in decision.message


def test_lifetime_of_prefers_the_spec_over_the_provider_default() -> None:
    assert policies.lifetime_of(account(lifetime="5m"), provider(default_lifetime="2h")) == 5 * MIN
    assert policies.lifetime_of(account(), provider(default_lifetime="2h")) == 2 * HOUR


# -- expiry ---------------------------------------------------------------------------------------


def test_first_issue_counts_from_now() -> None:
    assert policies.expiry(account(lifetime="30m"), provider(), NOW) == (NOW, NOW + 30 * MIN)


def test_first_issue_uses_the_provider_default_lifetime() -> None:
    assert policies.expiry(account(), provider(default_lifetime="2h"), NOW) == (NOW, NOW + 2 * HOUR)


@pytest.mark.parametrize("later", [timedelta(0), 5 * MIN, 29 * MIN, 2 * HOUR])
def test_lifetime_counts_from_issued_at_in_status(later: timedelta) -> None:
    # An operator restart or a re-issue (new generation) at any later time never extends the identity.
    issued = NOW - 10 * MIN
    acct = account(lifetime="30m", phase="Ready", issued_at=issued, expires_at=issued + 30 * MIN)
    assert policies.expiry(acct, provider(), NOW + later) == (issued, issued + 30 * MIN)


@pytest.mark.parametrize(("new_lifetime", "delta"), [("2h", 2 * HOUR), ("15m", 15 * MIN), ("5m", 5 * MIN)])
def test_lifetime_edit_moves_expires_at_from_issued_at(new_lifetime: str, delta: timedelta) -> None:
    issued = NOW - 10 * MIN
    edited = account(
        lifetime=new_lifetime,
        generation=2,
        phase="Ready",
        issued_at=issued,
        expires_at=issued + 30 * MIN,
        observed=1,
    )
    assert policies.expiry(edited, provider(), NOW) == (issued, issued + delta)


# -- on_change ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("acct", "action", "reason"),
    [
        (account(), "issue", "Issuing"),  # brand new: no status at all
        (account(phase="Pending"), "issue", "Issuing"),
        (account(phase="Failed", generation=2, observed=1), "issue", "Issuing"),
        (account(phase="Failed", expires_at=NOW + HOUR, observed=1), "issue", "Issuing"),
        (account(phase="Pending", expires_at=NOW + MIN), "issue", "Issuing"),
        (account(phase="Ready", generation=2, observed=1, expires_at=NOW + HOUR), "issue", "Issuing"),
        (account(phase="Ready", expires_at=NOW + HOUR), "issue", "Issuing"),  # no observedGeneration yet
        (account(phase="Ready", generation=3, observed=3, expires_at=NOW + HOUR), "skip", "UpToDate"),
        (account(phase="Ready", observed=1, expires_at=NOW), "skip", "Expiring"),  # exactly at expiresAt
        (account(phase="Ready", generation=2, observed=1, expires_at=NOW - MIN), "skip", "Expiring"),
        (account(phase="Pending", expires_at=NOW - MIN), "skip", "Expiring"),
        (account(phase="Failed", expires_at=NOW - MIN), "skip", "Expiring"),
        (account(phase="Expired", expires_at=NOW - HOUR, revoked_at=NOW - HOUR), "skip", "Expired"),
        (account(phase="Expired", generation=5, observed=1), "skip", "Expired"),  # edits never re-issue
        (account(phase="Expired", expires_at=NOW + HOUR), "skip", "Expired"),
    ],
    ids=[
        "new",
        "pending",
        "failed-newer-generation",
        "failed-same-generation",
        "pending-not-yet-expired",
        "ready-newer-generation",
        "ready-no-observed-generation",
        "ready-same-generation",
        "at-expires-at",
        "past-expires-at-newer-generation",
        "pending-past-expires-at",
        "failed-past-expires-at",
        "expired",
        "expired-newer-generation",
        "expired-before-expires-at",
    ],
)
def test_on_change(acct: AgentAccount, action: str, reason: str) -> None:
    decision = policies.on_change(acct, NOW)
    assert (decision.action, decision.reason) == (action, reason)
    assert decision.message


# -- on_timer -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("acct", "expected"),
    [
        (account(), Decision("wait", "NotIssued", "nothing issued yet", at=None)),
        (account(phase="Pending"), Decision("wait", "NotIssued", "nothing issued yet", at=None)),
        (account(phase="Failed"), Decision("wait", "NotIssued", "nothing issued yet", at=None)),
        (
            account(phase="Ready", expires_at=NOW + 30 * MIN),
            Decision("wait", "Active", "identity active", at=NOW + 30 * MIN),
        ),
        (
            account(phase="Pending", expires_at=NOW + MIN),
            Decision("wait", "Active", "identity active", at=NOW + MIN),
        ),
    ],
    ids=["new", "pending", "failed", "ready", "pending-with-expiry"],
)
def test_on_timer_waits(acct: AgentAccount, expected: Decision) -> None:
    assert policies.on_timer(acct, NOW) == expected


@pytest.mark.parametrize(
    ("phase", "expires_at", "lag"),
    [
        ("Ready", NOW, "0.0s ago"),
        ("Ready", NOW - timedelta(seconds=30), "30.0s ago"),
        ("Ready", NOW - timedelta(milliseconds=1500), "1.5s ago"),
        ("Pending", NOW - HOUR, "3600.0s ago"),
        ("Failed", NOW - MIN, "60.0s ago"),
    ],
)
def test_on_timer_revokes_at_and_after_expires_at(phase: str, expires_at: datetime, lag: str) -> None:
    decision = policies.on_timer(account(phase=phase, expires_at=expires_at), NOW)

    assert (decision.action, decision.reason) == ("revoke", "Expired")
    assert expires_at.isoformat() in decision.message
    assert f"({lag})" in decision.message


def test_on_timer_revoke_is_not_due_a_microsecond_early() -> None:
    acct = account(phase="Ready", expires_at=NOW)
    assert policies.on_timer(acct, NOW - timedelta(microseconds=1)).action == "wait"
    assert policies.on_timer(acct, NOW).action == "revoke"


@pytest.mark.parametrize(
    ("keep", "revoked", "expires", "now", "expected"),
    [
        # kept for keepExpiredFor after revokedAt, then deleted
        ("1h", NOW, NOW - MIN, NOW, Decision("wait", "Expired", "keeping the audit record", at=NOW + HOUR)),
        (
            "1h",
            NOW,
            NOW - MIN,
            NOW + 59 * MIN,
            Decision("wait", "Expired", "keeping the audit record", at=NOW + HOUR),
        ),
        ("1h", NOW, NOW - MIN, NOW + HOUR, Decision("delete", "RecordExpired", "", at=None)),
        ("1h", NOW, NOW - MIN, NOW + 2 * HOUR, Decision("delete", "RecordExpired", "", at=None)),
        # counted from revokedAt, not expiresAt: revocation came ten minutes late
        (
            "1h",
            NOW,
            NOW - 10 * MIN,
            NOW + 55 * MIN,
            Decision("wait", "Expired", "keeping the audit record", at=NOW + HOUR),
        ),
        # default keepExpiredFor is 1h
        (
            None,
            NOW,
            NOW,
            NOW + 30 * MIN,
            Decision("wait", "Expired", "keeping the audit record", at=NOW + HOUR),
        ),
        # 0s deletes at once
        ("0s", NOW, NOW, NOW, Decision("delete", "RecordExpired", "", at=None)),
        ("0s", NOW - HOUR, NOW - HOUR, NOW, Decision("delete", "RecordExpired", "", at=None)),
        # no revokedAt recorded: fall back to expiresAt
        (
            "30m",
            None,
            NOW - 10 * MIN,
            NOW,
            Decision("wait", "Expired", "keeping the audit record", at=NOW + 20 * MIN),
        ),
        ("30m", None, NOW - 30 * MIN, NOW, Decision("delete", "RecordExpired", "", at=None)),
    ],
    ids=[
        "just-revoked",
        "almost-due",
        "due",
        "overdue",
        "from-revokedAt",
        "default-1h",
        "zero-at-once",
        "zero-later",
        "from-expiresAt-wait",
        "from-expiresAt-due",
    ],
)
def test_on_timer_for_expired_records(
    keep: str | None, revoked: datetime | None, expires: datetime, now: datetime, expected: Decision
) -> None:
    acct = account(keep=keep, phase="Expired", expires_at=expires, revoked_at=revoked)
    decision = policies.on_timer(acct, now)

    assert (decision.action, decision.reason, decision.at) == (expected.action, expected.reason, expected.at)
    if expected.action == "delete":
        assert "keepExpiredFor" in decision.message


def test_expired_record_with_a_very_long_keep_expired_for_waits_instead_of_crashing() -> None:
    # "3650d" (models.MAX_DURATION, "keep forever" in practice) must wait, not overflow or crash.
    acct = account(keep="3650d", phase="Expired", expires_at=NOW, revoked_at=NOW)
    decision = policies.on_timer(acct, NOW + HOUR)
    assert decision.action == "wait"
    assert decision.at is None or decision.at > NOW + HOUR
