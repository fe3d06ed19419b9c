"""The explicit provider registry: provider type -> how to build one from its (Cluster)AccountProvider.

A provider is built per use from the provider object's spec plus the shared dependencies in `Deps`
(kube adapter, clock, HTTP client, per-process caches such as Cloudflare's request budgets). Building
is cheap; anything expensive or shared lives in `Deps.shared`, keyed by the builder.

Building a Cloudflare provider first checks `apiBaseURL` against the operator's
`AGENTACCOUNTS_ALLOWED_API_BASE_URLS` (see providers/cloudflare_guard.py): a provider object that
points elsewhere is InvalidSpec before its parent token is read or any request is sent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from agentaccounts.errors import InvalidSpec, ProviderNotFound
from agentaccounts.kube import Kube
from agentaccounts.models import KubernetesBlock
from agentaccounts.models import Provider as ProviderObject
from agentaccounts.providers.base import Provider
from agentaccounts.providers.cloudflare import CATALOG_TTL, NAMES_TTL, CloudflareProvider
from agentaccounts.providers.cloudflare_budget import BudgetRegistry
from agentaccounts.providers.cloudflare_guard import check_api_base_url
from agentaccounts.providers.cloudflare_tokens import CatalogCache, NameIndex
from agentaccounts.providers.kubernetes import KubernetesProvider
from agentaccounts.settings import CLOUDFLARE_API


@dataclass
class Deps:
    kube: Kube
    now: Callable[[], datetime]
    kubeconfig_server: str | None = None
    http: httpx.AsyncClient | None = None
    settings: Any = None
    shared: dict[str, Any] = field(default_factory=dict)


Builder = Callable[[ProviderObject, Deps], Awaitable[Provider]]


async def _kubernetes(obj: ProviderObject, deps: Deps) -> Provider:
    return KubernetesProvider(
        deps.kube, obj.spec.kubernetes or KubernetesBlock(), deps.kubeconfig_server, deps.now
    )


async def _cloudflare(obj: ProviderObject, deps: Deps) -> Provider:
    block = obj.spec.cloudflare
    assert block is not None
    # First, before any request and before the parent token is read: the token goes to this URL, and
    # only the operator's own settings (never a provider object) say where it may go.
    allowed = deps.settings.allowed_api_base_urls if deps.settings else [CLOUDFLARE_API]
    check_api_base_url(block.api_base_url, allowed)
    shared = deps.shared.setdefault("cloudflare", {})
    if not shared:
        s = deps.settings
        shared["budgets"] = BudgetRegistry(
            s.cloudflare_budget if s else 1100,
            s.cloudflare_window_seconds if s else 300.0,
            max_wait=s.cloudflare_max_wait_seconds if s else 10.0,
        )
        shared["catalogs"] = CatalogCache(CATALOG_TTL, deps.now)
        shared["names"] = NameIndex(NAMES_TTL, deps.now)
    if deps.http is None:
        # pool=None: waiting for a free connection is our own queue, not a Cloudflare failure. With a
        # pool timeout, a burst of ~1000 issues on a busy event loop timed out in the queue (PoolTimeout ->
        # ProviderUnavailable), each having already spent a request-budget slot, and their retries came
        # back together and did it again (measured: 595 of 1000 accounts stalled for over 10 minutes).
        deps.http = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=10.0, pool=None))
    token = None if block.mode == "temporaryAccount" else await parent_token(obj, deps)
    return CloudflareProvider.create(
        block,
        token,
        deps.http,
        shared["budgets"].for_token(token),
        now=deps.now,
        catalogs=shared["catalogs"],
        names=shared["names"],
    )


async def parent_token(obj: ProviderObject, deps: Deps) -> str:
    """Read the parent API token from the Secret the provider names. Never logged."""
    ref = obj.spec.cloudflare.api_token_secret_ref if obj.spec.cloudflare else None
    if ref is None:
        raise InvalidSpec(f"{obj.kind} {obj.name!r}: mode token needs apiTokenSecretRef")
    namespace = ref.namespace or obj.namespace
    if obj.namespace and namespace != obj.namespace:
        raise InvalidSpec(f"AccountProvider {obj.name!r} may only read Secrets in its own namespace")
    if not namespace:
        raise InvalidSpec(f"ClusterAccountProvider {obj.name!r}: apiTokenSecretRef.namespace is required")
    value = await deps.kube.read_secret_key(namespace, ref.name, ref.key)
    if not value:
        raise ProviderNotFound(
            f"parent token Secret {namespace}/{ref.name} (key {ref.key!r}) not found or empty; "
            "waiting for it",
            delay=deps.settings.provider_retry_seconds if deps.settings else 5.0,
        )
    return value


REGISTRY: dict[str, Builder] = {"kubernetes": _kubernetes, "cloudflare": _cloudflare}


def register(name: str, builder: Builder) -> None:
    REGISTRY[name] = builder


async def provider_for(obj: ProviderObject, deps: Deps) -> Provider:
    return await REGISTRY[obj.spec.type](obj, deps)
