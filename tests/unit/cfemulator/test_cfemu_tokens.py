"""Account-owned token lifecycle over real HTTP: create, verify, use, update, roll, delete, list, quota."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import httpx

from cfemulator import Emulator
from cfemulator.helpers import account_key, allow, bearer, wait_until
from cfemulator.model import sha256_hex

VALUE = re.compile(r"^cfat_[A-Za-z0-9]{40}[0-9a-f]{8}$")


def _create(api: httpx.Client, account: str, parent: str, *policies: dict, **extra: object) -> httpx.Response:
    body = {"name": "agent-token", "policies": list(policies), **extra}
    return api.post(f"/accounts/{account}/tokens", json=body, headers=bearer(parent))


def test_create_verify_use_delete(emu: Emulator, api: httpx.Client, account: str, parent: str) -> None:
    created = _create(api, account, parent, allow(account_key(account), "Workers Scripts Read"))
    assert created.status_code == 200
    token = created.json()["result"]
    assert VALUE.match(token["value"]) and token["status"] == "active" and "expires_on" not in token
    assert token["policies"][0]["permission_groups"] == [
        {"id": "1a71c399035b4950a1bd1466bbe4f420", "name": "Workers Scripts Read"}
    ]
    child = bearer(token["value"])

    verified = api.get(f"/accounts/{account}/tokens/verify", headers=child).json()
    assert verified["result"] == {"id": token["id"], "status": "active"}
    assert verified["messages"][0]["message"] == "This API Token is valid and active"
    assert api.get(f"/accounts/{account}/workers/scripts", headers=child).status_code == 200
    assert api.get(f"/accounts/{account}/storage/kv/namespaces", headers=child).status_code == 403

    fetched = api.get(f"/accounts/{account}/tokens/{token['id']}", headers=bearer(parent)).json()["result"]
    assert "value" not in fetched and fetched["last_used_on"]

    deleted = api.delete(f"/accounts/{account}/tokens/{token['id']}", headers=bearer(parent))
    assert deleted.json() == {"success": True, "errors": [], "messages": [], "result": {"id": token["id"]}}
    assert api.get(f"/accounts/{account}/tokens/verify", headers=child).status_code == 401
    assert api.get(f"/accounts/{account}/workers/scripts", headers=child).json()["errors"][0]["code"] == 9109
    again = api.delete(f"/accounts/{account}/tokens/{token['id']}", headers=bearer(parent))
    assert again.status_code == 404 and again.json()["errors"][0]["code"] == 1003
    assert emu.token_info(token["id"]) is None


def test_values_only_on_create_and_roll(api: httpx.Client, account: str, parent: str) -> None:
    token = _create(api, account, parent, allow(account_key(account), "Workers Scripts Read")).json()[
        "result"
    ]
    listed = api.get(f"/accounts/{account}/tokens", headers=bearer(parent)).json()["result"]
    assert listed and all("value" not in t for t in listed)
    rolled = api.put(f"/accounts/{account}/tokens/{token['id']}/value", json={}, headers=bearer(parent))
    new_value = rolled.json()["result"]
    assert isinstance(new_value, str) and VALUE.match(new_value) and new_value != token["value"]
    assert api.get(f"/accounts/{account}/tokens/verify", headers=bearer(token["value"])).status_code == 401
    assert (
        api.get(f"/accounts/{account}/tokens/verify", headers=bearer(new_value)).json()["result"]["id"]
        == token["id"]
    )


def test_roll_requires_a_json_object_body(api: httpx.Client, account: str, parent: str) -> None:
    token = _create(api, account, parent, allow(account_key(account), "Workers Scripts Read")).json()[
        "result"
    ]
    response = api.put(f"/accounts/{account}/tokens/{token['id']}/value", headers=bearer(parent))
    assert response.status_code == 400 and response.json()["errors"][0]["code"] == 1002


def test_r2_secret_is_sha256_of_value(emu: Emulator, api: httpx.Client, account: str, parent: str) -> None:
    token = _create(api, account, parent, allow(account_key(account), "Workers Scripts Read")).json()[
        "result"
    ]
    assert emu.check_r2_keys(token["id"], sha256_hex(token["value"]))
    assert not emu.check_r2_keys(token["id"], sha256_hex(token["value"] + "x"))


def test_expires_on_is_enforced_on_the_wall_clock(api: httpx.Client, account: str, parent: str) -> None:
    expires = (datetime.now(UTC) + timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    token = _create(
        api, account, parent, allow(account_key(account), "Workers Scripts Read"), expires_on=expires
    )
    result = token.json()["result"]
    assert result["expires_on"] == expires
    child = bearer(result["value"])
    assert (
        api.get(f"/accounts/{account}/tokens/verify", headers=child).json()["result"]["expires_on"] == expires
    )

    def rejected() -> bool:
        return api.get(f"/accounts/{account}/workers/scripts", headers=child).status_code == 403

    wait_until(rejected, timeout=10, what="the token to expire")
    assert api.get(f"/accounts/{account}/tokens/verify", headers=child).status_code == 401
    shown = api.get(f"/accounts/{account}/tokens/{result['id']}", headers=bearer(parent)).json()["result"]
    assert shown["status"] == "expired"


def test_invalid_bodies_are_400_1002(api: httpx.Client, account: str, parent: str) -> None:
    good = allow(account_key(account), "Workers Scripts Read")
    past = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    cases = [
        {"name": "x" * 121, "policies": [good]},
        {"policies": [good]},
        {"name": "no-policies"},
        {"name": "x", "policies": [good], "expires_on": past},
        {"name": "x", "policies": [good], "expires_on": "2030-01-01 00:00:00"},  # not RFC 3339
        {"name": "x", "policies": [good | {"permission_groups": [{"id": "f" * 32}]}]},
        {"name": "x", "policies": [good | {"resources": {"com.cloudflare.api.account.*": "*"}}]},
        {"name": "x", "policies": [good | {"effect": "maybe"}]},
    ]
    for body in cases:
        response = api.post(f"/accounts/{account}/tokens", json=body, headers=bearer(parent))
        assert (response.status_code, response.json()["errors"][0]["code"]) == (400, 1002), body
    exactly_120 = _create(api, account, parent, good, name="y" * 120)
    assert exactly_120.status_code == 200


def test_quota() -> None:
    with Emulator(token_quota=3) as emu, httpx.Client(base_url=emu.base_url) as api:
        account = emu.add_account()
        parent = emu.mint_token(account, ["Account API Tokens Write", "Workers Scripts Read"])
        good = allow(account_key(account), "Workers Scripts Read")
        ids = [_create(api, account, parent, good).json()["result"]["id"] for _ in range(2)]
        refused = _create(api, account, parent, good)
        assert refused.status_code == 400 and refused.json()["errors"][0]["code"] == 1004
        assert "(3)" in refused.json()["errors"][0]["message"]
        api.delete(f"/accounts/{account}/tokens/{ids[0]}", headers=bearer(parent))
        assert _create(api, account, parent, good).status_code == 200
        assert len(emu.list_tokens(account)) == 3


def test_pagination(emu: Emulator, api: httpx.Client, account: str, parent: str) -> None:
    minted = [
        emu.token_id(emu.mint_token(account, ["Workers Scripts Read"], name=f"t{i}")) for i in range(12)
    ]
    seen, pages = [], []
    for page in (1, 2, 3):
        body = api.get(
            f"/accounts/{account}/tokens", params={"page": page, "per_page": 5}, headers=bearer(parent)
        ).json()
        pages.append(body["result_info"])
        seen += [t["id"] for t in body["result"]]
    assert [p["count"] for p in pages] == [5, 5, 3]
    assert all(p["total_count"] == 13 and p["per_page"] == 5 and p["total_pages"] == 3 for p in pages)
    assert len(seen) == len(set(seen)) == 13 and set(minted) <= set(seen)
    desc = api.get(
        f"/accounts/{account}/tokens", params={"per_page": 50, "direction": "desc"}, headers=bearer(parent)
    )
    assert [t["id"] for t in desc.json()["result"]] == seen[::-1]
    for bad in (4, 51, "x"):
        response = api.get(f"/accounts/{account}/tokens", params={"per_page": bad}, headers=bearer(parent))
        assert response.status_code == 400


def test_control_plane_sees_tokens_with_unknown_values(
    emu: Emulator, api: httpx.Client, account: str, parent: str
) -> None:
    created = _create(api, account, parent, allow(account_key(account), "Workers Scripts Read")).json()[
        "result"
    ]
    listed = {t["id"]: t for t in emu.list_tokens(account)}
    assert set(listed) == {emu.token_id(parent), created["id"]}
    assert listed[emu.token_id(parent)]["request_count"] == 1
    assert all("value" not in t for t in listed.values())


def test_permission_group_filters(api: httpx.Client, account: str, parent: str) -> None:
    url = f"/accounts/{account}/tokens/permission_groups"

    def groups(**params: str) -> list[dict]:
        return api.get(url, params=params, headers=bearer(parent)).json()["result"]

    everything = groups()
    assert len(everything) > 30 and {"Workers Scripts Write", "DNS Read", "D1 Write"} <= {
        g["name"] for g in everything
    }
    assert groups(name="Workers KV Storage Write") == [
        {
            "id": "f7f0eda5697f475c90846e879bab8666",
            "name": "Workers KV Storage Write",
            "scopes": ["com.cloudflare.api.account"],
            "category": "developer_platform",
        }
    ]
    assert len(groups(name="Access: Apps and Policies Read")) == 2
    zone_only = groups(name="Access: Apps and Policies Read", scope="com.cloudflare.api.account.zone")
    assert [g["id"] for g in zone_only] == ["eb258a38ea634c86a0c89da6b27cb6b6"]
    bucket = groups(scope="com.cloudflare.edge.r2.bucket")
    assert {g["name"] for g in bucket} == {
        "Workers R2 Storage Bucket Item Read",
        "Workers R2 Storage Bucket Item Write",
    }
    encoded = api.get(url + "?name=Account%20Settings%20Write", headers=bearer(parent)).json()["result"]
    assert [g["id"] for g in encoded] == ["1af1fa2adc104452b74a9a3364202f20"]
    assert groups(name="No Such Group") == []
