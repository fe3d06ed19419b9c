"""The v4 response envelope and every error code the emulator answers with.

Why a module of its own: the codes are the contract the provider's error translation is tested
against, so they live in one table with the reason each was chosen. Codes marked "observed" were
seen in real Cloudflare responses (README, public bug reports); codes marked "pick" are the
emulator's plausible guesses where Cloudflare documents none — tests should key on the HTTP status
first and treat these codes as informative.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

# --- observed ---------------------------------------------------------------------------------------
INVALID_API_TOKEN = 1000  # 401 on .../tokens/verify for an unknown/unusable token: "Invalid API Token"
INVALID_HEADERS = 6003  # 400 "Invalid request headers", error_chain 6111 (malformed Authorization)
MALFORMED_JSON = 6007  # 400 "Malformed JSON in request body"
NO_ROUTE = 7003  # 404 "No route for that URI"
METHOD_NOT_ALLOWED = 7001  # 405 "Method not allowed for this endpoint"
THROTTLED = 971  # 429 rate limited (per-token 1200/5 min, then 5-minute block)
MISSING_AUTH = 9106  # 400 "Missing X-Auth-Key, X-Auth-Email or Authorization headers"
UNAUTHORIZED = 9109  # 403 "Invalid access token" / "Unauthorized to access requested resource"
AUTH_ERROR = 10000  # 403 "Authentication error": inactive token, or no permission on the resource
R2_NO_SUCH_BUCKET = 10006  # 404 "The specified bucket does not exist."

# --- picks (UNCONFIRMED real codes) -------------------------------------------------------------------
VALIDATION = 1002  # 400 request body/query invalid (name > 120, unknown permission group, bad dates, ...)
NOT_FOUND = 1003  # 404 token (or other object) id not found in this account
QUOTA = 1004  # 400 account already holds token_quota (500) account-owned tokens
EXCEEDS_PARENT = 1005  # 403 new policies grant more than the calling token holds
INTERNAL = 10001  # 5xx injected by the fault knobs
PREVIEW_TERMS = 1031  # 400 terms of service / privacy policy not accepted
PREVIEW_CHALLENGE = 1032  # 400 challenge token unknown, expired or already used
PREVIEW_SOLUTION = 1033  # 400 proof-of-work checkpoints wrong
# observed range "event-code errors 1035-1041"; the exact meaning of 1035 is a pick
EVENT_CODE_INVALID = 1035  # 400 unknown event code
EVENT_CODE_EXHAUSTED = 1040  # 400 "no temporary accounts remaining" for that event code
PROVISIONING_UNAVAILABLE = 1041  # 503 provisioning unavailable


class ApiError(Exception):
    """Raised anywhere in a handler; the app middleware turns it into a failure envelope."""

    def __init__(
        self,
        status: int,
        code: int | None,  # None: the error carries no code (the audit-log v2 schema has none)
        message: str,
        *,
        headers: dict[str, str] | None = None,
        error_chain: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.error_chain = error_chain


def success(
    result: Any, *, result_info: dict[str, Any] | None = None, messages: list[Any] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"success": True, "errors": [], "messages": messages or [], "result": result}
    if result_info is not None:
        body["result_info"] = result_info
    return body


def failure(
    code: int | None, message: str, error_chain: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {"message": message} if code is None else {"code": code, "message": message}
    if error_chain:
        error["error_chain"] = error_chain
    return {"success": False, "errors": [error], "messages": [], "result": None}


def ok(result: Any, **kwargs: Any) -> web.Response:
    return web.json_response(success(result, **kwargs))


def error_response(exc: ApiError) -> web.Response:
    return web.json_response(
        failure(exc.code, exc.message, exc.error_chain), status=exc.status, headers=exc.headers
    )


def invalid(message: str) -> ApiError:
    return ApiError(400, VALIDATION, message)
