"""provider_upkeep over the in-memory Kube: the status a provider object gets, and the orphan sweep.

`report` is what `kubectl get accountproviders` shows (status.type and a Ready condition), so a
malformed spec or a missing parent-token Secret is visible on the provider itself. `sweep` deletes
provider-side identities no live AgentAccount records; the Cloudflare API is an httpx.MockTransport.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any, cast

import httpx
import pytest

from agentaccounts import ownership, provider_upkeep
from agentaccounts.clock import rfc3339
from agentaccounts.kube import Kube
from agentaccounts.providers.base import Deps
from agentaccounts.providers.cloudflare.tokens import token_name
from agentaccounts.settings import Settings
from unit.fakes import FakeKube

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
NS = "agents"
CF_ACCOUNT = "0123456789abcdef0123456789abcdef"
CF_TOKENS = f"/client/v4/accounts/{CF_ACCOUNT}/tokens"
Handler = Callable[[httpx.Request], httpx.Response]
Emitted = tuple[str, str, str]


class Rig:
    def __init__(self, http: httpx.AsyncClient, sent: list[httpx.Request]) -> None:
        self.kube = FakeKube(now=lambda: NOW)
        self.http, self.sent = http, sent
        self.handler: Handler = lambda _: httpx.Response(599)
        self.events: list[Emitted] = []

    def deps(self, **settings: Any) -> Deps:
        return Deps(
            kube=cast(Kube, self.kube), settings=Settings(**settings), http=self.http, now=lambda: NOW
        )

    def emit(self, kind: str, reason: str, message: str) -> None:
        self.events.append((kind, reason, message))


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    holder: list[Rig] = []
    sent: list[httpx.Request] = []

    def route(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return holder[0].handler(request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(route)) as http:
        holder.append(Rig(http, sent))
        yield holder[0]


def provider(spec: dict[str, Any], name: str = "p", generation: int = 3, **extra: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": NS, "generation": generation}, "spec": spec, **extra}


def cloudflare(**block: Any) -> dict[str, Any]:
    return {"cloudflare": {"accountId": CF_ACCOUNT, "apiTokenSecretRef": {"name": "cf-parent"}, **block}}


def ready(status: dict[str, Any]) -> dict[str, Any]:
    conditions: list[dict[str, Any]] = [c for c in status["conditions"] if c["type"] == "Ready"]
    assert len(conditions) == 1, conditions
    return conditions[0]


# -- report ---------------------------------------------------------------------------------------


async def test_a_kubernetes_provider_is_ready(rig: Rig) -> None:
    status = await provider_upkeep.report(rig.deps(), "AccountProvider", provider({"kubernetes": {}}))

    assert status["type"] == "kubernetes"
    assert status["observedGeneration"] == 3
    assert ready(status) == {
        "type": "Ready",
        "status": "True",
        "reason": "Valid",
        "message": "kubernetes provider ready",
        "observedGeneration": 3,
        "lastTransitionTime": rfc3339(NOW),
    }
    assert rig.sent == []


@pytest.mark.parametrize(
    "spec",
    [{}, {"policy": {"maxLifetime": "1h"}}, {"kubernetes": {}, **cloudflare()}],
    ids=["empty", "policy-only", "two-blocks"],
)
async def test_a_spec_without_exactly_one_block_is_invalid_and_has_no_type(
    rig: Rig, spec: dict[str, Any]
) -> None:
    status = await provider_upkeep.report(rig.deps(), "AccountProvider", provider(spec))

    assert status["type"] is None
    assert (ready(status)["status"], ready(status)["reason"]) == ("False", "InvalidSpec")
    assert "exactly one provider block" in ready(status)["message"]
    assert rig.kube.calls == [] and rig.sent == []


async def test_a_cloudflare_provider_without_its_parent_secret_is_not_ready(rig: Rig) -> None:
    status = await provider_upkeep.report(rig.deps(), "AccountProvider", provider(cloudflare()))

    assert status["type"] == "cloudflare"
    assert (ready(status)["status"], ready(status)["reason"]) == ("False", "ProviderNotFound")
    assert "parent token Secret agents/cf-parent" in ready(status)["message"]
    assert rig.kube.called("get", "Secret", NS, "cf-parent")
    assert rig.sent == []


async def test_a_cloudflare_provider_with_its_parent_secret_is_ready(rig: Rig) -> None:
    rig.kube.add_secret(NS, "cf-parent", data={"token": "cfat_parent"})

    status = await provider_upkeep.report(rig.deps(), "AccountProvider", provider(cloudflare()))

    assert status["type"] == "cloudflare"
    assert (ready(status)["status"], ready(status)["reason"]) == ("True", "Valid")
    assert rig.sent == []  # building it only reads the Secret


async def test_a_cloudflare_provider_outside_the_allow_list_is_refused_before_its_secret_is_read(
    rig: Rig,
) -> None:
    rig.kube.add_secret(NS, "cf-parent", data={"token": "cfat_parent"})
    body = provider(cloudflare(apiBaseURL="https://evil.test/client/v4"))

    status = await provider_upkeep.report(rig.deps(), "AccountProvider", body)

    assert status["type"] == "cloudflare"
    assert ready(status)["reason"] == "InvalidSpec"
    assert "allow-list" in ready(status)["message"]
    assert rig.kube.calls == []


async def test_a_cluster_provider_must_name_the_namespace_of_its_secret(rig: Rig) -> None:
    body = {"metadata": {"name": "cf"}, "spec": cloudflare()}

    status = await provider_upkeep.report(rig.deps(), "ClusterAccountProvider", body)

    assert (status["type"], ready(status)["reason"]) == ("cloudflare", "InvalidSpec")
    assert "apiTokenSecretRef.namespace is required" in ready(status)["message"]


async def test_the_transition_time_stays_while_readiness_does_not_change(rig: Rig) -> None:
    earlier = "2029-12-31T00:00:00Z"
    condition = {"type": "Ready", "status": "True", "reason": "Valid", "lastTransitionTime": earlier}
    body = provider({"kubernetes": {}}, status={"conditions": [condition]})

    status = await provider_upkeep.report(rig.deps(), "AccountProvider", body)
    assert ready(status)["lastTransitionTime"] == earlier

    body["spec"] = {}
    status = await provider_upkeep.report(rig.deps(), "AccountProvider", body)
    assert ready(status)["lastTransitionTime"] == rfc3339(NOW)


# -- sweep ----------------------------------------------------------------------------------------


def _issued_objects(kube: FakeKube, namespace: str, name: str, uid: str) -> None:
    meta = ownership.metadata(f"agentaccount-{name}", namespace, name, uid)
    for kind in ("ServiceAccount", "Role", "RoleBinding"):
        kube.add_object(kind, {"metadata": copy.deepcopy(meta)})
    kube.add_secret(namespace, f"{name}-credentials", ownership.labels(name, uid))


async def _sweep_kubernetes(rig: Rig, **settings: Any) -> list[str]:
    return await provider_upkeep.sweep(
        rig.deps(**settings), "AccountProvider", provider({"kubernetes": {}}), rig.emit
    )


def _account(kube: FakeKube, namespace: str, name: str, uid: str) -> None:
    kube.add("AgentAccount", {"metadata": {"name": name, "namespace": namespace, "uid": uid}, "spec": {}})


async def test_sweeping_with_nothing_orphaned_deletes_nothing_and_sends_nothing(rig: Rig) -> None:
    _account(rig.kube, NS, "alive", "uid-alive")
    _issued_objects(rig.kube, NS, "alive", "uid-alive")
    deleted = await provider_upkeep.sweep(
        rig.deps(), "AccountProvider", provider({"kubernetes": {}}), rig.emit
    )

    assert deleted == [] and rig.sent == [] and rig.events == []
    assert not rig.kube.called("delete_labelled")


async def test_sweeping_a_kubernetes_provider_deletes_what_a_gone_account_left(rig: Rig) -> None:
    # The AgentAccount's finalizer was removed by hand: its objects carry a UID no account has.
    _account(rig.kube, NS, "alive", "uid-alive")
    _issued_objects(rig.kube, NS, "alive", "uid-alive")
    _issued_objects(rig.kube, "elsewhere", "gone", "uid-gone")

    deleted = await provider_upkeep.sweep(
        rig.deps(), "AccountProvider", provider({"kubernetes": {}}), rig.emit
    )

    assert deleted == [f"elsewhere/{ownership.UID_LABEL}=uid-gone"]
    for kind in ("ServiceAccount", "Role", "RoleBinding", "Secret"):
        assert rig.kube.names(kind, "elsewhere", ownership.selector("uid-gone")) == []
        assert rig.kube.names(kind, NS, ownership.selector("uid-alive")) != []
    assert [reason for _, reason, _ in rig.events] == ["OrphanDeleted"]


async def test_the_kubernetes_sweep_stays_in_the_watched_namespaces(rig: Rig) -> None:
    _issued_objects(rig.kube, "elsewhere", "gone", "uid-gone")
    assert await _sweep_kubernetes(rig, namespaces=[NS]) == []
    assert rig.kube.names("ServiceAccount", "elsewhere", ownership.selector("uid-gone")) != []


async def test_the_kubernetes_sweep_reads_the_live_set_after_listing_candidates(rig: Rig) -> None:
    # An account issued between the two reads must never look orphaned: its Role can only exist after
    # the account does, so listing Roles first and accounts second never misses it.
    real_list_objects = rig.kube.list_objects

    async def list_then_issue(kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        found = await real_list_objects(kind, namespace, selector)
        _account(rig.kube, NS, "new", "uid-new")
        _issued_objects(rig.kube, NS, "new", "uid-new")
        return found

    rig.kube.list_objects = list_then_issue  # type: ignore[method-assign]
    assert (
        await provider_upkeep.sweep(rig.deps(), "AccountProvider", provider({"kubernetes": {}}), rig.emit)
        == []
    )
    assert rig.kube.names("ServiceAccount", NS, ownership.selector("uid-new")) != []


async def test_sweeping_a_malformed_provider_does_nothing(rig: Rig) -> None:
    assert await provider_upkeep.sweep(rig.deps(), "AccountProvider", provider({}), rig.emit) == []
    assert rig.kube.calls == [] and rig.sent == []


async def test_sweeping_a_cloudflare_provider_deletes_only_tokens_of_gone_accounts(rig: Rig) -> None:
    rig.kube.add_secret(NS, "cf-parent", data={"token": "cfat_parent"})
    rig.kube.add("AgentAccount", {"metadata": {"name": "live", "namespace": NS, "uid": "uid-live"}})
    old = "2029-01-01T00:00:00Z"
    tokens = [
        {"id": "t-live", "name": token_name(NS, "live", "uid-live"), "issued_on": old},
        {"id": "t-gone", "name": token_name(NS, "gone", "uid-gone"), "issued_on": old},
        {"id": "t-far", "name": token_name("unwatched", "far", "uid-far"), "issued_on": old},
        {"id": "t-mine", "name": "someone's own token", "issued_on": old},
    ]

    def cloudflare_api(request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path == CF_TOKENS:
            info = {"page": 1, "per_page": 50, "count": len(tokens), "total_count": len(tokens)}
            return httpx.Response(200, json={"success": True, "result": tokens, "result_info": info})
        if request.method == "DELETE" and request.url.path == f"{CF_TOKENS}/t-gone":
            return httpx.Response(200, json={"success": True, "result": {"id": "t-gone"}})
        return httpx.Response(404, json={"success": False, "errors": [{"code": 7003, "message": "no"}]})

    rig.handler = cloudflare_api
    deps = rig.deps(namespaces=[NS], cloudflare_orphan_min_age_seconds=600)

    deleted = await provider_upkeep.sweep(deps, "AccountProvider", provider(cloudflare()), rig.emit)

    assert deleted == [f"{token_name(NS, 'gone', 'uid-gone')} (id t-gone)"]
    assert [(r.method, r.url.path) for r in rig.sent if r.method == "DELETE"] == [
        ("DELETE", f"{CF_TOKENS}/t-gone")
    ]
    assert rig.kube.called("list_custom", "AgentAccount", NS)  # the live set: the watched namespaces only
    assert [(kind, reason) for kind, reason, _ in rig.events] == [("Normal", "OrphanDeleted")]


async def test_a_default_lifetime_over_the_maximum_makes_the_provider_not_ready(rig: Rig) -> None:
    # Before: reported Ready (Valid), while every account relying on the default was refused.
    body = provider({"kubernetes": {}, "policy": {"maxLifetime": "1h", "defaultLifetime": "2h"}})
    status = await provider_upkeep.report(rig.deps(), "AccountProvider", body)
    assert (status["type"], ready(status)["status"], ready(status)["reason"]) == (
        "kubernetes",
        "False",
        "InvalidSpec",
    )
    assert "policy.defaultLifetime 2h exceeds policy.maxLifetime 1h" in ready(status)["message"]
