"""From an AgentAccount's providerRef to the provider object it names, shared by admission and reconcile.

Provider objects are cached for CACHE_SECONDS: a burst of accounts (or of expiries) through one
provider reads it once. Short enough that an edited or new provider, or a tightened policy, counts
almost at once; a missing provider is never cached.
"""

from __future__ import annotations

import time
from typing import Any

import pydantic

from agentaccounts.errors import InvalidSpec, ProviderNotFound
from agentaccounts.kube import Kube
from agentaccounts.models import AgentAccount, Provider, ProviderSpec

CACHE_SECONDS = 2.0
MAX_CACHED = 4096  # provider refs are user input: the cache must not grow without bound


class ProviderResolver:
    def __init__(self, kube: Kube, retry_seconds: float = 5.0) -> None:
        self.kube = kube
        self.retry_seconds = retry_seconds
        self._cache: dict[tuple[str, str, str], tuple[float, dict[str, Any]]] = {}

    async def resolve(self, account: AgentAccount) -> Provider:
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
            spec = ProviderSpec.model_validate(body.get("spec") or {})
        except pydantic.ValidationError as exc:
            raise InvalidSpec(f"{ref.kind} {ref.name!r} is invalid: {exc.errors()[0]['msg']}") from None
        return Provider(kind=ref.kind, namespace=namespace, name=ref.name, spec=spec)

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
