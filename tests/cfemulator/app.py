"""The aiohttp application: routes, the fault/rate-limit/recording middleware, envelope for errors.

Why it exists: everything that happens to *every* API request lives here, once — recording the
exchange, latency, dropped connections, forced and real throttling, injected 5xx, and turning any
error (ours or aiohttp's 404/405) into the v4 failure envelope. Handlers only do their own job.
Writes made with a token are logged to the account's audit log here too (audit_record.py), after
the answer is known. Only paths under /client/v4 get this treatment; the claim page and the
/_emulator control plane don't.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from . import audit_record, auditlog, auth, control, previews, r2, resources, tokens
from . import envelope as E
from .context import API_PREFIX, CTX, Context, Exchange, ctx_of
from .model import Token

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Dropped(Exception):
    """The fault knobs decided to close this connection without an answer."""


def _json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw.strip() else None
    except ValueError:
        return None


async def _serve(
    request: web.Request, handler: Handler, ctx: Context, token: Token | None
) -> web.StreamResponse:
    faults, limiter = ctx.faults, ctx.limiter
    if faults.latency > 0:
        await asyncio.sleep(faults.latency)
    if faults.roll_drop():
        raise _Dropped
    extra: dict[str, str] = {}
    try:
        forced = faults.forced_retry_after()
        if forced:
            raise E.ApiError(
                429,
                E.THROTTLED,
                "Rate limited. Please wait and consider throttling your request speed",
                headers={"retry-after": str(forced)},
            )
        if token is not None:
            verdict = limiter.hit(token.id)
            extra = verdict.headers
            if not verdict.allowed:
                message = (
                    f"More than {limiter.limit} requests per {limiter.window:g} seconds reached. "
                    "Please wait and consider throttling your request speed"
                )
                raise E.ApiError(429, E.THROTTLED, message, headers=extra)
        if faults.roll_error():
            raise E.ApiError(faults.error_status, E.INTERNAL, "Internal server error")
        response = await handler(request)
    except E.ApiError as exc:
        response = E.error_response(exc)
    except web.HTTPMethodNotAllowed:
        response = E.error_response(
            E.ApiError(405, E.METHOD_NOT_ALLOWED, "Method not allowed for this endpoint")
        )
    except web.HTTPNotFound:
        response = E.error_response(E.ApiError(404, E.NO_ROUTE, "No route for that URI"))
    for name, value in extra.items():
        response.headers.setdefault(name, value)
    return response


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not (request.path == API_PREFIX or request.path.startswith(API_PREFIX + "/")):
        return await handler(request)
    ctx = ctx_of(request)
    raw = await request.read()  # cached by aiohttp; handlers can read it again
    seen = (request.method, request.path[len(API_PREFIX) :] or "/", _query(request), _json_or_none(raw))
    actor = auth.peek(request)  # before the handler: a DELETE may remove the very token it presents
    try:
        response = await _serve(request, handler, ctx, actor)
    except _Dropped:
        ctx.exchanges.append(Exchange(*seen, None, None))
        if request.transport is not None:
            request.transport.close()
        return web.Response(status=599)  # never reaches the client: the socket is already closed
    body = response.body if isinstance(response, web.Response) else None
    parsed = _json_or_none(body) if isinstance(body, bytes) else None
    ctx.exchanges.append(Exchange(*seen, response.status, parsed))
    audit_record.record(ctx, request, actor, response.status, parsed)
    return response


def _query(request: web.Request) -> dict[str, str | list[str]]:
    """The query string; a key sent more than once (an `explode: true` array) keeps every value."""
    out: dict[str, str | list[str]] = {}
    for key in dict.fromkeys(request.query.keys()):
        values = request.query.getall(key)
        out[key] = values[0] if len(values) == 1 else values
    return out


def build_app(ctx: Context, emulator: Any) -> web.Application:
    app = web.Application(middlewares=[api_middleware])
    app[CTX] = ctx
    app[control.EMULATOR] = emulator
    tokens.add_routes(app.router)
    r2.add_routes(app.router)  # before resources: /accounts/{id}/r2/... is more specific
    auditlog.add_routes(app.router)
    resources.add_routes(app.router)
    previews.add_routes(app.router)
    control.add_routes(app.router)
    return app
