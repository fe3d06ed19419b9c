"""What an AgentAccount's status and Events say after each outcome: issued, dry run, or an error.

Status is the operator's memory and the user's view at once: `kubectl get agentaccounts` shows the
phase, `kubectl wait --for=condition=Ready` waits on the condition, and a restart rebuilds the expiry
metrics from it (`remember`). Errors become a phase, a `Ready` condition and an Event once per reason
change, so retries do not flood Events; a healthy identity stays Ready while an update is retried.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

from agentaccounts import conditions, metrics
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
        }
        await self.patch(account, status)
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
        log.warning("%s/%s: %s: %s", namespace, name, exc.reason, exc.message)
