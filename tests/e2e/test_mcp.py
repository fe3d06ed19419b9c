"""`agentaccounts mcp` as an agent meets it: an MCP client from the same SDK starts it over stdio, lists
its tools, requests an account, uses the credentials, revokes it; the server's caps refuse clearly."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TextIO

from kubernetes import client
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from integration.support import GROUP, VERSION, agent_api, custom, phase, status_of, wait_for

TOOLS = {"request_account", "get_account", "list_accounts", "extend_account", "revoke_account"}
READ_CONFIGMAPS = [{"permissions": ["get", "list"], "resources": ["configmaps"]}]


def _devnull() -> TextIO:
    return open(os.devnull, "w")  # closed by the caller's `with`


def _private_file(path: Path) -> tuple[str, int]:
    return path.read_text(), stat.S_IMODE(path.stat().st_mode)


def _exists(path: Path) -> bool:
    return path.exists() or path.parent.exists()


@asynccontextmanager
async def mcp_session(kubeconfig: Path, *flags: str) -> AsyncIterator[ClientSession]:
    server = StdioServerParameters(
        command=sys.executable,
        args=["-m", "agentaccounts", "mcp", *flags],
        env={"KUBECONFIG": str(kubeconfig)},
    )
    with _devnull() as quiet:  # the server's own log lines (stderr)
        async with stdio_client(server, errlog=quiet) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            yield session


async def test_an_mcp_client_requests_uses_and_revokes_an_account(
    cluster: Any, api: client.ApiClient, namespace: str, in_cluster_provider: str, start_operator: Any
) -> None:
    start_operator(namespace)
    async with mcp_session(cluster.kubeconfig, "--namespace", namespace, "--max-lifetime", "1h") as session:
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
        assert set(tools) == TOOLS
        request = tools["request_account"]
        assert set(request.input_schema["required"]) == {"provider", "scopes"}
        assert "Go-style duration" in str(request.input_schema["properties"]["lifetime"])
        assert "configmaps" in str(request.input_schema) and request.output_schema is not None

        result = await session.call_tool(
            "request_account", {"provider": in_cluster_provider, "scopes": READ_CONFIGMAPS, "lifetime": "10m"}
        )
        assert not result.is_error, result.content
        account: dict[str, Any] = result.structured_content
        name, credentials = account["name"], account["credentials"]
        assert account["phase"] == "Ready" and account["namespace"] == namespace
        agent = client.CoreV1Api(agent_api(credentials["data"]["kubeconfig"]))
        assert status_of(lambda: agent.list_namespaced_config_map(namespace)) == 200
        assert status_of(lambda: agent.list_namespaced_secret(namespace)) == 403
        path = Path(credentials["kubeconfigPath"])
        assert _private_file(path) == (credentials["data"]["kubeconfig"], 0o600)

        shown = await session.call_tool("get_account", {"name": name})
        assert shown.structured_content["expiresAt"] == account["expiresAt"]
        listed = await session.call_tool("list_accounts", {})
        assert [a["name"] for a in listed.structured_content["items"]] == [name]
        token = credentials["data"]["token"]
        for other in (shown, listed):  # credentials come only with the request that created them
            assert "credentials" not in str(other.structured_content.keys()) and token not in str(
                other.content
            )
        assert "credentials" not in listed.structured_content["items"][0]

        too_long = await session.call_tool("extend_account", {"name": name, "lifetime": "2h"})
        assert too_long.is_error and "exceeds this server's --max-lifetime 1h" in str(too_long.content)

        revoked = await session.call_tool("revoke_account", {"name": name})
        assert not revoked.is_error, revoked.content
        assert revoked.structured_content["outcome"] == "revoked"
        assert revoked.structured_content["account"]["phase"] == "Expired"
        assert not _exists(path)  # the private copy goes with the account
    wait_for(
        lambda: status_of(lambda: agent.list_namespaced_config_map(namespace)) in (401, 403), 10, "no access"
    )
    assert phase(api, namespace, name) == "Expired"  # the audit record stays


async def test_the_servers_caps_refuse_before_anything_is_created(
    cluster: Any, api: client.ApiClient, namespace: str, in_cluster_provider: str
) -> None:
    flags = ("--namespace", namespace, "--max-lifetime", "30m", "--allowed-providers", in_cluster_provider)
    async with mcp_session(cluster.kubeconfig, *flags) as session:
        asks = {
            "exceeds this server's --max-lifetime 30m": {"lifetime": "2h"},
            "provider 'elsewhere' is not allowed by this server": {"provider": "elsewhere"},
            f"this server works only in namespace {namespace}": {"namespace": "default"},
            "invalid duration 'soon'": {"lifetime": "soon"},
        }
        for refusal, ask in asks.items():
            arguments = {"provider": in_cluster_provider, "scopes": READ_CONFIGMAPS, **ask}
            result = await session.call_tool("request_account", arguments)
            assert result.is_error and refusal in str(result.content), (ask, result.content)
            assert "UsageError: " in str(result.content)  # the kind of refusal, then its one line
    assert (
        custom(api).list_namespaced_custom_object(GROUP, VERSION, namespace, "agentaccounts")["items"] == []
    )
