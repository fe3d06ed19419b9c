"""Mode `token` against an in-memory Cloudflare (httpx.MockTransport): issue, adopt, revoke, sweep."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import traceback
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from agentaccounts.errors import (
    AgentAccountsError,
    InvalidSpec,
    NotPermitted,
    ObjectConflict,
    ProviderRejected,
    QuotaExceeded,
    UnknownPermission,
)
from agentaccounts.models import AccountRef, Scope
from agentaccounts.providers.base import IssueRequest
from agentaccounts.providers.cloudflare.api import RetryPolicy
from agentaccounts.providers.cloudflare.budget import RequestBudget
from agentaccounts.providers.cloudflare.provider import CloudflareProvider
from agentaccounts.providers.cloudflare.spec import CloudflareBlock
from agentaccounts.providers.cloudflare.tokens import CatalogCache, token_name

A = "0123456789abcdef0123456789abcdef"
PARENT = "cfat_PARENTparentPARENTparentPARENTparent0badc0de"
UID = "5c1b2f3e-9a8d-4c7b-b6a5-0f1e2d3c4b5a"
GROUPS = [
    {
        "id": "e086da7e2179491d91ee5f35b3ca210a",
        "name": "Workers Scripts Write",
        "scopes": ["com.cloudflare.api.account"],
    },
    {
        "id": "bf7481a1826f439697cb59a20b22293e",
        "name": "Workers R2 Storage Write",
        "scopes": ["com.cloudflare.api.account"],
    },
    {
        "id": "6a018a9f2fc74eb6b293b0c548f38b39",
        "name": "Workers R2 Storage Bucket Item Read",
        "scopes": ["com.cloudflare.edge.r2.bucket"],
    },
    {
        "id": "c8fed203ed3043cba015a93ad1616f1f",
        "name": "Zone Read",
        "scopes": ["com.cloudflare.api.account.zone"],
    },
]
RFC3339_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


class Clock:
    def __init__(self) -> None:
        self.t = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.t


class FakeCloudflare:
    """Just enough of /accounts/{id}/tokens, checking what the provider sends."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.tokens: dict[str, dict[str, Any]] = {}
        self.values: dict[str, str] = {}
        self.calls: list[tuple[str, str]] = []
        self.quota = 500

    def add(self, name: str, age: timedelta = timedelta(hours=1)) -> str:
        token_id = secrets.token_hex(16)
        issued = (self.clock() - age).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.tokens[token_id] = {
            "id": token_id,
            "name": name,
            "status": "active",
            "issued_on": issued,
            "policies": [],
        }
        return token_id

    def named(self, name: str) -> list[dict[str, Any]]:
        return [token for token in self.tokens.values() if token["name"] == name]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") != f"Bearer {PARENT}":
            return self.fail(403, 10000, "Authentication error")
        path = request.url.path.removeprefix("/client/v4")
        self.calls.append((request.method, path))
        match = re.fullmatch(rf"/accounts/{A}/tokens(?:/([^/]+))?(/value)?", path)
        assert match, path
        tail, method = match[1], request.method
        if match[2]:
            assert method == "PUT" and json.loads(request.content) == {} and tail in self.tokens
            self.values[tail] = "cfat_" + secrets.token_hex(24)
            return self.ok(self.values[tail])
        if tail == "permission_groups":
            return self.ok(GROUPS)
        if tail is None and method == "GET":
            page, per_page = int(request.url.params["page"]), int(request.url.params["per_page"])
            assert 5 <= per_page <= 50
            everything = sorted(self.tokens.values(), key=lambda t: t["id"])
            chunk = everything[(page - 1) * per_page : page * per_page]
            return self.ok(
                chunk,
                {"page": page, "per_page": per_page, "count": len(chunk), "total_count": len(everything)},
            )
        if tail is None and method == "POST":
            if len(self.tokens) >= self.quota:
                return self.fail(400, 1004, "account token quota reached (500)")
            body = self.check(json.loads(request.content))
            token_id = self.add(body["name"], age=timedelta(0))
            self.tokens[token_id].update(policies=body["policies"], expires_on=body["expires_on"])
            self.values[token_id] = "cfat_" + secrets.token_hex(24)
            return self.ok({**self.tokens[token_id], "value": self.values[token_id]})
        token = self.tokens.get(tail or "")
        if token is None:
            return self.fail(404, 1003, "Token not found")
        if method == "GET":
            return self.ok(token)
        if method == "PUT":
            body = self.check(json.loads(request.content))
            token.update(name=body["name"], policies=body["policies"], expires_on=body["expires_on"])
            return self.ok(token)
        assert method == "DELETE"
        del self.tokens[token["id"]]
        return self.ok({"id": token["id"]})

    @staticmethod
    def check(body: dict[str, Any]) -> dict[str, Any]:
        assert set(body) == {"name", "policies", "expires_on"}
        assert 0 < len(body["name"]) <= 120 and RFC3339_Z.match(body["expires_on"])
        known = {group["id"] for group in GROUPS}
        for policy in body["policies"]:
            assert policy["effect"] == "allow" and policy["resources"]
            assert {group["id"] for group in policy["permission_groups"]} <= known
        return body

    @staticmethod
    def ok(result: Any, info: dict[str, Any] | None = None) -> httpx.Response:
        body = {"success": True, "errors": [], "messages": [], "result": result}
        return httpx.Response(200, json=body | ({"result_info": info} if info else {}))

    @staticmethod
    def fail(status: int, code: int, message: str) -> httpx.Response:
        return httpx.Response(
            status,
            json={
                "success": False,
                "errors": [{"code": code, "message": message}],
                "messages": [],
                "result": None,
            },
        )


class Rig:
    def __init__(self, client: httpx.AsyncClient, clock: Clock, cf: FakeCloudflare) -> None:
        self.client, self.clock, self.cf = client, clock, cf
        self.budget = RequestBudget()
        self.catalogs = CatalogCache(timedelta(minutes=10), clock)
        self.recorded: list[AccountRef] = []

    def provider(self, token: str = PARENT) -> CloudflareProvider:
        block = CloudflareBlock.model_validate(
            {"accountId": A, "apiTokenSecretRef": {"name": "cf"}, "apiBaseURL": "https://cf.test/client/v4"}
        )
        return CloudflareProvider.create(
            block,
            token,
            self.client,
            self.budget,
            now=self.clock,
            retry=RetryPolicy(attempts=1),
            catalogs=self.catalogs,
        )

    async def record(self, ref: AccountRef) -> None:
        assert ref.id in self.cf.tokens, "recorded the moment the token exists"
        self.recorded.append(ref)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    clock = Clock()
    cf = FakeCloudflare(clock)
    async with httpx.AsyncClient(transport=httpx.MockTransport(cf)) as client:
        yield Rig(client, clock, cf)


def request(
    *scopes: tuple[list[str], list[str]],
    minutes: int = 60,
    existing: AccountRef | None = None,
    uid: str = UID,
) -> IssueRequest:
    return IssueRequest(
        namespace="team-a",
        name="agent",
        uid=uid,
        scopes=[Scope(permissions=p, resources=r) for p, r in scopes or [(["Workers Scripts Write"], [])]],
        expires_at=datetime(2030, 1, 1, 12, 0, 0, 500000, tzinfo=UTC) + timedelta(minutes=minutes),
        secret_name="agent-credentials",
        existing=existing,
    )


async def test_issue_creates_a_scoped_expiring_token(rig: Rig) -> None:
    provider = rig.provider()
    await provider.validate(request())
    issued = await provider.issue(request(), rig.record)
    name = f"agentaccounts/team-a/agent/{UID}"
    [token] = rig.cf.named(name)
    assert rig.recorded == [AccountRef(kind="CloudflareAPIToken", id=token["id"], name=name)]
    assert issued.account_ref == rig.recorded[0]
    assert issued.secret_data == {
        "CLOUDFLARE_API_TOKEN": rig.cf.values[token["id"]],
        "CLOUDFLARE_ACCOUNT_ID": A,
    }
    assert token["expires_on"] == "2030-01-01T13:00:00Z"
    assert token["policies"] == [
        {
            "effect": "allow",
            "permission_groups": [{"id": GROUPS[0]["id"]}],
            "resources": {f"com.cloudflare.api.account.{A}": "*"},
        }
    ]
    assert "2030-01-01T13:00:00Z" in issued.note
    assert provider.type == "cloudflare"


async def test_r2_scopes_add_s3_credentials(rig: Rig) -> None:
    scopes = (["Workers R2 Storage Bucket Item Read"], ["r2-bucket/eu/agent-logs"])
    issued = await rig.provider().issue(request(scopes), rig.record)
    data = issued.secret_data or {}
    token_id = rig.recorded[0].id
    assert data["AWS_ACCESS_KEY_ID"] == token_id
    assert data["AWS_SECRET_ACCESS_KEY"] == hashlib.sha256(rig.cf.values[token_id].encode()).hexdigest()
    assert data["AWS_ENDPOINT_URL_S3"] == data["R2_ENDPOINT"] == f"https://{A}.eu.r2.cloudflarestorage.com"
    plain = await rig.provider().issue(request(uid="other-uid-0000"), rig.record)
    assert set(plain.secret_data or {}) == {"CLOUDFLARE_API_TOKEN", "CLOUDFLARE_ACCOUNT_ID"}


async def test_reissue_updates_the_recorded_token_in_place(rig: Rig) -> None:
    provider = rig.provider()
    first = await provider.issue(request(), rig.record)
    rig.cf.calls.clear()
    again = await provider.issue(request(minutes=30, existing=first.account_ref), rig.record)
    assert again.secret_data is None and again.account_ref == first.account_ref
    assert rig.cf.tokens[first.account_ref.id]["expires_on"] == "2030-01-01T12:30:00Z"
    assert [method for method, _ in rig.cf.calls] == ["GET", "PUT"]
    assert len(rig.recorded) == 1


async def test_scope_edit_that_changes_r2_keys_rolls_the_value(rig: Rig) -> None:
    provider = rig.provider()
    first = await provider.issue(request(), rig.record)
    old_value = (first.secret_data or {})["CLOUDFLARE_API_TOKEN"]
    r2 = (["Workers R2 Storage Bucket Item Read"], ["r2-bucket/eu/agent-logs"])
    second = await provider.issue(request(r2, existing=first.account_ref), rig.record)
    data = second.secret_data or {}
    token_id = first.account_ref.id
    assert (
        second.account_ref.id == token_id
        and data["CLOUDFLARE_API_TOKEN"] == rig.cf.values[token_id] != old_value
    )
    assert data["AWS_SECRET_ACCESS_KEY"] == hashlib.sha256(rig.cf.values[token_id].encode()).hexdigest()
    assert data["R2_ENDPOINT"] == f"https://{A}.eu.r2.cloudflarestorage.com"
    same = await provider.issue(request(r2, minutes=5, existing=first.account_ref), rig.record)
    assert same.secret_data is None  # same R2 keys: nothing to roll
    back = await provider.issue(request(existing=first.account_ref), rig.record)
    assert set(back.secret_data or {}) == {"CLOUDFLARE_API_TOKEN", "CLOUDFLARE_ACCOUNT_ID"}
    assert len(rig.cf.tokens) == 1 and len(rig.recorded) == 1


async def test_recorded_token_gone_means_a_new_one(rig: Rig) -> None:
    gone = AccountRef(kind="CloudflareAPIToken", id="deadbeef" * 4, name="x")
    issued = await rig.provider().issue(request(existing=gone), rig.record)
    assert issued.secret_data is not None and issued.account_ref.id != gone.id
    assert len(rig.cf.tokens) == 1


async def test_unrecorded_token_with_our_name_is_replaced(rig: Rig) -> None:
    name = token_name("team-a", "agent", UID)
    leftover = rig.cf.add(name)  # a crash between create and record: its value is lost
    rig.cf.add("someone else's token")
    issued = await rig.provider().issue(request(), rig.record)
    assert leftover not in rig.cf.tokens
    assert [t["id"] for t in rig.cf.named(name)] == [issued.account_ref.id]
    assert len(rig.cf.tokens) == 2


async def test_recorded_id_of_a_foreign_token_is_a_conflict(rig: Rig) -> None:
    foreign = rig.cf.add("ci deploy token")
    with pytest.raises(ObjectConflict):
        await rig.provider().issue(
            request(existing=AccountRef(kind="CloudflareAPIToken", id=foreign)), rig.record
        )
    assert foreign in rig.cf.tokens


async def test_revoke_by_id_by_name_and_twice(rig: Rig) -> None:
    provider = rig.provider()
    issued = await provider.issue(request(), rig.record)
    await provider.revoke(request(), issued.account_ref)
    assert rig.cf.tokens == {}
    await provider.revoke(request(), issued.account_ref)  # 404: already gone is success
    orphan = rig.cf.add(token_name("team-a", "agent", UID))
    await provider.revoke(request(), None)  # nothing recorded: found by name
    assert orphan not in rig.cf.tokens
    await provider.revoke(request(), None)


async def test_revoke_never_deletes_a_forged_id_of_a_foreign_token(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    provider = rig.provider()
    ours = (await provider.issue(request(), rig.record)).account_ref.id
    parent = rig.cf.add("operator parent token")  # e.g. the parent token, or another agent's
    other = rig.cf.add(token_name("team-a", "other-agent", "another-uid-0000"))
    for victim in (parent, other):
        rig.cf.calls.clear()
        forged = AccountRef(kind="CloudflareAPIToken", id=victim, name=token_name("team-a", "agent", UID))
        await provider.revoke(request(), forged)
        assert victim in rig.cf.tokens and ours not in rig.cf.tokens
        # One GET to check the name, the list scan for our name, then the delete of what that found.
        expected = [("GET", f"/accounts/{A}/tokens/{victim}"), ("GET", f"/accounts/{A}/tokens")]
        assert rig.cf.calls == expected + (
            [("DELETE", f"/accounts/{A}/tokens/{ours}")] if victim == parent else []
        )
    assert "not deleting it" in caplog.text and PARENT not in caplog.text
    assert set(rig.cf.tokens) == {parent, other}


async def test_revoke_by_id_checks_the_name_with_one_get(rig: Rig) -> None:
    provider = rig.provider()
    ref = (await provider.issue(request(), rig.record)).account_ref
    rig.cf.calls.clear()
    await provider.revoke(request(), ref)
    assert rig.cf.calls == [
        ("GET", f"/accounts/{A}/tokens/{ref.id}"),
        ("DELETE", f"/accounts/{A}/tokens/{ref.id}"),
    ]
    rig.cf.calls.clear()
    await provider.revoke(request(), ref)  # 404 on the GET: gone is success, nothing deleted
    assert rig.cf.calls == [("GET", f"/accounts/{A}/tokens/{ref.id}")]


@pytest.mark.parametrize("bad_id", ["../../../zones/" + "a" * 32, "x/y", "%2e%2e", "a?b", ""])
async def test_an_id_that_is_no_token_id_never_reaches_a_url(rig: Rig, bad_id: str) -> None:
    provider = rig.provider()
    ours = (await provider.issue(request(), rig.record)).account_ref.id
    rig.cf.calls.clear()
    await provider.revoke(request(), AccountRef(kind="CloudflareAPIToken", id=bad_id))
    assert rig.cf.calls == [("GET", f"/accounts/{A}/tokens"), ("DELETE", f"/accounts/{A}/tokens/{ours}")]
    if bad_id:
        rig.cf.calls.clear()
        with pytest.raises(ObjectConflict, match="not a Cloudflare token id"):
            await provider.issue(
                request(existing=AccountRef(kind="CloudflareAPIToken", id=bad_id)), rig.record
            )
        assert all(path.endswith("/permission_groups") for _, path in rig.cf.calls)


@pytest.mark.parametrize(
    "permission",
    [
        "Account API Tokens Write",
        "account api tokens read",
        "Account Settings Read",
        "Memberships Write",
        "Billing Read",
    ],
)
async def test_never_grantable_groups_are_refused_before_any_request(rig: Rig, permission: str) -> None:
    provider = rig.provider()
    scopes = ((["Workers Scripts Write"], []), ([permission], []))
    existing = AccountRef(kind="CloudflareAPIToken", id=rig.cf.add(token_name("team-a", "agent", UID)))
    for attempt in (
        provider.validate(request(*scopes)),
        provider.issue(request(*scopes), rig.record),
        provider.issue(request(*scopes, existing=existing), rig.record),
    ):
        with pytest.raises(NotPermitted, match=f'permission "{permission}" is never grantable: '):
            await attempt
    assert rig.cf.calls == [] and rig.budget.in_window == 0 and rig.recorded == []


async def test_plan_shows_the_token_and_creates_nothing(rig: Rig) -> None:
    scopes = (["Workers Scripts Write"], []), (["Workers R2 Storage Bucket Item Read"], ["r2-bucket/eu/logs"])
    plan = await rig.provider().plan(request(*scopes))
    assert plan["kind"] == "CloudflareAPIToken" and plan["accountId"] == A
    assert plan["name"] == token_name("team-a", "agent", UID) and plan["expiresOn"] == "2030-01-01T13:00:00Z"
    assert [p["permission_groups"] for p in plan["policies"]] == [
        [{"id": GROUPS[0]["id"]}],
        [{"id": GROUPS[2]["id"]}],
    ]
    assert plan["r2Jurisdictions"] == ["eu"]
    assert [path for _, path in rig.cf.calls] == [
        f"/accounts/{A}/tokens/permission_groups"
    ] and rig.cf.tokens == {}
    rig.cf.calls.clear()
    with pytest.raises(NotPermitted):
        await rig.provider().plan(request((["Account API Tokens Write"], [])))
    assert rig.cf.calls == []


async def test_sweep_deletes_only_old_tokens_of_gone_accounts(rig: Rig) -> None:
    live = {f"live-{i}" for i in range(60)}
    for uid in live:
        rig.cf.add(token_name("ns", "a", uid))
    dead = {rig.cf.add(token_name("ns", f"gone-{i}", f"dead-{i}")) for i in range(55)}
    young = rig.cf.add(token_name("ns", "new", "created-after-listing"), age=timedelta(minutes=2))
    foreign = {rig.cf.add(name) for name in ["deploy", "agentaccounts/not-ours", "agentaccounts-x/a/b/c"]}
    deleted = await rig.provider().sweep_orphans(live)
    assert len(deleted) == 55 and all("/gone-" in entry and "(id " in entry for entry in deleted)
    assert not dead & set(rig.cf.tokens)
    assert young in rig.cf.tokens and foreign <= set(rig.cf.tokens)
    assert len(rig.cf.tokens) == 60 + 1 + 3
    assert await rig.provider().sweep_orphans(live) == []


async def test_unknown_permission_names_it(rig: Rig) -> None:
    with pytest.raises(UnknownPermission, match="'Workers Scripts Edit'"):
        await rig.provider().validate(request((["Workers Scripts Edit"], [])))
    with pytest.raises(InvalidSpec, match="'Zone Read' applies to zone resources"):
        await rig.provider().validate(request((["Zone Read"], ["account"])))
    assert [m for m, p in rig.cf.calls if p.endswith("/tokens")] == []  # nothing minted


async def test_permission_groups_are_cached_across_providers(rig: Rig) -> None:
    def fetches() -> int:
        return sum(path.endswith("/permission_groups") for _, path in rig.cf.calls)

    await rig.provider().validate(request())
    await rig.provider().issue(request(), rig.record)
    assert fetches() == 1
    rig.clock.t += timedelta(minutes=11)
    await rig.provider().validate(request())
    assert fetches() == 2


async def test_every_call_draws_on_the_shared_budget(rig: Rig) -> None:
    await rig.provider().issue(request(), rig.record)
    assert rig.budget.in_window == len(rig.cf.calls) == 3  # groups, list by name, create


async def test_quota_full_waits(rig: Rig) -> None:
    rig.cf.quota = 0
    with pytest.raises(QuotaExceeded) as caught:
        await rig.provider().issue(request(), rig.record)
    assert caught.value.delay == 60.0 and rig.recorded == []


async def test_bad_parent_token_is_rejected_without_echoing_it(rig: Rig) -> None:
    wrong = "cfat_WRONGwrongWRONGwrongWRONGwrongWRONGwr00000000"
    with pytest.raises(ProviderRejected, match="parent API token") as caught:
        await rig.provider(token=wrong).validate(request())
    assert wrong not in "".join(traceback.format_exception(caught.value))


def test_factory_refuses_an_incomplete_token_block(rig: Rig) -> None:
    with pytest.raises(InvalidSpec, match="accountId"):
        CloudflareProvider.create(CloudflareBlock(), PARENT, rig.client, rig.budget)
    block = CloudflareBlock.model_validate({"accountId": A})
    for empty in (None, "", "  \n"):
        with pytest.raises(InvalidSpec, match="parent API token"):
            CloudflareProvider.create(block, empty, rig.client, rig.budget)


async def test_no_secret_in_logs_or_errors(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    provider = rig.provider()
    issued = await provider.issue(request((["Workers R2 Storage Write"], [])), rig.record)
    await provider.issue(request(existing=issued.account_ref), rig.record)
    await provider.revoke(request(), issued.account_ref)
    rig.cf.quota = 0
    errors: list[AgentAccountsError] = []
    for attempt in (provider.issue(request(), rig.record), provider.validate(request((["Nope"], [])))):
        with pytest.raises(AgentAccountsError) as caught:
            await attempt
        errors.append(caught.value)
    value = (issued.secret_data or {})["CLOUDFLARE_API_TOKEN"]
    secret_key = (issued.secret_data or {})["AWS_SECRET_ACCESS_KEY"]
    texts = [caplog.text, *(str(r.args) for r in caplog.records)]
    texts += ["".join(traceback.format_exception(error)) for error in errors]
    for text in texts:
        assert PARENT not in text and value not in text and secret_key not in text
    assert "Created Cloudflare token" in caplog.text
