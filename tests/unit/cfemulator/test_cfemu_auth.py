"""Authentication failures answer with the status and code Cloudflare uses for each (see cfemulator.auth)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from cfemulator import Emulator
from cfemulator.helpers import account_key, allow, bearer


def _error(response: httpx.Response) -> tuple[int, int]:
    body = response.json()
    assert body["success"] is False and body["result"] is None and body["messages"] == []
    return response.status_code, body["errors"][0]["code"]


def test_missing_header_is_400_9106(api: httpx.Client, account: str) -> None:
    assert _error(api.get(f"/accounts/{account}/tokens")) == (400, 9106)


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer two words", "Token abc"])
def test_malformed_header_is_400_6003_with_6111_chain(api: httpx.Client, account: str, header: str) -> None:
    response = api.get(f"/accounts/{account}/tokens", headers={"Authorization": header})
    assert _error(response) == (400, 6003)
    assert response.json()["errors"][0]["error_chain"] == [
        {"code": 6111, "message": "Invalid format for Authorization header"}
    ]


def test_unknown_token_is_403_9109(api: httpx.Client, account: str) -> None:
    response = api.get(f"/accounts/{account}/workers/scripts", headers=bearer("cfat_" + "A" * 40 + "0" * 8))
    assert _error(response) == (403, 9109)
    assert response.json()["errors"][0]["message"] == "Invalid access token"


def test_verify_with_unknown_token_is_401_1000(api: httpx.Client, account: str) -> None:
    response = api.get(f"/accounts/{account}/tokens/verify", headers=bearer("nonsense-token"))
    assert _error(response) == (401, 1000)


def test_disabled_token_is_403_10000_and_fails_verify(
    emu: Emulator, api: httpx.Client, account: str, parent: str
) -> None:
    child = emu.mint_token(account, ["Workers Scripts Read"])
    child_id = emu.token_id(child)
    assert api.get(f"/accounts/{account}/workers/scripts", headers=bearer(child)).status_code == 200
    body = {
        "name": "child",
        "status": "disabled",
        "policies": [allow(account_key(account), "Workers Scripts Read")],
    }
    updated = api.put(f"/accounts/{account}/tokens/{child_id}", json=body, headers=bearer(parent))
    assert updated.status_code == 200 and updated.json()["result"]["status"] == "disabled"
    assert _error(api.get(f"/accounts/{account}/workers/scripts", headers=bearer(child))) == (403, 10000)
    assert _error(api.get(f"/accounts/{account}/tokens/verify", headers=bearer(child))) == (401, 1000)
    body["status"] = "active"
    assert (
        api.put(f"/accounts/{account}/tokens/{child_id}", json=body, headers=bearer(parent)).status_code
        == 200
    )
    assert api.get(f"/accounts/{account}/workers/scripts", headers=bearer(child)).status_code == 200


def test_not_before_in_future_is_403_10000(emu: Emulator, api: httpx.Client, account: str) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    token = emu.mint_token(account, ["Workers Scripts Read"], not_before=later)
    assert _error(api.get(f"/accounts/{account}/workers/scripts", headers=bearer(token))) == (403, 10000)


def test_ip_condition_is_enforced(emu: Emulator, api: httpx.Client, account: str) -> None:
    outside = emu.mint_token(
        account, ["Workers Scripts Read"], condition={"request_ip": {"in": ["10.0.0.0/8"]}}
    )
    excluded = emu.mint_token(
        account, ["Workers Scripts Read"], condition={"request_ip": {"not_in": ["127.0.0.0/8"]}}
    )
    inside = emu.mint_token(
        account, ["Workers Scripts Read"], condition={"request_ip": {"in": ["127.0.0.1/32"]}}
    )
    for token in (outside, excluded):
        response = api.get(f"/accounts/{account}/workers/scripts", headers=bearer(token))
        assert _error(response) == (403, 9109)
        assert (
            "Cannot use the access token from location: 127.0.0.1" in response.json()["errors"][0]["message"]
        )
    assert api.get(f"/accounts/{account}/workers/scripts", headers=bearer(inside)).status_code == 200


def test_token_of_another_account_is_403_9109(emu: Emulator, api: httpx.Client, parent: str) -> None:
    other = emu.add_account()
    assert _error(api.get(f"/accounts/{other}/tokens", headers=bearer(parent))) == (403, 9109)
    assert _error(api.get(f"/accounts/{other}/tokens/verify", headers=bearer(parent))) == (401, 1000)


def test_missing_permission_is_403_10000(emu: Emulator, api: httpx.Client, account: str) -> None:
    reader = emu.mint_token(account, ["Workers Scripts Read"])
    assert _error(api.get(f"/accounts/{account}/tokens", headers=bearer(reader))) == (403, 10000)
    assert _error(api.get(f"/accounts/{account}/storage/kv/namespaces", headers=bearer(reader))) == (
        403,
        10000,
    )


def test_tokens_read_may_list_but_not_create(emu: Emulator, api: httpx.Client, account: str) -> None:
    reader = emu.mint_token(account, ["Account API Tokens Read", "Workers Scripts Read"])
    assert api.get(f"/accounts/{account}/tokens", headers=bearer(reader)).status_code == 200
    body = {"name": "x", "policies": [allow(account_key(account), "Workers Scripts Read")]}
    assert _error(api.post(f"/accounts/{account}/tokens", json=body, headers=bearer(reader))) == (403, 10000)


def test_unknown_route_and_method(api: httpx.Client, account: str, parent: str) -> None:
    assert _error(api.get("/no/such/thing", headers=bearer(parent))) == (404, 7003)
    assert _error(api.patch(f"/accounts/{account}/tokens", headers=bearer(parent))) == (405, 7001)


def test_malformed_json_is_400_6007(api: httpx.Client, account: str, parent: str) -> None:
    headers = bearer(parent) | {"Content-Type": "application/json"}
    assert _error(api.post(f"/accounts/{account}/tokens", content=b"{not json", headers=headers)) == (
        400,
        6007,
    )
