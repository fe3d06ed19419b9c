"""What an AgentAccount's status and Events say after each outcome: issued, dry run, or an error.

Status is the operator's memory and the user's view at once: `kubectl get agentaccounts` shows the
phase, `kubectl wait --for=condition=Ready` waits on the condition, and a restart rebuilds the expiry
metrics from it (`remember`). Errors become a phase, a `Ready` condition and an Event once per reason
change, so retries do not flood Events; a healthy identity stays Ready while an update is retried.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from agentaccounts import conditions, metrics
from agentaccounts.activity import stream
from agentaccounts.activity.attribution import remember_id
from agentaccounts.clock import Clock
from agentaccounts.conditions import Emit
from agentaccounts.errors import AgentAccountsError, PermanentError
from agentaccounts.kube import Kube
from agentaccounts.models import AgentAccount
from agentaccounts.providers.base import Issued

log = logging.getLogger("agentaccounts.reconcile")  # the name operators grep for ("Issued ns/name")


class AccountStatus:
    """Writes an account's status patches and Events for each outcome."""

    def __init__(self, kube: Kube, now: Clock) -> None:
        self.kube, self.now = kube, now
        # Told of every issued account (its object as just written): the activity collector learns a
        # new token's credential id before the agent can use it (app.py sets it when that is on).
        self.on_issued: Callable[[dict[str, Any]], None] | None = None

    async def patch(self, account: AgentAccount, status: dict[str, Any]) -> None:
        await self.kube.patch_account_status(account.namespace, account.name, status)

    async def issued(
        self,
        account: AgentAccount,
        provider_type: str,
        issued: Issued,
        expires_at: datetime,
        timing: dict[str, Any],
        current: dict[str, Any],
        started: float,
        emit: Emit,
    ) -> dict[str, Any]:
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
            # Every token minted for this account, so its audit events are attributed to it (activity/).
            "credentialIds": remember_id(list(current.get("credentialIds") or []), issued.credential_id)
            or None,
        }
        await self.patch(account, status)
        self._decided(account, current, status)
        duration = time.monotonic() - started
        metrics.ISSUED.labels(provider_type).inc()
        metrics.ISSUE_SECONDS.labels(provider_type).observe(duration)
        metrics.EXPIRY.set(account.uid, account.namespace, account.name, provider_type, expires_at)
        emit(
            "Normal",
            "Issued",
            f"{issued.account_ref.kind} {issued.account_ref.name or issued.account_ref.id} "
            f"issued; credentials in Secret {account.secret_name}; expires {timing['expiresAt']}",
        )
        log.info("Issued %s/%s via %s in %.3fs", account.namespace, account.name, provider_type, duration)
        return status

    def _decided(self, account: AgentAccount, current: dict[str, Any], status: dict[str, Any]) -> None:
        """The audit stream's decision lines for an issue (and the collector's index)."""
        scopes = [s.model_dump(by_alias=True, exclude_defaults=True) for s in account.spec.scopes]
        where = (account.namespace, account.name, account.uid)
        approval = status.get("approval")
        if approval and (current.get("approval") or {}).get("at") != approval.get("at"):
            stream.decision("approved", *where, status, by=approval.get("by"), at=approval.get("at"))
        renewed = current.get("phase") == "Ready" and current.get("issuedAt") == status.get("issuedAt")
        event = "extended" if renewed else "issued"
        stream.decision(event, *where, status, scopes=scopes, credentialIds=status.get("credentialIds"))
        if self.on_issued is not None:
            meta = {"namespace": account.namespace, "name": account.name, "uid": account.uid}
            self.on_issued({"metadata": meta, "status": {**current, **status}})

    def remember(self, account: AgentAccount) -> None:
        """Status is the memory: a live account seen after a restart gets its expiry metrics back."""
        status = account.status
        if status.phase == "Ready" and status.expires_at is not None:
            metrics.EXPIRY.set(
                account.uid, account.namespace, account.name, status.provider or "", status.expires_at
            )

    async def error(
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
            if permanent:  # on the audit stream once per reason, as the Event
                event = "denied" if exc.reason == "Denied" else "failed"
                # (no uid here: the caller passes the object's name; the Event carries the same)
                stream.decision(event, namespace, name, "", current, reason=exc.reason, message=exc.message)
        log.warning("%s/%s: %s: %s", namespace, name, exc.reason, exc.message)
