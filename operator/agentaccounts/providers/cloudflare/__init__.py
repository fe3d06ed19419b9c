"""The Cloudflare provider type: scoped, expiring account API tokens, or whole temporary accounts.

    spec.py      the provider block (`spec.cloudflare`)
    provider.py  the provider itself, thin: it picks one of the two flows
    api.py       httpx calls, retries, and the ONE translation of Cloudflare errors
    budget.py    one request budget per parent token, shared by the whole process
    scopes.py    the scope/resource grammar -> token policies; R2 credentials (pure)
    tokens.py    mode `token`: create / update / revoke / sweep account-owned tokens
    activity.py  what a token wrote, read back from the account's audit log (ReportsActivity)
    preview.py   mode `temporaryAccount`: proof of work and temporary accounts
    guard.py     rules no provider object loosens: the apiBaseURL allow-list and the never-grantable
                 permission groups

Building a provider first checks `apiBaseURL` against the operator's
`AGENTACCOUNTS_ALLOWED_API_BASE_URLS`: a provider object that points elsewhere is InvalidSpec before its
parent token is read or any request is sent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

from agentaccounts.errors import InvalidSpec, NotPermitted
from agentaccounts.models import AgentAccount, ProviderObject, Requester
from agentaccounts.provider_secrets import read_provider_secret
from agentaccounts.providers.base import Deps, Provider, ProviderType, Reviewer
from agentaccounts.providers.cloudflare.activity import Coalescer
from agentaccounts.providers.cloudflare.budget import BudgetRegistry
from agentaccounts.providers.cloudflare.guard import check_api_base_url, check_scopes
from agentaccounts.providers.cloudflare.provider import CATALOG_TTL, NAMES_TTL, CloudflareProvider
from agentaccounts.providers.cloudflare.spec import CloudflareBlock
from agentaccounts.providers.cloudflare.tokens import CatalogCache, NameIndex

NAME = "cloudflare"


async def build(obj: ProviderObject, deps: Deps) -> Provider:
    block = obj.spec.block
    assert isinstance(block, CloudflareBlock)
    # First, before any request and before the parent token is read: the token goes to this URL, and
    # only the operator's own settings (never a provider object) say where it may go.
    check_api_base_url(block.api_base_url, deps.settings.allowed_api_base_urls)
    shared = deps.shared.setdefault(NAME, {})
    if not shared:
        settings = deps.settings
        shared["budgets"] = BudgetRegistry(
            settings.cloudflare_budget,
            settings.cloudflare_window_seconds,
            max_wait=settings.cloudflare_max_wait_seconds,
        )
        shared["catalogs"] = CatalogCache(CATALOG_TTL, deps.now)
        shared["names"] = NameIndex(NAMES_TTL, deps.now)
        shared["activity"] = Coalescer()
    token = None if block.mode == "temporaryAccount" else await parent_token(obj, block, deps)
    return CloudflareProvider.create(
        block,
        token,
        deps.http,
        shared["budgets"].for_token(token),
        now=deps.now,
        catalogs=shared["catalogs"],
        names=shared["names"],
        coalescer=shared["activity"],
    )


async def parent_token(obj: ProviderObject, block: CloudflareBlock, deps: Deps) -> str:
    """The parent API token from the Secret the provider names (provider_secrets.py). Never logged."""
    ref = block.api_token_secret_ref
    if ref is None:
        raise InvalidSpec(f"{obj.kind} {obj.name!r}: mode token needs apiTokenSecretRef")
    retry = deps.settings.provider_retry_seconds
    return await read_provider_secret(deps.kube, obj, ref, "apiTokenSecretRef", "parent token", retry)


async def admit(account: AgentAccount, requester: Requester, reviewer: Reviewer) -> None:
    if any(s.resource_names for s in account.spec.scopes):
        raise InvalidSpec("resourceNames is for the kubernetes provider; Cloudflare uses resources")
    try:
        check_scopes(account.spec.scopes)
    except NotPermitted as exc:
        raise NotPermitted(f"rule never-grantable: {exc.message}") from None


async def sweep(provider: Provider, live_uids: Callable[[], Awaitable[set[str]]], deps: Deps) -> list[str]:
    """Delete this provider's tokens whose AgentAccount is gone (mode token; nothing for temporary
    accounts). Only the watched namespaces' accounts are known: other namespaces' tokens are spared.
    Tokens are listed after the live set is read; their minimum age spares an account being issued."""
    assert isinstance(provider, CloudflareProvider)
    settings = deps.settings
    return await provider.sweep_orphans(
        await live_uids(),
        min_age=timedelta(seconds=settings.cloudflare_orphan_min_age_seconds),
        namespaces=set(settings.namespaces) if settings.namespaces else None,
    )


TYPE = ProviderType(name=NAME, block=CloudflareBlock, build=build, admit=admit, sweep=sweep)
