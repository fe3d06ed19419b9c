"""Least privilege: policy evaluation over HTTP, and "never mint more than the minting token holds"."""

from __future__ import annotations

import httpx
import pytest

from cfemulator import Emulator
from cfemulator.helpers import account_key, all_zones_key, allow, bearer, bucket_key, deny, zone_key
from cfemulator.model import sha256_hex

TOKENS_WRITE = "Account API Tokens Write"


def _mint(api: httpx.Client, account: str, minter: str, *policies: dict) -> httpx.Response:
    body = {"name": "child", "policies": list(policies)}
    return api.post(f"/accounts/{account}/tokens", json=body, headers=bearer(minter))


def _code(response: httpx.Response) -> tuple[int, int | None]:
    errors = response.json()["errors"]
    return response.status_code, errors[0]["code"] if errors else None


def test_cannot_mint_more_than_parent(api: httpx.Client, account: str, parent: str, emu: Emulator) -> None:
    too_much = _mint(api, account, parent, allow(account_key(account), "Workers Scripts Write"))
    assert (
        _code(too_much) == (403, 1005) and "Workers Scripts Write" in too_much.json()["errors"][0]["message"]
    )
    other = emu.add_account()
    assert _code(_mint(api, account, parent, allow(account_key(other), "Workers Scripts Read"))) == (
        403,
        1005,
    )
    mixed = _mint(api, account, parent, allow(account_key(account), "Workers Scripts Read", "D1 Write"))
    assert _code(mixed) == (403, 1005)
    assert _code(_mint(api, account, parent, allow(account_key(account), "Workers Scripts Read"))) == (
        200,
        None,
    )
    assert len(emu.list_tokens(account)) == 2  # parent + the one allowed child


def test_update_cannot_escalate(api: httpx.Client, account: str, parent: str) -> None:
    child = _mint(api, account, parent, allow(account_key(account), "Workers Scripts Read")).json()["result"]
    body = {"name": "child", "policies": [allow(account_key(account), "Workers Scripts Write")]}
    response = api.put(f"/accounts/{account}/tokens/{child['id']}", json=body, headers=bearer(parent))
    assert _code(response) == (403, 1005)
    still = api.get(f"/accounts/{account}/tokens/{child['id']}", headers=bearer(parent)).json()["result"]
    assert still["policies"][0]["permission_groups"][0]["name"] == "Workers Scripts Read"


def test_child_with_tokens_write_cannot_exceed_itself(
    emu: Emulator, api: httpx.Client, account: str, parent: str
) -> None:
    child = _mint(api, account, parent, allow(account_key(account), TOKENS_WRITE, "Workers Scripts Read"))
    grandchild_value = child.json()["result"]["value"]
    assert (
        _code(_mint(api, account, grandchild_value, allow(account_key(account), "Workers KV Storage Read")))[
            0
        ]
        == 403
    )
    assert (
        _mint(api, account, grandchild_value, allow(account_key(account), "Workers Scripts Read")).status_code
        == 200
    )


def test_zone_scoping_and_nested_all_zones(emu: Emulator, api: httpx.Client, account: str) -> None:
    z1, z2 = emu.add_zone(account, "one.example"), emu.add_zone(account, "two.example")
    one_zone = emu.mint_token(account, ["DNS Read"], zone_key(z1))
    assert api.get(f"/zones/{z1}/dns_records", headers=bearer(one_zone)).status_code == 200
    assert _code(api.get(f"/zones/{z2}/dns_records", headers=bearer(one_zone))) == (403, 10000)
    all_zones = emu.mint_token(account, ["DNS Read"])  # default for a zone group: nested all-zones form
    assert all(
        api.get(f"/zones/{z}/dns_records", headers=bearer(all_zones)).status_code == 200 for z in (z1, z2)
    )
    assert _code(api.get(f"/zones/{z1}", headers=bearer(all_zones))) == (403, 10000)  # Zone Read not held

    minter_one = emu.mint_token(
        account, policies=[allow(account_key(account), TOKENS_WRITE), allow(zone_key(z1), "DNS Read")]
    )
    assert _code(_mint(api, account, minter_one, allow(all_zones_key(account), "DNS Read")))[0] == 403
    assert _mint(api, account, minter_one, allow(zone_key(z1), "DNS Read")).status_code == 200
    minter_all = emu.mint_token(account, [TOKENS_WRITE, "DNS Read"])
    assert _mint(api, account, minter_all, allow(zone_key(z2), "DNS Read")).status_code == 200


def test_deny_beats_allow(emu: Emulator, api: httpx.Client, account: str) -> None:
    z1, z2 = emu.add_zone(account), emu.add_zone(account)
    policies = [
        allow(account_key(account), TOKENS_WRITE),
        allow(all_zones_key(account), "DNS Read"),
        deny(zone_key(z1), "DNS Read"),
    ]
    token = emu.mint_token(account, policies=policies)
    assert _code(api.get(f"/zones/{z1}/dns_records", headers=bearer(token))) == (403, 10000)
    assert api.get(f"/zones/{z2}/dns_records", headers=bearer(token)).status_code == 200
    # A child may not drop the parent's deny, but may carry it along.
    assert _code(_mint(api, account, token, allow(all_zones_key(account), "DNS Read")))[0] == 403
    assert _code(_mint(api, account, token, allow(zone_key(z1), "DNS Read")))[0] == 403
    carried = _mint(
        api, account, token, allow(all_zones_key(account), "DNS Read"), deny(zone_key(z1), "DNS Read")
    )
    assert carried.status_code == 200
    assert (
        api.get(f"/zones/{z2}/dns_records", headers=bearer(carried.json()["result"]["value"])).status_code
        == 200
    )


def test_deny_on_the_whole_account_wins_over_allow(emu: Emulator, api: httpx.Client, account: str) -> None:
    token = emu.mint_token(
        account,
        policies=[
            allow(account_key(account), "Workers Scripts Read", "D1 Read"),
            deny(account_key(account), "Workers Scripts Read"),
        ],
    )
    assert _code(api.get(f"/accounts/{account}/workers/scripts", headers=bearer(token))) == (403, 10000)
    assert api.get(f"/accounts/{account}/d1/database", headers=bearer(token)).status_code == 200


@pytest.mark.parametrize(
    ("group", "resources_of"),
    [
        ("DNS Read", account_key),  # a zone group on the account key grants nothing
        ("Workers Scripts Read", all_zones_key),  # an account group on the zones form grants nothing
    ],
)
def test_group_applies_only_to_its_scope(
    emu: Emulator, api: httpx.Client, account: str, group: str, resources_of
) -> None:
    zone = emu.add_zone(account)
    token = emu.mint_token(account, [group], resources_of(account))
    assert api.get(f"/accounts/{account}/workers/scripts", headers=bearer(token)).status_code == 403
    assert api.get(f"/zones/{zone}/dns_records", headers=bearer(token)).status_code == 403


def test_bucket_item_group_needs_the_bucket_key(emu: Emulator, account: str) -> None:
    emu.add_bucket(account, "assets")
    on_account = emu.mint_token(account, ["Workers R2 Storage Bucket Item Read"], account_key(account))
    on_bucket = emu.mint_token(
        account, ["Workers R2 Storage Bucket Item Read"], bucket_key(account, "assets")
    )
    assert not emu.check_r2_keys(emu.token_id(on_account), sha256_hex(on_account), bucket="assets")
    assert emu.check_r2_keys(emu.token_id(on_bucket), sha256_hex(on_bucket), bucket="assets")
    assert not emu.check_r2_keys(emu.token_id(on_bucket), sha256_hex(on_bucket), bucket="assets", write=True)
    assert not emu.check_r2_keys(emu.token_id(on_bucket), sha256_hex(on_bucket), bucket="other")


def test_read_and_write_families(emu: Emulator, api: httpx.Client, account: str) -> None:
    reader = emu.mint_token(account, ["Workers KV Storage Read", "D1 Read", "Account Settings Read"])
    writer = emu.mint_token(account, ["Workers KV Storage Write", "D1 Write"])
    kv = f"/accounts/{account}/storage/kv/namespaces"
    assert _code(api.post(kv, json={"title": "cache"}, headers=bearer(reader))) == (403, 10000)
    created = api.post(kv, json={"title": "cache"}, headers=bearer(writer)).json()["result"]
    assert [n["id"] for n in api.get(kv, headers=bearer(reader)).json()["result"]] == [created["id"]]
    assert api.get(kv, headers=bearer(writer)).status_code == 200  # Write includes Read
    d1 = f"/accounts/{account}/d1/database"
    assert api.post(d1, json={"name": "db"}, headers=bearer(writer)).json()["result"]["name"] == "db"
    assert api.get(f"/accounts/{account}", headers=bearer(reader)).json()["result"]["id"] == account
    assert _code(api.get(f"/accounts/{account}", headers=bearer(writer))) == (403, 10000)
