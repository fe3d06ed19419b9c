"""What the handlers do, as plain async functions: issue, expire, remove. No kopf in here.

Each step is level-based and idempotent, and every fact a restart needs is written to status before
the step that depends on it: `issuedAt`/`expiresAt` before anything is created (so a crash never
extends a lifetime), `accountRef` the moment the provider-side identity exists (so it can always be
found and revoked). Errors from `agentaccounts.errors` become a phase, a `Ready` condition and an Event
here (once per reason change, so retries do not flood Events), then propagate to the handler, which
maps them to kopf's retry semantics.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pydantic

from agentaccounts import conditions, metrics, ownership, policies
from agentaccounts.errors import (
    AgentAccountsError,
    InvalidSpec,
    LifetimeExceeded,
    PermanentError,
    ProviderNotFound,
    ProviderUnavailable,
    SecretConflict,
)
from agentaccounts.kube import AlreadyExists, Kube
from agentaccounts.models import AccountRef, AgentAccount, KubernetesBlock, Provider, ProviderSpec
from agentaccounts.providers import Deps, provider_for
from agentaccounts.providers.base import Issued, IssueRequest

log = logging.getLogger(__name__)
PROVIDER_CACHE_SECONDS = 2.0
Emit = Callable[[str, str, str], None]  # (Normal|Warning, reason, message) -> posts a Kubernetes Event


def parse(body: dict[str, Any]) -> AgentAccount:
    try:
        return AgentAccount.from_body(body)
    except pydantic.ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise InvalidSpec(f"invalid spec: {problems}") from None


class Reconciler:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.kube: Kube = deps.kube
        self.now = deps.now
        self._providers: dict[tuple[str, str, str], tuple[float, dict[str, Any] | None]] = {}

    # -- issue ----------------------------------------------------------------------------------
    async def ensure_issued(self, body: dict[str, Any], emit: Emit) -> dict[str, Any] | None:
        """Issue (or adopt, or update) the identity; returns the status written, None if nothing to do.

        Decides on a fresh read, not on the body the event carried: a retried handler (after
        RateLimited, say) may hold a body from before an earlier attempt recorded its identity, and
        acting on it would replace a live credential (measured: 283 of 1000 Cloudflare tokens in a
        throttled burst before this read)."""
        meta = body.get("metadata", {})
        fresh = await self.kube.get_custom("AgentAccount", meta.get("namespace", ""), meta.get("name", ""))
        if fresh is None or fresh["metadata"].get("uid") != meta.get("uid"):
            return None  # deleted (or replaced) meanwhile: the delete handler / the new object's own turn
        body = fresh
        current = dict(body.get("status") or {})
        try:
            account = parse(body)
            decision = policies.on_change(account, self.now())
            if decision.action == "skip":
                return None
            return await self._issue(account, current, emit)
        except AgentAccountsError as exc:
            meta = body.get("metadata", {})
            await self._record_error(
                meta.get("namespace", ""), meta.get("name", ""), meta.get("generation", 1), current, exc, emit
            )
            raise

    async def _issue(self, account: AgentAccount, current: dict[str, Any], emit: Emit) -> dict[str, Any]:
        provider_obj = await self.resolve_provider(account)
        failure = policies.check_lifetime(account, provider_obj.spec)
        if failure:
            raise (LifetimeExceeded if failure.reason == "LifetimeExceeded" else InvalidSpec)(failure.message)
        issued_at, expires_at = policies.expiry(account, provider_obj.spec, self.now())
        await self._check_secret(account)
        provider = await provider_for(provider_obj, self.deps)
        request = self._request(account, expires_at)
        await provider.validate(request)
        started = time.monotonic()
        timing = {
            "provider": provider.type,
            "issuedAt": conditions.rfc3339(issued_at),
            "expiresAt": conditions.rfc3339(expires_at),
            "secretName": account.secret_name,
        }
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
        await self.patch(account, {**timing, **pending})

        async def record(ref: AccountRef) -> None:
            await self.patch(account, {"accountRef": ref.model_dump(exclude_defaults=True)})

        issued = await provider.issue(request, record)
        if (
            issued.secret_data is None
            and await self.kube.get("Secret", account.namespace, account.secret_name) is None
        ):
            # The identity was updated in place but its credentials cannot be read back and the Secret
            # is gone: replace the identity rather than leave the agent without credentials.
            await provider.revoke(request, issued.account_ref)
            issued = await provider.issue(self._request(account, expires_at, existing=False), record)
        await self._write_secret(account, issued, expires_at)
        status = {
            **conditions.phase_patch(
                current,
                "Ready",
                True,
                "Issued",
                f"credentials in Secret {account.secret_name} until {timing['expiresAt']}",
                account.generation,
                self.now(),
            ),
            **timing,
            "accountRef": issued.account_ref.model_dump(exclude_defaults=True),
            "providerNote": issued.note or None,
            "observedGeneration": account.generation,
        }
        await self.patch(account, status)
        duration = time.monotonic() - started
        metrics.ISSUED.labels(provider.type).inc()
        metrics.ISSUE_SECONDS.labels(provider.type).observe(duration)
        metrics.EXPIRY.set(account.uid, account.namespace, account.name, provider.type, expires_at)
        emit(
            "Normal",
            "Issued",
            f"{issued.account_ref.kind} {issued.account_ref.name or issued.account_ref.id} "
            f"issued; credentials in Secret {account.secret_name}; expires {timing['expiresAt']}",
        )
        log.info("Issued %s/%s via %s in %.3fs", account.namespace, account.name, provider.type, duration)
        return status

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

    async def resolve_provider(self, account: AgentAccount) -> Provider:
        ref = account.spec.provider_ref
        namespace = account.namespace if ref.kind == "AccountProvider" else ""
        body = await self._provider_body(ref.kind, namespace, ref.name)
        if body is None:
            where = f" in namespace {namespace}" if namespace else ""
            raise ProviderNotFound(
                f"{ref.kind} {ref.name!r} not found{where}; waiting for it to appear",
                delay=self.deps.settings.provider_retry_seconds if self.deps.settings else 5.0,
            )
        try:
            spec = ProviderSpec.model_validate(body.get("spec") or {})
        except pydantic.ValidationError as exc:
            raise InvalidSpec(f"{ref.kind} {ref.name!r} is invalid: {exc.errors()[0]['msg']}") from None
        return Provider(kind=ref.kind, namespace=namespace, name=ref.name, spec=spec)

    async def _provider_body(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """Provider objects, cached for PROVIDER_CACHE_SECONDS: a burst of accounts (or of expiries) through
        one provider reads it once. Short enough that an edited or new provider counts almost at once."""
        key, now = (kind, namespace, name), time.monotonic()
        cached = self._providers.get(key)
        if cached and now - cached[0] < PROVIDER_CACHE_SECONDS and cached[1] is not None:
            return cached[1]
        body = await self.kube.get_custom(kind, namespace, name)
        self._providers[key] = (now, body)
        return body

    async def _check_secret(self, account: AgentAccount) -> dict[str, Any] | None:
        secret = await self.kube.get("Secret", account.namespace, account.secret_name)
        if secret is not None and not ownership.owned_by(secret, account.uid):
            raise SecretConflict(
                f"Secret {account.namespace}/{account.secret_name} already exists and is not "
                "managed by this AgentAccount; it was left untouched. Delete it or set spec.secretName"
            )
        return secret

    async def _write_secret(self, account: AgentAccount, issued: Issued, expires_at: datetime) -> None:
        meta = ownership.metadata(account.secret_name, account.namespace, account.name, account.uid)
        meta["annotations"] = {"agentaccounts.dev/expires-at": conditions.rfc3339(expires_at)}
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": meta}
        if issued.secret_data is not None:
            body["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in issued.secret_data.items()}
            try:  # the common case, a new account: one call
                await self.kube.create("Secret", account.namespace, body)
                return
            except AlreadyExists:
                pass
        existing = await self._check_secret(account)  # refuses a foreign Secret, untouched
        if existing is None:
            raise ProviderUnavailable(f"Secret {account.namespace}/{account.secret_name} vanished; retrying")
        if issued.secret_data is None:
            body["data"] = existing.get("data") or {}
        meta["resourceVersion"] = existing["metadata"]["resourceVersion"]
        await self.kube.replace("Secret", account.namespace, body)

    # -- expire / remove ------------------------------------------------------------------------
    async def revoke(self, body: dict[str, Any], why: str, emit: Emit) -> dict[str, Any] | None:
        """Revoke everything (why = "expired" | "deleted"). Returns the status written on expiry."""
        account = parse(body)
        status = account.status
        if status.phase == "Expired" and why == "deleted":
            return None  # already revoked at expiry
        provider_type = status.provider or "kubernetes"
        provider_obj = await self._provider_for_revoke(account, provider_type)
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
                expires_at = status.expires_at or self.now()
                await provider.revoke(self._request(account, expires_at), status.account_ref)
        # Only Secrets carrying this account's UID label: a foreign Secret is never touched.
        await self.kube.delete_labelled("Secret", account.namespace, ownership.selector(account.uid))
        now = self.now()
        metrics.EXPIRY.discard(account.uid)
        if status.phase in ("Ready", "Pending") or status.account_ref:
            metrics.REVOKED.labels(provider_type, why).inc()
        if why == "deleted":
            emit("Normal", "Revoked", "AgentAccount deleted: identity revoked and Secret deleted")
            log.info("Revoked %s/%s (deleted)", account.namespace, account.name)
            return None
        lag = (now - status.expires_at).total_seconds() if status.expires_at else 0.0
        metrics.REVOCATION_LAG.labels(provider_type).observe(max(lag, 0.0))
        provider_note = (body.get("status") or {}).get("providerNote")
        note = f". {provider_note}" if provider_note else ""
        expired = conditions.rfc3339(status.expires_at or now)
        message = f"expired at {expired}; identity revoked, Secret deleted{note}"
        patch = conditions.phase_patch(
            dict(body.get("status") or {}),
            "Expired",
            False,
            "Expired",
            message,
            account.generation,
            now,
            revokedAt=conditions.rfc3339(now),
        )
        await self.patch(account, patch)
        emit("Normal", "Expired", message)
        log.info("Expired %s/%s, revoked %.3fs after expiresAt", account.namespace, account.name, lag)
        return patch

    async def _provider_for_revoke(self, account: AgentAccount, provider_type: str) -> Provider | None:
        try:
            return await self.resolve_provider(account)
        except (ProviderNotFound, InvalidSpec):
            if provider_type == "kubernetes":  # needs nothing from the provider object to clean up
                spec = ProviderSpec(kubernetes=KubernetesBlock())
                return Provider(kind="ClusterAccountProvider", name="(deleted)", spec=spec)
            log.warning(
                "Provider of %s/%s is gone; its %s identity cannot be revoked by the operator and "
                "relies on the provider's own expiry",
                account.namespace,
                account.name,
                provider_type,
            )
            return None

    async def delete_record(self, body: dict[str, Any], emit: Emit) -> None:
        meta = body["metadata"]
        emit("Normal", "Deleted", "audit record kept for keepExpiredFor; deleting the AgentAccount")
        await self.kube.delete_account(meta["namespace"], meta["name"], meta["uid"])

    # -- status ---------------------------------------------------------------------------------
    async def patch(self, account: AgentAccount, status: dict[str, Any]) -> None:
        await self.kube.patch_account_status(account.namespace, account.name, status)

    async def _record_error(
        self,
        namespace: str,
        name: str,
        generation: int,
        current: dict[str, Any],
        exc: AgentAccountsError,
        emit: Emit,
    ) -> None:
        permanent = isinstance(exc, PermanentError)
        changed = conditions.current_reason(current) != exc.reason or current.get("phase") not in (
            "Failed" if permanent else "Pending",
            "Ready",
        )
        metrics.FAILED.labels(exc.reason).inc()
        if current.get("phase") == "Ready" and not permanent:
            return  # a healthy identity stays Ready while an update is retried
        patch = conditions.phase_patch(
            current,
            "Failed" if permanent else "Pending",
            False,
            exc.reason,
            exc.message,
            generation,
            self.now(),
        )
        await self.kube.patch_account_status(namespace, name, patch)
        if changed:
            emit("Warning", "IssueFailed" if permanent else exc.reason, exc.message)
        log.warning("%s/%s: %s: %s", namespace, name, exc.reason, exc.message)
