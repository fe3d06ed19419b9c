"""Concurrent audit-log reads share requests (activity.Coalescer): a burst of revocations costs one
request per page, not one per account; each caller still gets exactly its own token's entries in its own
window; different parent tokens never share; errors and cancellation reach the right callers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from agentaccounts.errors import TemporaryError
from agentaccounts.models import AccountRef
from agentaccounts.providers.base import ProviderActivity
from agentaccounts.providers.cloudflare.activity import Coalescer
from agentaccounts.providers.cloudflare.api import RetryPolicy
from agentaccounts.providers.cloudflare.budget import RequestBudget
from agentaccounts.providers.cloudflare.provider import CloudflareProvider
from agentaccounts.providers.cloudflare.spec import CloudflareBlock
from cfemulator import Emulator
from cfemulator.fixtures import PARENT_PERMISSIONS, Parent, mint_parent
from cfemulator.helpers import bearer

KIND = "CloudflareAPIToken"


async def _no_sleep(_: float) -> None:
    return None


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator() as emulator:
        yield emulator


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10.0) as client:
        yield client


def _provider(emu: Emulator, p: Parent, http: httpx.AsyncClient, coalescer: Coalescer) -> CloudflareProvider:
    """Built per use, as the operator builds providers; what is shared is the coalescer."""
    block = CloudflareBlock.model_validate({"accountId": p.account, "apiBaseURL": emu.base_url})
    retry = RetryPolicy(attempts=1, sleep=_no_sleep)
    return CloudflareProvider.create(block, p.value, http, RequestBudget(), retry=retry, coalescer=coalescer)


async def _agents(emu: Emulator, p: Parent, http: httpx.AsyncClient, count: int) -> list[AccountRef]:
    """`count` agent tokens, agent i having made i + 1 writes."""
    refs = []
    for i in range(count):
        name = f"agentaccounts/ns/agent-{i}/uid-{i}"
        value = emu.mint_token(p.account, ["Workers KV Storage Write"], name=name)
        refs.append(AccountRef(kind=KIND, id=emu.token_id(value) or "", name=name))
        for j in range(i + 1):
            response = await http.post(
                f"{emu.base_url}/accounts/{p.account}/storage/kv/namespaces",
                json={"title": f"a{i}-{j}"},
                headers=bearer(value),
            )
            assert response.is_success
    return refs


def _audit_reads(emu: Emulator) -> list[object]:
    return [e.query.get("actor_token_id") for e in emu.requests if e.path.endswith("/logs/audit")]


async def test_a_burst_of_reads_shares_requests_and_each_gets_its_own(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    p = mint_parent(emu)
    refs = await _agents(emu, p, http, 5)
    coalescer, now = Coalescer(), datetime.now(UTC)
    emu.faults.latency = 0.2  # the first read is still in flight when the others arrive
    trails = await asyncio.gather(
        *(
            _provider(emu, p, http, coalescer).activity(
                r, now - timedelta(minutes=1), now + timedelta(minutes=1)
            )
            for r in refs
        )
    )
    titles = {n["id"]: n["title"] for n in emu.store.accounts[p.account].collections["kv"]}
    for i, trail in enumerate(trails):
        assert trail.complete and [titles[e.name] for e in trail.entries] == [
            f"a{i}-{j}" for j in range(i + 1)
        ]
    reads = _audit_reads(emu)
    assert len(reads) == 2  # the first alone, then the four that waited for it, together
    assert reads[0] == refs[0].id and sorted(reads[1]) == sorted(r.id for r in refs[1:])  # type: ignore[arg-type]


async def test_each_caller_keeps_its_own_window(emu: Emulator, http: httpx.AsyncClient) -> None:
    p = mint_parent(emu)
    first, second = await _agents(emu, p, http, 2)
    coalescer, now = Coalescer(), datetime.now(UTC)
    emu.faults.latency = 0.2
    blocker = AccountRef(kind=KIND, id="f" * 32, name="agentaccounts/ns/x/uid-x")  # holds the line
    long_ago = now - timedelta(days=2)
    _, old, recent = await asyncio.gather(
        _provider(emu, p, http, coalescer).activity(blocker, long_ago, now),
        _provider(emu, p, http, coalescer).activity(first, long_ago, long_ago + timedelta(hours=1)),
        _provider(emu, p, http, coalescer).activity(
            second, now - timedelta(minutes=1), now + timedelta(minutes=1)
        ),
    )
    assert len(_audit_reads(emu)) == 2  # the old and the recent window went out as one query
    assert old.complete and old.entries == []  # its token's writes are outside its window
    assert len(recent.entries) == 2


async def test_different_parent_tokens_never_share(emu: Emulator, http: httpx.AsyncClient) -> None:
    p = mint_parent(emu)
    (ref,) = await _agents(emu, p, http, 1)
    blind_value = emu.mint_token(p.account, [x for x in PARENT_PERMISSIONS if x != "Account Settings Read"])
    blind = Parent(emu, p.account, blind_value, emu.token_id(blind_value) or "")
    coalescer, now = Coalescer(), datetime.now(UTC)
    emu.faults.latency = 0.2
    window = (now - timedelta(minutes=1), now + timedelta(minutes=1))
    seen, refused = await asyncio.gather(
        _provider(emu, p, http, coalescer).activity(ref, *window),
        _provider(emu, blind, http, coalescer).activity(ref, *window),
    )
    assert seen.complete and len(seen.entries) == 1
    assert not refused.complete and refused.entries == [] and "Account Settings Read" in refused.note


async def test_a_temporary_error_reaches_every_caller_of_the_batch(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    p = mint_parent(emu)
    refs = await _agents(emu, p, http, 3)
    coalescer, now = Coalescer(), datetime.now(UTC)
    emu.faults.latency, emu.faults.error_rate = 0.2, 1.0
    window = (now - timedelta(minutes=1), now + timedelta(minutes=1))
    results = await asyncio.gather(
        *(_provider(emu, p, http, coalescer).activity(r, *window) for r in refs), return_exceptions=True
    )
    assert all(isinstance(r, TemporaryError) for r in results), results
    emu.faults.clear()
    again = await _provider(emu, p, http, coalescer).activity(refs[2], *window)  # nothing left stuck
    assert again.complete and len(again.entries) == 3


async def test_cancelled_readers_leave_the_others_answered() -> None:
    """A caller cancelled while its request is in flight: those queued behind it, and those that were in
    its batch, are answered by the next request; nobody hangs."""
    release = asyncio.Event()  # never set: the first two requests hang until their callers are cancelled
    seen: list[list[str]] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(sorted(request.url.params.get_list("actor_token_id")))
        if len(seen) <= 2:
            await release.wait()
        return httpx.Response(
            200, json={"success": True, "errors": [], "result": [], "result_info": {"count": "0"}}
        )

    async def until(what: str, probe: Callable[[], bool]) -> None:
        for _ in range(10_000):  # poll scheduling points (not time), with a bound
            if probe():
                return
            await asyncio.sleep(0)
        raise AssertionError(f"never: {what}")

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        block = CloudflareBlock.model_validate(
            {"accountId": "a" * 32, "apiBaseURL": "http://127.0.0.1:1/client/v4"}
        )
        coalescer, now = Coalescer(), datetime.now(UTC)
        window = (now - timedelta(minutes=1), now)

        def read(token: str) -> asyncio.Task[ProviderActivity]:
            provider = CloudflareProvider.create(
                block, "cfat_" + "p" * 48, client, RequestBudget(), coalescer=coalescer
            )
            return asyncio.create_task(provider.activity(AccountRef(kind=KIND, id=token), *window))

        first = read("t1")
        await until("the first request", lambda: len(seen) == 1)
        second, third = read("t2"), read("t3")
        await until("both queued", lambda: sum(len(q) for q in coalescer._queues.values()) == 2)
        first.cancel()
        await until("the second request, for both", lambda: len(seen) == 2)
        second.cancel()  # its batch held t3 too: t3 goes back in line
        answer = await asyncio.wait_for(third, 5)
        assert answer.complete
        for task in (first, second):
            with pytest.raises(asyncio.CancelledError):
                await task
    assert seen == [["t1"], ["t2", "t3"], ["t3"]]
