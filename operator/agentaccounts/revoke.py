"""Ending an identity: revoke at the provider, delete the Secret, record it — on expiry or deletion.

What may end the finalizer (on deletion) or write phase Expired: the provider-side identity is gone,
or it is provably beyond our reach — its provider object or credentials are gone, or the provider
refused the revocation (a PermanentError) — and then it ends at its own provider-side expiry (every
identity is minted with one). Those cases are never called "revoked": a Warning Event
`RevokeIncomplete` and the Ready condition (reason RevokeIncomplete) say what happened and when the
identity ends. A temporary failure (API or provider unavailable) raises, so kopf retries and the
finalizer stays. An invalid spec never blocks revocation (AgentAccount.for_revocation).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Literal

from agentaccounts import conditions, metrics
from agentaccounts.clock import rfc3339
from agentaccounts.conditions import Emit
from agentaccounts.credential_secrets import CredentialSecrets
from agentaccounts.errors import InvalidSpec, PermanentError, ProviderNotFound
from agentaccounts.models import AgentAccount
from agentaccounts.providers import provider_for
from agentaccounts.providers.base import Deps, IssueRequest
from agentaccounts.providers.resolve import ProviderResolver

log = logging.getLogger(__name__)
Why = Literal["expired", "deleted"]


def revoke_request(account: AgentAccount, now: datetime) -> IssueRequest:
    """What a provider's revoke needs to find the identity: the account and what status recorded."""
    status = account.status
    return IssueRequest(
        namespace=account.namespace,
        name=account.name,
        uid=account.uid,
        scopes=list(account.spec.scopes),
        expires_at=status.expires_at or now,
        secret_name=account.secret_name,
        existing=status.account_ref,
    )


class Revoker:
    """Revokes an account's identity and deletes its Secret; records the expiry in status."""

    def __init__(self, deps: Deps, resolver: ProviderResolver, secrets: CredentialSecrets) -> None:
        self.deps, self.resolver, self.secrets = deps, resolver, secrets

    async def revoke(
        self, account: AgentAccount, raw_status: dict[str, Any], why: Why, emit: Emit
    ) -> dict[str, Any] | None:
        """Revoke everything. Returns the status patch written on expiry (None on deletion)."""
        status = account.status
        if status.phase == "Expired" and why == "deleted":
            return None  # already revoked at expiry
        provider_type = status.provider or "kubernetes"
        missed = await self._revoke_at_provider(account, provider_type)
        await self.secrets.delete(account)
        now = self.deps.now()
        metrics.EXPIRY.discard(account.uid)
        if status.phase in ("Ready", "Pending") or status.account_ref:
            metrics.REVOKED.labels(provider_type, why).inc()
        ends = rfc3339(status.expires_at) if status.expires_at else "its provider-side expiry"
        what = (
            "identity revoked, Secret deleted"
            if missed is None
            else f"Secret deleted; provider-side identity NOT revoked ({missed}): it ends at {ends}"
        )
        if missed is not None:
            emit(
                "Warning",
                "RevokeIncomplete",
                f"provider-side identity not revoked: {missed}; it ends at {ends}",
            )
            log.warning("%s/%s: identity not revoked: %s", account.namespace, account.name, missed)
        if why == "deleted":
            emit("Normal", "Revoked", f"AgentAccount deleted: {what}")
            log.info("Revoked %s/%s (deleted)", account.namespace, account.name)
            return None
        lag = (now - status.expires_at).total_seconds() if status.expires_at else 0.0
        metrics.REVOCATION_LAG.labels(provider_type).observe(max(lag, 0.0))
        provider_note = raw_status.get("providerNote")
        note = f". {provider_note}" if provider_note else ""
        expired = rfc3339(status.expires_at or now)
        message = f"expired at {expired}; {what}{note}"
        reason = "Expired" if missed is None else "RevokeIncomplete"
        patch = conditions.phase_patch(
            raw_status, "Expired", False, reason, message, account.generation, now, revokedAt=rfc3339(now)
        )
        await self.deps.kube.patch_account_status(account.namespace, account.name, patch)
        emit("Normal", "Expired", message)
        log.info("Expired %s/%s, revoked %.3fs after expiresAt", account.namespace, account.name, lag)
        return patch

    async def _revoke_at_provider(self, account: AgentAccount, provider_type: str) -> str | None:
        """Revoke the provider-side identity; None when done, else why it could not be (it then ends at
        its provider-side expiry). Temporary failures raise, to be retried."""
        provider_obj = await self.resolver.for_revoke(account, provider_type)
        if provider_obj is None:
            ref = account.spec.provider_ref
            return f"{ref.kind} {ref.name!r} is gone and a {provider_type} identity needs it to be revoked"
        try:
            # E.g. the Cloudflare parent-token Secret is gone (its namespace was deleted): the Secret
            # and the record must not wait forever for it.
            provider = await provider_for(provider_obj, self.deps)
        except (ProviderNotFound, InvalidSpec) as exc:
            return exc.message
        try:
            await provider.revoke(revoke_request(account, self.deps.now()), account.status.account_ref)
        except PermanentError as exc:
            return f"{exc.reason}: {exc.message}"
        return None

    async def delete_record(self, account: AgentAccount, emit: Emit) -> None:
        """keepExpiredFor has passed: the AgentAccount (the audit record) goes."""
        emit("Normal", "Deleted", "audit record kept for keepExpiredFor; deleting the AgentAccount")
        await self.deps.kube.delete_account(account.namespace, account.name, account.uid)
