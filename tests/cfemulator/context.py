"""What every handler reaches through ``request.app[CTX]``, and the recorded exchange type.

Why it exists: handlers, middlewares and the control API need the same store, limiter, faults and
recording without importing each other (which would make the app module a hub of cycles).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from aiohttp import web

from . import envelope as E
from .faults import Faults
from .ratelimit import RateLimiter
from .store import Store

API_PREFIX = "/client/v4"


class Exchange(NamedTuple):
    """One API request and its answer, as recorded for assertions and schema checks."""

    method: str
    path: str  # relative to /client/v4, e.g. "/accounts/<id>/tokens"
    query: dict[str, str | list[str]]  # a key sent more than once (explode: true arrays) maps to a list
    request: Any  # parsed JSON body, None when there was none (or it was not JSON)
    status: int | None  # None: the connection was dropped by the fault knobs
    response: Any  # parsed JSON body, None when dropped


@dataclass
class PreviewSettings:
    """Knobs of the temporary-account (provisioning preview) API.

    k and g: Cloudflare publishes no numbers; Wrangler refuses k*g > 64,000,000, so the defaults
    (50 x 200,000 = 10M hashes, a few seconds in Python) sit well inside that. Tests shrink them.
    """

    k: int = 50
    g: int = 200_000
    challenge_ttl: float = 300.0  # seconds a challenge can be answered (pick, UNCONFIRMED)
    account_ttl: float = 3600.0  # unclaimed temporary accounts are deleted 60 minutes after creation
    available: bool = True  # False -> 503 code 1041 "provisioning unavailable"
    event_codes: dict[str, int] = field(default_factory=dict)  # event code -> accounts remaining
    token_permissions: tuple[str, ...] = (
        "Workers Scripts Write",
        "Workers KV Storage Write",
        "D1 Write",
        "Account Settings Read",
        "Workers Tail Read",
    )  # what the preview account's apiToken holds (pick: the supported products, no R2)


@dataclass
class Context:
    store: Store
    limiter: RateLimiter
    faults: Faults
    previews: PreviewSettings
    exchanges: list[Exchange] = field(default_factory=list)
    challenges: dict[str, dict[str, Any]] = field(default_factory=dict)
    origin: str = ""  # "http://127.0.0.1:PORT", set once the server is bound
    audit_failures: bool = False  # also log refused (4xx) writes in the audit log (audit_record.py)


CTX = web.AppKey("cfemulator", Context)


def ctx_of(request: web.Request) -> Context:
    return request.app[CTX]


async def read_json(request: web.Request, *, required: bool = True) -> Any:
    """The request body as JSON; 400/6007 if it is not JSON, 400/1002 if required and absent."""
    raw = await request.read()
    if not raw.strip():
        if required:
            raise E.invalid("a JSON request body is required")
        return None
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise E.ApiError(400, E.MALFORMED_JSON, "Malformed JSON in request body") from exc
