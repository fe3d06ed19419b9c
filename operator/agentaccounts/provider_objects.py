"""What the operator does with (Cluster)AccountProvider objects: report them, and sweep orphans.

Status: `status.type` (the printer column) and a `Ready` condition saying whether the provider can be
used — a malformed spec or a missing parent-token Secret shows up on the provider itself, not only on
every AgentAccount that references it.

Orphan sweep (Cloudflare token mode): a crash between "token created" and "token id written to status"
leaves a token at Cloudflare that no AgentAccount records. Every `orphan_sweep_seconds`, each Cloudflare
provider lists the tokens named `agentaccounts/...` and deletes those whose AgentAccount UID is not
live. The live set comes from the AgentAccounts this operator can see; tokens younger than
`cloudflare_orphan_min_age_seconds` are spared so an account being issued right now is never hit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pydantic

from agentaccounts import conditions
from agentaccounts.errors import AgentAccountsError
from agentaccounts.models import Provider, ProviderSpec
from agentaccounts.providers import Deps, provider_for
from agentaccounts.reconcile import Emit

log = logging.getLogger(__name__)


def _provider(kind: str, body: dict[str, Any]) -> Provider:
    meta = body.get("metadata", {})
    spec = ProviderSpec.model_validate(body.get("spec") or {})
    return Provider(kind=kind, namespace=meta.get("namespace") or "", name=meta["name"], spec=spec)


async def report(deps: Deps, kind: str, body: dict[str, Any]) -> dict[str, Any]:
    """The status patch for a provider object: its type and whether it is usable."""
    current = dict(body.get("status") or {})
    generation = body.get("metadata", {}).get("generation", 1)
    try:
        provider = _provider(kind, body)
        await provider_for(provider, deps)  # reads the parent token Secret, checks the block
        ready, reason, message, kind_of = (
            True,
            "Valid",
            f"{provider.spec.type} provider ready",
            provider.spec.type,
        )
    except pydantic.ValidationError as exc:
        ready, reason, message, kind_of = False, "InvalidSpec", str(exc.errors()[0]["msg"]), None
    except AgentAccountsError as exc:
        ready, reason, message = False, exc.reason, exc.message
        kind_of = "cloudflare" if (body.get("spec") or {}).get("cloudflare") is not None else "kubernetes"
    return {
        "type": kind_of,
        "observedGeneration": generation,
        "conditions": conditions.ready_condition(
            current, "True" if ready else "False", reason, message, generation, deps.now()
        ),
    }


class SweepSchedule:
    """When each provider's next sweep is due. In memory on purpose: after a restart the first sweep
    simply comes one period early, which is harmless (sweeping is idempotent)."""

    def __init__(self, period: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.period, self.clock = period, clock
        self._next: dict[str, float] = {}

    def due(self, uid: str) -> bool:
        now = self.clock()
        if uid not in self._next:  # first sight: wait one period (the operator just started issuing)
            self._next[uid] = now + self.period
            return False
        if now < self._next[uid]:
            return False
        self._next[uid] = now + self.period
        return True


async def sweep(deps: Deps, kind: str, body: dict[str, Any], emit: Emit) -> list[str]:
    """Delete this provider's orphaned Cloudflare tokens; returns what was deleted."""
    try:
        provider_obj = _provider(kind, body)
    except pydantic.ValidationError:
        return []
    if provider_obj.spec.type != "cloudflare":
        return []
    provider = await provider_for(provider_obj, deps)
    sweeper = getattr(provider, "sweep_orphans", None)
    if sweeper is None:
        return []
    live = {a["metadata"]["uid"] for a in await _accounts(deps)}
    min_age = deps.settings.cloudflare_orphan_min_age_seconds if deps.settings else 600.0
    # Only the watched namespaces' accounts are known: tokens of any other namespace are not ours to judge.
    watched = set(deps.settings.namespaces) if deps.settings and deps.settings.namespaces else None
    deleted: list[str] = await sweeper(live, min_age=timedelta(seconds=min_age), namespaces=watched)
    for item in deleted:
        emit("Normal", "OrphanDeleted", f"deleted Cloudflare token {item}: no live AgentAccount records it")
        log.info("Deleted orphaned Cloudflare token %s", item)
    return deleted


async def _accounts(deps: Deps) -> list[dict[str, Any]]:
    namespaces = deps.settings.namespaces if deps.settings else []
    if not namespaces:
        return await deps.kube.list_custom("AgentAccount")
    found: list[dict[str, Any]] = []
    for namespace in namespaces:
        found += await deps.kube.list_custom("AgentAccount", namespace)
    return found
