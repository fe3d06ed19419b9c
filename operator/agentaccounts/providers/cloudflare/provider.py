"""The Cloudflare provider: scoped, expiring account API tokens, or whole temporary accounts.

Thin on purpose: the work lives in its siblings (see the package docstring for the room map).

How it is built (providers/cloudflare/__init__.py `build`). Building is cheap; what must be shared
lives in process-wide objects made once (in `Deps.shared`):

    budgets = BudgetRegistry(settings.cloudflare_budget, settings.cloudflare_window_seconds)
    catalogs = CatalogCache(CATALOG_TTL, now)
    names = NameIndex(NAMES_TTL, now)
    coalescer = Coalescer()  # audit-log reads (activity.py)
    provider = CloudflareProvider.create(
        block, parent_token, deps.http, budgets.for_token(parent_token),
        now=now, catalogs=catalogs, names=names, coalescer=coalescer,
    )

`parent_token` is the token VALUE read from `block.apiTokenSecretRef` (None in temporaryAccount mode).
It is only ever sent in the Authorization header: never logged, never in an exception message, and the
budget registry keys on its SHA-256.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from datetime import datetime, timedelta
from typing import Any, Protocol

import httpx

from agentaccounts.clock import utcnow
from agentaccounts.errors import InvalidSpec
from agentaccounts.models import AccountRef
from agentaccounts.providers.base import Issued, IssueRequest, ProviderActivity, Recorder
from agentaccounts.providers.cloudflare.activity import LIMITS, ActivityReader, Coalescer
from agentaccounts.providers.cloudflare.api import CloudflareAPI, RetryPolicy
from agentaccounts.providers.cloudflare.budget import RequestBudget
from agentaccounts.providers.cloudflare.preview import PreviewFlow
from agentaccounts.providers.cloudflare.spec import CloudflareBlock
from agentaccounts.providers.cloudflare.tokens import CatalogCache, NameIndex, TokenFlow

log = logging.getLogger(__name__)

# Permission groups change rarely: resolve names to IDs at most every 10 minutes per account.
CATALOG_TTL = timedelta(minutes=10)
# The name index is exact for this process's own creates and deletes; the TTL only bounds how long a
# token someone else made with one of our names could go unseen (see NameIndex).
NAMES_TTL = timedelta(minutes=1)
ORPHAN_MIN_AGE = timedelta(minutes=10)  # see TokenFlow.sweep_orphans


class _Flow(Protocol):
    async def validate(self, request: IssueRequest) -> None: ...
    async def plan(self, request: IssueRequest) -> dict[str, Any]: ...
    async def issue(self, request: IssueRequest, record: Recorder) -> Issued: ...
    async def revoke(self, request: IssueRequest, ref: AccountRef | None) -> None: ...


class CloudflareProvider:
    """A configured Cloudflare provider; satisfies `agentaccounts.providers.base.Provider` and
    `ReportsActivity` (activity.py)."""

    type = "cloudflare"

    def __init__(
        self, flow: TokenFlow | PreviewFlow, mode: str, reader: ActivityReader | None = None
    ) -> None:
        self._flow: _Flow = flow
        self._tokens = flow if isinstance(flow, TokenFlow) else None
        self._reader = reader
        self.mode = mode

    @classmethod
    def create(
        cls,
        block: CloudflareBlock,
        parent_token: str | None,
        client: httpx.AsyncClient,
        budget: RequestBudget,
        *,
        now: Callable[[], datetime] = utcnow,
        retry: RetryPolicy | None = None,
        catalogs: CatalogCache | None = None,
        names: NameIndex | None = None,
        coalescer: Coalescer | None = None,
    ) -> CloudflareProvider:
        """Build from the provider's `cloudflare` block; InvalidSpec if mode `token` lacks what it needs.

        `client` is shared and owned by the caller (it closes it); `now` must return an aware UTC time.
        `budget`, `catalogs`, `names` and `coalescer` should be process-wide (see the module docstring);
        without `catalogs` this provider caches permission groups on its own, without `names` every new
        token scans the account's token list, without `coalescer` its audit-log reads are not shared.
        `block.api_base_url` is used as given: the caller checks it
        against the operator's allow-list first (`guard.check_api_base_url`).
        """
        if block.mode == "temporaryAccount":
            # No parent token: temporary-account calls are unauthenticated.
            api = CloudflareAPI(client, block.api_base_url, None, budget, retry)
            return cls(PreviewFlow(api, now), block.mode)
        if not block.account_id:
            raise InvalidSpec("cloudflare mode token needs accountId (the account that owns the tokens)")
        if not parent_token or not parent_token.strip():
            raise InvalidSpec(
                "cloudflare mode token needs a parent API token; the apiTokenSecretRef key is empty"
            )
        api = CloudflareAPI(client, block.api_base_url, parent_token.strip(), budget, retry)
        catalogs = catalogs or CatalogCache(CATALOG_TTL, now)
        flow = TokenFlow(api, block.account_id, now, catalogs, names)
        return cls(flow, block.mode, ActivityReader(api, block.account_id, coalescer))

    async def validate(self, request: IssueRequest) -> None:
        """Token mode: no never-grantable group (NotPermitted, before any request), every group exists
        and fits its resources. Temporary: lifetime ≤ 60 min (scopes are not applied)."""
        await self._flow.validate(request)

    async def plan(self, request: IssueRequest) -> dict[str, Any]:
        """Dry run: what `issue` would create, after the same checks as `validate`; never a credential."""
        return await self._flow.plan(request)

    async def issue(self, request: IssueRequest, record: Recorder) -> Issued:
        return await self._flow.issue(request, record)

    async def revoke(self, request: IssueRequest, ref: AccountRef | None) -> None:
        await self._flow.revoke(request, ref)

    async def activity(self, ref: AccountRef, since: datetime, before: datetime) -> ProviderActivity:
        """What the token in `ref` wrote in [since, before), from the account's audit log; never raises
        for a missing permission (an empty, incomplete trail whose note says so). Temporary accounts
        have no trail: the operator holds no token that may read their audit log."""
        if self._reader is None:
            note = f"A temporary account is not read back: the operator holds no token for its log. {LIMITS}"
            return ProviderActivity([], complete=False, note=note)
        return await self._reader.activity(ref, since, before)

    async def sweep_orphans(
        self,
        live_uids: set[str],
        *,
        min_age: timedelta = ORPHAN_MIN_AGE,
        namespaces: Collection[str] | None = None,
    ) -> list[str]:
        """Delete tokens named `agentaccounts/...` whose uid is not in `live_uids`; return what was deleted.

        Tokens younger than `min_age` are spared (an account created after `live_uids` was computed).
        `namespaces` are those whose AgentAccounts `live_uids` covers (None: all): tokens named after
        any other namespace are never swept. Assumes one operator installation per Cloudflare account
        and namespace: another installation's tokens look like orphans here. Temporary accounts have
        nothing to sweep (Cloudflare deletes them).
        """
        if self._tokens is None:
            return []
        deleted = await self._tokens.sweep_orphans(live_uids, min_age, namespaces)
        if deleted:
            log.info("Swept %d orphaned Cloudflare token(s)", len(deleted))
        return deleted
