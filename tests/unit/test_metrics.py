"""The per-account expiry collector and the module's metric definitions, against a fresh registry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agentaccounts import metrics
from agentaccounts.metrics import ExpiryIndex

EXPIRY = "agentaccounts_account_expiry_timestamp_seconds"
ACTIVE = "agentaccounts_active_accounts"
T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def index() -> ExpiryIndex:
    return ExpiryIndex()


@pytest.fixture
def registry(index: ExpiryIndex) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(index)
    return registry


def samples(index: ExpiryIndex) -> dict[str, list[tuple[dict[str, str], float]]]:
    return {family.name: [(s.labels, s.value) for s in family.samples] for family in index.collect()}


def test_an_empty_index_yields_both_families_without_samples(index: ExpiryIndex) -> None:
    assert samples(index) == {EXPIRY: [], ACTIVE: []}


def test_one_sample_per_live_account_and_a_count_per_provider(index: ExpiryIndex) -> None:
    index.set("uid-1", "agents", "triage", "kubernetes", T0)
    index.set("uid-2", "agents", "deployer", "cloudflare", T0 + timedelta(minutes=30))
    index.set("uid-3", "ci", "triage", "kubernetes", T0 + timedelta(hours=1))

    got = samples(index)

    assert sorted(got[EXPIRY], key=lambda s: s[1]) == [
        ({"namespace": "agents", "name": "triage", "provider": "kubernetes"}, T0.timestamp()),
        ({"namespace": "agents", "name": "deployer", "provider": "cloudflare"}, T0.timestamp() + 1800),
        ({"namespace": "ci", "name": "triage", "provider": "kubernetes"}, T0.timestamp() + 3600),
    ]
    assert got[ACTIVE] == [({"provider": "cloudflare"}, 1.0), ({"provider": "kubernetes"}, 2.0)]


def test_setting_the_same_uid_again_replaces_its_sample(index: ExpiryIndex) -> None:
    index.set("uid-1", "agents", "triage", "kubernetes", T0)
    index.set("uid-1", "agents", "triage", "kubernetes", T0 + timedelta(hours=2))

    got = samples(index)
    assert got[EXPIRY] == [
        ({"namespace": "agents", "name": "triage", "provider": "kubernetes"}, T0.timestamp() + 7200)
    ]
    assert got[ACTIVE] == [({"provider": "kubernetes"}, 1.0)]


def test_discard_removes_the_account(index: ExpiryIndex, registry: CollectorRegistry) -> None:
    index.set("uid-1", "agents", "triage", "kubernetes", T0)
    index.set("uid-2", "agents", "other", "kubernetes", T0)
    labels = {"namespace": "agents", "name": "triage", "provider": "kubernetes"}
    assert registry.get_sample_value(EXPIRY, labels) == T0.timestamp()

    index.discard("uid-1")

    assert registry.get_sample_value(EXPIRY, labels) is None
    assert registry.get_sample_value(ACTIVE, {"provider": "kubernetes"}) == 1.0
    index.discard("uid-2")
    assert registry.get_sample_value(ACTIVE, {"provider": "kubernetes"}) is None
    assert samples(index) == {EXPIRY: [], ACTIVE: []}


def test_discarding_an_unknown_uid_is_a_no_op(index: ExpiryIndex) -> None:
    index.set("uid-1", "agents", "triage", "kubernetes", T0)
    index.discard("never-set")
    index.discard("never-set")
    assert len(samples(index)[EXPIRY]) == 1


def test_the_exposition_parses_back_to_the_same_samples(
    index: ExpiryIndex, registry: CollectorRegistry
) -> None:
    index.set("uid-1", "agents", "triage", "kubernetes", T0)
    parsed = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}

    assert parsed[EXPIRY].type == "gauge"
    assert [(s.labels, s.value) for s in parsed[EXPIRY].samples] == [
        ({"namespace": "agents", "name": "triage", "provider": "kubernetes"}, T0.timestamp())
    ]
    assert [(s.labels, s.value) for s in parsed[ACTIVE].samples] == [({"provider": "kubernetes"}, 1.0)]


def test_the_module_registry_holds_the_global_index_and_every_metric() -> None:
    names = {family.name for family in metrics.REGISTRY.collect()}
    assert {
        EXPIRY,
        ACTIVE,
        "agentaccounts_issued",
        "agentaccounts_revoked",
        "agentaccounts_failures",
        "agentaccounts_issue_duration_seconds",
        "agentaccounts_revocation_lag_seconds",
    } <= names


@pytest.mark.parametrize(
    ("metric", "labelnames"),
    [
        (metrics.ISSUED, ("provider",)),
        (metrics.REVOKED, ("provider", "reason")),
        (metrics.FAILED, ("reason",)),
        (metrics.ISSUE_SECONDS, ("provider",)),
        (metrics.REVOCATION_LAG, ("provider",)),
    ],
)
def test_counters_and_histograms_have_bounded_labels(metric: object, labelnames: tuple[str, ...]) -> None:
    # Only the custom collector may carry per-object labels: a namespace/name label on a counter or
    # histogram would create a series per AgentAccount that never goes away. (`_labelnames` is the
    # client's attribute for the declared labels; there is no public accessor.)
    assert metric._labelnames == labelnames  # type: ignore[attr-defined]
