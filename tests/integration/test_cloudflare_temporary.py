"""Cloudflare provider, mode `temporaryAccount`, end to end: a whole temporary account per AgentAccount.

The emulator asks for a small proof of work (cloudflare_support.SMALL_POW), so the operator runs the
real challenge / solve / create flow in milliseconds. The claim URL is a secret (whoever opens it owns
the account): it must reach the Secret and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
from kubernetes import client

from cfemulator import Emulator
from integration.cloudflare_support import (
    agent_call,
    assert_no_leaks,
    create_temporary_provider,
    emulator_fixture,  # noqa: F401  (the `emulator` fixture)
    provider_condition,
    secret_exists,
    status_of_account,
)
from integration.support import (
    OperatorProcess,
    condition,
    create_account,
    phase,
    secret_data,
    wait_event,
    wait_for,
)

Start = Callable[..., OperatorProcess]
PROVIDER = {"name": "cloudflare-preview"}
SCOPES = [{"permissions": ["Workers Scripts Write"]}]  # not applied: the account is the agent's


def test_temporary_account_credentials_and_claim_url_stay_in_the_secret(
    emulator: Emulator, api: client.ApiClient, namespace: str, start_operator: Start
) -> None:
    operator = start_operator(namespace)
    create_temporary_provider(api, namespace, PROVIDER["name"], emulator)
    wait_for(
        lambda: provider_condition(api, namespace, PROVIDER["name"]).get("status") == "True",
        20,
        "the provider to report Ready",
    )
    create_account(api, namespace, "sandbox", providerRef=PROVIDER, lifetime="30m", scopes=SCOPES)
    create_account(api, namespace, "greedy", providerRef=PROVIDER, lifetime="2h", scopes=SCOPES)
    wait_for(lambda: phase(api, namespace, "sandbox") == "Ready", 30, "sandbox Ready")
    wait_for(lambda: phase(api, namespace, "greedy") == "Failed", 30, "greedy Failed")

    greedy = condition(api, namespace, "greedy")
    assert greedy["reason"] == "LifetimeExceeded" and "60 minutes" in greedy["message"]

    data = secret_data(api, namespace, "sandbox-credentials")
    assert set(data) == {"CLOUDFLARE_ACCOUNT_ID", "CLOUDFLARE_API_TOKEN", "CLAIM_URL"}
    account_id, token, claim_url = (
        data["CLOUDFLARE_ACCOUNT_ID"],
        data["CLOUDFLARE_API_TOKEN"],
        data["CLAIM_URL"],
    )
    info = emulator.account_info(account_id)
    assert info is not None and info["preview"] and not info["claimed"]
    status = status_of_account(api, namespace, "sandbox")
    assert status["accountRef"]["kind"] == "CloudflareTemporaryAccount"
    assert status["accountRef"]["id"] == account_id
    note = status["providerNote"]
    assert "deletes it 60 minutes after creation" in note and "unless someone claims it" in note
    assert "CLAIM_URL" in note  # names the Secret key, never the value

    # The agent's token works on a protected endpoint of its own account, and only there.
    assert agent_call(emulator.base_url, token, f"/accounts/{account_id}/workers/scripts").ok
    other = emulator.add_account()
    assert agent_call(emulator.base_url, token, f"/accounts/{other}/workers/scripts").status == 403

    # The claim URL went nowhere but the Secret (the token and the URL are checked alike).
    assert_no_leaks(api, namespace, operator, claim_url, token)
    wait_event(api, namespace, "sandbox", ("Normal", "Issued"))
    # ...and it is real: opening it claims the account.
    assert httpx.get(claim_url, timeout=10).json()["claimed"] is True
    assert (emulator.account_info(account_id) or {})["claimed"] is True


def test_temporary_account_expiry_deletes_only_the_secret(
    emulator: Emulator, api: client.ApiClient, namespace: str, start_operator: Start
) -> None:
    operator = start_operator(namespace)
    create_temporary_provider(api, namespace, PROVIDER["name"], emulator)
    create_account(api, namespace, "brief", providerRef=PROVIDER, lifetime="5s", scopes=SCOPES)
    wait_for(lambda: phase(api, namespace, "brief") == "Ready", 30, "Ready")
    data = secret_data(api, namespace, "brief-credentials")
    wait_for(lambda: phase(api, namespace, "brief") == "Expired", 30, "Expired")
    assert not secret_exists(api, namespace, "brief-credentials")
    # Cloudflare offers no way to delete a temporary account: it lives on until its 60 minutes are up,
    # and the Expired condition says so.
    assert emulator.account_info(data["CLOUDFLARE_ACCOUNT_ID"]) is not None
    message = condition(api, namespace, "brief")["message"]
    assert "Secret deleted" in message and "60 minutes" in message
    assert_no_leaks(api, namespace, operator, data["CLAIM_URL"], data["CLOUDFLARE_API_TOKEN"])
