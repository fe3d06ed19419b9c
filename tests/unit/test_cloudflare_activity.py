"""The Cloudflare provider's `activity()` against the emulator's audit log: what a token wrote between
two moments, paged by cursor; a parent without Account Settings Read gives an empty, incomplete trail
whose note says so; throttling and 5xx raise TemporaryError; nothing a credential ever shows."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from agentaccounts.errors import TemporaryError
from agentaccounts.models import AccountRef
from agentaccounts.providers.base import ProviderActivity, ReportsActivity
from agentaccounts.providers.cloudflare import activity as activity_module
from agentaccounts.providers.cloudflare.api import RetryPolicy
from agentaccounts.providers.cloudflare.budget import RequestBudget
from agentaccounts.providers.cloudflare.provider import CloudflareProvider
from agentaccounts.providers.cloudflare.spec import CloudflareBlock
from cfemulator import Emulator
from cfemulator.fixtures import PARENT_PERMISSIONS, Parent, mint_parent
from cfemulator.helpers import bearer
from cfemulator.schema import assert_exchanges_valid

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


def _provider(
    emu: Emulator, parent: Parent, http: httpx.AsyncClient, budget: RequestBudget | None = None
) -> CloudflareProvider:
    block = CloudflareBlock.model_validate({"accountId": parent.account, "apiBaseURL": emu.base_url})
    retry = RetryPolicy(attempts=2, sleep=_no_sleep)
    return CloudflareProvider.create(block, parent.value, http, budget or RequestBudget(), retry=retry)


def _agent(emu: Emulator, account: str, name: str = "agentaccounts/ns/agent/uid-1") -> tuple[str, AccountRef]:
    value = emu.mint_token(account, ["Workers KV Storage Write", "DNS Write", "D1 Read"], name=name)
    token_id = emu.token_id(value)
    assert token_id is not None
    return value, AccountRef(kind=KIND, id=token_id, name=name)


async def _writes(http: httpx.AsyncClient, emu: Emulator, account: str, zone: str, agent: str) -> None:
    """Three allowed writes, two reads, one refused write."""
    h, base = bearer(agent), emu.base_url
    for title in ("one", "two"):
        created = await http.post(
            f"{base}/accounts/{account}/storage/kv/namespaces", json={"title": title}, headers=h
        )
        assert created.is_success
    assert (await http.get(f"{base}/accounts/{account}/storage/kv/namespaces", headers=h)).is_success
    assert (await http.get(f"{base}/accounts/{account}/d1/database", headers=h)).is_success
    record = {"type": "TXT", "name": "agent", "content": "hello"}
    assert (await http.post(f"{base}/zones/{zone}/dns_records", json=record, headers=h)).is_success
    refused = await http.post(f"{base}/accounts/{account}/d1/database", json={"name": "db"}, headers=h)
    assert refused.status_code == 403


def _window() -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    return now - timedelta(minutes=1), now + timedelta(minutes=1)


async def test_the_token_s_writes_in_order_and_nothing_else(emu: Emulator, http: httpx.AsyncClient) -> None:
    parent = mint_parent(emu)
    zone = emu.add_zone(parent.account, "example.org")
    agent, ref = _agent(emu, parent.account)
    other, _ = _agent(emu, parent.account, "agentaccounts/ns/other/uid-2")
    since = datetime.now(UTC)
    await _writes(http, emu, parent.account, zone, agent)
    await _writes(http, emu, parent.account, zone, other)  # another agent's writes are not this one's
    provider = _provider(emu, parent, http)
    reports: ReportsActivity = provider  # the reconciler asks hasattr(provider, "activity")
    assert hasattr(provider, "activity")

    trail = await reports.activity(ref, since, datetime.now(UTC))
    assert trail.complete
    assert [(e.verb, e.resource, e.code) for e in trail.entries] == [
        ("create", "kv_namespaces", 200),
        ("create", "kv_namespaces", 200),
        ("create", "dns_records", 200),
    ]  # reads and the refused write are not in Cloudflare's log
    names = [n["id"] for n in emu.store.accounts[parent.account].collections["kv"][:2]]
    assert [e.name for e in trail.entries[:2]] == names
    assert trail.entries[2].namespace == "example.org" and trail.entries[0].namespace == ""
    audit_ids = {logged.entry["id"] for logged in emu.store.audit}
    assert {e.audit_id for e in trail.entries} <= audit_ids and len({e.audit_id for e in trail.entries}) == 3
    times = [datetime.fromisoformat(e.time.replace("Z", "+00:00")) for e in trail.entries]
    assert times == sorted(times) and all(since.replace(microsecond=0) <= t for t in times)
    assert "not reads" in trail.note and "refused attempts" in trail.note
    assert_exchanges_valid(emu.requests)  # what the provider sent and got fits the official schema
    sent = [e for e in emu.requests if e.path.endswith("/logs/audit")]
    assert (
        len(sent) == 1 and sent[0].query["actor_token_id"] == ref.id and sent[0].query["direction"] == "asc"
    )
    _assert_no_secret(trail, parent.value, agent, other)


async def test_the_window_is_since_to_before(emu: Emulator, http: httpx.AsyncClient) -> None:
    parent = mint_parent(emu)
    zone = emu.add_zone(parent.account)
    agent, ref = _agent(emu, parent.account)
    await _writes(http, emu, parent.account, zone, agent)
    provider = _provider(emu, parent, http)
    long_ago = datetime.now(UTC) - timedelta(days=3)
    before_the_writes = await provider.activity(ref, long_ago, long_ago + timedelta(hours=1))
    assert before_the_writes.complete and before_the_writes.entries == []
    since, before = _window()
    assert len((await provider.activity(ref, since, before)).entries) == 3
    empty = await provider.activity(ref, before, since)  # an empty window costs no request
    assert empty.complete and empty.entries == [] and len([e for e in emu.requests if "logs" in e.path]) == 2


async def test_many_writes_are_read_page_by_page(
    emu: Emulator, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(activity_module, "PAGE_LIMIT", 4)
    parent = mint_parent(emu)
    agent, ref = _agent(emu, parent.account)
    for i in range(10):
        response = await http.post(
            f"{emu.base_url}/accounts/{parent.account}/storage/kv/namespaces",
            json={"title": f"n{i}"},
            headers=bearer(agent),
        )
        assert response.is_success
    provider = _provider(emu, parent, http)
    trail = await provider.activity(ref, *_window())
    titles = {n["id"]: n["title"] for n in emu.store.accounts[parent.account].collections["kv"]}
    assert trail.complete and [titles[e.name] for e in trail.entries] == [f"n{i}" for i in range(10)]
    assert len([e for e in emu.requests if e.path.endswith("/logs/audit")]) == 3  # 4 + 4 + 2

    monkeypatch.setattr(activity_module, "MAX_PAGES", 2)
    cut = await provider.activity(ref, *_window())
    assert not cut.complete and len(cut.entries) == 8 and "Only the first 8 entries" in cut.note


async def test_a_parent_without_account_settings_read_gets_an_empty_incomplete_trail(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    perms = [p for p in PARENT_PERMISSIONS if p != "Account Settings Read"]
    parent = mint_parent(emu, permissions=perms)
    agent, ref = _agent(emu, parent.account)
    await _writes(http, emu, parent.account, emu.add_zone(parent.account), agent)
    trail = await _provider(emu, parent, http).activity(ref, *_window())
    assert trail.entries == [] and not trail.complete
    assert "Account Settings Read" in trail.note and "HTTP 403" in trail.note and "empty" in trail.note
    _assert_no_secret(trail, parent.value, agent)


async def test_throttling_and_outages_are_temporary(emu: Emulator, http: httpx.AsyncClient) -> None:
    parent = mint_parent(emu)
    _, ref = _agent(emu, parent.account)
    provider = _provider(emu, parent, http, RequestBudget(max_wait=0.0))
    emu.faults.error_rate, emu.faults.error_status = 1.0, 503
    with pytest.raises(TemporaryError) as outage:
        await provider.activity(ref, *_window())
    assert outage.value.reason == "ProviderUnavailable"
    emu.faults.clear()
    emu.faults.force_429(30)
    with pytest.raises(TemporaryError) as throttled:
        await provider.activity(ref, *_window())
    assert throttled.value.reason == "RateLimited" and parent.value not in str(throttled.value)


async def test_what_is_not_a_recorded_token_reads_nothing(emu: Emulator, http: httpx.AsyncClient) -> None:
    parent = mint_parent(emu)
    provider = _provider(emu, parent, http)
    for ref in (AccountRef(kind=KIND), AccountRef(kind="ServiceAccount", id="x")):
        trail = await provider.activity(ref, *_window())
        assert trail.entries == [] and not trail.complete and "No Cloudflare token is recorded" in trail.note
    assert not [e for e in emu.requests if "logs" in e.path]
    temporary = CloudflareProvider.create(
        CloudflareBlock.model_validate({"mode": "temporaryAccount", "apiBaseURL": emu.base_url}),
        None,
        http,
        RequestBudget(),
    )
    trail = await temporary.activity(AccountRef(kind="CloudflareTemporaryAccount", id="a"), *_window())
    assert not trail.complete and "temporary account" in trail.note


async def test_a_forged_ref_shows_no_other_token_s_writes(emu: Emulator, http: httpx.AsyncClient) -> None:
    """status is writable by others: an id of another token under our name shows nothing of it."""
    parent = mint_parent(emu)
    zone = emu.add_zone(parent.account)
    victim, victim_ref = _agent(emu, parent.account, "agentaccounts/ns/victim/uid-9")
    await _writes(http, emu, parent.account, zone, victim)
    forged = AccountRef(kind=KIND, id=victim_ref.id, name="agentaccounts/ns/thief/uid-1")
    trail = await _provider(emu, parent, http).activity(forged, *_window())
    assert trail.entries == [] and trail.complete


def _transport_pages(pages: list[dict[str, Any]]) -> httpx.MockTransport:
    answers = iter(pages)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=next(answers))

    return httpx.MockTransport(handler)


async def test_an_empty_cursor_ends_the_pages_and_odd_entries_are_tolerated() -> None:
    token = "0123456789abcdef0123456789abcdef"
    good = {
        "id": "e1",
        "action": {"type": "delegated_write", "time": "2026-01-01T00:00:01Z", "result": "success"},
        "actor": {"token_id": token, "context": "api", "type": "delegated_service"},  # newer enum values
        "resource": {"product": "Workers KV"},
        "raw": {"status_code": "200"},
    }
    pages = [
        {
            "success": True,
            "errors": [],
            "result": [good, {"actor": {"token_id": "other"}}, "junk"],
            "result_info": {"count": "3", "cursor": "c1"},
        },
        {
            "success": True,
            "errors": [],
            "result": [
                good | {"id": "e2", "action": {}},
                good | {"id": "e3", "action": {"time": "yesterday"}},
                good | {"id": "e4", "action": {"type": "update", "time": "2026-01-01T02:00:02.5+02:00"}},
            ],
            "result_info": {"count": "1", "cursor": ""},
        },
    ]
    async with httpx.AsyncClient(transport=_transport_pages(pages)) as client:
        block = CloudflareBlock.model_validate(
            {"accountId": "a" * 32, "apiBaseURL": "http://127.0.0.1:1/client/v4"}
        )
        provider = CloudflareProvider.create(block, "cfat_" + "x" * 48, client, RequestBudget())
        new_year = datetime(2026, 1, 1, tzinfo=UTC)
        window = (new_year - timedelta(hours=1), new_year + timedelta(hours=1))
        trail = await provider.activity(AccountRef(kind=KIND, id=token), *window)
    assert trail.complete
    assert [(e.verb, e.resource, e.code, e.audit_id) for e in trail.entries] == [
        ("delegated_write", "Workers KV", 0, "e1"),
        ("update", "Workers KV", 0, "e4"),
    ]  # the foreign and the malformed entries are dropped, as are those without a usable time
    assert [e.time for e in trail.entries] == ["2026-01-01T00:00:01Z", "2026-01-01T00:00:02Z"]


def _assert_no_secret(trail: ProviderActivity, *secrets: str) -> None:
    text = json.dumps([asdict(e) for e in trail.entries]) + trail.note
    assert not [s for s in secrets if s in text] and "cfat_" not in text
