"""Temporary accounts for AI agents ("provisioning previews") and their claim links.

Why it exists: an agent without credentials can get a whole temporary account by solving a proof of
work. The emulator makes that account real — its ``apiToken`` works on the protected endpoints — and
deletes it ``account_ttl`` (60 min) after creation unless someone opens the claim URL first.

Flow: ``POST /provisioning/previews/challenge`` -> ``{challengeToken, seed, k, g}``;
``POST /provisioning/previews`` with the terms fields, the challenge token and
``solution.checkpoints`` -> ``{account, claim, eventCodeAccepted}``. No auth header on either.

Decisions (UNCONFIRMED): a challenge is consumed by the first attempt, right or wrong; it expires
after ``challenge_ttl``; the claim URL is ``<origin>/claim/<claim token>`` on the emulator (GET or POST
claims; a second claim is 409, an unknown/expired one 404); the account's ``type`` is "standard".
"""

from __future__ import annotations

import asyncio
import secrets
import time
from datetime import timedelta
from typing import Any

from aiohttp import web

from . import catalogue
from . import envelope as E
from . import pow as pow_
from .context import API_PREFIX, Context, ctx_of, read_json
from .model import ts
from .policy import Policy, Resource

TERMS = "https://www.cloudflare.com/terms/"
PRIVACY = "https://www.cloudflare.com/privacypolicy/"


def _available(ctx: Context) -> None:
    if not ctx.previews.available:
        raise E.ApiError(503, E.PROVISIONING_UNAVAILABLE, "Provisioning is temporarily unavailable")


async def challenge(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    _available(ctx)
    await read_json(request, required=False)  # the real client sends {}
    token, seed = secrets.token_urlsafe(32), pow_.encode_seed(secrets.token_bytes(32))
    k, g = ctx.previews.k, ctx.previews.g
    with ctx.store.lock:
        now = time.monotonic()
        for stale in [t for t, c in ctx.challenges.items() if c["expires"] <= now]:
            del ctx.challenges[stale]
        ctx.challenges[token] = {"seed": seed, "k": k, "g": g, "expires": now + ctx.previews.challenge_ttl}
    return E.ok({"challengeToken": token, "seed": seed, "k": k, "g": g})


def _event_code(ctx: Context, code: Any) -> bool:
    if code is None:
        return False
    codes = ctx.previews.event_codes
    if not isinstance(code, str) or code not in codes:
        raise E.ApiError(400, E.EVENT_CODE_INVALID, "Invalid event code")
    if codes[code] <= 0:
        raise E.ApiError(400, E.EVENT_CODE_EXHAUSTED, "No temporary accounts remaining for this event code")
    codes[code] -= 1
    return True


async def create(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    _available(ctx)
    body = await read_json(request)
    if not isinstance(body, dict):
        raise E.invalid("request body must be a JSON object")
    accepted = (body.get("termsOfService"), body.get("privacyPolicy"), body.get("acceptTermsOfService"))
    if accepted != (TERMS, PRIVACY, "yes"):
        raise E.ApiError(400, E.PREVIEW_TERMS, "You must accept the Terms of Service and the Privacy Policy")
    with ctx.store.lock:  # single use: popped before the answer is even looked at
        chal = (
            ctx.challenges.pop(body.get("challengeToken"), None)
            if isinstance(body.get("challengeToken"), str)
            else None
        )
    if chal is None or chal["expires"] <= time.monotonic():
        raise E.ApiError(400, E.PREVIEW_CHALLENGE, "Challenge is invalid, expired or already used")
    solution = body.get("solution")
    checkpoints = solution.get("checkpoints") if isinstance(solution, dict) else None
    loop = asyncio.get_running_loop()  # hashing can take seconds at real sizes: keep the loop free
    if not await loop.run_in_executor(None, pow_.verify, chal["seed"], chal["k"], chal["g"], checkpoints):
        raise E.ApiError(400, E.PREVIEW_SOLUTION, "Invalid proof of work solution")
    store = ctx.store
    with store.lock:
        event_accepted = _event_code(ctx, body.get("eventCode"))
        expires = store.now() + timedelta(seconds=ctx.previews.account_ttl)
        account = store.add_account(preview=True, expires_at=expires)
        account.name = f"agent-preview-{account.id[:8]}"
        groups = tuple(catalogue.named(n).id for n in ctx.previews.token_permissions)
        raw = {f"com.cloudflare.api.account.{account.id}": "*"}
        policy = Policy(store.new_id(), "allow", groups, (Resource("account", account=account.id),), raw)
        token, value = store.create_token(
            account.id, "Temporary account token", [policy], enforce_quota=False
        )
    claim_token = account.claim_token or ""
    result = {
        "account": {
            "id": account.id,
            "name": account.name,
            "type": account.type,
            "apiToken": value,
            "tokenId": token.id,
            "expiresAt": ts(expires),
        },
        "claim": {"token": claim_token, "url": f"{ctx.origin}/claim/{claim_token}", "expiresAt": ts(expires)},
        "eventCodeAccepted": event_accepted,
    }
    return E.ok(result)


async def claim(request: web.Request) -> web.Response:
    """The claim link: whoever opens it takes the account (a dashboard page, so plain JSON)."""
    store = ctx_of(request).store
    with store.lock:
        store.purge()
        wanted = request.match_info["claim_token"]
        account = next((a for a in store.accounts.values() if a.claim_token == wanted), None)
        if account is None:
            return web.json_response({"claimed": False, "error": "unknown or expired claim link"}, status=404)
        if account.claimed:
            return web.json_response({"claimed": False, "error": "account already claimed"}, status=409)
        account.claimed, account.expires_at = True, None
    return web.json_response({"claimed": True, "account_id": account.id})


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_post(API_PREFIX + "/provisioning/previews/challenge", challenge)
    router.add_post(API_PREFIX + "/provisioning/previews", create)
    router.add_route("GET", "/claim/{claim_token}", claim)
    router.add_route("POST", "/claim/{claim_token}", claim)
