"""Reading a provider's own credential (Cloudflare's parent token, PostgreSQL's admin URI) from the
Secret its `...SecretRef` names — the same rules for every provider type, in one place.

- An AccountProvider reads only its own namespace; a ClusterAccountProvider must name the namespace.
- Never a Secret the operator manages (an agent's credentials Secret, found by our managed-by label):
  otherwise an account could place its own ServiceAccount token where a provider later looks for its
  parent token, or a provider could name another agent's Secret, and that token would be sent to the
  provider's API as a credential.
- Missing or empty: ProviderNotFound (accounts wait, Pending), never a failure.
The value is never logged and never part of an error message.
"""

from __future__ import annotations

import base64
from typing import Protocol

from agentaccounts.errors import InvalidSpec, ProviderNotFound
from agentaccounts.kube import Kube
from agentaccounts.models import ProviderObject
from agentaccounts.ownership import MANAGED_BY


class SecretRef(Protocol):
    """Any provider's `...SecretRef` block (models.SecretKeyRef, or a provider's own with its default key)."""

    @property
    def namespace(self) -> str | None: ...
    @property
    def name(self) -> str: ...
    @property
    def key(self) -> str: ...


async def read_provider_secret(
    kube: Kube, obj: ProviderObject, ref: SecretRef | None, field: str, what: str, retry_seconds: float
) -> str:
    """The value of `ref` for provider `obj`; `field` names the spec field in messages (e.g.
    "apiTokenSecretRef"), `what` the credential ("parent token")."""
    if ref is None:
        raise InvalidSpec(f"{obj.kind} {obj.name!r}: {field} is required")
    namespace = ref.namespace or obj.namespace
    if obj.namespace and namespace != obj.namespace:
        raise InvalidSpec(f"AccountProvider {obj.name!r} may only read Secrets in its own namespace")
    if not namespace:
        raise InvalidSpec(f"ClusterAccountProvider {obj.name!r}: {field}.namespace is required")
    secret = await kube.get("Secret", namespace, ref.name)
    labels = ((secret or {}).get("metadata") or {}).get("labels") or {}
    if any(labels.get(k) == v for k, v in MANAGED_BY.items()):
        raise InvalidSpec(
            f"{obj.kind} {obj.name!r}: {field} names Secret {namespace}/{ref.name}, which the operator "
            f"manages (an agent's credentials); the {what} must be in a Secret of your own"
        )
    raw = ((secret or {}).get("data") or {}).get(ref.key)
    value = base64.b64decode(raw).decode() if raw else ""
    if not value.strip():
        raise ProviderNotFound(
            f"{what} Secret {namespace}/{ref.name} (key {ref.key!r}) not found or empty; waiting for it",
            delay=retry_seconds,
        )
    return value
