"""Account-owned API tokens: create, list, get, update, delete, verify, roll, permission groups.

Why it exists: this is the API the Cloudflare provider drives. Beyond the shapes it enforces what a
least-privilege operator relies on: ``Account API Tokens Write`` to mint, no token with more rights
than its minter (also on update), the 500-token quota, names of at most 120 characters, and values
shown only on create and roll.

Decisions where Cloudflare documents nothing:
* ``expires_on`` must lie in the future and after ``not_before`` (400/1002);
* PUT replaces the definition: omitted ``not_before``/``expires_on``/``condition`` are cleared, an
  omitted ``status`` keeps the current one; ``status`` may only be set to active or disabled;
* list order is creation order (``direction=desc`` reverses it); per_page outside 5..50 is a 400.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web

from . import catalogue
from . import envelope as E
from . import policy as P
from .auth import account_caller, authenticate
from .context import API_PREFIX, ctx_of, read_json
from .model import Token, parse_time
from .store import Store

TOKENS_WRITE = catalogue.atom("Account API Tokens", "write")
TOKENS_READ = catalogue.atom("Account API Tokens", "read")
NAME_MAX = 120


@dataclass
class _Fields:
    name: str
    policies: list[P.Policy]
    not_before: datetime | None
    expires_on: datetime | None
    condition: dict[str, Any] | None
    status: str | None


def _parse(body: Any, store: Store, caller: Token) -> _Fields:
    if not isinstance(body, dict):
        raise E.invalid("request body must be a JSON object")
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise E.invalid("name is required")
    if len(name) > NAME_MAX:
        raise E.invalid(f"name must be at most {NAME_MAX} characters")
    status = body.get("status")
    if status not in (None, "active", "disabled"):
        raise E.invalid("status can only be set to active or disabled")
    try:
        policies = P.parse_policies(body.get("policies"), store.new_id)
        times = {
            k: parse_time(body[k], k) if body.get(k) is not None else None
            for k in ("not_before", "expires_on")
        }
        condition = P.parse_condition(body.get("condition"))
    except ValueError as exc:
        raise E.invalid(str(exc)) from exc
    not_before, expires_on = times["not_before"], times["expires_on"]
    if expires_on is not None and expires_on <= store.now():
        raise E.invalid("expires_on must be in the future")
    if not_before is not None and expires_on is not None and not_before >= expires_on:
        raise E.invalid("not_before must be earlier than expires_on")
    problems = P.excess(caller.policies, policies, store.zone_account)
    if problems:
        raise E.ApiError(
            403,
            E.EXCEEDS_PARENT,
            "Requested permissions exceed those of the requesting token: " + "; ".join(problems),
        )
    return _Fields(name, policies, not_before, expires_on, condition, status)


def _find(store: Store, account_id: str, token_id: str) -> Token:
    token = store.tokens.get(token_id)
    if token is None or token.account_id != account_id:
        raise E.ApiError(404, E.NOT_FOUND, "Token not found")
    return token


def _query_int(request: web.Request, name: str, default: int, low: int, high: int | None = None) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise E.invalid(f"{name} must be an integer") from None
    if value < low or (high is not None and value > high):
        raise E.invalid(f"{name} must be between {low} and {high}" if high else f"{name} must be >= {low}")
    return value


async def create_token(request: web.Request) -> web.Response:
    store, caller, account_id = account_caller(request, TOKENS_WRITE)
    body = await read_json(request)
    with store.lock:
        f = _parse(body, store, caller)
        token, value = store.create_token(
            account_id,
            f.name,
            f.policies,
            not_before=f.not_before,
            expires_on=f.expires_on,
            condition=f.condition,
        )
        return E.ok(token.api_view(store.now()) | {"value": value})


async def list_tokens(request: web.Request) -> web.Response:
    store, _, account_id = account_caller(request, TOKENS_READ)
    page = _query_int(request, "page", 1, 1)
    per_page = _query_int(request, "per_page", 20, 5, 50)
    direction = request.query.get("direction", "asc")
    if direction not in ("asc", "desc"):
        raise E.invalid("direction must be asc or desc")
    with store.lock:
        tokens = store.account_tokens(account_id)
        if direction == "desc":
            tokens.reverse()
        now = store.now()
        result = [t.api_view(now) for t in tokens[(page - 1) * per_page : page * per_page]]
    info = {
        "page": page,
        "per_page": per_page,
        "count": len(result),
        "total_count": len(tokens),
        "total_pages": max(1, math.ceil(len(tokens) / per_page)),
    }
    return E.ok(result, result_info=info)


async def get_token(request: web.Request) -> web.Response:
    store, _, account_id = account_caller(request, TOKENS_READ)
    with store.lock:
        return E.ok(_find(store, account_id, request.match_info["token_id"]).api_view(store.now()))


async def update_token(request: web.Request) -> web.Response:
    store, caller, account_id = account_caller(request, TOKENS_WRITE)
    body = await read_json(request)
    with store.lock:
        token = _find(store, account_id, request.match_info["token_id"])
        f = _parse(body, store, caller)
        token.name, token.policies, token.condition = f.name, f.policies, f.condition
        token.not_before, token.expires_on = f.not_before, f.expires_on
        if f.status is not None:
            token.disabled = f.status == "disabled"
        token.modified_on = store.now()
        return E.ok(token.api_view(store.now()))


async def delete_token(request: web.Request) -> web.Response:
    store, _, account_id = account_caller(request, TOKENS_WRITE)
    with store.lock:
        token = _find(store, account_id, request.match_info["token_id"])
        store.delete_token(token.id)
    return E.ok({"id": token.id})


async def roll_token(request: web.Request) -> web.Response:
    store, _, account_id = account_caller(request, TOKENS_WRITE)
    if not isinstance(await read_json(request), dict):
        raise E.invalid("request body must be a JSON object ({})")
    with store.lock:
        return E.ok(store.roll(_find(store, account_id, request.match_info["token_id"])))


async def verify_token(request: web.Request) -> web.Response:
    store = ctx_of(request).store
    token = authenticate(request, verify=True)
    if token.account_id != request.match_info["account_id"]:
        raise E.ApiError(401, E.INVALID_API_TOKEN, "Invalid API Token")
    view = token.api_view(store.now())
    result = {k: view[k] for k in ("id", "status", "not_before", "expires_on") if k in view}
    message = {"code": 10000, "message": "This API Token is valid and active", "type": None}
    return E.ok(result, messages=[message])


async def permission_groups(request: web.Request) -> web.Response:
    account_caller(request, TOKENS_READ)
    # Exact matches; aiohttp has already URL-decoded the values ("Account%20Settings%20Write").
    # Not paginated: the schema declares no page parameters for this list.
    name, scope = request.query.get("name"), request.query.get("scope")
    groups = [
        g.api_view() for g in catalogue.CATALOGUE if name in (None, g.name) and scope in (None, g.scope)
    ]
    info = {"page": 1, "per_page": len(groups), "count": len(groups), "total_count": len(groups)}
    return E.ok(groups, result_info=info)


def add_routes(router: web.UrlDispatcher) -> None:
    base = API_PREFIX + "/accounts/{account_id}/tokens"
    router.add_get(base + "/permission_groups", permission_groups)  # literal paths before {token_id}
    router.add_get(base + "/verify", verify_token)
    router.add_post(base, create_token)
    router.add_get(base, list_tokens)
    router.add_get(base + "/{token_id}", get_token)
    router.add_put(base + "/{token_id}", update_token)
    router.add_delete(base + "/{token_id}", delete_token)
    router.add_put(base + "/{token_id}/value", roll_token)
