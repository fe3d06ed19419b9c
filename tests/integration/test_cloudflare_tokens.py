"""Cloudflare provider, mode `token`, end to end: real control plane, operator child process, emulator.

Each test gets its own emulator (cloudflare_support.emulator_fixture), emulated Cloudflare account and
parent token, and a namespaced AccountProvider whose parent-token Secret sits beside it. The agent is
simulated with plain HTTP calls carrying the token from the Secret. Every test that issues tokens
also checks that what the operator sent and the emulator answered fits Cloudflare's official OpenAPI
schema, and that no credential reached the operator's log, an Event, or any status.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
from kubernetes import client

from cfemulator import Emulator
from cfemulator.helpers import account_key, allow, bearer
from integration.cloudflare_support import (
    Parent,
    agent_call,
    assert_no_leaks,
    assert_schema_valid,
    create_parent_secret,
    create_token_provider,
    delete_account,
    emulator_fixture,  # noqa: F401  (the `emulator` fixture)
    events_of,
    parent,
    provider_condition,
    secret_exists,
    status_of_account,
)
from integration.support import (
    OperatorProcess,
    condition,
    create_account,
    events_for,
    get_account,
    phase,
    secret_data,
    wait_event,
    wait_for,
)

Start = Callable[..., OperatorProcess]
PROVIDER = {"name": "cloudflare"}
READ_SCRIPTS = [{"permissions": ["Workers Scripts Read"]}]
TOKEN_OPS = (
    "GET /accounts/{account_id}/tokens/permission_groups",
    "GET /accounts/{account_id}/tokens",
    "POST /accounts/{account_id}/tokens",
    "DELETE /accounts/{account_id}/tokens/{token_id}",
)


def _ready_provider(api: client.ApiClient, namespace: str, p: Parent) -> None:
    create_token_provider(api, namespace, PROVIDER["name"], p)
    wait_for(
        lambda: provider_condition(api, namespace, PROVIDER["name"]).get("status") == "True",
        20,
        "the AccountProvider to report Ready",
    )


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_token_grants_exactly_its_scopes_until_expiry(
    emulator: Emulator, api: client.ApiClient, namespace: str, start_operator: Start
) -> None:
    p = parent(emulator)
    operator = start_operator(namespace)
    _ready_provider(api, namespace, p)
    account = create_account(
        api, namespace, "coder", providerRef=PROVIDER, lifetime="8s", scopes=READ_SCRIPTS
    )
    wait_for(lambda: phase(api, namespace, "coder") == "Ready", 20, "Ready")

    data = secret_data(api, namespace, "coder-credentials")
    assert set(data) == {"CLOUDFLARE_API_TOKEN", "CLOUDFLARE_ACCOUNT_ID"}
    assert data["CLOUDFLARE_ACCOUNT_ID"] == p.account
    token = data["CLOUDFLARE_API_TOKEN"]
    token_id = emulator.token_id(token)
    status = status_of_account(api, namespace, "coder")
    assert status["provider"] == "cloudflare"
    assert status["accountRef"] == {
        "kind": "CloudflareAPIToken",
        "id": token_id,
        "name": f"agentaccounts/{namespace}/coder/{account['metadata']['uid']}",
    }
    info = emulator.token_info(token_id or "")
    assert info is not None and info["status"] == "active"
    # Cloudflare itself expires the token at the AgentAccount's expiry (whole seconds, never later).
    assert _when(info["expires_on"]) == _when(status["expiresAt"])
    assert "Cloudflare expires this token at" in status["providerNote"]

    base = emulator.base_url
    assert agent_call(base, token, f"/accounts/{p.account}/workers/scripts").ok
    denied = agent_call(base, token, f"/accounts/{p.account}/storage/kv/namespaces")
    assert (denied.status, denied.codes) == (403, [10000])
    mint = agent_call(base, token, f"/accounts/{p.account}/tokens", "POST", {"name": "x", "policies": []})
    assert mint.status == 403  # the agent cannot mint itself more tokens
    other = emulator.add_account()
    assert agent_call(base, token, f"/accounts/{other}/workers/scripts").status == 403

    wait_for(
        lambda: not agent_call(base, token, f"/accounts/{p.account}/workers/scripts").ok,
        20,
        "the token to stop working",
    )
    revoked_after = datetime.now(UTC) - _when(status["expiresAt"])
    wait_for(lambda: phase(api, namespace, "coder") == "Expired", 10, "Expired")
    assert revoked_after < timedelta(seconds=3)
    assert emulator.token_info(token_id or "") is None  # deleted by the operator, not merely expired
    assert agent_call(base, token, f"/accounts/{p.account}/workers/scripts").status == 403
    assert not secret_exists(api, namespace, "coder-credentials")
    assert condition(api, namespace, "coder")["reason"] == "Expired"
    reasons = events_for(api, namespace, "coder")
    assert ("Normal", "Issued") in reasons and ("Normal", "Expired") in reasons
    assert 'agentaccounts_revoked_total{provider="cloudflare",reason="expired"} 1.0' in operator.metrics()

    assert_schema_valid(emulator, *TOKEN_OPS)
    assert_no_leaks(api, namespace, operator, p.value, token)


def test_deleting_the_account_mid_life_deletes_the_token(
    emulator: Emulator, api: client.ApiClient, namespace: str, start_operator: Start
) -> None:
    p = parent(emulator)
    operator = start_operator(namespace)
    _ready_provider(api, namespace, p)
    create_account(api, namespace, "brief", providerRef=PROVIDER, lifetime="1h", scopes=READ_SCRIPTS)
    wait_for(lambda: phase(api, namespace, "brief") == "Ready", 20, "Ready")
    token = secret_data(api, namespace, "brief-credentials")["CLOUDFLARE_API_TOKEN"]
    token_id = emulator.token_id(token) or ""
    assert agent_call(emulator.base_url, token, f"/accounts/{p.account}/workers/scripts").ok

    delete_account(api, namespace, "brief")
    wait_for(lambda: get_account(api, namespace, "brief") is None, 20, "the finalizer to finish")
    assert emulator.token_info(token_id) is None
    answer = agent_call(emulator.base_url, token, f"/accounts/{p.account}/workers/scripts")
    assert answer.status == 403
    assert not secret_exists(api, namespace, "brief-credentials")
    wait_event(api, namespace, "brief", ("Normal", "Revoked"))
    assert [t["id"] for t in emulator.list_tokens(p.account)] == [p.id]  # only the parent is left

    assert_schema_valid(emulator, *TOKEN_OPS)
    assert_no_leaks(api, namespace, operator, p.value, token)


def test_orphan_sweep_deletes_only_tokens_no_live_account_records(
    emulator: Emulator, api: client.ApiClient, namespace: str, start_operator: Start
) -> None:
    p = parent(emulator)
    first = start_operator(namespace)  # default sweep period (5 min): no sweep while this one runs
    _ready_provider(api, namespace, p)
    create_account(api, namespace, "alive", providerRef=PROVIDER, lifetime="1h", scopes=READ_SCRIPTS)
    wait_for(lambda: phase(api, namespace, "alive") == "Ready", 20, "Ready")
    live_token = secret_data(api, namespace, "alive-credentials")["CLOUDFLARE_API_TOKEN"]
    live_id = emulator.token_id(live_token) or ""
    first.stop()

    # What a crash between "token created" and "token id recorded" leaves behind, made exactly as the
    # operator makes tokens: through the API, with the parent token, named after a uid nobody has.
    def mint(name: str) -> str:
        body = {
            "name": name,
            "policies": [allow(account_key(p.account), "Workers Scripts Read")],
            "expires_on": (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        url = f"{emulator.base_url}/accounts/{p.account}/tokens"
        response = httpx.post(url, json=body, headers=bearer(p.value), timeout=10)
        assert response.status_code == 200, response.text
        return str(response.json()["result"]["id"])

    orphan_name = f"agentaccounts/{namespace}/crashed/{uuid.uuid4()}"
    orphan = mint(orphan_name)
    foreign = mint("ci-deploy")  # not ours: never touched
    # Ours by name, but of a namespace this operator does not watch: it cannot know whether that
    # account lives, so it must leave the token alone.
    elsewhere = mint(f"agentaccounts/{namespace}-other/job/{uuid.uuid4()}")

    operator = start_operator(
        namespace,
        env={
            "AGENTACCOUNTS_ORPHAN_SWEEP_SECONDS": "1",
            "AGENTACCOUNTS_CLOUDFLARE_ORPHAN_MIN_AGE_SECONDS": "0",
        },
    )
    wait_for(lambda: emulator.token_info(orphan) is None, 30, "the orphaned token to be deleted")

    def orphan_event() -> list[str]:
        events = events_of(api, namespace, "AccountProvider", PROVIDER["name"])
        return [e.message for e in events if e.reason == "OrphanDeleted"]

    messages = wait_for(orphan_event, 10, "an OrphanDeleted Event on the provider")
    assert any(orphan in m and orphan_name in m for m in messages), messages
    # A few more sweeps must not change anything else.
    sweeps_before = len(emulator.requests)
    wait_for(lambda: len(emulator.requests) >= sweeps_before + 3, 15, "more sweeps")
    assert {t["id"] for t in emulator.list_tokens(p.account)} == {p.id, live_id, foreign, elsewhere}
    assert agent_call(emulator.base_url, live_token, f"/accounts/{p.account}/workers/scripts").ok
    assert phase(api, namespace, "alive") == "Ready"
    assert len(orphan_event()) == 1

    assert_schema_valid(emulator, *TOKEN_OPS)
    assert_no_leaks(api, namespace, operator, p.value, live_token)


def test_r2_bucket_scope_yields_s3_keys_r2_accepts(
    emulator: Emulator, api: client.ApiClient, namespace: str, start_operator: Start
) -> None:
    p = parent(emulator)
    emulator.add_bucket(p.account, "agent-data")
    emulator.add_bucket(p.account, "other-data")
    operator = start_operator(namespace)
    _ready_provider(api, namespace, p)
    scopes = [{"permissions": ["Workers R2 Storage Bucket Item Read"], "resources": ["r2-bucket/agent-data"]}]
    create_account(api, namespace, "reader", providerRef=PROVIDER, lifetime="1h", scopes=scopes)
    wait_for(lambda: phase(api, namespace, "reader") == "Ready", 20, "Ready")

    data = secret_data(api, namespace, "reader-credentials")
    token = data["CLOUDFLARE_API_TOKEN"]
    token_id = emulator.token_id(token)
    assert (
        data["AWS_ACCESS_KEY_ID"]
        == token_id
        == status_of_account(api, namespace, "reader")["accountRef"]["id"]
    )
    assert data["AWS_SECRET_ACCESS_KEY"] == hashlib.sha256(token.encode()).hexdigest()
    endpoint = f"https://{p.account}.r2.cloudflarestorage.com"
    assert data["AWS_ENDPOINT_URL_S3"] == data["R2_ENDPOINT"] == endpoint
    key_id, secret = data["AWS_ACCESS_KEY_ID"], data["AWS_SECRET_ACCESS_KEY"]
    assert emulator.check_r2_keys(key_id, secret, bucket="agent-data")
    assert not emulator.check_r2_keys(key_id, secret, bucket="agent-data", write=True)  # read only
    assert not emulator.check_r2_keys(key_id, secret, bucket="other-data")  # only the named bucket
    assert not emulator.check_r2_keys(key_id, "0" * 64, bucket="agent-data")

    delete_account(api, namespace, "reader")
    wait_for(lambda: get_account(api, namespace, "reader") is None, 20, "the finalizer to finish")
    assert not emulator.check_r2_keys(key_id, secret, bucket="agent-data")  # revoked with the token

    assert_schema_valid(emulator, *TOKEN_OPS)
    assert_no_leaks(api, namespace, operator, p.value, token, secret)


def test_unknown_permission_fails_naming_it(
    emulator: Emulator, api: client.ApiClient, namespace: str, start_operator: Start
) -> None:
    p = parent(emulator)
    start_operator(namespace)
    _ready_provider(api, namespace, p)
    scopes = [{"permissions": ["Workers Scripts Read", "Workers Scripts Raed"]}]
    create_account(api, namespace, "typo", providerRef=PROVIDER, scopes=scopes)
    wait_for(lambda: phase(api, namespace, "typo") == "Failed", 20, "Failed")
    cond = condition(api, namespace, "typo")
    assert cond["reason"] == "UnknownPermission"
    assert (
        "'Workers Scripts Raed'" in cond["message"]
        and "did you mean 'Workers Scripts Read'" in cond["message"]
    )
    wait_event(api, namespace, "typo", ("Warning", "IssueFailed"))
    assert [t["id"] for t in emulator.list_tokens(p.account)] == [p.id]  # nothing was minted


def test_missing_parent_token_secret_shows_on_the_provider_and_the_account_waits(
    emulator: Emulator, api: client.ApiClient, namespace: str, start_operator: Start
) -> None:
    p = parent(emulator)
    start_operator(namespace, env={"AGENTACCOUNTS_PROVIDER_RETRY_SECONDS": "1"})
    create_token_provider(api, namespace, PROVIDER["name"], p, secret="cf-parent", with_secret=False)
    wait_for(
        lambda: provider_condition(api, namespace, PROVIDER["name"]).get("status") == "False",
        20,
        "the provider to report not Ready",
    )
    cond = provider_condition(api, namespace, PROVIDER["name"])
    assert cond["reason"] == "ProviderNotFound" and f"{namespace}/cf-parent" in cond["message"]

    create_account(api, namespace, "waiting", providerRef=PROVIDER, lifetime="1h", scopes=READ_SCRIPTS)
    wait_for(
        lambda: condition(api, namespace, "waiting").get("reason") == "ProviderNotFound",
        20,
        "the account to wait for the Secret",
    )
    assert phase(api, namespace, "waiting") == "Pending"
    assert "cf-parent" in condition(api, namespace, "waiting")["message"]
    assert [t["id"] for t in emulator.list_tokens(p.account)] == [p.id]

    create_parent_secret(api, namespace, "cf-parent", p.value)
    wait_for(lambda: phase(api, namespace, "waiting") == "Ready", 20, "Ready once the Secret exists")
    token = secret_data(api, namespace, "waiting-credentials")["CLOUDFLARE_API_TOKEN"]
    assert agent_call(emulator.base_url, token, f"/accounts/{p.account}/workers/scripts").ok
