"""Scope grammar -> token policies, token names, expiry format, and R2 credential derivation (pure)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from agentaccounts.clock import rfc3339
from agentaccounts.errors import InvalidSpec, UnknownPermission
from agentaccounts.models import Scope
from agentaccounts.providers.cloudflare.scopes import (
    ACCOUNT,
    BUCKET,
    ZONE,
    build_policies,
    catalog_from_api,
    parse_resource,
    r2_credentials,
    r2_endpoint,
    r2_jurisdictions,
)
from agentaccounts.providers.cloudflare.tokens import MAX_NAME, token_name, uid_from_name

A = "0123456789abcdef0123456789abcdef"
Z = "fedcba9876543210fedcba9876543210"
UID = "5c1b2f3e-9a8d-4c7b-b6a5-0f1e2d3c4b5a"
CATALOG = catalog_from_api(
    [
        {"id": "scripts-w", "name": "Workers Scripts Write", "scopes": [ACCOUNT]},
        {"id": "kv-r", "name": "Workers KV Storage Read", "scopes": [ACCOUNT]},
        {"id": "r2-w", "name": "Workers R2 Storage Write", "scopes": [ACCOUNT]},
        {"id": "item-r", "name": "Workers R2 Storage Bucket Item Read", "scopes": [BUCKET]},
        {"id": "zone-r", "name": "Zone Read", "scopes": [ZONE]},
        {"id": "dns-w", "name": "DNS Write", "scopes": [ZONE]},
        # the same name at two levels, with different IDs (as in the real catalogue)
        {"id": "access-acct", "name": "Access: Apps and Policies Read", "scopes": [ACCOUNT]},
        {"id": "access-zone", "name": "Access: Apps and Policies Read", "scopes": [ZONE]},
        {"name": "no id is skipped"},
    ]
)


def policies(*scopes: tuple[list[str], list[str]]) -> list[dict[str, Any]]:
    return build_policies([Scope(permissions=p, resources=r) for p, r in scopes], CATALOG, A)


def allow(ids: list[str], resources: dict[str, Any]) -> dict[str, Any]:
    return {"effect": "allow", "permission_groups": [{"id": i} for i in ids], "resources": resources}


@pytest.mark.parametrize(
    ("permission", "resource", "expected"),
    [
        ("Workers Scripts Write", "account", {f"{ACCOUNT}.{A}": "*"}),
        ("Zone Read", f"zone/{Z}", {f"{ZONE}.{Z}": "*"}),
        ("Zone Read", "zones", {f"{ACCOUNT}.{A}": {f"{ZONE}.*": "*"}}),
        ("Workers R2 Storage Bucket Item Read", "r2-bucket/logs", {f"{BUCKET}.{A}_default_logs": "*"}),
        ("Workers R2 Storage Bucket Item Read", "r2-bucket/eu/logs-2", {f"{BUCKET}.{A}_eu_logs-2": "*"}),
    ],
)
def test_each_resource_form(permission: str, resource: str, expected: dict[str, Any]) -> None:
    group = CATALOG[permission][0].id
    assert policies(([permission], [resource])) == [allow([group], expected)]


@pytest.mark.parametrize(
    "bad",
    [
        "Account",
        "zone",
        "zone/",
        "zone/xyz",
        "zones/x",
        f"zone/{Z}/x",
        "r2-bucket",
        "r2-bucket/",
        "r2-bucket/UPPER",
        "r2-bucket/ab",
        "r2-bucket/mars/logs",
        "r2-bucket/eu/logs/x",
        "bucket/logs",
        "",
    ],
)
def test_invalid_resource_syntax(bad: str) -> None:
    with pytest.raises(InvalidSpec, match="invalid Cloudflare resource"):
        parse_resource(bad, A)


def test_default_resources_are_the_whole_account() -> None:
    got = policies((["Workers Scripts Write", "Zone Read", "Workers KV Storage Read"], []))
    assert got == [
        allow(["scripts-w", "kv-r"], {f"{ACCOUNT}.{A}": "*"}),
        allow(["zone-r"], {f"{ACCOUNT}.{A}": {f"{ZONE}.*": "*"}}),
    ]


def test_bucket_groups_need_named_buckets() -> None:
    with pytest.raises(InvalidSpec, match=r"'Workers R2 Storage Bucket Item Read' applies to R2 bucket"):
        policies((["Workers R2 Storage Bucket Item Read"], []))


@pytest.mark.parametrize(
    ("permission", "resource"),
    [
        ("Zone Read", "account"),
        ("Workers Scripts Write", f"zone/{Z}"),
        ("Workers Scripts Write", "zones"),
        ("Workers Scripts Write", "r2-bucket/logs"),
        ("Workers R2 Storage Bucket Item Read", "account"),
    ],
)
def test_group_and_resource_of_different_scopes_fail_clearly(permission: str, resource: str) -> None:
    with pytest.raises(InvalidSpec, match="put them in separate scopes") as caught:
        policies(([permission], [resource]))
    assert permission in str(caught.value) and resource in str(caught.value)


def test_same_name_in_two_scopes_resolves_by_resource() -> None:
    name = "Access: Apps and Policies Read"
    assert policies(([name], [f"zone/{Z}"])) == [allow(["access-zone"], {f"{ZONE}.{Z}": "*"})]
    assert policies(([name], ["account"])) == [allow(["access-acct"], {f"{ACCOUNT}.{A}": "*"})]
    assert policies(([name], [])) == [allow(["access-acct"], {f"{ACCOUNT}.{A}": "*"})]
    both = policies(([name], ["account", f"zone/{Z}", "zones"]))
    assert both == [
        allow(["access-acct"], {f"{ACCOUNT}.{A}": "*"}),
        allow(["access-zone"], {f"{ZONE}.{Z}": "*", f"{ACCOUNT}.{A}": {f"{ZONE}.*": "*"}}),
    ]


def test_several_scopes_and_duplicates() -> None:
    got = policies(
        (["DNS Write", "Zone Read", "DNS Write"], [f"zone/{Z}", f"zone/{Z}"]),
        (["Workers R2 Storage Bucket Item Read"], ["r2-bucket/a-bucket", "r2-bucket/eu/b-bucket"]),
    )
    assert got == [
        allow(["dns-w", "zone-r"], {f"{ZONE}.{Z}": "*"}),
        allow(["item-r"], {f"{BUCKET}.{A}_default_a-bucket": "*", f"{BUCKET}.{A}_eu_b-bucket": "*"}),
    ]


def test_unknown_permission_is_named_with_suggestions() -> None:
    with pytest.raises(UnknownPermission) as caught:
        policies((["Workers Scripts Edit", "Zone Read", "Teleport Write"], []))
    message = str(caught.value)
    assert "'Workers Scripts Edit'" in message and "did you mean 'Workers Scripts Write'" in message
    assert "'Teleport Write'" in message and "'Zone Read'" not in message


def test_r2_detection() -> None:
    def jurisdictions(*scopes: tuple[list[str], list[str]]) -> set[str] | None:
        return r2_jurisdictions([Scope(permissions=p, resources=r) for p, r in scopes], CATALOG, A)

    assert jurisdictions((["Workers Scripts Write"], [])) is None
    assert jurisdictions((["Workers R2 Storage Write"], [])) == {"default"}
    assert jurisdictions((["Workers R2 Storage Bucket Item Read"], ["r2-bucket/eu/logs"])) == {"eu"}


def test_r2_credentials_known_sha256_vector() -> None:
    data = r2_credentials(A, "token-id-1", "abc", {"default"})
    assert data == {
        "AWS_ACCESS_KEY_ID": "token-id-1",
        # SHA-256("abc"), FIPS 180-2 test vector
        "AWS_SECRET_ACCESS_KEY": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        "AWS_ENDPOINT_URL_S3": f"https://{A}.r2.cloudflarestorage.com",
        "R2_ENDPOINT": f"https://{A}.r2.cloudflarestorage.com",
    }
    assert data["AWS_SECRET_ACCESS_KEY"] == hashlib.sha256(b"abc").hexdigest()


def test_r2_endpoints_by_jurisdiction() -> None:
    assert r2_endpoint(A, "eu") == f"https://{A}.eu.r2.cloudflarestorage.com"
    eu = r2_credentials(A, "t", "v", {"eu"})
    assert eu["AWS_ENDPOINT_URL_S3"] == eu["R2_ENDPOINT"] == f"https://{A}.eu.r2.cloudflarestorage.com"
    mixed = r2_credentials(A, "t", "v", {"default", "eu"})
    assert mixed["R2_ENDPOINT"] == f"https://{A}.r2.cloudflarestorage.com"
    assert mixed["R2_ENDPOINT_EU"] == f"https://{A}.eu.r2.cloudflarestorage.com"


def test_token_name_short_and_long() -> None:
    assert token_name("team-a", "agent-1", UID) == f"agentaccounts/team-a/agent-1/{UID}"
    for namespace, name in [
        ("n" * 63, "a" * 253),
        ("short", "a" * 253),
        ("n" * 63, "short"),
        ("n" * 63, "b" * 40),
    ]:
        full = token_name(namespace, name, UID)
        assert len(full) <= MAX_NAME
        assert full.endswith(f"/{UID}") and uid_from_name(full) == UID
        assert full.startswith(f"agentaccounts/{namespace[:10]}")
    assert token_name("short", "a" * 253, UID).startswith("agentaccounts/short/aaa")
    assert len(token_name("n" * 63, "a" * 253, UID)) == MAX_NAME


def test_uid_from_foreign_names() -> None:
    for name in [
        "my token",
        "agentaccounts/x",
        "agentaccounts//n/uid",
        "agentaccounts-x/a/b/c",
        "agentaccounts/a/b/",
    ]:
        assert uid_from_name(name) is None


def test_expiry_is_rfc3339_utc_seconds_z() -> None:
    moment = datetime(2030, 1, 2, 3, 4, 5, 987654, tzinfo=UTC)
    assert rfc3339(moment) == "2030-01-02T03:04:05Z"
    assert rfc3339(moment.astimezone(timezone(timedelta(hours=2)))) == "2030-01-02T03:04:05Z"
    assert rfc3339(datetime(2030, 1, 2, 3, 4, 5)) == "2030-01-02T03:04:05Z"  # naive means UTC
