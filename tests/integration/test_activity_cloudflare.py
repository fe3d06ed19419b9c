"""The operator merges a Cloudflare token's writes into its account's trail at revocation.

Real control plane, the operator as a child process, the Cloudflare emulator: an agent writes with its
token (and reads, and is refused once); after expiry status.activity and the audit stream hold exactly
its writes, with a note saying what Cloudflare does not record. Without Account Settings Read on the
parent token the trail is empty and says why; revocation is never held up by it.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client

from cfemulator import Emulator
from cfemulator.fixtures import PARENT_PERMISSIONS
from integration.cloudflare_support import (
    agent_call,
    create_token_provider,
    emulator_fixture,  # noqa: F401  (the `emulator` fixture)
    parent,
    provider_condition,
    status_of_account,
)
from integration.support import OperatorProcess, create_account, phase, secret_data, wait_for

pytestmark = pytest.mark.cluster
Start = Callable[..., OperatorProcess]
PROVIDER = {"name": "cloudflare"}
KV_WRITE = [{"permissions": ["Workers KV Storage Write"]}]


@pytest.fixture
def audit_log() -> Iterator[Path]:
    path = Path(tempfile.mkstemp(prefix="audit-stream-", suffix=".jsonl")[1])
    yield path
    path.unlink(missing_ok=True)


def _ready_provider(api: client.ApiClient, namespace: str, emulator: Emulator, permissions: list[str]) -> str:
    p = parent(emulator, permissions)
    create_token_provider(api, namespace, PROVIDER["name"], p)
    wait_for(
        lambda: provider_condition(api, namespace, PROVIDER["name"]).get("status") == "True",
        20,
        "the AccountProvider to report Ready",
    )
    return p.account


def test_a_tokens_writes_are_in_its_trail_after_revocation(
    emulator: Emulator, api: client.ApiClient, namespace: str, start_operator: Start, audit_log: Path
) -> None:
    operator = start_operator(namespace, env={"AGENTACCOUNTS_AUDIT_LOG": str(audit_log)})
    account = _ready_provider(api, namespace, emulator, [*PARENT_PERMISSIONS, "Workers KV Storage Write"])
    create_account(api, namespace, "writer", providerRef=PROVIDER, lifetime="10s", scopes=KV_WRITE)
    wait_for(lambda: phase(api, namespace, "writer") == "Ready", 20, "writer Ready")
    token = secret_data(api, namespace, "writer-credentials")["CLOUDFLARE_API_TOKEN"]
    kv = f"/accounts/{account}/storage/kv/namespaces"
    assert agent_call(emulator.base_url, token, kv, "POST", {"title": "first"}).ok
    assert agent_call(emulator.base_url, token, kv).ok  # a read: Cloudflare does not log it
    assert agent_call(emulator.base_url, token, kv, "POST", {"title": "second"}).ok

    wait_for(lambda: phase(api, namespace, "writer") == "Expired", 30, "writer Expired")
    activity = status_of_account(api, namespace, "writer")["activity"]
    assert (activity["requests"], activity["denied"], activity["complete"]) == (2, 0, True)
    assert [(e["verb"], e["resource"]) for e in activity["recent"]] == [
        ("create", "kv_namespaces"),
        ("create", "kv_namespaces"),
    ]
    assert any("not reads" in note for note in activity["notes"])
    lines = [json.loads(line) for line in audit_log.read_text().splitlines()]
    requests = [line for line in lines if line["kind"] == "request"]
    assert [(r["verb"], r["source"], r["account"]["name"]) for r in requests] == [
        ("create", "cloudflare-audit", "writer"),
        ("create", "cloudflare-audit", "writer"),
    ]
    assert any(line.get("event") == "expired" for line in lines)
    for text in (audit_log.read_text(), operator.output(), json.dumps(activity)):
        assert token not in text


def test_without_account_settings_read_the_trail_says_why_and_revocation_goes_on(
    emulator: Emulator, api: client.ApiClient, namespace: str, start_operator: Start
) -> None:
    start_operator(namespace)
    perms = [x for x in PARENT_PERMISSIONS if x != "Account Settings Read"] + ["Workers KV Storage Write"]
    account = _ready_provider(api, namespace, emulator, perms)
    create_account(api, namespace, "blind", providerRef=PROVIDER, lifetime="8s", scopes=KV_WRITE)
    wait_for(lambda: phase(api, namespace, "blind") == "Ready", 20, "blind Ready")
    token = secret_data(api, namespace, "blind-credentials")["CLOUDFLARE_API_TOKEN"]
    kv = f"/accounts/{account}/storage/kv/namespaces"
    assert agent_call(emulator.base_url, token, kv, "POST", {"title": "unseen"}).ok
    wait_for(lambda: phase(api, namespace, "blind") == "Expired", 30, "blind Expired")
    activity = status_of_account(api, namespace, "blind")["activity"]
    assert (activity["requests"], activity["complete"]) == (0, False)
    assert any("Account Settings Read" in note for note in activity["notes"])
