"""`agentaccounts mcp`: the client commands as MCP tools, so an agent gets its own account in one call.

Why it is shaped this way:
- Identity: the server acts with the Kubernetes identity it runs as (its kubeconfig, or its pod's
  ServiceAccount) and nothing more, so RBAC on AgentAccounts, the provider `use` check and the
  operator's admission decide what may be requested, exactly as for `kubectl apply`.
- Caps (`--allowed-providers`, `--max-lifetime`, `--namespace`) are judged before anything reaches the
  API server; they can only narrow what that identity could do anyway.
- Credentials appear only in the result of the `request_account` call that created the account:
  `get_account` and `list_accounts` never return them, and nothing logs them.
- Results are structured content (pydantic models), the same shapes as the CLI's `--output json`.

This module does not use `from __future__ import annotations`: the SDK reads the tools' signatures at
registration to build their input schemas.
"""

import argparse
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field

from agentaccounts import __version__
from agentaccounts.client import scopes as syntax
from agentaccounts.client.accounts import Accounts
from agentaccounts.client.errors import ClientError, UsageError
from agentaccounts.client.views import (
    AccountView,
    RequestedAccount,
    View,
    remove_private_kubeconfig,
    view,
    write_private_kubeconfig,
)
from agentaccounts.kube import Kube
from agentaccounts.models import ProviderPolicy, format_duration, parse_duration

log = logging.getLogger("agentaccounts.mcp")
INSTRUCTIONS = """Short-lived, least-privilege identities for this agent (Kubernetes ServiceAccounts or
Cloudflare API tokens), issued by the agentaccounts operator. Ask for exactly what the task needs, for
as long as it needs it: request_account returns the credentials once; revoke_account ends them early.
A request is judged as this server's own Kubernetes identity: it can never get more than that
identity holds, and a refusal names the rule that refused it."""


class ScopeInput(BaseModel):
    """One grant: these permissions on these resources."""

    model_config = ConfigDict(populate_by_name=True)
    permissions: list[str] = Field(
        min_length=1,
        description="Kubernetes: verbs (get, list, watch, create, update, patch, delete). Cloudflare: "
        'permission-group names, e.g. "Workers Scripts Read"',
    )
    resources: list[str] = Field(
        default_factory=list,
        description="Kubernetes (required): resource[.group][/subresource] as in RBAC, e.g. configmaps, "
        "deployments.apps, pods/log. Cloudflare (optional; none = whole account): account, zones, "
        "zone/<id>, r2-bucket/<name>",
    )
    resource_names: list[str] = Field(
        default_factory=list,
        alias="resourceNames",
        description="Kubernetes only: just these object names, e.g. [app-config] with resources [secrets]",
    )


class AccountList(View):
    items: list[AccountView]


class Revoked(View):
    outcome: str = Field(description="revoked, already expired, nothing was issued, or withdrawn (deleted)")
    account: AccountView


@dataclass(frozen=True)
class Caps:
    """What this server allows on top of RBAC and the providers' policies (its command-line flags)."""

    namespace: str | None  # the only namespace it works in
    default_namespace: str
    allowed_providers: frozenset[str] | None
    max_lifetime: timedelta | None
    kubeconfig_files: bool  # stdio: the client is on this machine, so a private file is useful

    @classmethod
    def from_args(cls, args: argparse.Namespace, default_namespace: str) -> "Caps":
        names = {n.strip() for item in args.allowed_providers or [] for n in item.split(",") if n.strip()}
        return cls(
            namespace=args.namespace,
            default_namespace=default_namespace,
            allowed_providers=frozenset(names) if args.allowed_providers else None,
            max_lifetime=parse_duration(syntax.lifetime(args.max_lifetime)) if args.max_lifetime else None,
            kubeconfig_files=args.transport == "stdio",
        )

    def namespace_for(self, asked: str | None) -> str:
        if self.namespace and asked and asked != self.namespace:
            raise UsageError(f"this server works only in namespace {self.namespace} (--namespace)")
        return self.namespace or asked or self.default_namespace

    def check_provider(self, name: str) -> None:
        if self.allowed_providers is not None and name not in self.allowed_providers:
            allowed = ", ".join(sorted(self.allowed_providers)) or "none"
            raise UsageError(
                f"provider {name!r} is not allowed by this server (--allowed-providers: {allowed})"
            )

    def check_lifetime(self, text: str) -> None:
        if self.max_lifetime is not None and parse_duration(syntax.lifetime(text)) > self.max_lifetime:
            raise UsageError(
                f"lifetime {text} exceeds this server's --max-lifetime {format_duration(self.max_lifetime)}; "
                "ask for less"
            )


Name = Annotated[str, Field(description="the AgentAccount's name (as request_account returned it)")]
Namespace = Annotated[str | None, Field(description="default: the server's namespace")]
Lifetime = Annotated[
    str | None,
    Field(
        description="how long the credentials live, counted from when they are issued: Go-style duration "
        "with days, e.g. 45s, 30m, 1h30m, 2d (default: the provider's defaultLifetime, within the caps)",
    ),
]


def build(accounts: Accounts, caps: Caps) -> MCPServer[Any]:
    server: MCPServer[Any] = MCPServer("agentaccounts", instructions=INSTRUCTIONS, version=__version__)

    kubeconfigs: dict[tuple[str, str], str] = {}  # (namespace, name) -> the private copy; gone at revoke

    def progress(line: str) -> None:
        log.info("%s", line)

    @server.tool(
        description="Create a short-lived identity for this agent and wait until it is Ready. Returns the "
        "account (expiresAt, secretName, ...) and its credentials: for Kubernetes, "
        "credentials.data.kubeconfig (also written to credentials.kubeconfigPath, mode 0600, when the "
        "server runs on this machine); for Cloudflare, credentials.data.CLOUDFLARE_API_TOKEN, "
        "CLOUDFLARE_ACCOUNT_ID and the R2 keys. The credentials are returned only here, once. Refused, "
        "naming the rule, when this identity may not grant what is asked.",
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False),
    )
    async def request_account(
        provider: Annotated[
            str, Field(description="the AccountProvider or ClusterAccountProvider, e.g. in-cluster")
        ],
        scopes: Annotated[list[ScopeInput], Field(min_length=1, description="what the identity may do")],
        lifetime: Lifetime = None,
        provider_kind: Annotated[
            Literal["AccountProvider", "ClusterAccountProvider"] | None,
            Field(description="default: a namespaced AccountProvider of that name, else the cluster one"),
        ] = None,
        name: Annotated[str | None, Field(description="default: generated (agent-xxxxx)")] = None,
        namespace: Namespace = None,
        wait_seconds: Annotated[float, Field(gt=0, le=600, description="give up after this long")] = 60,
    ) -> RequestedAccount:
        try:
            where = caps.namespace_for(namespace)
            caps.check_provider(provider)
            kind, body = await accounts.find_provider(where, provider, provider_kind)
            lifetime = _capped(caps, lifetime, body)
            wanted = [s.model_dump(by_alias=True, exclude_defaults=True) for s in scopes]
            created = await accounts.create(syntax.manifest(where, provider, kind, wanted, lifetime, name))
            ready = await accounts.wait_ready(
                created, wait_seconds, progress, provider_confirmed=body is not None
            )
            credentials = await accounts.credentials(ready)
        except ClientError as exc:
            raise _tool_error(exc) from None
        if caps.kubeconfig_files and "kubeconfig" in credentials.data:
            credentials.kubeconfig_path = write_private_kubeconfig(credentials.data["kubeconfig"])
            kubeconfigs[(where, ready["metadata"]["name"])] = credentials.kubeconfig_path
        return RequestedAccount.model_validate({**view(ready).model_dump(), "credentials": credentials})

    @server.tool(
        description="One AgentAccount's phase (Pending, Ready, Expired, Failed), expiry (expiresAt, "
        "expiresInSeconds), scopes, requester and provider-side identity. Never its credentials.",
        annotations=ToolAnnotations(read_only_hint=True),
    )
    async def get_account(name: Name, namespace: Namespace = None) -> AccountView:
        try:
            return view(await accounts.get(caps.namespace_for(namespace), name))
        except ClientError as exc:
            raise _tool_error(exc) from None

    @server.tool(
        description="The AgentAccounts in a namespace (never their credentials).",
        annotations=ToolAnnotations(read_only_hint=True),
    )
    async def list_accounts(namespace: Namespace = None) -> AccountList:
        try:
            return AccountList(items=[view(b) for b in await accounts.list(caps.namespace_for(namespace))])
        except ClientError as exc:
            raise _tool_error(exc) from None

    @server.tool(
        description="Set an account's whole lifetime, counted from when it was issued (not added to what "
        "is left): e.g. 2h on an account issued 50 minutes ago leaves 70 minutes. Within the provider's "
        "maxLifetime and this server's cap. Returns the account with its new expiresAt.",
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True),
    )
    async def extend_account(
        name: Name,
        lifetime: Annotated[str, Field(description="the whole lifetime, e.g. 2h")],
        namespace: Namespace = None,
    ) -> AccountView:
        try:
            where = caps.namespace_for(namespace)
            caps.check_lifetime(lifetime)
            current = view(await accounts.get(where, name))
            caps.check_provider(current.provider.name)
            return view(await accounts.extend(where, name, syntax.lifetime(lifetime), 60, progress))
        except ClientError as exc:
            raise _tool_error(exc) from None

    @server.tool(
        description="End an account now: its credentials stop working within seconds. The AgentAccount "
        "stays as the audit record (phase Expired). Use it as soon as the task is done.",
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True),
    )
    async def revoke_account(name: Name, namespace: Namespace = None) -> Revoked:
        try:
            where = caps.namespace_for(namespace)
            outcome, body = await accounts.revoke(where, name, 30, progress)
        except ClientError as exc:
            raise _tool_error(exc) from None
        remove_private_kubeconfig(kubeconfigs.pop((where, name), None))
        return Revoked(outcome=outcome, account=view(body))

    return server


def _capped(caps: Caps, lifetime: str | None, provider: dict[str, Any] | None) -> str | None:
    """The lifetime to ask for: as asked (within --max-lifetime), or with a cap and nothing asked, the
    provider's default if it fits (the cap itself if the provider cannot be read)."""
    if lifetime is not None:
        caps.check_lifetime(lifetime)
        return syntax.lifetime(lifetime)
    if caps.max_lifetime is None:
        return None
    policy = ProviderPolicy.model_validate(((provider or {}).get("spec") or {}).get("policy") or {})
    default = policy.default_lifetime if provider is not None else caps.max_lifetime
    return format_duration(min(default, caps.max_lifetime))


def _tool_error(exc: ClientError) -> ToolError:
    return ToolError(f"{type(exc).__name__}: {exc.message}")


def serve(kube: Kube, args: argparse.Namespace, namespace: str) -> int:
    server = build(Accounts(kube), Caps.from_args(args, namespace))
    if args.transport == "stdio":
        server.run("stdio")
    else:
        log.warning(
            "Serving MCP on http://%s:%d/mcp: every client that reaches it acts as this Kubernetes identity",
            args.host,
            args.port,
        )
        server.run("streamable-http", host=args.host, port=args.port)
    return 0
