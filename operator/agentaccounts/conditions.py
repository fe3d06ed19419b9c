"""Status patches for AgentAccounts: phase plus the single `Ready` condition, kubectl-wait friendly.

`kubectl wait --for=condition=Ready agentaccount/x` needs a `Ready` condition with status "True";
`lastTransitionTime` only moves when the condition's status changes, as the API conventions say.
Pure functions: they take the current status dict and `now` and return the merge patch to apply.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from agentaccounts.clock import rfc3339

# The other half of what a user sees: (Normal|Warning, reason, message) -> posts a Kubernetes Event.
Emit = Callable[[str, str, str], None]


def ready_condition(
    current: dict[str, Any], status: str, reason: str, message: str, generation: int, now: datetime
) -> list[dict[str, Any]]:
    previous = next((c for c in current.get("conditions") or [] if c.get("type") == "Ready"), None)
    changed = previous is None or previous.get("status") != status
    condition = {
        "type": "Ready",
        "status": status,
        "reason": reason,
        "message": message[:1024],
        "observedGeneration": generation,
        "lastTransitionTime": rfc3339(now)
        if changed or previous is None
        else previous.get("lastTransitionTime", rfc3339(now)),
    }
    others = [c for c in current.get("conditions") or [] if c.get("type") != "Ready"]
    return [*others, condition]


def phase_patch(
    current: dict[str, Any],
    phase: str,
    ready: bool,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
    **fields: Any,
) -> dict[str, Any]:
    """The merge patch that moves an account to `phase` with a Ready condition, plus extra fields."""
    return {
        "phase": phase,
        "conditions": ready_condition(
            current, "True" if ready else "False", reason, message, generation, now
        ),
        **fields,
    }


def current_reason(current: dict[str, Any]) -> str | None:
    return next((c.get("reason") for c in current.get("conditions") or [] if c.get("type") == "Ready"), None)
