"""What an agent's Cloudflare token did, read back from the account's audit log (v2).

Why it exists: one token per agent run makes the token's audit entries exactly that run's trail. At
revocation (and on demand) the operator asks `activity(ref, since, before)`, which reads
`GET /accounts/{account_id}/logs/audit?actor_token_id=<token id>&since=...&before=...&direction=asc`
with the parent token and pages by `result_info.cursor`.

What Cloudflare's log can and cannot show (said in every trail's note, because people read it):
- it records writes (create, update, delete), not reads: a token that only read shows nothing;
- refused attempts (4xx) were not logged at GA and probably still are not;
- entries arrive through a pipeline: the last moments before revocation may not be there yet.

Mapping of an entry (`aaa_audit-logs-v2`) into `ActivityEntry`: `action.time` -> time, `action.type`
-> verb, `resource.type` (else `resource.product`) -> resource, `resource.id` -> name, `raw.status_code`
-> code, `id` -> audit_id. Zone entries carry the zone's name as namespace-like context: the Cloudflare
"namespace" of a zone-scoped write is its zone. Unknown enum values are kept as they come (the docs
already list values the schema does not).

Errors: a parent token without Account Settings Read (HTTP 401/403) gives an empty, incomplete trail
whose note names the permission group; any other refusal an incomplete trail naming it; 429/5xx raise
TemporaryError as every Cloudflare call does (api.py), on the same request budget. Never a credential:
only ids, names and types are copied, each scrubbed and capped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from agentaccounts.errors import ProviderRejected
from agentaccounts.models import AccountRef
from agentaccounts.providers.base import ActivityEntry, ProviderActivity
from agentaccounts.providers.cloudflare.api import CloudflareAPI, scrub, status_of
from agentaccounts.providers.cloudflare.tokens import KIND, PREFIX

log = logging.getLogger(__name__)

PAGE_LIMIT = 1000  # the API's maximum page size: the fewest requests on the shared budget
MAX_PAGES = 10  # per token: 10,000 entries; more is cut (complete=False): the trail is bounded anyway
BATCH = 20  # token ids in one query (see Coalescer)
_FIELD_CAP = 253  # a DNS name's length; ids and types are far shorter
LIMITS = (
    "Cloudflare's audit log records writes (create, update, delete), not reads; refused attempts are "
    "probably not recorded either; the newest writes may take a while to appear."
)
PERMISSION = "Account Settings Read"


def _floor(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(microsecond=0)


def _rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _text(value: Any) -> str:
    return scrub(str(value), _FIELD_CAP) if isinstance(value, str | int) and value != "" else ""


def _utc(value: Any) -> str | None:
    """`action.time` as RFC 3339 UTC with a Z (the trail's form), or None if it is not a timestamp."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        return None
    return _rfc3339(moment.astimezone(UTC)) if moment.tzinfo else None


def _part(entry: dict[str, Any], key: str) -> dict[str, Any]:
    value = entry.get(key)
    return value if isinstance(value, dict) else {}


def to_entry(item: Any, token_id: str, token_name: str = "") -> ActivityEntry | None:
    """One audit-log entry as an ActivityEntry; None if it is not this token's or has no time.

    Cloudflare applies the token filter; it is checked again so no foreign entry slips in. With
    `token_name` (one of our `agentaccounts/...` names) the entry's token name must match too: status
    can be written by others, and a forged id alone then shows nothing of another token's."""
    actor = _part(item, "actor") if isinstance(item, dict) else {}
    if not isinstance(item, dict) or actor.get("token_id") != token_id:
        return None
    if token_name and actor.get("token_name") != token_name:
        return None
    action, resource, raw = _part(item, "action"), _part(item, "resource"), _part(item, "raw")
    time = _utc(action.get("time"))
    if time is None:
        return None
    code = raw.get("status_code")
    return ActivityEntry(
        time=time,
        verb=_text(action.get("type")) or "unknown",
        resource=_text(resource.get("type")) or _text(resource.get("product")),
        name=_text(resource.get("id")),
        namespace=_text(_part(item, "zone").get("name")),
        code=code if isinstance(code, int) and not isinstance(code, bool) else 0,
        audit_id=_text(item.get("id")),
    )


@dataclass(eq=False)
class _Want:
    """One caller's read: its token and window, and (once fetched) its answer."""

    ref: AccountRef
    start: datetime
    end: datetime
    result: ProviderActivity | None = None
    error: Exception | None = None


Key = tuple[str, str, str]  # (API base URL, account id, budget key of the parent token)


class Coalescer:
    """Concurrent reads of one account's log with one parent token share their requests.

    Why: every revocation reads the log once, and accounts expire in bursts; 200 of them would spend 200
    requests of the parent token's 1100-per-5-minutes budget (budget.py), which issuing needs too. A read
    that arrives while another is in flight waits for it, then goes out with every read waiting by then
    (up to `batch` token ids in one `actor_token_id` filter, which takes several): nothing is delayed
    when reads come one at a time, and a burst costs one request per page. Make one per process.
    """

    def __init__(self, batch: int = BATCH) -> None:
        self._batch = batch
        self._queues: dict[Key, list[_Want]] = {}
        self._locks: dict[Key, asyncio.Lock] = {}

    async def read(
        self, key: Key, want: _Want, fetch: Callable[[list[_Want]], Awaitable[None]]
    ) -> ProviderActivity:
        queue = self._queues.setdefault(key, [])
        queue.append(want)
        try:
            async with self._locks.setdefault(key, asyncio.Lock()):
                while want.result is None and want.error is None:
                    batch = queue[: self._batch]
                    del queue[: self._batch]
                    try:
                        await fetch(batch)  # answers every want in the batch; raises only if cancelled
                    except BaseException:
                        queue[:0] = [
                            w for w in batch if w is not want and w.result is None and w.error is None
                        ]
                        raise
        finally:
            if want in queue:
                queue.remove(want)
        if want.error is not None:
            raise want.error
        assert want.result is not None
        return want.result


class ActivityReader:
    """Reads one account's audit log with the parent token; concurrent reads go through `coalescer`."""

    def __init__(self, api: CloudflareAPI, account_id: str, coalescer: Coalescer | None = None) -> None:
        self._api = api
        self._path = f"/accounts/{account_id}/logs/audit"
        self._coalescer = coalescer or Coalescer()
        self._key = (api.base_url, account_id, api.token_key)

    async def activity(self, ref: AccountRef, since: datetime, before: datetime) -> ProviderActivity:
        if ref.kind != KIND or not ref.id:
            return ProviderActivity([], complete=False, note=f"No Cloudflare token is recorded. {LIMITS}")
        # Cloudflare stamps entries to the second: `since` is floored so a write in the issuing second
        # is not lost, `before` rounded up for the same reason. The token filter keeps others out.
        start, end = _floor(since), _floor(before)
        if end < before:
            end += timedelta(seconds=1)
        if start >= end:
            return ProviderActivity([], complete=True, note=LIMITS)
        return await self._coalescer.read(self._key, _Want(ref, start, end), self._fetch)

    async def _fetch(self, batch: list[_Want]) -> None:
        """One query for the whole batch (their tokens, the union of their windows), split per want."""
        params: dict[str, str | int | list[str]] = {
            "actor_token_id": sorted({w.ref.id for w in batch}),
            "since": _rfc3339(min(w.start for w in batch)),
            "before": _rfc3339(max(w.end for w in batch)),
            "direction": "asc",
            "limit": PAGE_LIMIT,
        }
        found: dict[int, list[ActivityEntry]] = {id(w): [] for w in batch}
        seen_cursors: set[str] = set()
        try:
            for _ in range(MAX_PAGES * len(batch)):
                envelope = await self._api.envelope(self._path, params)
                items = envelope.get("result")
                for item in items if isinstance(items, list) else []:
                    for want in batch:
                        name = want.ref.name if want.ref.name.startswith(PREFIX) else ""
                        entry = to_entry(item, want.ref.id, name)
                        if entry is not None and _rfc3339(want.start) <= entry.time < _rfc3339(want.end):
                            found[id(want)].append(entry)
                info = envelope.get("result_info")
                cursor = info.get("cursor") if isinstance(info, dict) else None
                # The last page: no cursor, an empty one (UNCONFIRMED which Cloudflare sends), or no items.
                if not isinstance(cursor, str) or not cursor or not items or cursor in seen_cursors:
                    for want in batch:
                        want.result = ProviderActivity(found[id(want)], complete=True, note=LIMITS)
                    return
                seen_cursors.add(cursor)
                params["cursor"] = cursor
        except ProviderRejected as exc:
            for want in batch:
                entries = found[id(want)]
                want.result = ProviderActivity(entries, complete=False, note=_refusal(exc, len(entries)))
            return
        except Exception as exc:  # TemporaryError and anything unexpected: every caller raises it
            for want in batch:
                want.error = exc
            return
        log.info("Cloudflare audit log of %d token(s): more entries than were read", len(batch))
        for want in batch:
            entries = found[id(want)]
            note = f"Only the first {len(entries)} entries were read. {LIMITS}"
            want.result = ProviderActivity(entries, complete=False, note=note)


def _refusal(exc: ProviderRejected, read: int) -> str:
    status = status_of(exc)
    shown = "this trail is empty" if not read else f"only the first {read} entries are shown"
    if status in (401, 403):
        return (
            f"Cloudflare refused to read the account audit log (HTTP {status}): the parent token needs the "
            f"{PERMISSION} permission group (or is no longer valid), so {shown}. {LIMITS}"
        )
    return f"Cloudflare refused to read the account audit log ({exc.message}), so {shown}. {LIMITS}"
