"""Fixtures and helpers for the Cloudflare integration tests: the emulator, providers, a simulated agent.

The Cloudflare emulator (tests/cfemulator) runs in a thread of the pytest process; the operator runs
as a child process (integration.support.OperatorProcess) and reaches it over loopback HTTP, exactly as
it would reach api.cloudflare.com. One emulator per test, so request counts, tokens and recorded
exchanges belong to that test alone.

Test modules import the fixtures they use by name (`from integration.cloudflare_support import
emulator_fixture  # noqa: F401`): pytest finds fixtures imported into a module, and conftest.py is
not ours to edit.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from kubernetes import client

from cfemulator import Emulator, Exchange
from cfemulator.fixtures import SMALL_POW, Parent, mint_parent
from cfemulator.helpers import bearer
from cfemulator.schema import assert_exchanges_valid, default
from integration.support import GROUP, VERSION, OperatorProcess, custom


class TimedExchanges(list[Exchange]):
    """The emulator's exchange log, with the monotonic time each exchange was recorded (its answer)."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def append(self, exchange: Exchange) -> None:
        self.times.append(time.monotonic())
        super().append(exchange)

    def clear(self) -> None:
        self.times.clear()
        super().clear()


def start_emulator(**options: Any) -> Emulator:
    """A started emulator whose exchanges carry timestamps (see `TimedExchanges`)."""
    emu = Emulator(**options)
    emu.context.exchanges = TimedExchanges()
    emu.start()
    return emu


@pytest.fixture(name="emulator")
def emulator_fixture(request: pytest.FixtureRequest) -> Iterator[Emulator]:
    """A fresh emulator per test; `@pytest.mark.parametrize("emulator", [{...}], indirect=True)` passes
    constructor options (default: real limits, small proof of work)."""
    options = {"previews": SMALL_POW, **getattr(request, "param", {})}
    emu = start_emulator(**options)
    with pytest.MonkeyPatch.context() as patch:
        # Operators started by this test inherit the environment: only this emulator is allowed.
        patch.setenv("AGENTACCOUNTS_ALLOWED_API_BASE_URLS", allow_list(emu))
        yield emu
    emu.stop()


def allow_list(*emulators: Emulator) -> str:
    """AGENTACCOUNTS_ALLOWED_API_BASE_URLS for operators that talk to these emulators."""
    return ",".join(emu.base_url for emu in emulators)


def parent(emu: Emulator, permissions: list[str] | None = None) -> Parent:
    """A parent token in a new emulated account (cfemulator.fixtures: the shared permissions)."""
    return mint_parent(emu, permissions=permissions)


# -- Kubernetes objects ------------------------------------------------------------------------------
def create_parent_secret(api: client.ApiClient, namespace: str, name: str, value: str) -> None:
    client.CoreV1Api(api).create_namespaced_secret(
        namespace, {"metadata": {"name": name}, "stringData": {"token": value}}
    )


def create_token_provider(
    api: client.ApiClient,
    namespace: str,
    name: str,
    p: Parent,
    *,
    secret: str = "cloudflare-parent",
    with_secret: bool = True,
    max_lifetime: str = "24h",
) -> None:
    """A namespaced AccountProvider in mode `token`, and (unless told not to) its parent-token Secret."""
    if with_secret:
        create_parent_secret(api, namespace, secret, p.value)
    cloudflare = {
        "mode": "token",
        "accountId": p.account,
        "apiTokenSecretRef": {"name": secret},
        "apiBaseURL": p.emu.base_url,
    }
    _create_provider(api, namespace, name, {"cloudflare": cloudflare, "policy": _policy(max_lifetime)})


def create_temporary_provider(
    api: client.ApiClient, namespace: str, name: str, emu: Emulator, *, max_lifetime: str = "24h"
) -> None:
    cloudflare = {"mode": "temporaryAccount", "apiBaseURL": emu.base_url}
    _create_provider(api, namespace, name, {"cloudflare": cloudflare, "policy": _policy(max_lifetime)})


def _policy(max_lifetime: str) -> dict[str, Any]:
    # The emulator's tests exercise the provider itself, so its policy allows every scope; the policy
    # checks have their own tests (test_least_privilege.py).
    return {"maxLifetime": max_lifetime, "allowedScopes": [{"permissions": ["*"], "resources": ["*"]}]}


def _create_provider(api: client.ApiClient, namespace: str, name: str, spec: dict[str, Any]) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AccountProvider",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }
    custom(api).create_namespaced_custom_object(GROUP, VERSION, namespace, "accountproviders", body)


def provider_condition(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    body = custom(api).get_namespaced_custom_object(GROUP, VERSION, namespace, "accountproviders", name)
    conditions = (body.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "Ready"), {})


def events_of(api: client.ApiClient, namespace: str, kind: str, name: str) -> list[client.CoreV1Event]:
    selector = f"involvedObject.kind={kind},involvedObject.name={name}"
    return list(client.CoreV1Api(api).list_namespaced_event(namespace, field_selector=selector).items)


def secret_exists(api: client.ApiClient, namespace: str, name: str) -> bool:
    try:
        client.CoreV1Api(api).read_namespaced_secret(name, namespace)
    except client.ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def status_of_account(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    body = custom(api).get_namespaced_custom_object(GROUP, VERSION, namespace, "agentaccounts", name)
    return dict(body.get("status") or {})


def delete_account(api: client.ApiClient, namespace: str, name: str) -> None:
    custom(api).delete_namespaced_custom_object(GROUP, VERSION, namespace, "agentaccounts", name)


# -- the simulated agent -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Answer:
    status: int
    codes: list[int]

    @property
    def ok(self) -> bool:
        return self.status == 200


def agent_call(base_url: str, token: str, path: str, method: str = "GET", json_body: Any = None) -> Answer:
    """One Cloudflare API call made the way an agent would make it, with the issued token."""
    response = httpx.request(method, base_url + path, headers=bearer(token), json=json_body, timeout=10)
    body = response.json()
    return Answer(response.status_code, [e["code"] for e in body.get("errors") or []])


# -- checks shared by several tests ------------------------------------------------------------------
def assert_schema_valid(emu: Emulator, *must_cover: str) -> int:
    """Every recorded exchange fits the official OpenAPI subset; `must_cover` operations ("POST
    /accounts/{account_id}/tokens", ...) were really validated, not skipped. Returns the validated count."""
    exchanges = emu.requests
    validated, _ = assert_exchanges_valid(exchanges)
    covered = set()
    for method, path, *_ in exchanges:
        found = default().find(method, path)
        if found is not None:
            covered.add(f"{method} {found[0]}")
    missing = set(must_cover) - covered
    assert not missing, f"these operations were never exercised: {sorted(missing)}; saw {sorted(covered)}"
    return validated


def assert_no_leaks(api: client.ApiClient, namespace: str, operator: OperatorProcess, *secrets: str) -> None:
    """No credential appears in the operator's log, in any Event of the namespace, or in any
    AgentAccount or AccountProvider (status, annotations, anything but the Secret that holds it)."""
    secrets = tuple(s for s in secrets if s)
    assert secrets, "nothing to look for"
    places: dict[str, str] = {"operator log": operator.output()}
    for event in client.CoreV1Api(api).list_namespaced_event(namespace).items:
        what = f"Event {event.reason} on {event.involved_object.kind}/{event.involved_object.name}"
        places[what] = f"{event.reason} {event.message}"
    for plural in ("agentaccounts", "accountproviders"):
        for item in custom(api).list_namespaced_custom_object(GROUP, VERSION, namespace, plural)["items"]:
            places[f"{item['kind']}/{item['metadata']['name']}"] = json.dumps(item)
    for where, text in places.items():
        for n, value in enumerate(secrets):
            forms = {value, base64.b64encode(value.encode()).decode()}
            assert not any(form in text for form in forms), f"credential #{n} leaked into {where}"


def max_in_window(times: list[float], window: float) -> int:
    """The most timestamps that fall into any half-open interval of length `window`."""
    ordered, best, start = sorted(times), 0, 0
    for end, moment in enumerate(ordered):
        while ordered[start] <= moment - window:
            start += 1
        best = max(best, end - start + 1)
    return best
