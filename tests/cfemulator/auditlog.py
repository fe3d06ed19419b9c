"""`GET /accounts/{account_id}/logs/audit` (audit logs v2), as openapi-subset.json defines it.

Why it exists: the Cloudflare provider reads what an agent token did from this endpoint (filtered by
`actor_token_id`, between `since` and `before`, paging by cursor), so the emulator must answer it with
the real contract: the permission, the parameters, the pages and the errors.

- **Permission:** `Account Settings Read` (or Write) on the path's account (`x-api-token-group`);
  without it 403/10000 like every other protected endpoint; another account's token 403/9109.
- **Required:** `since` and `before`, each a date (`2024-10-30`, read as UTC midnight) or an RFC 3339
  timestamp with an offset (the schema says `format: date`, its description allows both). Entries with
  `since <= action.time < before` are returned (pick: the docs say "newer than" / "older than").
- **Optional:** `direction` (desc default | asc), `limit` (1-1000, default 100), `cursor` (opaque), and
  the filters in `FILTERS`: every one an array (`explode: true`: the key repeats), values OR-ed, filters
  AND-ed, each with a negated `<name>.not` twin; `product_category` (no twin) expands to products and is
  unioned with `resource_product`; an unknown category is 400. Enum filters refuse other values.
- **Picks (UNCONFIRMED):** unknown parameters, `since >= before`, a malformed or foreign cursor are 400;
  the last page carries no `cursor`; `result_info.count` is a string, as the schema types it.
- **Envelope:** `{success, errors, result, result_info: {count, cursor}}` (no `messages`); failures of
  this endpoint's own checks are `{success: false, errors: [{message}], messages: []}` with no `code`,
  as the schema's `aaa_api-response-common-failure-2` has none.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from . import envelope as E
from .audit_record import Logged
from .auth import account_caller
from .catalogue import atom
from .context import API_PREFIX

# filter name -> path into the entry (None: the stored scope); the schema's list, a unit test checks it
FILTERS: dict[str, tuple[str, ...] | None] = {
    "account_name": ("account", "name"),
    "action_result": ("action", "result"),
    "action_type": ("action", "type"),
    "actor_context": ("actor", "context"),
    "actor_email": ("actor", "email"),
    "actor_id": ("actor", "id"),
    "actor_ip_address": ("actor", "ip_address"),
    "actor_token_id": ("actor", "token_id"),
    "actor_token_name": ("actor", "token_name"),
    "actor_type": ("actor", "type"),
    "audit_log_id": ("id",),  # deprecated alias of id
    "id": ("id",),
    "raw_cf_ray_id": ("raw", "cf_ray_id"),
    "raw_method": ("raw", "method"),
    "raw_status_code": ("raw", "status_code"),
    "raw_uri": ("raw", "uri"),
    "resource_id": ("resource", "id"),
    "resource_product": ("resource", "product"),
    "resource_type": ("resource", "type"),
    "resource_scope": None,
    "zone_id": ("zone", "id"),
    "zone_name": ("zone", "name"),
}
ENUMS = {
    "action_result": {"success", "failure"},
    "action_type": {"create", "delete", "view", "update"},
    "actor_context": {"api_key", "api_token", "dash", "oauth", "origin_ca_key"},
    "actor_type": {"account", "cloudflare_admin", "system", "user"},
    "resource_scope": {"accounts", "user", "zones", "memberships"},
}
# product_category -> resource products (picks: the categories endpoint is not in the subset)
CATEGORIES = {
    "dns": {"DNS"},
    "developer_platform": {"Workers KV", "D1", "R2"},
    "access_management": {"API Tokens"},
}
SCALARS = ("since", "before", "direction", "limit", "cursor")
KNOWN = set(SCALARS) | {"product_category"} | set(FILTERS) | {f"{name}.not" for name in FILTERS}
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,6})?([Zz]|[+-]\d{2}:\d{2})$")


def _bad(message: str) -> E.ApiError:
    return E.ApiError(400, None, message)


def _moment(query: MultiDictProxy[str], name: str) -> datetime:
    values = query.getall(name, [])
    if len(values) != 1:
        raise _bad(f"{name} is required (once): a date such as 2024-10-30 or an RFC 3339 timestamp")
    value = values[0]
    try:
        if _DATE.match(value):
            return datetime.fromisoformat(value).replace(tzinfo=UTC)
        if _RFC3339.match(value):
            return datetime.fromisoformat(value.upper().replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        pass
    raise _bad(f"{name} must be a date such as 2024-10-30 or an RFC 3339 timestamp")


def _scalar(query: MultiDictProxy[str], name: str, default: str) -> str:
    values = query.getall(name, [])
    if len(values) > 1:
        raise _bad(f"{name} may be given once")
    return values[0] if values else default


def _limit(query: MultiDictProxy[str]) -> int:
    raw = _scalar(query, "limit", "100")
    try:
        number = float(raw)
    except ValueError:
        raise _bad("limit must be a number from 1 to 1000") from None
    if not number.is_integer() or not 1 <= number <= 1000:
        raise _bad("limit must be a number from 1 to 1000")
    return int(number)


def _filters(query: MultiDictProxy[str]) -> list[tuple[str, bool, set[str]]]:
    """(filter, negated, values) for every filter given; values checked against enums and types."""
    out = []
    for key in dict.fromkeys(query.keys()):
        if key not in KNOWN:
            raise _bad(f"unknown query parameter {key!r}")
        if key in SCALARS or key == "product_category":
            continue
        name, negated = key.removesuffix(".not"), key.endswith(".not")
        values = set(query.getall(key))
        if name in ENUMS and not values <= ENUMS[name]:
            raise _bad(f"{key} must be one of {sorted(ENUMS[name])}")
        if name == "raw_status_code" and not all(v.lstrip("-").isdigit() for v in values):
            raise _bad(f"{key} must be an integer")
        out.append((name, negated, values))
    products: set[str] = set()
    for category in query.getall("product_category", []):
        if category.lower() not in CATEGORIES:
            raise _bad(f"unknown product category {category!r}")
        products |= CATEGORIES[category.lower()]
    if products:  # unioned with an explicit resource_product filter
        given = [f for f in out if f[0] == "resource_product" and not f[1]]
        out = [f for f in out if f not in given]
        out.append(("resource_product", False, products.union(*(f[2] for f in given))))
    return out


def _value(logged: Logged, name: str) -> str:
    path = FILTERS[name]
    if path is None:
        return logged.scope
    node: Any = logged.entry
    for part in path:
        node = node.get(part) if isinstance(node, dict) else None
    return "" if node is None else str(node)


def _matches(logged: Logged, filters: list[tuple[str, bool, set[str]]]) -> bool:
    return all((_value(logged, name) in values) != negated for name, negated, values in filters)


def _fingerprint(account_id: str, query: MultiDictProxy[str]) -> str:
    """What a cursor is bound to: the account and every parameter but the cursor and the page size."""
    items = sorted((k, v) for k, v in query.items() if k not in ("cursor", "limit"))
    return hashlib.sha256(json.dumps([account_id, items]).encode()).hexdigest()[:16]


def _cursor(seq: int, fingerprint: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": seq, "q": fingerprint}).encode()).decode()


def _after(raw: str, fingerprint: str) -> int | None:
    if not raw:
        return None
    try:
        decoded = json.loads(base64.urlsafe_b64decode(raw.encode()))
        if decoded["q"] == fingerprint and isinstance(decoded["after"], int):
            return int(decoded["after"])
    except (ValueError, KeyError, TypeError):
        pass
    raise _bad("invalid cursor: take it from result_info.cursor of the same query")


async def list_audit_logs(request: web.Request) -> web.Response:
    store, _, account_id = account_caller(request, atom("Account Settings", "read"))
    query = request.query
    filters = _filters(query)
    since, before = _moment(query, "since"), _moment(query, "before")
    if since >= before:
        raise _bad("since must be earlier than before")
    direction = _scalar(query, "direction", "desc")
    if direction not in ("asc", "desc"):
        raise _bad("direction must be asc or desc")
    limit, fingerprint = _limit(query), _fingerprint(account_id, query)
    after = _after(_scalar(query, "cursor", ""), fingerprint)
    with store.lock:
        logged = [
            e
            for e in store.audit
            if e.entry["account"]["id"] == account_id and since <= e.when < before and _matches(e, filters)
        ]
    if direction == "desc":
        logged.reverse()
    if after is not None:
        logged = [e for e in logged if (e.seq > after if direction == "asc" else e.seq < after)]
    page = logged[:limit]
    info: dict[str, Any] = {"count": str(len(page))}
    if len(logged) > limit:
        info["cursor"] = _cursor(page[-1].seq, fingerprint)
    body = {"success": True, "errors": [], "result": [e.entry for e in page], "result_info": info}
    return web.json_response(body)


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get(API_PREFIX + "/accounts/{account_id}/logs/audit", list_audit_logs)
