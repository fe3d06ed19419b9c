"""A provider's own credential is read from a Secret of the platform team's, never an agent's."""

from __future__ import annotations

from typing import cast

import pytest

from agentaccounts import ownership
from agentaccounts.errors import InvalidSpec, ProviderNotFound
from agentaccounts.kube import Kube
from agentaccounts.models import SecretKeyRef
from agentaccounts.provider_secrets import read_provider_secret
from agentaccounts.providers.resolve import parse_provider
from unit.fakes import FakeKube

NS = "agents"
PROVIDER = parse_provider(
    "AccountProvider", {"metadata": {"name": "cf", "namespace": NS}, "spec": {"kubernetes": {}}}
)


async def _read(kube: FakeKube, name: str = "parent") -> str:
    ref = SecretKeyRef(name=name, key="token")
    return await read_provider_secret(cast(Kube, kube), PROVIDER, ref, "apiTokenSecretRef", "parent token", 5)


def _value(text: str) -> dict[str, str]:
    return {"token": text}  # FakeKube.add_secret stores it base64-encoded, as the API server does


async def test_the_platform_teams_secret_is_read() -> None:
    kube = FakeKube()
    kube.add_secret(NS, "parent", data=_value("secret-value"))
    assert await _read(kube) == "secret-value"


async def test_an_agents_credentials_secret_is_refused_even_when_named_as_the_parent() -> None:
    # Before: an account could write its credentials into a Secret a provider later named as its
    # parent token, and the agent's ServiceAccount token was sent to Cloudflare as one.
    kube = FakeKube()
    kube.add_secret(NS, "parent", ownership.labels("bot", "uid-bot"), data=_value("agent-token"))
    with pytest.raises(InvalidSpec, match="which the operator manages") as caught:
        await _read(kube)
    assert "agent-token" not in str(caught.value)


@pytest.mark.parametrize("data", [None, _value(""), _value("  \n")])
async def test_missing_or_empty_waits(data: dict[str, str] | None) -> None:
    kube = FakeKube()
    if data is not None:
        kube.add_secret(NS, "parent", data=data)
    with pytest.raises(ProviderNotFound, match="not found or empty"):
        await _read(kube)
