"""Ending an identity: revoke at the provider, delete the Secret, record it — on expiry or deletion.

Revocation never waits on what cannot come back: a provider whose object is gone either revokes
without it (a type that needs nothing from it, e.g. Kubernetes) or is recorded as relying on its own
provider-side expiry, with a Warning Event; the Secret and the record then go regardless.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Literal

from agentaccounts import conditions, metrics
from agentaccounts.clock import rfc3339
from agentaccounts.conditions import Emit
from agentaccounts.credential_secrets import CredentialSecrets
from agentaccounts.errors import InvalidSpec, ProviderNotFound
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
        provider_obj = await self.resolver.for_revoke(account, provider_type)
        if provider_obj is not None:
            try:
                provider = await provider_for(provider_obj, self.deps)
            except (ProviderNotFound, InvalidSpec) as exc:
                # E.g. the Cloudflare parent-token Secret is gone: the provider-side identity cannot
                # be revoked by us (it still dies at its own expiry), but the Secret and the record
                # must not wait forever for it.
                emit("Warning", "RevokeIncomplete", f"provider-side identity not revoked: {exc.message}")
                log.warning("%s/%s: %s", account.namespace, account.name, exc.message)
            else:
                await provider.revoke(revoke_request(account, self.deps.now()), status.account_ref)
        await self.secrets.delete(account)
        now = self.deps.now()
        metrics.EXPIRY.discard(account.uid)
        if status.phase in ("Ready", "Pending") or status.account_ref:
            metrics.REVOKED.labels(provider_type, why).inc()
        if why == "deleted":
            emit("Normal", "Revoked", "AgentAccount deleted: identity revoked and Secret deleted")
            log.info("Revoked %s/%s (deleted)", account.namespace, account.name)
            return None
        lag = (now - status.expires_at).total_seconds() if status.expires_at else 0.0
        metrics.REVOCATION_LAG.labels(provider_type).observe(max(lag, 0.0))
        provider_note = raw_status.get("providerNote")
        note = f". {provider_note}" if provider_note else ""
        expired = rfc3339(status.expires_at or now)
        message = f"expired at {expired}; identity revoked, Secret deleted{note}"
        patch = conditions.phase_patch(
            raw_status, "Expired", False, "Expired", message, account.generation, now, revokedAt=rfc3339(now)
        )
        await self.deps.kube.patch_account_status(account.namespace, account.name, patch)
        emit("Normal", "Expired", message)
        log.info("Expired %s/%s, revoked %.3fs after expiresAt", account.namespace, account.name, lag)
        return patch

    async def delete_record(self, account: AgentAccount, emit: Emit) -> None:
        """keepExpiredFor has passed: the AgentAccount (the audit record) goes."""
        emit("Normal", "Deleted", "audit record kept for keepExpiredFor; deleting the AgentAccount")
        await self.deps.kube.delete_account(account.namespace, account.name, account.uid)
