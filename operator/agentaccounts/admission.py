"""Admission for AgentAccounts, kopf-free: what the mutating and validating webhooks decide.

Why a webhook and not a ValidatingAdmissionPolicy (measured facts in README "For platform teams"):
a VAP's CEL `authorizer` allows at most 2 checks per expression and ~28 per binding, cannot read the
referenced provider's policy, count active accounts, or parse our `2d` durations, and stamping the
requester needs MutatingAdmissionPolicy, which is beta and off by default in 1.34. A webhook does all
of it with the same code reconcile runs (access.py), at the cost of availability: see `handlers.py`
for failurePolicy and TLS.

Mutating (stamp): on CREATE, and on every UPDATE that changes the spec, the requester is the user
making the request and is stamped (stamps.py); on any other UPDATE the stamps are restored from the
old object, so a user-edited value never survives. Approval requests ("agentaccounts.dev/approval:
approve|deny") are turned into a signed approval stamp.

Validating (check): the same checks reconcile runs before issuing, as the stamped requester; for an
approval, RBAC verb `approve` on the provider. Updates that change neither spec nor approval (kopf's
finalizer and annotations, labels) pass without any API call.

Shortening (`agentaccounts revoke`, or `extend` to less): an UPDATE of an issued account whose spec is
unchanged but for a `lifetime` that ends it no later than it ends now keeps its requester and approval
(re-signed over the new spec, the editor recorded in the signed payload) and passes without the
policy and delegation checks. It can only end sooner what exists: providerRef, scopes, secretName,
dryRun are the same (and providerRef and scopes are fixed once issued anyway), and reconcile still
checks everything again, as the original requester, before it touches the identity. Anyone who may
update the AgentAccount may also delete it, so this grants nothing new; without it, someone who may
update an account but not hold its permissions could not end it while keeping the audit record.
Every other edit, a longer lifetime included, re-stamps the editor and is judged in full.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pydantic

from agentaccounts import stamps
from agentaccounts.access import Access
from agentaccounts.errors import (
    AgentAccountsError,
    InvalidSpec,
    NotPermitted,
    ProviderNotFound,
    QuotaExceeded,
)
from agentaccounts.models import AgentAccount, describe_errors
from agentaccounts.providers.resolve import ProviderResolver
from agentaccounts.stamps import Signer

APPROVAL_VALUES = {"approve": "Approved", "deny": "Denied"}


def _annotations(body: dict[str, Any] | None) -> dict[str, str]:
    return dict(((body or {}).get("metadata") or {}).get("annotations") or {})


def _spec_changed(body: dict[str, Any], old: dict[str, Any] | None) -> bool:
    """Did what the account asks for change? keepExpiredFor alone does not count (stamps.py)."""
    if old is None:
        return True
    try:
        return stamps.spec_digest(body.get("spec") or {}) != stamps.spec_digest(old.get("spec") or {})
    except ValueError:
        return body.get("spec") != old.get("spec")


def _shortened(body: dict[str, Any], old: dict[str, Any] | None) -> AgentAccount | None:
    """The stored account (parsed) when this update only shortens it: it was issued, the new spec is
    the old one but for lifetime (and keepExpiredFor, outside every signature), and the new lifetime
    is positive, shorter than the old one and ends it no later than status.expiresAt. Else None."""
    if old is None or not _spec_changed(body, old):
        return None
    try:
        new, before = AgentAccount.from_body(body), AgentAccount.from_body(old)
    except ValueError:
        return None
    issued_at, expires_at, lifetime = before.status.issued_at, before.status.expires_at, new.spec.lifetime
    if issued_at is None or expires_at is None or lifetime is None or lifetime <= timedelta(0):
        return None
    if issued_at + lifetime > expires_at:
        return None
    if before.spec.lifetime is not None and lifetime >= before.spec.lifetime:
        return None
    same = {"lifetime", "keep_expired_for"}
    return before if new.spec.model_dump(exclude=same) == before.spec.model_dump(exclude=same) else None


def _approval_requested(body: dict[str, Any]) -> str | None:
    """The decision an approver asks for. mutate removes the request once it is signed, so asking
    again (after an edit, or over a value written at create) always counts."""
    value = _annotations(body).get(stamps.APPROVAL_REQUEST)
    if value is None:
        return None
    if value not in APPROVAL_VALUES:
        raise InvalidSpec(f"annotation {stamps.APPROVAL_REQUEST} must be approve or deny, not {value!r}")
    return APPROVAL_VALUES[value]


class Admission:
    def __init__(
        self, access: Access, resolver: ProviderResolver, signer: Signer, now: Callable[[], datetime]
    ) -> None:
        self.access = access
        self.resolver = resolver
        self.signer = signer
        self.now = now

    def mutate(
        self, operation: str, body: dict[str, Any], old: dict[str, Any] | None, userinfo: dict[str, Any]
    ) -> dict[str, str | None]:
        """Annotation changes to apply (None removes a key). A spec the model rejects is refused here
        with one clear line (InvalidSpec), never an exception: mutating webhooks run before the API
        server's schema validation, so they see malformed objects first."""
        try:
            return self._mutate(operation, body, old, userinfo)
        except pydantic.ValidationError as exc:
            raise InvalidSpec(f"invalid spec: {describe_errors(exc)}") from None

    def _mutate(
        self, operation: str, body: dict[str, Any], old: dict[str, Any] | None, userinfo: dict[str, Any]
    ) -> dict[str, str | None]:
        namespace = body.get("metadata", {}).get("namespace", "")
        requester = stamps.requester_from_userinfo(userinfo)
        current, previous = _annotations(body), _annotations(old)
        spec = body.get("spec") or {}
        changes: dict[str, str | None] = {stamps.APPROVAL_REQUEST: None}
        before = _shortened(body, old) if operation == "UPDATE" else None
        kept = None
        if before is not None:
            kept = self.signer.shortened_stamp(
                namespace,
                before.uid,
                (old or {}).get("spec") or {},
                previous,
                before.created_at,
                spec,
                requester.username,
                self.now(),
            )
        if kept is not None:
            # Only shortened: the requester whose rights it was issued on stays its requester.
            changes.update(kept)
            return {k: v for k, v in changes.items() if current.get(k) != v}
        if operation == "CREATE" or _spec_changed(body, old):
            changes.update(self.signer.requester_stamp(namespace, spec, requester, self.now()))
            changes.update({stamps.APPROVED_BY: None, stamps.APPROVAL_SIGNATURE: None})
            return {k: v for k, v in changes.items() if current.get(k) != v}
        for key in (stamps.REQUESTED_BY, stamps.REQUESTER, stamps.REQUESTER_SIGNATURE):
            changes[key] = previous.get(key)
        decision = _approval_requested(body)
        if decision is not None:
            uid = body.get("metadata", {}).get("uid", "")
            changes.update(self.signer.approval_stamp(uid, spec, decision, requester.username, self.now()))
        else:
            for key in (stamps.APPROVED_BY, stamps.APPROVAL_SIGNATURE):
                changes[key] = previous.get(key)
        return {k: v for k, v in changes.items() if current.get(k) != v}

    async def validate(
        self, operation: str, body: dict[str, Any], old: dict[str, Any] | None, userinfo: dict[str, Any]
    ) -> None:
        """Raise an AgentAccountsError (its message names the rule) to refuse the request."""
        spec_changed = operation == "CREATE" or _spec_changed(body, old)
        # mutate has already turned an approval request into a new approval stamp: judge that.
        approving = not spec_changed and (
            _annotations(body).get(stamps.APPROVED_BY) != _annotations(old).get(stamps.APPROVED_BY)
        )
        if not spec_changed and not approving:
            return
        if operation == "UPDATE" and self._only_shortened(body, old):
            return  # it can only end sooner what was checked when issued (module docstring)
        try:
            account = AgentAccount.from_body(body)
        except pydantic.ValidationError as exc:
            raise InvalidSpec(f"invalid spec: {describe_errors(exc)}") from None
        requester = stamps.requester_from_userinfo(userinfo)
        try:
            provider = await self.resolver.resolve(account)
        except ProviderNotFound:
            if approving:  # nobody approves for a provider that does not exist (yet)
                raise NotPermitted("rule provider-approve: the provider does not exist yet") from None
            return  # checked in full when it appears (the account waits in Pending until then)
        if approving:
            await self.access.check_provider_verb(requester, provider, "approve", account.namespace)
            return
        stamped = self.signer.verified_requester(
            account.namespace, body.get("spec") or {}, account.annotations, None
        )
        if stamped.username != requester.username or stamped.groups != requester.groups:
            raise NotPermitted("rule requester-recorded: the requester stamp was altered after admission")
        await self.access.check(account, provider, requester)
        if operation == "CREATE":
            refusal = await self.access.check_quota(account, provider, issued_only=False)
            if refusal:
                raise QuotaExceeded(refusal)

    def _only_shortened(self, body: dict[str, Any], old: dict[str, Any] | None) -> bool:
        """A shortening (see `_shortened`) that kept the stored account's genuine requester stamp."""
        before = _shortened(body, old)
        if before is None:
            return False
        try:
            kept = self.signer.verified_requester(
                before.namespace, (old or {}).get("spec") or {}, before.annotations, before.created_at
            )
            stamped = self.signer.verified_requester(
                before.namespace, body.get("spec") or {}, _annotations(body), before.created_at
            )
        except NotPermitted:
            return False
        return kept == stamped


def refusal_message(exc: AgentAccountsError) -> str:
    return f"{exc.reason}: {exc.message}"
