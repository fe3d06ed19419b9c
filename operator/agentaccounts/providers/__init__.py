"""The explicit provider registry: provider type -> how to build one from its (Cluster)AccountProvider.

A provider is built per use from the provider object's spec plus the shared dependencies in `Deps`
(kube adapter, clock, HTTP client, per-process caches such as Cloudflare's request budgets). Building
is cheap; anything expensive or shared lives in `Deps.shared`, keyed by the builder.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from agentaccounts.kube import Kube
from agentaccounts.models import KubernetesBlock
from agentaccounts.models import Provider as ProviderObject
from agentaccounts.providers.base import Provider
from agentaccounts.providers.kubernetes import KubernetesProvider


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


REGISTRY: dict[str, Builder] = {"kubernetes": _kubernetes}


def register(name: str, builder: Builder) -> None:
    REGISTRY[name] = builder


async def provider_for(obj: ProviderObject, deps: Deps) -> Provider:
    return await REGISTRY[obj.spec.type](obj, deps)
