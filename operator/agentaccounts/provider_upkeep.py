"""What the operator does with (Cluster)AccountProvider objects: report their health, sweep orphans.

Status: `status.type` (the printer column) and a `Ready` condition saying whether the provider can be
used — a malformed spec or a missing parent-token Secret shows up on the provider itself, not only on
every AgentAccount that references it.

Orphan sweep (for provider types that declare one: Cloudflare token mode, Kubernetes): a crash
between "identity created" and "identity written to status", or an AgentAccount whose finalizer was
removed by hand (or force-deleted while the operator was down), leaves something at the provider that
no AgentAccount records. Every `orphan_sweep_seconds` (a kopf timer registered with that interval), each
such provider deletes what carries our marker but no live AgentAccount UID. The live set comes from
the AgentAccounts this operator can see.
"""

from __future__ import annotations

import logging
from typing import Any

import pydantic

from agentaccounts import conditions
from agentaccounts.conditions import Emit
from agentaccounts.errors import AgentAccountsError, InvalidSpec
from agentaccounts.models import format_duration
from agentaccounts.providers import TYPES, provider_for, type_of
from agentaccounts.providers.base import Deps
from agentaccounts.providers.resolve import parse_provider

log = logging.getLogger(__name__)


def _declared_type(body: dict[str, Any]) -> str | None:
    """The provider type a spec names, even when it is otherwise invalid (for status.type)."""
    named = [name for name in TYPES if (body.get("spec") or {}).get(name) is not None]
    return named[0] if len(named) == 1 else None


async def report(deps: Deps, kind: str, body: dict[str, Any]) -> dict[str, Any]:
    """The status patch for a provider object: its type and whether it is usable."""
    current = dict(body.get("status") or {})
    generation = body.get("metadata", {}).get("generation", 1)
    try:
        provider = parse_provider(kind, body)
        policy = provider.spec.policy
        if policy.default_lifetime > policy.max_lifetime:
            default, maximum = format_duration(policy.default_lifetime), format_duration(policy.max_lifetime)
            raise InvalidSpec(
                f"policy.defaultLifetime {default} exceeds policy.maxLifetime {maximum}: no AgentAccount "
                "without spec.lifetime can be issued"
            )
        await provider_for(provider, deps)  # reads the parent token Secret, checks the block
        ready, reason, message, type_ = (
            True,
            "Valid",
            f"{provider.spec.type} provider ready",
            provider.spec.type,
        )
    except pydantic.ValidationError as exc:
        ready, reason, message, type_ = False, "InvalidSpec", str(exc.errors()[0]["msg"]), None
    except AgentAccountsError as exc:
        ready, reason, message, type_ = False, exc.reason, exc.message, _declared_type(body)
    return {
        "type": type_,
        "observedGeneration": generation,
        "conditions": conditions.ready_condition(
            current, "True" if ready else "False", reason, message, generation, deps.now()
        ),
    }


async def sweep(deps: Deps, kind: str, body: dict[str, Any], emit: Emit) -> list[str]:
    """Delete this provider's orphaned identities; returns what was deleted."""
    try:
        provider_obj = parse_provider(kind, body)
    except pydantic.ValidationError:
        return []
    sweeper = type_of(provider_obj.spec).sweep
    if sweeper is None:
        return []
    provider = await provider_for(provider_obj, deps)

    async def live_uids() -> set[str]:
        return {a["metadata"]["uid"] for a in await _accounts(deps)}

    deleted = await sweeper(provider, live_uids, deps)
    for item in deleted:
        message = f"deleted {provider.type} identity {item}: no live AgentAccount records it"
        emit("Normal", "OrphanDeleted", message)
        log.info("Deleted orphaned %s identity %s", provider.type, item)
    return deleted


async def _accounts(deps: Deps) -> list[dict[str, Any]]:
    namespaces = deps.settings.namespaces
    if not namespaces:
        return await deps.kube.list_custom("AgentAccount")
    found: list[dict[str, Any]] = []
    for namespace in namespaces:
        found += await deps.kube.list_custom("AgentAccount", namespace)
    return found
