"""The HTTP control plane under ``/_emulator`` — the Python control API, reachable from another process.

Why it exists: integration tests may run the operator in a separate process against
``python -m cfemulator``; they still need to seed accounts and parent tokens, flip fault knobs and read
the recorded exchanges. Every route is a thin shim over an ``Emulator`` method (plain JSON, no v4
envelope, no auth: it binds to loopback and exists only in tests).

| route                                           | Emulator method                         |
|-------------------------------------------------|-----------------------------------------|
| POST /_emulator/accounts {name?}                | add_account -> {"id"}                   |
| GET  /_emulator/accounts/{a}                    | account_info                            |
| POST /_emulator/accounts/{a}/claim              | claim                                   |
| POST /_emulator/accounts/{a}/zones {name}       | add_zone -> {"id"}                      |
| POST /_emulator/accounts/{a}/buckets {name, jurisdiction?} | add_bucket                   |
| POST /_emulator/accounts/{a}/tokens {permissions, resources?, policies?, name?}                           |
|                                                 | mint_token -> {"id", "value"}           |
| GET  /_emulator/accounts/{a}/tokens             | list_tokens                             |
| GET  /_emulator/accounts/{a}/audit              | audit_log (the account's audit-log v2)  |
| GET  /_emulator/tokens/{t}                      | token_info (request_count, blocked_for) |
| GET/DELETE /_emulator/requests                  | requests / clear_requests               |
| PUT  /_emulator/faults {error_rate?, error_status?, latency?, drop_rate?, force_429?, audit_failures?}    |
|                                                 | faults (force_429 in seconds; audit_failures:   |
|                                                 | also log refused writes, audit_record.py) |
| POST /_emulator/r2/check {access_key_id, secret, session_token?, bucket?, jurisdiction?, write?, key?}    |
|                                                 | check_r2_keys -> {"valid"}              |
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

EMULATOR = web.AppKey("cfemulator.emulator", object)
_FAULT_FIELDS = ("error_rate", "error_status", "latency", "drop_rate")
Handler = Callable[[web.Request], Awaitable[web.Response]]


def _emu(request: web.Request) -> Any:
    return request.app[EMULATOR]


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = json.loads(raw) if raw.strip() else {}
    except ValueError:
        raise web.HTTPBadRequest(text="body must be JSON") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="body must be a JSON object")
    return body


def _answer(value: Any, status: int = 200) -> web.Response:
    return web.json_response(value, status=status)


async def add_account(request: web.Request) -> web.Response:
    return _answer({"id": _emu(request).add_account((await _body(request)).get("name"))}, 201)


async def account_info(request: web.Request) -> web.Response:
    info = _emu(request).account_info(request.match_info["account_id"])
    return _answer(info, 200 if info else 404)


async def claim(request: web.Request) -> web.Response:
    _emu(request).claim(request.match_info["account_id"])
    return _answer({"claimed": True})


async def add_zone(request: web.Request) -> web.Response:
    body = await _body(request)
    zone_id = _emu(request).add_zone(request.match_info["account_id"], body.get("name", "example.com"))
    return _answer({"id": zone_id}, 201)


async def add_bucket(request: web.Request) -> web.Response:
    body = await _body(request)
    _emu(request).add_bucket(
        request.match_info["account_id"], body["name"], body.get("jurisdiction", "default")
    )
    return _answer({"name": body["name"]}, 201)


async def mint_token(request: web.Request) -> web.Response:
    emu, body = _emu(request), await _body(request)
    kwargs = {k: body[k] for k in ("name", "policies") if k in body}
    value = emu.mint_token(
        request.match_info["account_id"], body.get("permissions", ()), body.get("resources"), **kwargs
    )
    return _answer({"id": emu.token_id(value), "value": value}, 201)


async def list_tokens(request: web.Request) -> web.Response:
    return _answer(_emu(request).list_tokens(request.match_info["account_id"]))


async def token_info(request: web.Request) -> web.Response:
    info = _emu(request).token_info(request.match_info["token_id"])
    return _answer(info, 200 if info else 404)


async def requests(request: web.Request) -> web.Response:
    return _answer([e._asdict() for e in _emu(request).requests])


async def clear_requests(request: web.Request) -> web.Response:
    _emu(request).clear_requests()
    return _answer({})


async def faults(request: web.Request) -> web.Response:
    knobs, body = _emu(request).faults, await _body(request)
    for name in _FAULT_FIELDS:
        if name in body:
            setattr(knobs, name, body[name])
    if "force_429" in body:
        knobs.force_429(float(body["force_429"]))
    context = _emu(request).context
    if "audit_failures" in body:
        context.audit_failures = bool(body["audit_failures"])
    return _answer(
        {name: getattr(knobs, name) for name in _FAULT_FIELDS}
        | {"force_429": knobs.forced_retry_after(), "audit_failures": context.audit_failures}
    )


async def audit_log(request: web.Request) -> web.Response:
    return _answer(_emu(request).audit_log(request.match_info["account_id"]))


async def check_r2(request: web.Request) -> web.Response:
    body = await _body(request)
    options = {k: body[k] for k in ("session_token", "bucket", "jurisdiction", "write", "key") if k in body}
    return _answer({"valid": _emu(request).check_r2_keys(body["access_key_id"], body["secret"], **options)})


def _guard(handler: Handler) -> Handler:
    """Control-plane misuse (unknown account, bad permission name, missing field) -> 400/404 JSON."""

    async def guarded(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except KeyError as exc:
            return _answer({"error": f"not found: {exc}"}, 404)
        except (TypeError, ValueError) as exc:
            return _answer({"error": str(exc)}, 400)

    return guarded


def add_routes(router: web.UrlDispatcher) -> None:
    acct = "/_emulator/accounts/{account_id}"
    routes = [
        ("POST", "/_emulator/accounts", add_account),
        ("GET", acct, account_info),
        ("POST", acct + "/claim", claim),
        ("POST", acct + "/zones", add_zone),
        ("POST", acct + "/buckets", add_bucket),
        ("POST", acct + "/tokens", mint_token),
        ("GET", acct + "/tokens", list_tokens),
        ("GET", acct + "/audit", audit_log),
        ("GET", "/_emulator/tokens/{token_id}", token_info),
        ("GET", "/_emulator/requests", requests),
        ("DELETE", "/_emulator/requests", clear_requests),
        ("PUT", "/_emulator/faults", faults),
        ("POST", "/_emulator/r2/check", check_r2),
    ]
    for method, path, handler in routes:
        router.add_route(method, path, _guard(handler))
