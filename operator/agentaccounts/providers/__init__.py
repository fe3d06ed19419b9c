"""The provider table: every provider type the operator knows, declared once, in one place.

Each entry is its package's `TYPE` (a `base.ProviderType`). From this table alone come: the spec
model's blocks and its exactly-one rule (`ProviderSpec`), `type`, building a configured provider
(`provider_for`), the provider-specific admission checks, and the orphan sweep. A unit test holds the
table, the model and the CRDs (and the chart's copies) to the same set of blocks.

Adding a provider: its own package under providers/ (never importing another provider), one entry
here, and its block in the two provider CRDs.
"""

from __future__ import annotations

from pydantic import create_model

from agentaccounts.models import ProviderObject, ProviderSpecBase
from agentaccounts.providers import cloudflare, kubernetes, postgres
from agentaccounts.providers.base import Deps, Provider, ProviderType

TYPES: dict[str, ProviderType] = {t.name: t for t in (kubernetes.TYPE, cloudflare.TYPE, postgres.TYPE)}

# The concrete spec model: the policy plus one optional field per provider type, named after it.
ProviderSpec = create_model(
    "ProviderSpec",
    __base__=ProviderSpecBase,
    **{name: (entry.block | None, None) for name, entry in TYPES.items()},  # type: ignore[call-overload]
)


def type_of(spec: ProviderSpecBase) -> ProviderType:
    return TYPES[spec.type]


async def provider_for(obj: ProviderObject, deps: Deps) -> Provider:
    """A configured provider for this provider object (cheap: per use)."""
    return await type_of(obj.spec).build(obj, deps)
