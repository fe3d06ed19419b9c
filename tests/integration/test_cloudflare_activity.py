"""What did the agent do, Cloudflare side: real control plane, operator child process, emulator.

Two agents get Cloudflare tokens from the operator and write with them; after the operator revoked
both at expiry, the Cloudflare provider's `activity()` — built here exactly as the operator builds it,
with the parent token from the provider's Secret — reads each token's writes back from the account's
audit log for its lifetime (status.issuedAt to status.revokedAt): each agent's own writes, in order,
none of the other's, none of its reads or refused attempts, and no credential anywhere; and the
operator's own read at revocation put the same entries in each account's status.activity.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timedelta

import httpx
from kubernetes import client

from agentaccounts.models import AccountRef
from agentaccounts.providers.base import ProviderActivity
from agentaccounts.providers.cloudflare.budget import RequestBudget
from agentaccounts.providers.cloudflare.provider import CloudflareProvider
from agentaccounts.providers.cloudflare.spec import CloudflareBlock
from cfemulator import Emulator
from cfemulator.fixtures import PARENT_PERMISSIONS
from integration.cloudflare_support import (
    Parent,
    agent_call,
    assert_no_leaks,
    assert_schema_valid,
    create_token_provider,
    emulator_fixture,  # noqa: F401  (the `emulator` fixture)
    parent,
    provider_condition,
    status_of_account,
)
from integration.support import OperatorProcess, create_account, phase, secret_data, wait_for

Start = Callable[..., OperatorProcess]
PROVIDER = {"name": "cloudflare"}
KV_WRITE = [{"permissions": ["Workers KV Storage Write"]}]


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _activity(emu: Emulator, p: Parent, status: dict[str, object]) -> ProviderActivity:
    """The provider's answer for one account's recorded token, over its lifetime."""
    ref = AccountRef.model_validate(status["accountRef"])
    since, before = _when(str(status["issuedAt"])), _when(str(status["revokedAt"]))

    async def read() -> ProviderActivity:
        async with httpx.AsyncClient(timeout=10.0) as http:
            block = CloudflareBlock.model_validate({"accountId": p.account, "apiBaseURL": emu.base_url})
            provider = CloudflareProvider.create(block, p.value, http, RequestBudget())
            return await provider.activity(ref, since, before)

    return asyncio.run(read())


def test_writes_made_with_an_agent_token_are_its_trail_after_revocation(
    emulator: Emulator, api: client.ApiClient, namespace: str, start_operator: Start
) -> None:
    p = parent(emulator, [*PARENT_PERMISSIONS, "Workers KV Storage Write"])
    operator = start_operator(namespace)
    create_token_provider(api, namespace, PROVIDER["name"], p)
    wait_for(
        lambda: provider_condition(api, namespace, PROVIDER["name"]).get("status") == "True",
        20,
        "the AccountProvider to report Ready",
    )
    for name in ("writer", "bystander"):
        create_account(api, namespace, name, providerRef=PROVIDER, lifetime="12s", scopes=KV_WRITE)
    for name in ("writer", "bystander"):
        wait_for(lambda name=name: phase(api, namespace, name) == "Ready", 20, f"{name} Ready")
    tokens = {
        n: secret_data(api, namespace, f"{n}-credentials")["CLOUDFLARE_API_TOKEN"]
        for n in ("writer", "bystander")
    }

    base, kv = emulator.base_url, f"/accounts/{p.account}/storage/kv/namespaces"
    writer, bystander = tokens["writer"], tokens["bystander"]
    assert agent_call(base, writer, kv, "POST", {"title": "first"}).ok
    assert agent_call(base, writer, kv).ok  # a read: Cloudflare does not log it
    assert agent_call(base, writer, kv, "POST", {"title": "second"}).ok
    refused = agent_call(base, writer, f"/accounts/{p.account}/d1/database", "POST", {"name": "db"})
    assert refused.status == 403  # refused: not in Cloudflare's log either
    assert agent_call(base, bystander, kv, "POST", {"title": "theirs"}).ok

    for name in ("writer", "bystander"):
        wait_for(lambda name=name: phase(api, namespace, name) == "Expired", 30, f"{name} Expired")
    statuses = {n: status_of_account(api, namespace, n) for n in ("writer", "bystander")}
    for status in statuses.values():
        assert emulator.token_info(status["accountRef"]["id"]) is None  # revoked: the token is gone

    trail = _activity(emulator, p, statuses["writer"])
    assert trail.complete and "not reads" in trail.note
    titles = {n["id"]: n["title"] for n in emulator.store.accounts[p.account].collections["kv"]}
    assert [(e.verb, e.resource, titles.get(e.name), e.code) for e in trail.entries] == [
        ("create", "kv_namespaces", "first", 200),
        ("create", "kv_namespaces", "second", 200),
    ]
    issued, revoked = _when(statuses["writer"]["issuedAt"]), _when(statuses["writer"]["revokedAt"])
    for entry in trail.entries:  # within the token's lifetime (Cloudflare stamps whole seconds)
        assert issued - timedelta(seconds=1) < _when(entry.time) <= revoked
    other = _activity(emulator, p, statuses["bystander"])
    assert [titles.get(e.name) for e in other.entries] == ["theirs"] and other.complete

    # The operator asked the same at revocation (revoke.py) and merged it into each account's trail.
    for name, expected in (("writer", trail), ("bystander", other)):
        activity = statuses[name]["activity"]
        assert activity["requests"] == len(expected.entries) and activity["denied"] == 0
        assert [(e["verb"], e["resource"], e.get("name"), e.get("auditID")) for e in activity["recent"]] == [
            (e.verb, e.resource, e.name, e.audit_id) for e in expected.entries
        ]
        assert activity["complete"] and any("not reads" in note for note in activity["notes"])

    text = json.dumps([asdict(e) for e in trail.entries + other.entries]) + trail.note + other.note
    text += json.dumps([s["activity"] for s in statuses.values()])
    assert p.value not in text and writer not in text and bystander not in text
    assert_schema_valid(
        emulator, "GET /accounts/{account_id}/logs/audit", "POST /accounts/{account_id}/tokens"
    )
    assert_no_leaks(api, namespace, operator, p.value, writer, bystander)


def test_without_account_settings_read_the_trail_says_why_it_is_empty(
    emulator: Emulator, api: client.ApiClient, namespace: str, start_operator: Start
) -> None:
    perms = [x for x in PARENT_PERMISSIONS if x != "Account Settings Read"] + ["Workers KV Storage Write"]
    p = parent(emulator, perms)
    start_operator(namespace)
    create_token_provider(api, namespace, PROVIDER["name"], p)
    create_account(api, namespace, "blind", providerRef=PROVIDER, lifetime="8s", scopes=KV_WRITE)
    wait_for(lambda: phase(api, namespace, "blind") == "Ready", 30, "Ready")
    token = secret_data(api, namespace, "blind-credentials")["CLOUDFLARE_API_TOKEN"]
    kv = f"/accounts/{p.account}/storage/kv/namespaces"
    assert agent_call(emulator.base_url, token, kv, "POST", {"title": "unseen"}).ok
    wait_for(lambda: phase(api, namespace, "blind") == "Expired", 30, "Expired")

    trail = _activity(emulator, p, status_of_account(api, namespace, "blind"))
    assert trail.entries == [] and not trail.complete
    assert "Account Settings Read" in trail.note and p.value not in trail.note
    assert len(emulator.store.audit) >= 1  # the write is in Cloudflare's log; this parent cannot read it
