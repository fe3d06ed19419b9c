"""Every exchange of a full flow matches the official OpenAPI schema; and the validator itself can fail."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from cfemulator import Emulator, pow
from cfemulator.helpers import account_key, allow, bearer, bucket_key
from cfemulator.schema import assert_exchanges_valid, validate_exchange, validate_request, validate_response


def _full_flow(emu: Emulator, api: httpx.Client, account: str, parent: str) -> None:
    """Touch every schema-covered operation, successes and failures alike."""
    p, base = bearer(parent), f"/accounts/{account}/tokens"
    emu.add_bucket(account, "assets")
    expires = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    groups = api.get(f"{base}/permission_groups", params={"name": "Workers Scripts Read"}, headers=p).json()[
        "result"
    ]
    body = {
        "name": "agent",
        "policies": [allow(account_key(account), "Workers Scripts Read")],
        "expires_on": expires,
        "condition": {"request_ip": {"in": ["127.0.0.0/8"]}},
    }
    assert body["policies"][0]["permission_groups"][0]["id"] == groups[0]["id"]
    child = api.post(base, json=body, headers=p).json()["result"]
    api.get(f"{base}/verify", headers=bearer(child["value"]))
    api.get(base, params={"page": 1, "per_page": 5, "direction": "desc"}, headers=p)
    api.get(f"{base}/{child['id']}", headers=p)
    api.put(f"{base}/{child['id']}", json=body | {"status": "disabled"}, headers=p)
    api.put(f"{base}/{child['id']}/value", json={}, headers=p)
    item = {
        "name": "r2",
        "policies": [allow(bucket_key(account, "assets"), "Workers R2 Storage Bucket Item Read")],
    }
    reader = api.post(base, json=item, headers=p).json()["result"]
    api.post(
        f"/accounts/{account}/r2/temp-access-credentials",
        headers=p,
        json={
            "bucket": "assets",
            "parentAccessKeyId": reader["id"],
            "permission": "object-read-only",
            "ttlSeconds": 600,
        },
    )
    api.get(f"/accounts/{account}", headers=p)
    api.delete(f"{base}/{child['id']}", headers=p)
    window = {"since": datetime.now(UTC).date().isoformat(), "before": expires, "direction": "asc"}
    logged = api.get(
        f"/accounts/{account}/logs/audit", params=window | {"resource_id": child["id"]}, headers=p
    )
    assert [e["action"]["type"] for e in logged.json()["result"]] == ["create", "update", "update", "delete"]
    # failures: 404, 403 (9109 and 10000), 400, 401, 429
    api.delete(f"{base}/{child['id']}", headers=p)
    api.get(base, headers=bearer("cfat_unknown"))
    api.post(base, json={"name": "x" * 121, "policies": body["policies"]}, headers=p)
    api.get(f"{base}/verify", headers=bearer("nope"))
    api.get(f"/accounts/{account}/workers/scripts", headers=p)
    api.get(f"/accounts/{account}/logs/audit", params={"since": expires}, headers=p)  # no `before`: 400
    chal = api.post("/provisioning/previews/challenge", json={}).json()["result"]
    api.post(
        "/provisioning/previews",
        json={
            "termsOfService": "https://www.cloudflare.com/terms/",
            "privacyPolicy": "https://www.cloudflare.com/privacypolicy/",
            "acceptTermsOfService": "yes",
            "challengeToken": chal["challengeToken"],
            "solution": {"checkpoints": pow.solve(chal["seed"], chal["k"], chal["g"])},
        },
    )
    emu.faults.force_429(5)
    api.get(base, headers=p)


def test_every_exchange_of_a_full_flow_matches_the_schema(
    emu: Emulator, api: httpx.Client, account: str, parent: str
) -> None:
    _full_flow(emu, api, account, parent)
    exchanges = emu.requests
    statuses = {e.status for e in exchanges}
    assert {200, 400, 401, 403, 404, 429} <= statuses
    responses = [validate_response(e.method, e.path, e.status, e.response) for e in exchanges]
    assert [r for r in responses if not r.ok] == []
    requests = [validate_request(e.method, e.path, e.request, e.query) for e in exchanges]
    flagged = [r for r in requests if not r.ok]  # only the deliberately over-long name and missing `before`
    assert [r.what for r in flagged] == [
        "POST /accounts/{account_id}/tokens request",
        "GET /accounts/{account_id}/logs/audit request",
    ] and "too long" in flagged[0].errors[0]
    assert flagged[1].errors == ("query parameter before: required",)
    uncovered = [
        e for e in exchanges if e.path.startswith("/provisioning/") or e.path.endswith("/workers/scripts")
    ]
    assert len(uncovered) == 3
    assert [r.what for r in responses if r.skipped] == [f"{e.method} {e.path} response" for e in uncovered]
    assert len(responses) - len(uncovered) == 18  # every schema-covered operation, some twice

    valid_requests = [
        e
        for e in exchanges
        if not (e.request or {}).get("name", "").startswith("xxx") and (e.query or {}).keys() != {"since"}
    ]
    validated, skipped = assert_exchanges_valid(valid_requests)
    assert (validated, skipped) == (2 * (len(valid_requests) - 3), 2 * 3)
    with pytest.raises(AssertionError, match="971 is less than the minimum of 1000"):
        assert_exchanges_valid(valid_requests, strict=True)


def test_uncovered_paths_say_they_were_skipped() -> None:
    for method, path in (
        ("POST", "/provisioning/previews"),
        ("GET", "/accounts/" + "a" * 32 + "/workers/scripts"),
    ):
        req, resp = validate_exchange((method, path, {}, {}, 200, {"success": True}))
        assert req.skipped and resp.skipped and "not in openapi-subset.json" in req.skipped
    resp = validate_response("GET", "/client/v4/accounts/" + "a" * 32 + "/tokens", 502, None)
    assert resp.skipped and "502" in resp.skipped


def test_validator_rejects_bad_responses() -> None:
    path, ok_token = (
        "/accounts/" + "a" * 32 + "/tokens/" + "b" * 32,
        {"id": "b" * 32, "status": "active", "name": "t"},
    )
    assert validate_response(
        "GET", path, 200, {"success": True, "errors": [], "messages": [], "result": ok_token}
    ).ok
    missing_success = validate_response("GET", path, 200, {"errors": [], "messages": [], "result": ok_token})
    assert not missing_success.ok and "'success' is a required property" in missing_success.errors[0]
    bad_status = validate_response(
        "GET",
        path,
        200,
        {"success": True, "errors": [], "messages": [], "result": ok_token | {"status": "paused"}},
    )
    assert not bad_status.ok
    no_policy_id = {
        "effect": "allow",
        "resources": {},
        "permission_groups": [{"id": "x"}],
    }  # id is required in responses
    bad_policy = validate_response(
        "GET",
        path,
        200,
        {"success": True, "errors": [], "messages": [], "result": ok_token | {"policies": [no_policy_id]}},
    )
    assert not bad_policy.ok and "'id' is a required property" in bad_policy.errors[0]
    failure_with_result = {
        "success": False,
        "errors": [{"code": 1003, "message": "x"}],
        "messages": [],
        "result": {},
    }
    assert not validate_response("GET", path, 404, failure_with_result).ok
    failure = failure_with_result | {"result": None}
    assert validate_response("GET", path, 404, failure).ok  # nullable result accepted


def test_validator_rejects_bad_requests() -> None:
    base = "/client/v4/accounts/" + "a" * 32
    policy = {
        "effect": "allow",
        "resources": {"com.cloudflare.api.account." + "a" * 32: "*"},
        "permission_groups": [{"id": "x"}],
    }
    assert validate_request(
        "POST", base + "/tokens", {"name": "t", "policies": [policy]}
    ).ok  # policy id is read-only
    assert not validate_request("POST", base + "/tokens", {"policies": [policy]}).ok
    assert not validate_request(
        "POST", base + "/tokens", {"name": "t", "policies": [policy], "expires_on": "tomorrow"}
    ).ok
    assert not validate_request("POST", base + "/tokens", None).ok
    assert not validate_request("GET", base + "/tokens", None, {"per_page": "100"}).ok
    assert not validate_request("GET", "/accounts/short/tokens", None).ok  # account ids are 32 characters
    no_ttl = {"bucket": "b", "parentAccessKeyId": "k", "permission": "object-read-only"}
    assert (
        "'ttlSeconds' is a required property"
        in validate_request("POST", base + "/r2/temp-access-credentials", no_ttl).errors[0]
    )
    assert not validate_request("PUT", base + "/tokens/" + "b" * 32 + "/value", None).ok
