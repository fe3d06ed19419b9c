"""client/mcp_server.py without a cluster: the tools an LLM sees, and the server's caps."""

from __future__ import annotations

import argparse
from datetime import timedelta
from typing import Any

import pytest

from agentaccounts.client.errors import UsageError
from agentaccounts.client.mcp_server import Caps, _capped, build

TOOLS = {"request_account", "get_account", "list_accounts", "extend_account", "revoke_account"}


def caps(**flags: Any) -> Caps:
    args = {"namespace": None, "allowed_providers": None, "max_lifetime": None, "transport": "stdio", **flags}
    return Caps.from_args(argparse.Namespace(**args), "agents")


async def test_the_tools_describe_what_to_send_and_what_comes_back() -> None:
    tools = {tool.name: tool for tool in await build(None, caps()).list_tools()}  # type: ignore[arg-type]
    assert set(tools) == TOOLS
    request = tools["request_account"]
    schema = str(request.input_schema)
    for words in (
        "resource[.group][/subresource]",
        "Workers Scripts Read",
        "Go-style duration",
        "resourceNames",
    ):
        assert words in schema
    assert "only here, once" in (request.description or "")
    assert request.output_schema is not None and "credentials" in request.output_schema["properties"]
    assert "credentials" not in tools["get_account"].output_schema["properties"]  # type: ignore[index]
    assert "credentials" not in tools["list_accounts"].output_schema["$defs"]["AccountView"]["properties"]  # type: ignore[index]
    for name in ("get_account", "list_accounts"):
        assert tools[name].annotations is not None and tools[name].annotations.read_only_hint
    assert (
        tools["revoke_account"].annotations is not None
        and tools["revoke_account"].annotations.destructive_hint
    )


def test_caps_come_from_the_flags() -> None:
    got = caps(namespace="ns", allowed_providers=["a,b", "c"], max_lifetime="1h", transport="streamable-http")
    assert got.allowed_providers == frozenset({"a", "b", "c"})
    assert got.max_lifetime == timedelta(hours=1)
    assert not got.kubeconfig_files  # a remote client cannot read this machine's files


def test_the_namespace_cap() -> None:
    assert caps().namespace_for(None) == "agents"  # the kubeconfig's
    assert caps().namespace_for("other") == "other"
    fixed = caps(namespace="ns")
    assert fixed.namespace_for(None) == fixed.namespace_for("ns") == "ns"
    with pytest.raises(UsageError, match="works only in namespace ns"):
        fixed.namespace_for("other")


def test_the_provider_cap() -> None:
    caps().check_provider("anything")
    allowed = caps(allowed_providers=["in-cluster"])
    allowed.check_provider("in-cluster")
    with pytest.raises(
        UsageError, match=r"'cloudflare' is not allowed by this server \(--allowed-providers: in-cluster\)"
    ):
        allowed.check_provider("cloudflare")


def test_the_lifetime_cap_and_what_is_asked_for_when_nothing_is() -> None:
    capped = caps(max_lifetime="1h")
    capped.check_lifetime("60m")
    with pytest.raises(UsageError, match="lifetime 61m exceeds this server's --max-lifetime 1h"):
        capped.check_lifetime("61m")
    provider = {"spec": {"kubernetes": {}, "policy": {"defaultLifetime": "30m"}}}
    assert _capped(capped, None, provider) == "30m"  # the provider's default fits
    assert _capped(caps(max_lifetime="10m"), None, provider) == "10m"  # it does not: the cap
    assert _capped(capped, None, {"spec": {}}) == "1h"  # the built-in default 1h
    assert _capped(capped, None, None) == "1h"  # unreadable provider: the cap
    assert _capped(caps(), None, provider) is None  # no cap: the provider decides
    assert _capped(capped, "5m", provider) == "5m"
