"""Cloudflare error translation, retries, the 429 hold and pagination (httpx.MockTransport, no network)."""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from agentaccounts.errors import (
    AgentAccountsError,
    ProviderRejected,
    ProviderUnavailable,
    QuotaExceeded,
    RateLimited,
)
from agentaccounts.providers.cloudflare.api import CloudflareAPI, RetryPolicy, pick
from agentaccounts.providers.cloudflare.budget import RequestBudget
from unit.fakes import VirtualTime

TOKEN = "cfat_PARENTsecretPARENTsecretPARENTsecret1234abcd"
BASE = "https://cf.test/client/v4"
Handler = Callable[[httpx.Request], httpx.Response]


def fail(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"success": False, "errors": [{"code": code, "message": message}], "messages": [], "result": None}
    return httpx.Response(status, json=body, headers=headers)


def ok(result: Any, info: dict[str, Any] | None = None) -> httpx.Response:
    body: dict[str, Any] = {"success": True, "errors": [], "messages": [], "result": result}
    if info is not None:
        body["result_info"] = info
    return httpx.Response(200, json=body)


class Rig:
    """A CloudflareAPI over a scripted transport, with virtual time for the budget and the backoff."""

    def __init__(self, client: httpx.AsyncClient, vt: VirtualTime, budget: RequestBudget) -> None:
        self.client, self.vt, self.budget = client, vt, budget
        self.seen: list[tuple[float, str, str]] = []
        self.handler: Handler = lambda request: ok(None)

    def api(self, token: str | None = TOKEN) -> CloudflareAPI:
        retry = RetryPolicy(sleep=self.vt.sleep, random=lambda: 1.0)
        return CloudflareAPI(self.client, BASE, token, self.budget, retry)

    def serve(self, *responses: httpx.Response | Exception) -> None:
        queue = list(responses)

        def handler(request: httpx.Request) -> httpx.Response:
            item = queue.pop(0) if len(queue) > 1 else queue[0]
            if isinstance(item, Exception):
                raise item
            return item

        self.handler = handler


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    vt = VirtualTime()
    budget = RequestBudget(limit=1000, window=300.0, max_wait=10.0, clock=vt.clock, sleep=vt.sleep)
    holder: list[Rig] = []

    def route(request: httpx.Request) -> httpx.Response:
        current = holder[0]
        current.seen.append((current.vt.now, request.method, request.url.path))
        return current.handler(request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(route)) as client:
        holder.append(Rig(client, vt, budget))
        yield holder[0]


TABLE: list[tuple[str, httpx.Response, type[AgentAccountsError], str]] = [
    ("401", fail(401, 1000, "Invalid API Token"), ProviderRejected, "parent API token"),
    ("403 auth", fail(403, 10000, "Authentication error"), ProviderRejected, "parent API token"),
    ("403 9109", fail(403, 9109, "Invalid access token"), ProviderRejected, "parent API token"),
    ("400 headers", fail(400, 6003, "Invalid request headers"), ProviderRejected, "code 6003"),
    ("403 exceeds parent", fail(403, 1005, "grants more than the caller"), ProviderRejected, "code 1005"),
    ("404 get", fail(404, 1003, "Token not found"), ProviderRejected, "HTTP 404"),
    ("quota code", fail(400, 1004, "limit reached"), QuotaExceeded, "code 1004"),
    ("quota text", fail(400, 1002, "Maximum number of API tokens reached (500)"), QuotaExceeded, "500"),
    ("preview exhausted", fail(400, 1040, "no temporary accounts remaining"), QuotaExceeded, "1040"),
    ("provisioning down", fail(400, 1041, "provisioning unavailable"), ProviderUnavailable, "1041"),
    ("5xx", fail(502, 10001, "bad gateway"), ProviderUnavailable, "HTTP 502"),
    ("not json", httpx.Response(503, text="<html>oops</html>"), ProviderUnavailable, "no error details"),
]


@pytest.mark.parametrize(("response", "error", "text"), [row[1:] for row in TABLE], ids=[r[0] for r in TABLE])
async def test_error_translation(
    rig: Rig, response: httpx.Response, error: type[Exception], text: str
) -> None:
    rig.serve(response)
    with pytest.raises(error) as caught:
        await rig.api().call("GET", "/accounts/a/tokens/t")
    assert text in str(caught.value)
    assert isinstance(caught.value.__cause__, httpx.HTTPStatusError)  # raise ... from exc
    if isinstance(caught.value, QuotaExceeded):
        assert caught.value.delay == 60.0


async def test_success_returns_result(rig: Rig) -> None:
    rig.serve(ok({"id": "t1"}))
    assert await rig.api().call("GET", "/x") == {"id": "t1"}
    assert rig.seen == [(0.0, "GET", "/client/v4/x")]


async def test_404_on_delete_is_success(rig: Rig) -> None:
    rig.serve(fail(404, 1003, "not found"))
    assert await rig.api().call("DELETE", "/accounts/a/tokens/t", missing_ok=True) is None


async def test_auth_header_only_with_a_token(rig: Rig) -> None:
    headers: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        headers.append(request.headers.get("authorization"))
        return ok({})

    rig.handler = handler
    await rig.api().call("GET", "/x")
    await rig.api(token=None).call("POST", "/provisioning/previews/challenge", json={})
    assert headers == [f"Bearer {TOKEN}", None]


async def test_5xx_is_retried_with_backoff_then_unavailable(rig: Rig) -> None:
    rig.serve(fail(500, 10001, "internal"))
    with pytest.raises(ProviderUnavailable) as caught:
        await rig.api().call("GET", "/x")
    assert len(rig.seen) == 4
    assert rig.vt.slept == [0.5, 1.0, 2.0]  # full jitter with random()=1: the upper bounds
    assert caught.value.delay == 30.0


@pytest.mark.parametrize("status", [408, 409, 500, 503])
async def test_transient_failure_then_success(rig: Rig, status: int) -> None:
    rig.serve(fail(status, 10001, "flaky"), ok({"id": "t"}))
    assert await rig.api().call("PUT", "/x", json={}) == {"id": "t"}
    assert len(rig.seen) == 2


async def test_timeouts_and_dropped_connections_are_retried(rig: Rig) -> None:
    rig.serve(httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("dropped"), ok([]))
    assert await rig.api().call("GET", "/x") == []
    rig.serve(httpx.ReadTimeout("slow"))
    with pytest.raises(ProviderUnavailable, match="ReadTimeout") as caught:
        await rig.api().call("GET", "/x")
    assert isinstance(caught.value.__cause__, httpx.ReadTimeout)


async def test_create_is_not_resent_when_cloudflare_may_have_acted(rig: Rig) -> None:
    rig.serve(fail(500, 10001, "internal"))
    with pytest.raises(ProviderUnavailable):
        await rig.api().call("POST", "/accounts/a/tokens", json={})
    rig.serve(httpx.ReadTimeout("slow"))
    with pytest.raises(ProviderUnavailable):
        await rig.api().call("POST", "/accounts/a/tokens", json={})
    assert len(rig.seen) == 2  # one attempt each
    rig.serve(httpx.ConnectError("refused"), ok({"id": "t"}))  # never reached Cloudflare: safe to resend
    assert await rig.api().call("POST", "/accounts/a/tokens", json={}) == {"id": "t"}


async def test_backoff_is_capped() -> None:
    assert RetryPolicy(random=lambda: 1.0).backoff(20) == 8.0
    assert RetryPolicy(random=lambda: 0.0).backoff(3) == 0.0


async def test_429_holds_every_call_on_the_budget_then_succeeds(rig: Rig) -> None:
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            return fail(
                429, 971, "Please wait and consider throttling your request speed", {"retry-after": "5"}
            )
        return ok({"path": request.url.path})

    rig.handler = handler
    first = asyncio.create_task(rig.api().call("GET", "/a"))
    for _ in range(100):
        if rig.budget.held_for() > 0:
            break
        await asyncio.sleep(0)
    assert rig.budget.held_for() == 5.0
    other = asyncio.create_task(rig.api().call("GET", "/b"))  # another account, same parent token
    assert await first == {"path": "/client/v4/a"}
    assert await other == {"path": "/client/v4/b"}
    times = {path: when for when, _, path in rig.seen[1:]}
    assert times["/client/v4/a"] >= 5.0 and times["/client/v4/b"] >= 5.0


async def test_long_429_raises_rate_limited_and_holds_other_callers(rig: Rig) -> None:
    rig.serve(fail(429, 971, "throttled", {"retry-after": "300"}))
    with pytest.raises(RateLimited) as caught:
        await rig.api().call("GET", "/a")
    assert caught.value.delay == 300.0
    with pytest.raises(RateLimited):
        await rig.api().call("GET", "/b")  # never sent: the whole budget is held
    assert len(rig.seen) == 1


async def test_repeated_429_ends_in_rate_limited(rig: Rig) -> None:
    rig.serve(fail(429, 971, "throttled", {"retry-after": "1"}))
    with pytest.raises(RateLimited):
        await rig.api().call("GET", "/a")
    assert len(rig.seen) == 4


async def test_pagination_follows_result_info(rig: Rig) -> None:
    items = [{"id": str(i)} for i in range(120)]

    def handler(request: httpx.Request) -> httpx.Response:
        page, per_page = int(request.url.params["page"]), int(request.url.params["per_page"])
        chunk = items[(page - 1) * per_page : page * per_page]
        return ok(chunk, {"page": page, "per_page": per_page, "count": len(chunk), "total_count": 120})

    rig.handler = handler
    got = [item async for item in rig.api().pages("/accounts/a/tokens")]
    assert got == items
    assert len(rig.seen) == 3


async def test_pagination_stops_when_the_server_ignores_paging(rig: Rig) -> None:
    rig.serve(ok([{"id": "1"}] * 50, {"page": 1, "per_page": 50, "total_pages": 1}))
    assert len([item async for item in rig.api().pages("/x")]) == 50
    rig.serve(ok([{"id": "1"}, {"id": "2"}]))  # no result_info, short page
    assert len([item async for item in rig.api().pages("/x")]) == 2
    assert len(rig.seen) == 2


async def test_no_secret_in_messages_tracebacks_or_logs(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    echoed = f"bad token {TOKEN}; Authorization: Bearer {TOKEN}; other cfat_abcdef0123456789"
    errors: list[BaseException] = []
    for response in (fail(403, 10000, echoed), fail(400, 1002, echoed), fail(500, 10001, echoed)):
        rig.serve(response)
        with pytest.raises(AgentAccountsError) as caught:
            await rig.api().call("GET", "/accounts/a/tokens")
        errors.append(caught.value)
    rig.serve(fail(429, 971, echoed, {"retry-after": "999"}))
    with pytest.raises(RateLimited) as limited:
        await rig.api().call("GET", "/x")
    errors.append(limited.value)
    for error in errors:
        text = "".join(traceback.format_exception(error))
        assert TOKEN not in text and "cfat_abcdef" not in text
        assert "[redacted]" in str(error) or isinstance(error, RateLimited)
    assert TOKEN not in caplog.text
    assert all(TOKEN not in str(record.args) for record in caplog.records)


def test_pick_names_the_missing_field_without_values() -> None:
    assert pick({"a": {"b": 1}}, "x", "a", "b") == 1
    with pytest.raises(ProviderUnavailable, match=r"answered token create without account\.apiToken"):
        pick({"account": {"id": "1", "secret": "s3cr3t"}}, "token create", "account", "apiToken")


async def test_429_without_retry_after_uses_the_default(rig: Rig) -> None:
    rig.serve(fail(429, 971, "throttled"))
    with pytest.raises(RateLimited) as caught:
        await rig.api().call("GET", "/x")
    assert caught.value.delay == RetryPolicy().default_retry_after


async def test_garbled_success_is_retried_then_unavailable(rig: Rig) -> None:
    rig.serve(httpx.Response(200, text="not json"), ok({"id": "t"}))
    assert await rig.api().call("GET", "/x") == {"id": "t"}
    rig.serve(httpx.Response(200, text="not json"))
    with pytest.raises(ProviderUnavailable, match="HTTP 200"):
        await rig.api().call("POST", "/x", json={})
