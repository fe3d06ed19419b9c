"""R2 temporary credentials: bound to a bucket, never beyond the parent token, dead with the parent."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from cfemulator import Emulator
from cfemulator.helpers import allow, bearer, bucket_key
from cfemulator.model import sha256_hex


@pytest.fixture
def bucket(emu: Emulator, account: str) -> str:
    emu.add_bucket(account, "assets")
    emu.add_bucket(account, "other")
    return "assets"


@pytest.fixture
def reader(api: httpx.Client, account: str, parent: str, bucket: str) -> dict[str, Any]:
    """A child token allowed to read objects of one bucket only (the parent holds R2 Storage Write)."""
    body = {
        "name": "r2-reader",
        "policies": [allow(bucket_key(account, bucket), "Workers R2 Storage Bucket Item Read")],
    }
    response = api.post(f"/accounts/{account}/tokens", json=body, headers=bearer(parent))
    assert response.status_code == 200
    return response.json()["result"]


def _temp(api: httpx.Client, account: str, parent: str, **body: Any) -> httpx.Response:
    return api.post(f"/accounts/{account}/r2/temp-access-credentials", json=body, headers=bearer(parent))


def test_temp_credentials_are_bucket_bound(
    emu: Emulator, api: httpx.Client, account: str, parent: str, reader: dict
) -> None:
    response = _temp(
        api,
        account,
        parent,
        bucket="assets",
        parentAccessKeyId=reader["id"],
        permission="object-read-only",
        ttlSeconds=900,
        prefixes=["logs/"],
    )
    assert response.status_code == 200
    creds = response.json()["result"]
    assert set(creds) == {"accessKeyId", "secretAccessKey", "sessionToken"}
    key, secret, session = creds["accessKeyId"], creds["secretAccessKey"], creds["sessionToken"]
    assert emu.check_r2_keys(key, secret, session_token=session, bucket="assets", key="logs/today")
    assert not emu.check_r2_keys(key, secret, session_token=session, bucket="assets", key="private/x")
    assert not emu.check_r2_keys(key, secret, session_token=session, bucket="other")
    assert not emu.check_r2_keys(key, secret, session_token=session, bucket="assets", write=True)
    assert not emu.check_r2_keys(key, secret, session_token="forged", bucket="assets")
    assert not emu.check_r2_keys(key, secret)  # without the session token it is not a key pair at all

    api.delete(f"/accounts/{account}/tokens/{reader['id']}", headers=bearer(parent))
    assert not emu.check_r2_keys(
        key, secret, session_token=session, bucket="assets"
    )  # the parent took them along


def test_token_derived_keys(emu: Emulator, reader: dict) -> None:
    secret = sha256_hex(reader["value"])
    assert emu.check_r2_keys(reader["id"], secret, bucket="assets")
    assert not emu.check_r2_keys(reader["id"], secret, bucket="assets", write=True)
    assert not emu.check_r2_keys(reader["id"], secret, bucket="other")
    assert not emu.check_r2_keys(reader["id"], secret.upper())


def test_temp_credentials_cannot_exceed_the_parent(
    api: httpx.Client, account: str, parent: str, reader: dict
) -> None:
    for permission in ("object-read-write", "admin-read-only"):
        response = _temp(
            api,
            account,
            parent,
            bucket="assets",
            parentAccessKeyId=reader["id"],
            permission=permission,
            ttlSeconds=60,
        )
        assert (response.status_code, response.json()["errors"][0]["code"]) == (403, 10000)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"bucket": "missing", "permission": "object-read-only", "ttlSeconds": 60}, 404, 10006),
        ({"bucket": "assets", "permission": "object-read-only", "ttlSeconds": 604_801}, 400, 1002),
        ({"bucket": "assets", "permission": "read-everything", "ttlSeconds": 60}, 400, 1002),
        (
            {
                "bucket": "assets",
                "permission": "object-read-only",
                "ttlSeconds": 60,
                "parentAccessKeyId": "f" * 32,
            },
            400,
            1002,
        ),
    ],
)
def test_temp_credential_errors(
    api: httpx.Client, account: str, parent: str, reader: dict, body: dict, status: int, code: int
) -> None:
    body = {"parentAccessKeyId": reader["id"]} | body
    response = _temp(api, account, parent, **body)
    assert (response.status_code, response.json()["errors"][0]["code"]) == (status, code)


def test_endpoint_needs_r2_storage_write(
    emu: Emulator, api: httpx.Client, account: str, reader: dict
) -> None:
    caller = emu.mint_token(account, ["Workers R2 Storage Read"])
    response = _temp(
        api,
        account,
        caller,
        bucket="assets",
        parentAccessKeyId=reader["id"],
        permission="object-read-only",
        ttlSeconds=60,
    )
    assert response.status_code == 403


def test_bucket_listing_and_creation(
    emu: Emulator, api: httpx.Client, account: str, parent: str, bucket: str
) -> None:
    listed = api.get(f"/accounts/{account}/r2/buckets", headers=bearer(parent)).json()["result"]["buckets"]
    assert {b["name"] for b in listed} == {"assets", "other"}
    created = api.post(
        f"/accounts/{account}/r2/buckets",
        json={"name": "eu-data"},
        headers=bearer(parent) | {"cf-r2-jurisdiction": "eu"},
    )
    assert created.status_code == 200 and created.json()["result"]["jurisdiction"] == "eu"
    again = api.post(f"/accounts/{account}/r2/buckets", json={"name": "assets"}, headers=bearer(parent))
    assert again.status_code == 409
    reader = emu.mint_token(account, ["Workers R2 Storage Read"])
    assert (
        api.post(f"/accounts/{account}/r2/buckets", json={"name": "nope"}, headers=bearer(reader)).status_code
        == 403
    )
