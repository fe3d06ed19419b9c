"""ProviderResolver: providerRefs are user input, so its cache is bounded and never holds a miss."""

from __future__ import annotations

from typing import Any, cast

import pytest

from agentaccounts.errors import ProviderNotFound
from agentaccounts.kube import Kube
from agentaccounts.models import AgentAccount
from agentaccounts.providers import resolve
from agentaccounts.providers.resolve import ProviderResolver
from unit.fakes import FakeKube

NS = "agents"


def account(provider: str) -> AgentAccount:
    body: dict[str, Any] = {
        "metadata": {"name": "bot", "namespace": NS, "uid": "u"},
        "spec": {
            "providerRef": {"kind": "AccountProvider", "name": provider},
            "scopes": [{"permissions": ["get"], "resources": ["configmaps"]}],
        },
    }
    return AgentAccount.from_body(body)


async def test_misses_are_never_cached() -> None:
    kube = FakeKube()
    resolver = ProviderResolver(cast(Kube, kube), 5.0)
    for n in range(100):
        with pytest.raises(ProviderNotFound):
            await resolver.resolve(account(f"absent-{n}"))
    assert resolver._cache == {}


async def test_the_cache_never_holds_more_than_its_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resolve, "MAX_CACHED", 8)
    kube = FakeKube()
    for n in range(50):
        kube.add(
            "AccountProvider", {"metadata": {"name": f"p{n}", "namespace": NS}, "spec": {"kubernetes": {}}}
        )
    resolver = ProviderResolver(cast(Kube, kube), 5.0)
    for n in range(50):
        assert (await resolver.resolve(account(f"p{n}"))).name == f"p{n}"
        assert len(resolver._cache) <= 8
