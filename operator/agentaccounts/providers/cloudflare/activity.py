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

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from agentaccounts.errors import ProviderRejected
from agentaccounts.models import AccountRef
from agentaccounts.providers.base import ActivityEntry, ProviderActivity
from agentaccounts.providers.cloudflare.api import CloudflareAPI, scrub, status_of
from agentaccounts.providers.cloudflare.tokens import KIND, PREFIX

log = logging.getLogger(__name__)

PAGE_LIMIT = 1000  # the API's maximum page size: the fewest requests on the shared budget
MAX_PAGES = 10  # 10,000 entries; more is cut (complete=False): the operator keeps a bounded trail anyway
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


class ActivityReader:
    """Reads one account's audit log with the parent token (one reader per provider)."""

    def __init__(self, api: CloudflareAPI, account_id: str) -> None:
        self._api = api
        self._path = f"/accounts/{account_id}/logs/audit"

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
        params: dict[str, str | int] = {
            "actor_token_id": ref.id,
            "since": _rfc3339(start),
            "before": _rfc3339(end),
            "direction": "asc",
            "limit": PAGE_LIMIT,
        }
        entries: list[ActivityEntry] = []
        seen_cursors: set[str] = set()
        for _ in range(MAX_PAGES):
            try:
                envelope = await self._api.envelope(self._path, params)
            except ProviderRejected as exc:
                return ProviderActivity(entries, complete=False, note=_refusal(exc, len(entries)))
            items = envelope.get("result")
            for item in items if isinstance(items, list) else []:
                entry = to_entry(item, ref.id, ref.name if ref.name.startswith(PREFIX) else "")
                if entry is not None:
                    entries.append(entry)
            info = envelope.get("result_info")
            cursor = info.get("cursor") if isinstance(info, dict) else None
            # The last page: no cursor, an empty one (UNCONFIRMED which Cloudflare sends), or no items.
            if not isinstance(cursor, str) or not cursor or not items or cursor in seen_cursors:
                return ProviderActivity(entries, complete=True, note=LIMITS)
            seen_cursors.add(cursor)
            params["cursor"] = cursor
        log.info(
            "Cloudflare audit log of token %s: more than %d entries, the rest not read", ref.id, len(entries)
        )
        note = f"Only the first {len(entries)} entries were read. {LIMITS}"
        return ProviderActivity(entries, complete=False, note=note)


def _refusal(exc: ProviderRejected, read: int) -> str:
    status = status_of(exc)
    shown = "this trail is empty" if not read else f"only the first {read} entries are shown"
    if status in (401, 403):
        return (
            f"Cloudflare refused to read the account audit log (HTTP {status}): the parent token needs the "
            f"{PERMISSION} permission group (or is no longer valid), so {shown}. {LIMITS}"
        )
    return f"Cloudflare refused to read the account audit log ({exc.message}), so {shown}. {LIMITS}"
