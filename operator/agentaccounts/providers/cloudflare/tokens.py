"""Mode `token`: one account-owned Cloudflare API token per AgentAccount, found again by its name.

Every token is named `agentaccounts/<namespace>/<name>/<uid>` (shortened to Cloudflare's 120 characters
by trimming namespace and name, never the uid), so a token can always be tied to its AgentAccount and
the orphan sweep can tell ours from everyone else's.

Idempotency, in the order `issue` checks:
1. status recorded a token id and Cloudflare still has it: update it in place (PUT policies and
   expires_on, so lifetime edits move the expiry); the value cannot be read back, so the Secret keeps
   its data (`secret_data=None`). Exception: when a scope edit changes which R2 keys the Secret needs
   (S3 credentials appear, disappear or change endpoint), the secret key is derived from the value,
   so the value is rolled (`PUT .../value`) and the whole Secret is rewritten.
2. Otherwise, tokens with exactly our name but no recorded id are leftovers of a crash between create
   and record (or of a create whose answer was lost). Their value is unrecoverable, so adopting them
   is impossible: they are deleted and a fresh token is created. Deleting is safe because the name
   carries this account's uid: nobody else's token is touched.
3. Create, and `record()` the id at once.
Step 2 needs the account's token list (up to 500 tokens / 50 per page = 10 requests). A process-wide
`NameIndex` lets one scan serve every fresh token for a while (see its docstring); without one, each
fresh token scans. Reissues of a recorded token cost a GET and a PUT; revoking one a GET and a DELETE.

Trust. Never-grantable permission groups (guard.py) are refused first, in `validate` and
`issue`, before any request. An id recorded in status is only a hint: status can be written (or
forged) by anyone with status access, and the id could name the parent token or another agent's.
`issue` adopts it and `revoke` deletes it only when Cloudflare says that token carries our name; a
foreign name makes issue an ObjectConflict, and makes revoke leave that token alone and delete the
tokens with our name instead.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from agentaccounts.clock import rfc3339
from agentaccounts.errors import (
    InvalidSpec,
    ObjectConflict,
    ProviderRejected,
    QuotaExceeded,
    RateLimited,
)
from agentaccounts.models import AccountRef
from agentaccounts.providers.base import Issued, IssueRequest, Recorder
from agentaccounts.providers.cloudflare.api import CloudflareAPI, pick
from agentaccounts.providers.cloudflare.guard import check_scopes
from agentaccounts.providers.cloudflare.scopes import (
    Catalog,
    build_policies,
    catalog_from_api,
    r2_credentials,
    r2_jurisdictions,
    r2_jurisdictions_granted,
)

log = logging.getLogger(__name__)

KIND = "CloudflareAPIToken"
PREFIX = "agentaccounts/"
MAX_NAME = 120  # Cloudflare's limit on token names
# Cloudflare token ids are 32 hex characters. An id from status is put into a URL path, and httpx
# resolves "..": "../../zones/<id>" would DELETE something that is not a token. This allows any id
# Cloudflare might plausibly use, and no path syntax.
_TOKEN_ID = re.compile(r"^[0-9A-Za-z_-]{1,64}$")


def token_name(namespace: str, name: str, uid: str) -> str:
    """`agentaccounts/<namespace>/<name>/<uid>`, at most 120 chars; namespace and name shrink, uid stays."""
    full = f"{PREFIX}{namespace}/{name}/{uid}"
    if len(full) <= MAX_NAME:
        return full
    room = MAX_NAME - len(PREFIX) - len(uid) - 2
    if room < 2:
        raise InvalidSpec(f"uid {uid!r} is too long for a Cloudflare token name")
    ns_room = min(len(namespace), max(room // 2, room - len(name)))
    return f"{PREFIX}{namespace[:ns_room]}/{name[: room - ns_room]}/{uid}"


def owner_from_name(name: str) -> tuple[str, str, str] | None:
    """(namespace, name, uid) of a token we named (namespace and name maybe shortened), else None."""
    parts = name.split("/")
    if len(parts) == 4 and f"{parts[0]}/" == PREFIX and all(parts[1:]):
        return parts[1], parts[2], parts[3]
    return None


def uid_from_name(name: str) -> str | None:
    """The uid of a token we named, or None for any other token."""
    owner = owner_from_name(name)
    return owner[2] if owner else None


def in_namespaces(name: str, namespaces: Collection[str] | None) -> bool:
    """Whether a token we named belongs to one of `namespaces` (None: every namespace).

    An operator that watches only some namespaces knows only their AgentAccounts, so it must never
    judge a token of another namespace an orphan: that would delete a live token of an account it
    cannot see (another installation, same Cloudflare account). A name shortened to MAX_NAME may
    carry a shortened namespace, which matches any watched namespace it begins.
    """
    owner = owner_from_name(name)
    if owner is None:
        return False
    if namespaces is None:
        return True
    shortened = len(name) >= MAX_NAME
    return any(owner[0] == ns or (shortened and ns.startswith(owner[0])) for ns in namespaces)


@dataclass(frozen=True)
class _Entry:
    catalog: Catalog
    fetched_at: datetime


class CatalogCache:
    """Permission groups per (API base URL, account id), shared by every provider in the process.

    Names resolve to IDs at runtime (IDs are not a documented contract) but change rarely, so one
    fetch per account per `ttl` serves every AgentAccount; concurrent misses share one fetch.
    """

    def __init__(self, ttl: timedelta, now: Callable[[], datetime]) -> None:
        self._ttl = ttl
        self._now = now
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def get(self, key: tuple[str, str], fetch: Callable[[], Awaitable[Any]]) -> Catalog:
        async with self._locks.setdefault(key, asyncio.Lock()):
            entry = self._entries.get(key)
            if entry is None or self._now() - entry.fetched_at >= self._ttl:
                entry = _Entry(catalog_from_api(await fetch() or []), self._now())
                self._entries[key] = entry
            return entry.catalog


@dataclass
class _Names:
    ids: dict[str, set[str]]  # our token names -> ids
    fetched_at: datetime


class NameIndex:
    """Our tokens by name per (API base URL, account id), shared by every provider in the process.

    Why: before creating a token, `issue` must find tokens an earlier, crashed attempt left with the
    same name. Scanning the account's list costs one request per 50 tokens, for every new token: 333
    tokens issued at once through one parent token cost about 1600 requests, beyond the 1100 a
    5-minute window allows, and every account throttled mid-scan paid for its scan again (measured in
    tests/bench: 4748 list requests for 917 tokens, not all Ready after 10 minutes). Here one scan
    serves every issue for `ttl`. The index stays exact for what this process does: creates and
    deletes are noted, and a create whose outcome is unknown drops the index, so the next issue scans
    afresh. Leftovers of an earlier process predate this one's first scan, so that scan has them.
    """

    def __init__(self, ttl: timedelta, now: Callable[[], datetime]) -> None:
        self._ttl = ttl
        self._now = now
        self._entries: dict[tuple[str, str], _Names] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        # What happens while a scan runs may be missing from its pages: noted here, applied after.
        self._during: dict[tuple[str, str], list[tuple[str, str, str]]] = {}  # (op, name, id)

    async def ids_named(
        self, key: tuple[str, str], name: str, scan: Callable[[], AsyncIterator[Any]]
    ) -> list[str]:
        async with self._locks.setdefault(key, asyncio.Lock()):  # concurrent misses share one scan
            entry = self._entries.get(key)
            if entry is None or self._now() - entry.fetched_at >= self._ttl:
                entry = await self._scan(key, scan)
            return sorted(entry.ids.get(name, ()))

    async def _scan(self, key: tuple[str, str], scan: Callable[[], AsyncIterator[Any]]) -> _Names:
        entry, notes = _Names({}, self._now()), self._during.setdefault(key, [])
        try:
            async for token in scan():
                token_name_ = str(token.get("name", ""))
                if token.get("id") and token_name_.startswith(PREFIX):
                    entry.ids.setdefault(token_name_, set()).add(str(token["id"]))
        finally:
            del self._during[key]
        for op, name, token_id in notes:
            if op == "forget":
                return entry  # a create of unknown outcome ran meanwhile: do not keep this scan
            self._apply(entry, op, name, token_id)
        self._entries[key] = entry
        return entry

    @staticmethod
    def _apply(entry: _Names, op: str, name: str, token_id: str) -> None:
        if op == "created":
            entry.ids.setdefault(name, set()).add(token_id)
        else:
            for ids in entry.ids.values():
                ids.discard(token_id)

    def _note(self, key: tuple[str, str], op: str, name: str = "", token_id: str = "") -> None:
        if key in self._during:
            self._during[key].append((op, name, token_id))
        entry = self._entries.get(key)
        if entry is not None and op != "forget":
            self._apply(entry, op, name, token_id)

    def created(self, key: tuple[str, str], name: str, token_id: str) -> None:
        self._note(key, "created", name, token_id)

    def deleted(self, key: tuple[str, str], token_id: str) -> None:
        self._note(key, "deleted", token_id=token_id)

    def forget(self, key: tuple[str, str]) -> None:
        self._note(key, "forget")
        self._entries.pop(key, None)


class TokenFlow:
    """Issue, update, revoke and sweep account-owned tokens for one account and parent token."""

    def __init__(
        self,
        api: CloudflareAPI,
        account_id: str,
        now: Callable[[], datetime],
        catalogs: CatalogCache,
        names: NameIndex | None = None,
    ) -> None:
        self._api = api
        self._account_id = account_id
        self._base = f"/accounts/{account_id}/tokens"
        self._now = now
        self._catalogs = catalogs
        self._names = names  # None: scan the account's tokens afresh for every new token
        self._key = (api.base_url, account_id)

    async def catalog(self) -> Catalog:
        """This account's permission groups by name (cached; see CatalogCache)."""
        return await self._catalogs.get(
            (self._api.base_url, self._account_id),
            lambda: self._api.call("GET", f"{self._base}/permission_groups"),
        )

    async def validate(self, request: IssueRequest) -> None:
        check_scopes(request.scopes)  # before anything else: never-grantable groups cost no request
        build_policies(request.scopes, await self.catalog(), self._account_id)

    async def plan(self, request: IssueRequest) -> dict[str, Any]:
        """The token `issue` would create (name, expiry, policies as sent); costs at most the catalog GET."""
        check_scopes(request.scopes)
        catalog = await self.catalog()
        r2 = r2_jurisdictions(request.scopes, catalog, self._account_id)
        return {
            "kind": KIND,
            "accountId": self._account_id,
            "name": token_name(request.namespace, request.name, request.uid),
            "expiresOn": rfc3339(request.expires_at),
            "policies": build_policies(request.scopes, catalog, self._account_id),
            "r2Jurisdictions": sorted(r2) if r2 is not None else [],
        }

    async def issue(self, request: IssueRequest, record: Recorder) -> Issued:
        check_scopes(request.scopes)  # again here: issue must not rely on validate having run
        catalog = await self.catalog()
        name = token_name(request.namespace, request.name, request.uid)
        expires_on = rfc3339(request.expires_at)
        body = {
            "name": name,
            "policies": build_policies(request.scopes, catalog, self._account_id),
            "expires_on": expires_on,
        }
        note = f"Cloudflare expires this token at {expires_on}; the operator deletes it on expiry."
        r2 = r2_jurisdictions(request.scopes, catalog, self._account_id)
        known = request.existing.id if request.existing and request.existing.kind == KIND else ""
        if known:
            if not _TOKEN_ID.match(known):
                raise ObjectConflict("status.accountRef.id is not a Cloudflare token id: not ours")
            current = await self._api.call("GET", f"{self._base}/{known}", missing_ok=True)
            if current is not None:
                if current.get("name") != name:
                    raise ObjectConflict(f"Cloudflare token {known} is not named {name!r}: not ours")
                await self._api.call("PUT", f"{self._base}/{known}", json=body)
                log.info("Updated Cloudflare token %s (%s), expires %s", known, name, expires_on)
                ref = AccountRef(kind=KIND, id=known, name=name)
                if r2_jurisdictions_granted(current.get("policies"), catalog, self._account_id) == r2:
                    return Issued(ref, secret_data=None, note=note)
                rolled = await self._api.call("PUT", f"{self._base}/{known}/value", json={})
                value = pick({"value": rolled}, "token roll", "value")
                log.info("Rolled Cloudflare token %s: the R2 credentials it implies changed", known)
                return Issued(ref, secret_data=self._secret_data(known, str(value), r2), note=note)
        stale_ids = (
            await self._names.ids_named(self._key, name, lambda: self._api.pages(self._base))
            if self._names is not None
            else await self._ids_named(name)
        )
        for stale in stale_ids:
            log.warning("Deleting unrecorded Cloudflare token %s (%s): its value is lost", stale, name)
            await self._api.call("DELETE", f"{self._base}/{stale}", missing_ok=True)
            self._note_deleted(stale)
        try:
            created = await self._api.call("POST", self._base, json=body)
            token_id, value = pick(created, "token create", "id"), pick(created, "token create", "value")
        except (RateLimited, QuotaExceeded, ProviderRejected):
            raise  # Cloudflare created nothing
        except BaseException:
            if self._names is not None:
                self._names.forget(self._key)  # a token may exist now that no scan has seen
            raise
        if self._names is not None:
            self._names.created(self._key, name, str(token_id))
        ref = AccountRef(kind=KIND, id=str(token_id), name=name)
        await record(ref)
        log.info("Created Cloudflare token %s (%s), expires %s", token_id, name, expires_on)
        return Issued(ref, secret_data=self._secret_data(ref.id, str(value), r2), note=note)

    def _secret_data(self, token_id: str, value: str, r2: set[str] | None) -> dict[str, str]:
        data = {"CLOUDFLARE_API_TOKEN": value, "CLOUDFLARE_ACCOUNT_ID": self._account_id}
        if r2 is not None:
            data.update(r2_credentials(self._account_id, token_id, value, r2))
        return data

    async def revoke(self, request: IssueRequest, ref: AccountRef | None) -> None:
        """Delete this account's token; the id in `ref` (status) is trusted only once Cloudflare confirms
        that token carries our name. 404 is success: the token was cleaned up, or a revoke got there first.
        """
        name = token_name(request.namespace, request.name, request.uid)
        if ref is not None and ref.kind == KIND and ref.id:
            ids = await self._owned(ref.id, name)
        else:
            ids = await self._ids_named(name)
        for token_id in ids:
            gone = await self._api.call("DELETE", f"{self._base}/{token_id}", missing_ok=True) is None
            self._note_deleted(token_id)
            log.info("Cloudflare token %s %s", token_id, "was already gone" if gone else "deleted")

    async def sweep_orphans(
        self, live_uids: set[str], min_age: timedelta, namespaces: Collection[str] | None = None
    ) -> list[str]:
        """Delete our tokens whose AgentAccount is gone; tokens younger than `min_age` are spared, and
        so are tokens of namespaces outside `namespaces` (None: all), whose accounts we cannot see."""
        now, doomed = self._now(), []
        async for token in self._api.pages(self._base):
            name = str(token.get("name", ""))
            uid = uid_from_name(name)
            if uid is None or uid in live_uids or not token.get("id"):
                continue
            if not in_namespaces(name, namespaces):
                continue
            # An account created after the caller listed live uids must not lose its brand-new token.
            issued = _parse_time(token.get("issued_on"))
            if issued is not None and now - issued < min_age:
                continue
            doomed.append((str(token["id"]), name))
        for token_id, name in doomed:
            await self._api.call("DELETE", f"{self._base}/{token_id}", missing_ok=True)
            self._note_deleted(token_id)
            log.info("Deleted orphaned Cloudflare token %s (%s)", token_id, name)
        return [f"{name} (id {token_id})" for token_id, name in doomed]

    async def _owned(self, token_id: str, name: str) -> list[str]:
        """`[token_id]` if Cloudflare says it is named `name`; [] if it is gone; otherwise our tokens by name.

        status.accountRef is writable by anyone with status access (and forgeable), so its id could
        name the parent token or another agent's: deleting it blindly would revoke someone else. One
        GET per revoke (2 requests instead of 1) is the price; only a mismatch costs the list scan.
        """
        if not _TOKEN_ID.match(token_id):
            log.warning("status.accountRef.id of %s is not a Cloudflare token id: ignoring it", name)
            return await self._ids_named(name)
        current = await self._api.call("GET", f"{self._base}/{token_id}", missing_ok=True)
        if current is None:
            log.info("Cloudflare token %s was already gone", token_id)
            return []
        if current.get("name") == name:
            return [token_id]
        log.warning(
            "status.accountRef names Cloudflare token %s, which is not named %s: not deleting it; "
            "deleting the tokens with that name instead",
            token_id,
            name,
        )
        return await self._ids_named(name)

    def _note_deleted(self, token_id: str) -> None:
        if self._names is not None:
            self._names.deleted(self._key, token_id)

    async def _ids_named(self, name: str) -> list[str]:
        return [str(token["id"]) async for token in self._api.pages(self._base) if token.get("name") == name]


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
