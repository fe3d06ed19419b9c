"""Issuing an AgentAccount's identity: every check, then create-or-adopt, then the Secret. No kopf here.

Each step is level-based and idempotent, and every fact a restart needs is written to status before
the step that depends on it: `issuedAt`/`expiresAt` before anything is created (so a crash never
extends a lifetime), `accountRef` the moment the provider-side identity exists (so it can always be
found and revoked). Errors from `agentaccounts.errors` become a phase, a `Ready` condition and an Event
(account_status.py), then propagate to the handler, which maps them to kopf's retry semantics.
Revoking is revoke.py; the Secret is credential_secrets.py.
"""

from __future__ import annotations

import contextlib
import logging
import time
from datetime import datetime
from typing import Any

import pydantic

from agentaccounts import conditions, policies
from agentaccounts.access import Access
from agentaccounts.account_status import AccountStatus
from agentaccounts.clock import rfc3339
from agentaccounts.conditions import Emit
from agentaccounts.credential_secrets import CredentialSecrets
from agentaccounts.errors import (
    AgentAccountsError,
    AwaitingApproval,
    Denied,
    InvalidSpec,
    QuotaExceeded,
)
from agentaccounts.kube import Kube
from agentaccounts.models import AccountRef, AgentAccount, ProviderObject, describe_errors, format_duration
from agentaccounts.namespace_locks import NamespaceLocks
from agentaccounts.providers import provider_for, type_of
from agentaccounts.providers.base import Deps, Issued, IssueRequest, Provider
from agentaccounts.providers.resolve import ProviderResolver
from agentaccounts.revoke import Revoker, Why
from agentaccounts.stamps import Signer

__all__ = ["Emit", "Reconciler", "parse"]
log = logging.getLogger(__name__)
APPROVAL_RETRY_SECONDS = 5.0


def parse(body: dict[str, Any]) -> AgentAccount:
    try:
        return AgentAccount.from_body(body)
    except pydantic.ValidationError as exc:
        raise InvalidSpec(f"invalid spec: {describe_errors(exc)}") from None


class Reconciler:
    """What the handlers call: issue (or adopt, or update) an AgentAccount's identity, revoke it,
    delete its record, and record every outcome in status and Events.

    Issuing is here; revoking is `revoke.Revoker`; the credentials Secret is `CredentialSecrets`;
    provider lookup is `ProviderResolver`. `signer` verifies the requester stamps admission wrote
    (stamps.py); `access` re-runs admission's checks right before anything is issued."""

    def __init__(self, deps: Deps, signer: Signer) -> None:
        self.deps = deps
        self.kube: Kube = deps.kube
        self.now = deps.now
        self.signer = signer
        self.resolver = ProviderResolver(deps.kube, deps.settings.provider_retry_seconds)
        self.access = Access(deps.kube, deps.settings)
        self.secrets = CredentialSecrets(deps.kube)
        self.revoker = Revoker(deps, self.resolver, self.secrets)
        self.status = AccountStatus(deps.kube, deps.now)
        self._lock = NamespaceLocks()

    # -- issue ----------------------------------------------------------------------------------
    async def ensure_issued(self, body: dict[str, Any], emit: Emit) -> dict[str, Any] | None:
        """Issue (or adopt, or update) the identity; returns the status written, None if nothing to do.

        Decides on a fresh read, not on the body the event carried: a retried handler (after
        RateLimited, say) may hold a body from before an earlier attempt recorded its identity, and
        acting on it would replace a live credential (measured: 283 of 1000 Cloudflare tokens in a
        throttled burst before this read)."""
        meta = body.get("metadata", {})
        if self._settled(body):
            # Nothing to do even on this body: leaving alone is safe on a stale one too (a newer edit
            # comes with its own event), so no read. At an operator start with 10,000 accounts that
            # is 10,000 GETs not made before the first overdue one can be revoked.
            return None
        fresh = await self.kube.get_custom("AgentAccount", meta.get("namespace", ""), meta.get("name", ""))
        if fresh is None or fresh["metadata"].get("uid") != meta.get("uid"):
            return None  # deleted (or replaced) meanwhile: the delete handler / the new object's own turn
        if fresh["metadata"].get("deletionTimestamp"):
            # Being deleted: only the delete handler acts now. (Deletion bumps metadata.generation, so a
            # create handler a killed operator had not recorded as done would otherwise see a Ready
            # account "out of date" and mint a new credential into the Secret about to be revoked.)
            return None
        body = fresh
        current = dict(body.get("status") or {})
        try:
            account = parse(body)
            decision = policies.on_change(account, self.now())
            if decision.action == "skip":
                return None
            ended = self._ended_early(account)
            if ended is not None:
                # Shortened into the past (`agentaccounts revoke`): nothing to issue, only to end. The
                # new expiresAt is recorded and the timer (woken by the handler) revokes at once; no
                # check is needed to end what exists, and no token is minted just to be revoked.
                patch = {"expiresAt": rfc3339(ended), "observedGeneration": account.generation}
                await self.status.patch(account, patch)
                return patch
            return await self._issue(account, body.get("spec") or {}, current, emit)
        except AgentAccountsError as exc:
            meta = body.get("metadata", {})
            await self.status.error(
                meta.get("namespace", ""), meta.get("name", ""), meta.get("generation", 1), current, exc, emit
            )
            raise

    def _settled(self, body: dict[str, Any]) -> bool:
        try:
            return policies.on_change(parse(body), self.now()).action == "skip"
        except AgentAccountsError:
            return False  # judged (and reported) on the fresh read

    async def _issue(
        self, account: AgentAccount, raw_spec: dict[str, Any], current: dict[str, Any], emit: Emit
    ) -> dict[str, Any]:
        provider_obj = await self.resolver.resolve(account)
        # Defence in depth: admission ran these checks already, but nothing is issued on its word.
        requester = self.signer.verified_requester(
            account.namespace, raw_spec, account.annotations, account.created_at
        )
        await self.access.check(account, provider_obj, requester)
        approval = self._approval(account, raw_spec, provider_obj)
        issued_at, expires_at = policies.expiry(account, provider_obj.spec, self.now())
        provider = await provider_for(provider_obj, self.deps)
        request = self._request(account, expires_at)
        await provider.validate(request)
        who = {"requester": requester.model_dump(include={"username", "uid", "groups"})}
        if account.spec.dry_run:
            return await self._dry_run(account, provider_obj, provider, request, current, who, emit)
        started = time.monotonic()
        timing = {
            "provider": provider.type,
            "issuedAt": rfc3339(issued_at),
            "expiresAt": rfc3339(expires_at),
            "secretName": account.secret_name,
            **who,
            "approval": approval,
            "plan": None,
        }
        # Quotas and Secret-name grants are judged under a per-namespace lock, so that two accounts
        # issued at once cannot both pass a check the other would have failed: an account that asks
        # for Secrets by name (or counts against a quota) holds it from that check through its own
        # Secret write, exclusively; every other account holds it shared around its Secret write alone,
        # where it checks that no other agent's Role grants that Secret's name (namespace_locks.py).
        granted_secrets = type_of(provider_obj.spec).granted_secrets(account.spec.scopes)
        exclusive = provider_obj.spec.policy.max_active_accounts is not None or bool(granted_secrets)
        async with contextlib.AsyncExitStack() as held:
            if exclusive:
                await held.enter_async_context(self._lock(account.namespace).exclusive())
            if granted_secrets:
                await self.access.check_secret_names(account.namespace, granted_secrets)
            if provider_obj.spec.policy.max_active_accounts is not None and current.get("phase") != "Ready":
                refusal = await self.access.check_quota(account, provider_obj, issued_only=True)
                if refusal:
                    raise QuotaExceeded(refusal, delay=10.0)
            issued = await self._create_identity(account, provider_obj, provider, request, timing, current)
            if not exclusive:
                await held.enter_async_context(self._lock(account.namespace).shared())
            await self.secrets.check_not_granted(account)
            await self.secrets.write(account, issued, expires_at)
        return await self.status.issued(
            account, provider.type, issued, expires_at, timing, current, started, emit
        )

    def _ended_early(self, account: AgentAccount) -> datetime | None:
        """The new expiry of an issued account whose edited lifetime already ran out, else None."""
        issued_at, lifetime = account.status.issued_at, account.spec.lifetime
        if issued_at is None or lifetime is None or account.status.phase != "Ready":
            return None
        expires_at = issued_at + lifetime
        return expires_at if expires_at <= self.now() else None

    def _approval(
        self, account: AgentAccount, raw_spec: dict[str, Any], provider: ProviderObject
    ) -> dict[str, str] | None:
        if not provider.spec.policy.require_approval or account.spec.dry_run:
            return None
        approval = self.signer.verified_approval(account.uid, raw_spec, account.annotations)
        if approval is None:
            raise AwaitingApproval(
                f"{provider.kind} {provider.name!r} requires approval: a user with RBAC verb 'approve' on it "
                f"runs `agentaccounts approve {account.name} -n {account.namespace}`",
                delay=APPROVAL_RETRY_SECONDS,
            )
        if approval.get("decision") == "Denied":
            raise Denied(f"denied by {approval.get('by')} at {approval.get('at')}")
        return approval

    async def _dry_run(
        self,
        account: AgentAccount,
        provider_obj: ProviderObject,
        provider: Provider,
        request: IssueRequest,
        current: dict[str, Any],
        who: dict[str, Any],
        emit: Emit,
    ) -> dict[str, Any]:
        plan = {
            **await provider.plan(request),
            "lifetime": format_duration(policies.lifetime_of(account, provider_obj.spec)),
            "approvalRequired": provider_obj.spec.policy.require_approval,
        }
        message = (
            "dry run: every check passed; status.plan shows what "
            f"{provider_obj.kind}/{provider_obj.name} would issue; nothing was issued"
        )
        status = {
            **conditions.phase_patch(
                current, "DryRun", False, "DryRun", message, account.generation, self.now()
            ),
            **who,
            "provider": provider.type,
            "plan": plan,
            "observedGeneration": account.generation,
        }
        await self.status.patch(account, status)
        emit("Normal", "DryRun", message)
        return status

    async def _create_identity(
        self,
        account: AgentAccount,
        provider_obj: ProviderObject,
        provider: Provider,
        request: IssueRequest,
        timing: dict[str, Any],
        current: dict[str, Any],
    ) -> Issued:
        """Record the timing (before anything exists), then create or adopt the provider-side identity."""
        await self.secrets.check(account)
        pending = (
            {}
            if current.get("phase") == "Ready"
            else conditions.phase_patch(
                current,
                "Pending",
                False,
                "Issuing",
                f"issuing through {provider_obj.kind}/{provider_obj.name}",
                account.generation,
                self.now(),
            )
        )
        await self.status.patch(account, {**timing, **pending})

        async def record(ref: AccountRef) -> None:
            await self.status.patch(account, {"accountRef": ref.model_dump(exclude_defaults=True)})

        issued: Issued = await provider.issue(request, record)
        if (
            issued.secret_data is None
            and await self.kube.get("Secret", account.namespace, account.secret_name) is None
        ):
            # The identity was updated in place but its credentials cannot be read back and the Secret
            # is gone: replace the identity rather than leave the agent without credentials.
            await provider.revoke(request, issued.account_ref)
            issued = await provider.issue(self._request(account, request.expires_at, existing=False), record)
        return issued

    def _request(self, account: AgentAccount, expires_at: datetime, existing: bool = True) -> IssueRequest:
        return IssueRequest(
            namespace=account.namespace,
            name=account.name,
            uid=account.uid,
            scopes=list(account.spec.scopes),
            expires_at=expires_at,
            secret_name=account.secret_name,
            existing=account.status.account_ref if existing else None,
        )

    def remember(self, account: AgentAccount) -> None:
        self.status.remember(account)

    # -- expire / remove ------------------------------------------------------------------------
    async def revoke(self, body: dict[str, Any], why: Why, emit: Emit) -> dict[str, Any] | None:
        """Revoke everything; returns the status patch written on expiry (see revoke.Revoker)."""
        account = AgentAccount.for_revocation(body)  # an invalid spec never keeps an identity alive
        return await self.revoker.revoke(account, dict(body.get("status") or {}), why, emit)

    async def delete_record(self, body: dict[str, Any], emit: Emit) -> None:
        await self.revoker.delete_record(AgentAccount.for_revocation(body), emit)
