"""From an AgentAccount's providerRef to the provider object it names, shared by admission and reconcile.

Provider objects are cached for CACHE_SECONDS: a burst of accounts (or of expiries) through one
provider reads it once. Short enough that an edited or new provider, or a tightened policy, counts
almost at once; a missing provider is never cached.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pydantic

from agentaccounts.errors import InvalidSpec, ProviderNotFound
from agentaccounts.kube import Kube
from agentaccounts.models import AgentAccount, ProviderObject, ProviderSpecBase
from agentaccounts.providers import TYPES, ProviderSpec

log = logging.getLogger(__name__)
CACHE_SECONDS = 2.0
MAX_CACHED = 4096  # provider refs are user input: the cache must not grow without bound


def parse_provider(kind: str, body: dict[str, Any]) -> ProviderObject:
    """A provider object from its API body; pydantic.ValidationError when its spec is malformed."""
    meta = body.get("metadata", {})
    spec: ProviderSpecBase = ProviderSpec.model_validate(body.get("spec") or {})
    return ProviderObject(kind=kind, namespace=meta.get("namespace") or "", name=meta["name"], spec=spec)


class ProviderResolver:
    def __init__(self, kube: Kube, retry_seconds: float) -> None:
        self.kube = kube
        self.retry_seconds = retry_seconds
        self._cache: dict[tuple[str, str, str], tuple[float, dict[str, Any]]] = {}

    async def resolve(self, account: AgentAccount) -> ProviderObject:
        ref = account.spec.provider_ref
        namespace = account.namespace if ref.kind == "AccountProvider" else ""
        body = await self._body(ref.kind, namespace, ref.name)
        if body is None:
            where = f" in namespace {namespace}" if namespace else ""
            raise ProviderNotFound(
                f"{ref.kind} {ref.name!r} not found{where}; waiting for it to appear",
                delay=self.retry_seconds,
            )
        try:
            return parse_provider(ref.kind, body)
        except pydantic.ValidationError as exc:
            raise InvalidSpec(f"{ref.kind} {ref.name!r} is invalid: {exc.errors()[0]['msg']}") from None

    async def for_revoke(self, account: AgentAccount, provider_type: str) -> ProviderObject | None:
        """The provider to revoke through. When its object is gone (or broken), a type that needs
        nothing from it (`revocable_without_object`) revokes with a default block; any other type
        cannot be revoked by us, and its identity dies at its own provider-side expiry (None)."""
        try:
            return await self.resolve(account)
        except (ProviderNotFound, InvalidSpec):
            entry = TYPES.get(provider_type)
            if entry is not None and entry.revocable_without_object:
                spec = ProviderSpec.model_validate({provider_type: {}})
                return ProviderObject(kind="ClusterAccountProvider", name="(deleted)", spec=spec)
            log.warning(
                "Provider of %s/%s is gone; its %s identity cannot be revoked by the operator and "
                "relies on the provider's own expiry",
                account.namespace,
                account.name,
                provider_type,
            )
            return None

    async def _body(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        key, now = (kind, namespace, name), time.monotonic()
        cached = self._cache.get(key)
        if cached and now - cached[0] < CACHE_SECONDS:
            return cached[1]
        body = await self.kube.get_custom(kind, namespace, name)
        if body is None:
            self._cache.pop(key, None)
            return None
        if len(self._cache) >= MAX_CACHED:
            self._cache.clear()
        self._cache[key] = (now, body)
        return body
