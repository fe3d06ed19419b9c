"""The Cloudflare v4 HTTP client: envelope parsing, retries, the request budget, and error translation.

This is the ONE place where Cloudflare's answers become `agentaccounts.errors` (`raise ... from exc`):

| Cloudflare says                                  | we do                                                |
|--------------------------------------------------|------------------------------------------------------|
| 2xx, `success: true`                             | return `result`                                      |
| 404 where the caller said `missing_ok`           | return None ("already gone" is success)              |
| quota: code 1004 / 1040, or quota wording        | QuotaExceeded(delay=60)                              |
| any other 429                                    | hold the whole budget for `retry-after`, then retry; |
|                                                  | a long hold or repeated 429s: RateLimited(delay)     |
| 408, 409, 5xx, timeouts, dropped connections     | backoff 0.5 s -> 8 s (full jitter), then Unavailable |
| 401, or code 10000 / 9109 / 1000                 | ProviderRejected: the parent token is invalid        |
| code 1032 (challenge used up), 1041 (unavailable)| ProviderUnavailable                                  |
| any other 4xx                                    | ProviderRejected with Cloudflare's code and message  |

Non-idempotent calls (POST) are retried only when Cloudflare cannot have acted on them (429, or the
connection was never made): retrying a create after a 5xx or a read timeout could mint a second token
or account. The caller's next reconcile adopts or cleans up instead (see tokens.py).
Messages never contain the Authorization header or a token value: Cloudflare's own error text is
scrubbed and capped before it is used.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from agentaccounts.errors import ProviderRejected, ProviderUnavailable, QuotaExceeded, RateLimited
from agentaccounts.providers.cloudflare.budget import RequestBudget, Sleep, budget_key

log = logging.getLogger(__name__)

_RETRY_STATUSES = frozenset({408, 409})
_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# 10000 "Authentication error" (inactive token, or no permission), 9109 "Invalid access token" /
# "Unauthorized to access requested resource", 1000 "Invalid API Token": the parent token is the problem.
_AUTH_CODES = frozenset({10000, 9109, 1000})
# Cloudflare does not document its error for "500 account tokens reached": match the wording, plus the
# emulator's code 1004 (tests/cfemulator/envelope.py) and 1040 "no temporary accounts remaining".
_QUOTA_CODES = frozenset({1004, 1040})
_QUOTA_TEXT = re.compile(r"quota|maximum number of (api )?tokens|too many (api )?tokens|token limit", re.I)
# 1041 provisioning unavailable; 1032 challenge expired or used (a fresh challenge fixes it).
_UNAVAILABLE_CODES = frozenset({1032, 1041})
QUOTA_DELAY = 60.0  # tokens are freed as AgentAccounts expire; check again in a minute
_MAX_RETRY_AFTER = 3600.0
_SECRETISH = re.compile(r"(?i)bearer\s+\S+|\bcf[au]t_\w+")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry; sleep and random are injectable for tests."""

    attempts: int = 4  # one try and three retries
    base: float = 0.5
    cap: float = 8.0
    default_retry_after: float = 60.0  # a 429 without retry-after (Cloudflare always sends one)
    unavailable_delay: float = 30.0  # how long an account waits after ProviderUnavailable
    sleep: Sleep = field(default=asyncio.sleep, compare=False)
    random: Callable[[], float] = field(default=random.random, compare=False)

    def backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
        return self.random() * min(self.cap, self.base * 2.0**attempt)


class CloudflareAPI:
    """Calls to one Cloudflare API base URL with one (or no) token, drawing on one shared budget."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str,
        token: str | None,
        budget: RequestBudget,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._client = client
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.token_key = budget_key(token)  # which parent token this is, never the value (SHA-256)
        self.budget = budget
        self._retry = retry or RetryPolicy()

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
        missing_ok: bool = False,
        retry_safe: bool | None = None,
    ) -> Any:
        """The envelope's `result`; None for a 404 when `missing_ok`.

        `retry_safe` (default: GET/PUT/DELETE yes, POST no) says whether a call Cloudflare may already
        have acted on can be sent again.
        """
        idempotent = method in ("GET", "PUT", "DELETE") if retry_safe is None else retry_safe
        envelope = await self._send(method, path, json, params, missing_ok, idempotent)
        return None if envelope is None else envelope.get("result")

    async def envelope(self, path: str, params: Mapping[str, str | int | list[str]]) -> dict[str, Any]:
        """The whole envelope of a GET (for lists that page by `result_info.cursor`); errors as `call`.
        A list value is sent as the key repeated (OpenAPI `explode: true` arrays)."""
        return await self._send("GET", path, None, params, False, True) or {}

    async def pages(self, path: str, *, per_page: int = 50, max_pages: int = 200) -> AsyncIterator[Any]:
        """Every item of a paginated list (stops on total_count, total_pages, or a short or empty page)."""
        seen = 0
        for page in range(1, max_pages + 1):
            envelope = await self._send("GET", path, None, {"page": page, "per_page": per_page}, False, True)
            items = (envelope or {}).get("result") or []
            for item in items:
                yield item
            seen += len(items)
            info = (envelope or {}).get("result_info") or {}
            total, pages = info.get("total_count"), info.get("total_pages")
            if not items or (isinstance(total, int) and seen >= total):
                return
            if isinstance(pages, int) and page >= pages:
                return
            if not isinstance(total, int) and len(items) < int(info.get("per_page") or per_page):
                return

    async def _send(
        self, method: str, path: str, json: Any, params: Any, missing_ok: bool, idempotent: bool
    ) -> dict[str, Any] | None:
        retry, what = self._retry, f"{method} {path}"
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        for attempt in range(retry.attempts):
            last = attempt == retry.attempts - 1
            try:
                response = await self._request(method, path, json, params, headers)
            except httpx.TransportError as exc:
                if last or not (idempotent or isinstance(exc, _NEVER_SENT)):
                    raise ProviderUnavailable(
                        f"Cloudflare {what} failed: {type(exc).__name__}", delay=retry.unavailable_delay
                    ) from exc
                log.info("Cloudflare %s: %s, retrying", what, type(exc).__name__)
                await retry.sleep(retry.backoff(attempt))
                continue
            status, envelope = response.status_code, _envelope(response)
            if response.is_success and envelope is not None and envelope.get("success") is not False:
                return envelope
            errors = self._errors(envelope)
            if status == 404 and missing_ok:
                return None
            if _is_quota(status, errors):
                quota = QuotaExceeded(f"Cloudflare quota reached ({_describe(errors)})", delay=QUOTA_DELAY)
                raise quota from _status_error(response)
            if status == 429:
                wait = _retry_after(response, retry.default_retry_after)
                self.budget.hold(wait)
                if last or wait > self.budget.max_wait:
                    raise RateLimited(
                        f"Cloudflare throttled {what} (HTTP 429); all calls with this token wait {wait:.0f}s",
                        delay=max(1.0, wait),
                    ) from _status_error(response)
                log.info("Cloudflare throttled %s; holding all calls on this budget for %.1fs", what, wait)
                continue  # the next acquire() waits out the hold
            garbled = response.is_success and envelope is None
            if (status >= 500 or status in _RETRY_STATUSES or garbled) and not last and idempotent:
                log.info("Cloudflare %s: HTTP %s, retrying", what, status)
                await retry.sleep(retry.backoff(attempt))
                continue
            raise self._translate(what, status, errors) from _status_error(response)
        raise AssertionError("unreachable: the last attempt always returns or raises")  # pragma: no cover

    async def _request(
        self, method: str, path: str, json: Any, params: Any, headers: dict[str, str]
    ) -> httpx.Response:
        """One request, counted on the budget from when it is let through until its answer is in."""
        slot = await self.budget.acquire()
        try:
            return await self._client.request(
                method, self.base_url + path, json=json, params=params, headers=headers
            )
        finally:
            self.budget.settle(slot)

    def _translate(self, what: str, status: int, errors: list[tuple[int, str]]) -> Exception:
        codes = {code for code, _ in errors}
        garbled = 200 <= status < 300 and not errors
        if status >= 500 or status in _RETRY_STATUSES or garbled or codes & _UNAVAILABLE_CODES:
            return ProviderUnavailable(
                f"Cloudflare {what} failed (HTTP {status}; {_describe(errors)})",
                delay=self._retry.unavailable_delay,
            )
        if self._token and (status == 401 or codes & _AUTH_CODES):
            return ProviderRejected(
                f"Cloudflare refused the parent API token on {what} (HTTP {status}; {_describe(errors)}): it "
                "is invalid, expired or revoked, or lacks a permission this needs (Account API Tokens Write "
                "plus every permission it grants); fix the token in the apiTokenSecretRef Secret"
            )
        return ProviderRejected(f"Cloudflare rejected {what} (HTTP {status}; {_describe(errors)})")

    def _errors(self, envelope: dict[str, Any] | None) -> list[tuple[int, str]]:
        """(code, scrubbed message) pairs from the envelope; never the token, never more than 300 chars."""
        out = []
        for item in (envelope or {}).get("errors") or []:
            if isinstance(item, dict):
                code = item.get("code")
                message = str(item.get("message", ""))
                if self._token:
                    message = message.replace(self._token, "[redacted]")
                message = _SECRETISH.sub("[redacted]", message)[:300]
                out.append((code if isinstance(code, int) else 0, message))
        return out


def status_of(exc: BaseException) -> int | None:
    """The HTTP status of the Cloudflare answer an error from this module was translated from, if any."""
    response = getattr(exc.__cause__, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def scrub(text: str, limit: int = 300) -> str:
    """Text from Cloudflare made safe to show: anything that looks like a token value redacted, capped."""
    return _SECRETISH.sub("[redacted]", text)[:limit]


def pick(result: Any, what: str, *keys: str) -> Any:
    """`result[k1][k2]...`, or ProviderUnavailable naming the missing field (never echoing values)."""
    value = result
    for depth, key in enumerate(keys):
        if not isinstance(value, dict) or value.get(key) in (None, ""):
            raise ProviderUnavailable(f"Cloudflare answered {what} without {'.'.join(keys[: depth + 1])}")
        value = value[key]
    return value


def _envelope(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _is_quota(status: int, errors: list[tuple[int, str]]) -> bool:
    if any(code in _QUOTA_CODES for code, _ in errors):
        return True
    return status in (400, 403, 409, 429) and any(_QUOTA_TEXT.search(message) for _, message in errors)


def _describe(errors: list[tuple[int, str]]) -> str:
    if not errors:
        return "no error details"
    return "; ".join(f"code {code}: {message}" for code, message in errors[:3])


def _retry_after(response: httpx.Response, default: float) -> float:
    try:
        return min(_MAX_RETRY_AFTER, max(0.0, float(response.headers.get("retry-after", ""))))
    except ValueError:
        return default


def _status_error(response: httpx.Response) -> httpx.HTTPStatusError:
    """An httpx error to chain from (its message names the URL only, never headers)."""
    try:
        response.raise_for_status()
    except httpx.HTTPStatusError as exc:
        return exc
    return httpx.HTTPStatusError(
        "unsuccessful Cloudflare envelope", request=response.request, response=response
    )
