"""The PostgreSQL provider type: one short-lived LOGIN role per AgentAccount, exactly its grants.

    spec.py        the provider block (`spec.postgres`)
    grants.py      the scope grammar -> GRANT statements, never-grantable rules (pure)
    roles.py       role names, the marker, SCRAM verifiers, the role statements (pure)
    connection.py  where and as whom to connect (TLS), and the ONE translation of PostgreSQL errors
    catalog.py     what the server says: the admin's rights, the objects scopes name, our roles
    provider.py    issue / revoke / sweep against the server

The admin credential is the URI in `adminSecretRef` (a role with CREATEROLE, never a superuser);
like Cloudflare's parent token, an AccountProvider may read it only from its own namespace, a
ClusterAccountProvider must name the namespace, and a missing or empty key leaves accounts Pending.
Its permissions are invisible to Kubernetes RBAC (`rbac_delegated` False): a provider without
policy.allowedScopes issues nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from agentaccounts.errors import InvalidSpec
from agentaccounts.models import AgentAccount, ProviderObject, Requester
from agentaccounts.provider_secrets import read_provider_secret
from agentaccounts.providers.base import Deps, Provider, ProviderType, Reviewer
from agentaccounts.providers.postgres.connection import CaFiles, Server, check_block, parse_admin_uri
from agentaccounts.providers.postgres.grants import check_never_grantable
from agentaccounts.providers.postgres.provider import PostgresProvider
from agentaccounts.providers.postgres.spec import PostgresBlock

NAME = "postgres"


async def build(obj: ProviderObject, deps: Deps) -> Provider:
    block = obj.spec.block
    assert isinstance(block, PostgresBlock)
    where = f"{obj.kind} {obj.name!r}"
    check_block(block, where)  # before the Secret is read: a bad block never sends the credential
    assert block.host is not None
    shared = deps.shared.setdefault(NAME, {})
    ca_files: CaFiles = shared.setdefault("ca_files", CaFiles())
    ca_file = ca_files.path(block.ca_bundle) if block.ca_bundle else None
    server = Server(block.host, block.port, block.database, block.ssl_mode, ca_file)
    login = parse_admin_uri(await admin_uri(obj, block, deps), f"{where}: the admin Secret's URI")
    return PostgresProvider(block, server, login)


async def admin_uri(obj: ProviderObject, block: PostgresBlock, deps: Deps) -> str:
    """The admin connection URI from the Secret the provider names (provider_secrets.py). Never logged."""
    retry = deps.settings.provider_retry_seconds
    ref = block.admin_secret_ref
    return await read_provider_secret(deps.kube, obj, ref, "adminSecretRef", "admin", retry)


async def admit(account: AgentAccount, requester: Requester, reviewer: Reviewer) -> None:
    """Never-grantable, whoever asks (the rest of the grammar, and every object, is checked against
    the server before issue: InvalidSpec, UnknownPermission, UnknownResource)."""
    if any(s.resource_names for s in account.spec.scopes):
        raise InvalidSpec("resourceNames is for the kubernetes provider; PostgreSQL uses resources")
    check_never_grantable(account.spec.scopes)  # its messages start with "rule never-grantable: "


async def sweep(provider: Provider, live_uids: Callable[[], Awaitable[set[str]]], deps: Deps) -> list[str]:
    """Drop our roles (name and marker) whose AgentAccount is gone; see PostgresProvider.sweep_orphans."""
    assert isinstance(provider, PostgresProvider)
    namespaces = set(deps.settings.namespaces) if deps.settings.namespaces else None
    return await provider.sweep_orphans(live_uids, namespaces)


TYPE = ProviderType(name=NAME, block=PostgresBlock, build=build, admit=admit, sweep=sweep)
