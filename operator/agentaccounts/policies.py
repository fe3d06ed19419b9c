"""Pure decisions about an AgentAccount: given its spec, status, provider and the time, what next?

Modelled on cert-manager's policies: each question is a small function of plain values with `now`
passed in, returning a `Decision` with a machine-readable reason and a human message. No I/O, no
clock reads, no kopf: the table-driven tests in tests/unit/test_policies.py pin every branch.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from agentaccounts.models import AgentAccount, ProviderSpec, format_duration

Action = Literal["issue", "skip", "fail", "wait", "revoke", "delete"]


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    message: str
    at: datetime | None = None  # for "wait": when to look again


def lifetime_of(account: AgentAccount, provider: ProviderSpec) -> timedelta:
    return account.spec.lifetime if account.spec.lifetime is not None else provider.default_lifetime


def check_lifetime(account: AgentAccount, provider: ProviderSpec) -> Decision | None:
    """A lifetime over the provider's maxLifetime fails the account; zero lifetime too."""
    lifetime = lifetime_of(account, provider)
    if lifetime <= timedelta(0):
        return Decision("fail", "InvalidSpec", "spec.lifetime must be greater than zero")
    if lifetime > provider.max_lifetime:
        return Decision(
            "fail",
            "LifetimeExceeded",
            f"lifetime {format_duration(lifetime)} exceeds the provider's maxLifetime "
            f"{format_duration(provider.max_lifetime)}",
        )
    return None


def expiry(account: AgentAccount, provider: ProviderSpec, now: datetime) -> tuple[datetime, datetime]:
    """(issuedAt, expiresAt). The lifetime counts from the first issue, which status remembers, so a
    restart or a re-issue never extends an identity; a lifetime edit moves expiresAt from issuedAt."""
    issued_at = account.status.issued_at or now
    return issued_at, issued_at + lifetime_of(account, provider)


def on_change(account: AgentAccount, now: datetime) -> Decision:
    """Called on create, update and operator start: issue (idempotently) or leave alone?"""
    status = account.status
    if status.phase == "Expired":
        return Decision("skip", "Expired", "expired accounts are kept as audit records and never re-issued")
    if status.expires_at is not None and now >= status.expires_at:
        return Decision("skip", "Expiring", "past expiresAt: revocation is due, not issue")
    if status.phase == "Ready" and status.observed_generation == account.generation:
        return Decision("skip", "UpToDate", "identity issued for the current generation")
    return Decision("issue", "Issuing", "issuing identity")


def on_timer(account: AgentAccount, now: datetime) -> Decision:
    """Called by the per-account timer: when is the next thing due, and what is it?"""
    status = account.status
    if status.phase == "Expired":
        base = status.revoked_at or status.expires_at or now
        delete_at = base + account.spec.keep_expired_for
        if now >= delete_at:
            return Decision("delete", "RecordExpired", "audit record kept for keepExpiredFor; deleting")
        return Decision("wait", "Expired", "keeping the audit record", at=delete_at)
    if status.expires_at is None:
        return Decision("wait", "NotIssued", "nothing issued yet", at=None)
    if now >= status.expires_at:
        lag = (now - status.expires_at).total_seconds()
        return Decision("revoke", "Expired", f"expired at {status.expires_at.isoformat()} ({lag:.1f}s ago)")
    return Decision("wait", "Active", "identity active", at=status.expires_at)
