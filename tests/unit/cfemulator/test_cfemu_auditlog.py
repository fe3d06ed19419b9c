"""The emulator's audit log v2: what it records (writes by tokens), and GET .../logs/audit as the schema
defines it (permission, parameters, filters, cursor pages, errors), every exchange checked against it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from cfemulator import Emulator
from cfemulator.auditlog import FILTERS
from cfemulator.helpers import account_key, allow, bearer
from cfemulator.schema import DOC_PATH, assert_exchanges_valid, validate_request, validate_response

AUDIT_PATH = "/accounts/{account_id}/logs/audit"


def _window(**extra: object) -> dict[str, object]:
    now = datetime.now(UTC)
    since, before = now - timedelta(minutes=5), now + timedelta(minutes=5)
    return {"since": since.strftime("%Y-%m-%dT%H:%M:%SZ"), "before": before.isoformat()} | extra


def _agent(emu: Emulator, account: str, *permissions: str, name: str = "agent") -> tuple[str, str]:
    value = emu.mint_token(account, list(permissions), name=name)
    token_id = emu.token_id(value)
    assert token_id is not None
    return value, token_id


def _read(api: httpx.Client, account: str, parent: str, params: object) -> httpx.Response:
    return api.get(f"/accounts/{account}/logs/audit", params=params, headers=bearer(parent))  # type: ignore[arg-type]


def _writes(api: httpx.Client, account: str, zone: str, agent: str) -> None:
    """Two allowed writes, one read, one refused write (no D1 permission)."""
    h = bearer(agent)
    assert api.post(
        f"/accounts/{account}/storage/kv/namespaces", json={"title": "cache"}, headers=h
    ).is_success
    assert api.get(f"/accounts/{account}/storage/kv/namespaces", headers=h).is_success
    record = {"type": "A", "name": "www", "content": "192.0.2.1"}
    assert api.post(f"/zones/{zone}/dns_records", json=record, headers=h).is_success
    assert api.post(f"/accounts/{account}/d1/database", json={"name": "db"}, headers=h).status_code == 403


def test_writes_of_a_token_are_logged_and_read_back_in_order(
    emu: Emulator, api: httpx.Client, account: str, parent: str
) -> None:
    zone = emu.add_zone(account, "example.com")
    agent, agent_id = _agent(emu, account, "Workers KV Storage Write", "DNS Write")
    other, _ = _agent(emu, account, "Workers KV Storage Write", name="other")
    _writes(api, account, zone, agent)
    api.post(f"/accounts/{account}/storage/kv/namespaces", json={"title": "theirs"}, headers=bearer(other))

    answer = _read(api, account, parent, _window(actor_token_id=agent_id, direction="asc"))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == {"success", "errors", "result", "result_info"}  # no `messages` in this schema
    entries = body["result"]
    assert [(e["action"]["type"], e["resource"]["type"]) for e in entries] == [
        ("create", "kv_namespaces"),
        ("create", "dns_records"),
    ]  # the read and the refused write are not logged; neither is the other token's write
    kv, dns = entries
    created = api.get(f"/accounts/{account}/storage/kv/namespaces", headers=bearer(agent)).json()["result"]
    assert kv["resource"]["id"] == created[0]["id"] and kv["account"]["id"] == account
    assert kv["actor"] | {"ip_address": ""} == {
        "id": account,
        "type": "account",
        "context": "api_token",
        "ip_address": "",
        "token_id": agent_id,
        "token_name": "agent",
    }
    assert dns["zone"] == {"id": zone, "name": "example.com"} and dns["raw"]["status_code"] == 200
    assert dns["raw"]["method"] == "POST" and dns["raw"]["uri"] == f"/zones/{zone}/dns_records"
    assert body["result_info"] == {"count": "2"}  # last page: no cursor
    assert "cfat_" not in answer.text  # no token value in the log
    assert_exchanges_valid(emu.requests)


def test_refused_writes_are_logged_when_the_knob_says_cloudflare_does(
    emu: Emulator, api: httpx.Client, account: str, parent: str
) -> None:
    emu.context.audit_failures = True
    zone = emu.add_zone(account)
    agent, agent_id = _agent(emu, account, "Workers KV Storage Write", "DNS Write")
    _writes(api, account, zone, agent)
    entries = _read(api, account, parent, _window(actor_token_id=agent_id, direction="asc")).json()["result"]
    assert [(e["action"]["result"], e["raw"]["status_code"]) for e in entries] == [
        ("success", 200),
        ("success", 200),
        ("failure", 403),
    ]
    failed = _read(api, account, parent, _window(actor_token_id=agent_id, action_result="failure"))
    assert [e["resource"]["type"] for e in failed.json()["result"]] == ["d1_databases"]


def test_the_log_outlives_the_token_and_logs_the_parent_s_own_writes(
    emu: Emulator, api: httpx.Client, account: str, parent: str
) -> None:
    base = f"/accounts/{account}/tokens"
    body = {"name": "c", "policies": [allow(account_key(account), "Workers Scripts Read")]}
    child = api.post(base, json=body, headers=bearer(parent)).json()["result"]
    api.delete(f"{base}/{child['id']}", headers=bearer(parent))
    parent_id = emu.token_id(parent)
    entries = _read(api, account, parent, _window(actor_token_id=parent_id, direction="asc")).json()["result"]
    assert [(e["action"]["type"], e["resource"]["id"]) for e in entries] == [
        ("create", child["id"]),
        ("delete", child["id"]),
    ]
    assert child["value"] not in json.dumps(entries)


def test_reading_needs_account_settings_read_on_that_account(
    emu: Emulator, api: httpx.Client, account: str, parent: str
) -> None:
    agent, _ = _agent(emu, account, "Workers KV Storage Write")
    refused = _read(api, account, agent, _window())
    assert refused.status_code == 403 and refused.json()["errors"][0]["code"] == 10000
    other = emu.add_account()
    foreign = _read(api, other, parent, _window())
    assert foreign.status_code == 403 and foreign.json()["errors"][0]["code"] == 9109
    writer, _ = _agent(emu, account, "Account Settings Write")
    assert _read(api, account, writer, _window()).status_code == 200  # Write includes Read
    assert_exchanges_valid(emu.requests)


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"before": "2030-01-01"}, "since is required"),
        ({"since": "yesterday", "before": "2030-01-01"}, "since must be a date"),
        ({"since": "2030-01-01T00:00:00", "before": "2030-01-02"}, "since must be a date"),  # no offset
        ({"since": "2030-01-02", "before": "2030-01-01"}, "since must be earlier"),
        (_window(limit=0), "limit must be"),
        (_window(limit=1001), "limit must be"),
        (_window(limit="ten"), "limit must be"),
        (_window(direction="up"), "direction must be"),
        (_window(action_type="read"), "action_type must be one of"),
        (_window(**{"actor_type.not": "robot"}), "actor_type.not must be one of"),
        (_window(raw_status_code="ok"), "raw_status_code must be an integer"),
        (_window(product_category="nonsense"), "unknown product category"),
        (_window(**{"actor_token_id[]": "x"}), "unknown query parameter"),
        (_window(cursor="not-a-cursor"), "invalid cursor"),
    ],
)
def test_bad_parameters_are_400_with_a_message_and_no_code(
    emu: Emulator, api: httpx.Client, account: str, parent: str, params: dict[str, object], says: str
) -> None:
    answer = _read(api, account, parent, params)
    assert answer.status_code == 400
    body = answer.json()
    assert body["success"] is False and len(body["errors"]) == 1 and says in body["errors"][0]["message"]
    assert "code" not in body["errors"][0]
    exchange = emu.requests[-1]
    assert validate_response(exchange.method, exchange.path, exchange.status, exchange.response).ok


def test_cursor_pages_cover_everything_once_in_both_directions(
    emu: Emulator, api: httpx.Client, account: str, parent: str
) -> None:
    agent, agent_id = _agent(emu, account, "Workers KV Storage Write")
    for i in range(5):
        api.post(f"/accounts/{account}/storage/kv/namespaces", json={"title": f"n{i}"}, headers=bearer(agent))
    for direction, expected in (
        ("asc", [f"n{i}" for i in range(5)]),
        ("desc", [f"n{i}" for i in range(4, -1, -1)]),
    ):
        seen, cursor, pages, window = [], None, 0, _window(actor_token_id=agent_id, limit=2)
        while True:
            params = window | ({"cursor": cursor} if cursor else {})  # the same query, page after page
            if direction == "asc":
                params["direction"] = "asc"  # desc is the default: left out
            body = _read(api, account, parent, params).json()
            seen += [e["resource"]["id"] for e in body["result"]]
            pages += 1
            cursor = body["result_info"].get("cursor")
            if not cursor:
                break
        by_id = {n["id"]: n["title"] for n in emu.store.accounts[account].collections["kv"]}
        assert [by_id[i] for i in seen] == expected and pages == 3
    first = _read(api, account, parent, window).json()["result_info"]
    reused = _read(
        api, account, parent, window | {"actor_token_id": "someone-else", "cursor": first["cursor"]}
    )
    assert reused.status_code == 400 and "invalid cursor" in reused.text  # a cursor belongs to its query
    assert_exchanges_valid(emu.requests)


def test_filters_and_their_negations(emu: Emulator, api: httpx.Client, account: str, parent: str) -> None:
    zone = emu.add_zone(account)
    agent, agent_id = _agent(emu, account, "Workers KV Storage Write", "DNS Write")
    _writes(api, account, zone, agent)

    def kinds(**extra: object) -> list[str]:
        answer = _read(api, account, parent, _window(actor_token_id=agent_id, direction="asc", **extra))
        assert answer.status_code == 200, answer.text
        return [e["resource"]["type"] for e in answer.json()["result"]]

    assert kinds() == ["kv_namespaces", "dns_records"]
    assert kinds(resource_scope="zones") == ["dns_records"]
    assert kinds(**{"resource_type.not": "dns_records"}) == ["kv_namespaces"]
    assert kinds(product_category="DNS") == ["dns_records"]  # case-insensitive
    assert kinds(product_category="dns", resource_product="Workers KV") == ["kv_namespaces", "dns_records"]
    assert kinds(action_type=["delete", "update"]) == []
    assert kinds(raw_status_code=200, raw_method="POST") == ["kv_namespaces", "dns_records"]
    assert kinds(**{"actor_token_id.not": agent_id}) == []  # AND-ed with actor_token_id
    day = datetime.now(UTC).date()
    dates = {n: (day + timedelta(days=n)).isoformat() for n in (-1, 1, 2)}  # dates are UTC midnights
    assert kinds(since=dates[-1], before=dates[1]) == ["kv_namespaces", "dns_records"]
    assert kinds(since=dates[1], before=dates[2]) == []
    assert_exchanges_valid(emu.requests)


def test_filter_names_are_the_schema_s() -> None:
    doc = json.loads(DOC_PATH.read_text())
    params = doc["paths"][AUDIT_PATH]["get"]["parameters"]
    names = {p["name"] for p in params if p["in"] == "query"}
    assert names == {*FILTERS, *(f"{n}.not" for n in FILTERS), "product_category"} | {
        "since",
        "before",
        "direction",
        "limit",
        "cursor",
    }


def test_schema_checks_of_the_audit_request_can_fail() -> None:
    path = "/accounts/" + "a" * 32 + "/logs/audit"
    ok = {"since": "2026-01-01", "before": "2026-01-02T00:00:00Z", "actor_token_id": ["a", "b"]}
    assert validate_request("GET", path, None, ok).ok
    assert validate_request("GET", path, None, ok | {"actor_token_id": "a"}).ok  # one value: a 1-array
    missing = validate_request("GET", path, None, {"since": "2026-01-01"})
    assert missing.errors == ("query parameter before: required",)
    assert not validate_request("GET", path, None, ok | {"since": "Jan 1"}).ok
    assert not validate_request("GET", path, None, ok | {"action_type": ["read"]}).ok
    assert not validate_request("GET", path, None, ok | {"raw_status_code": "x"}).ok
    assert validate_request("GET", path, None, ok | {"raw_status_code": ["200", "403"]}).ok
    assert not validate_request("GET", path, None, ok | {"limit": "1001"}).ok
    undeclared = validate_request("GET", path, None, ok | {"actor_token_id[]": "a"})
    assert undeclared.errors == ("query parameter actor_token_id[]: not declared by this operation",)
