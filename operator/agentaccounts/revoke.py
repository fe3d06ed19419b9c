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

import dataclasses
import logging
from datetime import datetime
from typing import Any, Literal

from agentaccounts import conditions, metrics
from agentaccounts.activity import stream
from agentaccounts.activity.attribution import Identity
from agentaccounts.activity.trail import Entry, Trail
from agentaccounts.clock import rfc3339
from agentaccounts.conditions import Emit
from agentaccounts.credential_secrets import CredentialSecrets
from agentaccounts.errors import AgentAccountsError, InvalidSpec, PermanentError, ProviderNotFound
from agentaccounts.models import AgentAccount
from agentaccounts.providers import provider_for
from agentaccounts.providers.base import Deps, IssueRequest, Provider, ProviderActivity
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
        missed, provider = await self._revoke_at_provider(account, provider_type)
        await self.secrets.delete(account)
        now = self.deps.now()
        activity = await self._provider_activity(account, raw_status, provider, now)
        decided = stream.decision
        where = (account.namespace, account.name, account.uid)
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
            decided("revoked", *where, raw_status, why="deleted", incomplete=missed, revokedAt=rfc3339(now))
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
        if activity is not None:
            patch["activity"] = activity
        await self.deps.kube.patch_account_status(account.namespace, account.name, patch)
        decided("expired", *where, raw_status, incomplete=missed, revokedAt=rfc3339(now))
        emit("Normal", "Expired", message)
        log.info("Expired %s/%s, revoked %.3fs after expiresAt", account.namespace, account.name, lag)
        return patch

    async def _revoke_at_provider(
        self, account: AgentAccount, provider_type: str
    ) -> tuple[str | None, Provider | None]:
        """Revoke the provider-side identity; (None, provider) when done, else why it could not be (it
        then ends at its provider-side expiry). Temporary failures raise, to be retried."""
        provider_obj = await self.resolver.for_revoke(account, provider_type)
        if provider_obj is None:
            ref = account.spec.provider_ref
            gone = f"{ref.kind} {ref.name!r} is gone and a {provider_type} identity needs it to be revoked"
            return gone, None
        try:
            # E.g. the Cloudflare parent-token Secret is gone (its namespace was deleted): the Secret
            # and the record must not wait forever for it.
            provider = await provider_for(provider_obj, self.deps)
        except (ProviderNotFound, InvalidSpec) as exc:
            return exc.message, None
        try:
            await provider.revoke(revoke_request(account, self.deps.now()), account.status.account_ref)
        except PermanentError as exc:
            return f"{exc.reason}: {exc.message}", provider
        return None, provider

    async def _provider_activity(
        self, account: AgentAccount, raw_status: dict[str, Any], provider: Provider | None, now: datetime
    ) -> dict[str, Any] | None:
        """What a provider's own records say the identity did (Cloudflare's audit log), merged into the
        trail: status.activity as it is to be written, or None when this provider keeps no records.
        Never blocks revocation: a failure to read them is a note in the trail."""
        reader = getattr(provider, "activity", None)
        ref, since = account.status.account_ref, account.status.issued_at
        if reader is None or ref is None or since is None:
            return None
        try:
            found: ProviderActivity = await reader(ref, since, now)
        except AgentAccountsError as exc:
            found = ProviderActivity([], False, f"the provider's records could not be read: {exc.message}")
        entries = [Entry(**dataclasses.asdict(e)) for e in found.entries]
        trail = Trail(raw_status.get("activity"))
        trail.add(entries)
        trail.note(found.note, found.complete)
        requester = str((raw_status.get("requester") or {}).get("username") or "")
        identity = Identity(account.namespace, account.name, account.uid, "", requester)
        for entry in entries:
            stream.request(identity, entry, source=f"{provider.type}-audit" if provider else "provider")
        return trail.status(now)

    async def delete_record(self, account: AgentAccount, emit: Emit) -> None:
        """keepExpiredFor has passed: the AgentAccount (the audit record) goes."""
        emit("Normal", "Deleted", "audit record kept for keepExpiredFor; deleting the AgentAccount")
        await self.deps.kube.delete_account(account.namespace, account.name, account.uid)
