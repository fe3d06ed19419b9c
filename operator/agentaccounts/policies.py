"""Pure decisions about an AgentAccount: given its spec, status, provider and the time, what next?

Modelled on cert-manager's policies: each question is a small function of plain values with `now`
passed in, returning a `Decision` with a machine-readable reason and a human message. No I/O, no
clock reads, no kopf: the table-driven tests in tests/unit/test_policies.py pin every branch.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from agentaccounts.models import (
    AgentAccount,
    LabelSelector,
    ProviderSpecBase,
    Scope,
    ScopePattern,
    format_duration,
)

Action = Literal["issue", "skip", "fail", "wait", "revoke", "delete"]


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    message: str
    at: datetime | None = None  # for "wait": when to look again


CLOCK_SKEW = timedelta(seconds=60)  # between the API server's creationTimestamp and our clock


def lifetime_of(account: AgentAccount, provider: ProviderSpecBase) -> timedelta:
    return account.spec.lifetime if account.spec.lifetime is not None else provider.default_lifetime


def check_lifetime(account: AgentAccount, provider: ProviderSpecBase) -> Decision | None:
    """A lifetime over the provider's maxLifetime fails the account; zero lifetime too."""
    lifetime = lifetime_of(account, provider)
    if lifetime <= timedelta(0):
        return Decision("fail", "InvalidSpec", "spec.lifetime must be greater than zero")
    if lifetime > provider.max_lifetime:
        return Decision(
            "fail",
            "LifetimeExceeded",
            f"rule max-lifetime: lifetime {format_duration(lifetime)} exceeds the provider's "
            f"policy.maxLifetime {format_duration(provider.max_lifetime)}",
        )
    return None


def expiry(account: AgentAccount, provider: ProviderSpecBase, now: datetime) -> tuple[datetime, datetime]:
    """(issuedAt, expiresAt). The lifetime counts from the first issue, which status remembers, so a
    restart or a re-issue never extends an identity; a lifetime edit moves expiresAt from issuedAt."""
    issued_at = account.status.issued_at or now
    # status.issuedAt is trusted only as far as it can only shorten a lifetime: an issue cannot lie in
    # the future, nor before the account existed (a hand-written 2099 would otherwise extend the
    # identity far past policy.maxLifetime).
    if issued_at > now:
        issued_at = now
    if account.created_at is not None and issued_at < account.created_at - CLOCK_SKEW:
        issued_at = account.created_at
    return issued_at, issued_at + lifetime_of(account, provider)


def on_change(account: AgentAccount, now: datetime) -> Decision:
    """Called on create, update and operator start: issue (idempotently) or leave alone?"""
    status = account.status
    if status.phase == "Expired":
        return Decision("skip", "Expired", "expired accounts are kept as audit records and never re-issued")
    if status.expires_at is not None and now >= status.expires_at:
        return Decision("skip", "Expiring", "past expiresAt: revocation is due, not issue")
    issued = status.issued_at is not None and status.account_ref is not None and bool(status.secret_name)
    if status.phase == "Ready" and status.observed_generation == account.generation and issued:
        # Only a status that records an issued identity is believed: a hand-written `phase: Ready`
        # alone must not make a never-issued account look done.
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


# -- provider policy (pure parts of access.py's checks) -------------------------------------------


def selector_matches(selector: LabelSelector, labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics: every matchLabels pair and every expression must hold."""
    if any(labels.get(k) != v for k, v in selector.match_labels.items()):
        return False
    for expression in selector.match_expressions:
        key, operator = expression.get("key", ""), expression.get("operator", "")
        values = set(expression.get("values") or [])
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
        if operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False  # an operator we do not know selects nothing, never everything
    return True


def scope_pairs(scopes: list[Scope]) -> list[tuple[str, str]]:
    """(permission, resource) pairs as allowedScopes judges them. A scope without resources asks for
    everything the provider offers (the whole Cloudflare account), written "*": only a "*" resource
    pattern allows it."""
    return [(p, r) for s in scopes for p in s.permissions for r in (s.resources or ["*"])]


def check_allowed_scopes(
    scopes: list[Scope], allowed: list[ScopePattern] | None, provider_type: str, rbac_delegated: bool
) -> Decision | None:
    """A refusal when a pair matches no allowedScopes entry. No allowedScopes: a provider whose every
    permission is delegated through RBAC (kubernetes) leaves the limit to that; every other provider
    type refuses, because its permissions are invisible to Kubernetes RBAC."""
    if allowed is None:
        if rbac_delegated:
            return None
        return Decision(
            "fail",
            "NotPermitted",
            f"rule allowed-scopes: this {provider_type} provider lists no spec.policy.allowedScopes, so it "
            "issues nothing; a platform team allows scopes with e.g. policy.allowedScopes: "
            '[{permissions: ["Workers Scripts Read"], resources: ["account"]}]',
        )
    for permission, resource in scope_pairs(scopes):
        if not any(
            any(fnmatch.fnmatchcase(permission, p) for p in entry.permissions)
            and any(fnmatch.fnmatchcase(resource, r) for r in entry.resources)
            for entry in allowed
        ):
            return Decision(
                "fail",
                "NotPermitted",
                f"rule allowed-scopes: permission {permission!r} on {resource!r} is outside the provider's "
                "policy.allowedScopes",
            )
    return None


def active_accounts(
    bodies: list[dict[str, Any]], kind: str, name: str, exclude_uid: str, issued_only: bool
) -> int:
    """Live AgentAccounts of one namespace that use provider kind/name: neither Expired, Failed (unless
    its identity is still live) nor being deleted. `issued_only` counts only those that reached issue
    (status.issuedAt), which is what the reconcile-time quota needs: accounts still waiting must not
    hold each other up."""
    count = 0
    for body in bodies:
        meta, spec, status = body.get("metadata") or {}, body.get("spec") or {}, body.get("status") or {}
        ref = spec.get("providerRef") or {}
        if meta.get("uid") == exclude_uid or meta.get("deletionTimestamp"):
            continue
        if (ref.get("kind") or "AccountProvider", ref.get("name")) != (kind, name):
            continue
        live_identity = bool(status.get("accountRef")) and not status.get("revokedAt")
        if status.get("phase") in ("Expired", "DryRun") or spec.get("dryRun") is True:
            continue
        if status.get("phase") == "Failed" and not live_identity:
            continue  # a Failed account whose identity still lives (a refused edit) still counts
        if issued_only and not status.get("issuedAt"):
            continue
        if issued_only and not status.get("issuedAt"):
            continue
        count += 1
    return count
