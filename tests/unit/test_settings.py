"""Settings: defaults, the AGENTACCOUNTS_ environment prefix, bounds, and flag overrides."""

from __future__ import annotations

import os
from typing import Any

import pydantic
import pytest

from agentaccounts.settings import Settings

DEFAULTS: dict[str, Any] = {
    "namespaces": [],
    "metrics_port": 8080,
    "liveness": None,
    "kubeconfig_server": None,
    "watch_server_timeout": 300,
    "watch_client_timeout": 330,
    "provider_retry_seconds": 5.0,
    "orphan_sweep_seconds": 300.0,
    "cloudflare_budget": 1100,
    "cloudflare_window_seconds": 300.0,
    "cloudflare_max_wait_seconds": 10.0,
    "cloudflare_orphan_min_age_seconds": 600.0,
    "api_threads": 64,
    "expiry_workers": 32,
    "memory_trim_seconds": 30.0,
    "webhook_configuration": "agentaccounts.dev",
    "leader_elect": False,
    "leader_election_namespace": "default",
    "leader_election_name": "agentaccounts-operator",
    "pod_name": None,
    "operator_namespace": "default",
    "signing_key_secret": "agentaccounts-signing-key",
    "webhook_port": 9443,
    "webhook_listen": "127.0.0.1",
    "webhook_host": "127.0.0.1",
    "webhook_service": None,
    "allowed_api_base_urls": ["https://api.cloudflare.com/client/v4"],
    "audit_log": "-",
    "audit_webhook_port": 0,
    "audit_webhook_listen": "127.0.0.1",
    "audit_webhook_cert_file": "",
    "audit_webhook_key_file": "",
    "audit_webhook_client_ca_file": "",
    "audit_webhook_client_cn": "kube-apiserver-audit",
    "audit_webhook_client_org": "",
    "activity_flush_seconds": 2.0,
    "activity_writes_per_second": 2.0,
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the shell running the tests exports must not leak into them."""
    for key in list(os.environ):
        if key.upper().startswith("AGENTACCOUNTS_") or key.upper() == "POD_NAME":
            monkeypatch.delenv(key)


def test_defaults() -> None:
    settings = Settings()
    assert {name: getattr(settings, name) for name in DEFAULTS} == DEFAULTS


def test_every_field_has_a_known_default() -> None:
    assert set(Settings.model_fields) == set(DEFAULTS), "a new setting needs a row in DEFAULTS"


@pytest.mark.parametrize(
    ("variable", "value", "field", "expected"),
    [
        ("AGENTACCOUNTS_METRICS_PORT", "9090", "metrics_port", 9090),
        ("AGENTACCOUNTS_METRICS_PORT", "0", "metrics_port", 0),
        ("AGENTACCOUNTS_NAMESPACES", '["agents", "ci"]', "namespaces", ["agents", "ci"]),
        ("AGENTACCOUNTS_LIVENESS", "http://0.0.0.0:8081/healthz", "liveness", "http://0.0.0.0:8081/healthz"),
        ("AGENTACCOUNTS_KUBECONFIG_SERVER", "https://k8s:6443", "kubeconfig_server", "https://k8s:6443"),
        ("AGENTACCOUNTS_WATCH_SERVER_TIMEOUT", "60", "watch_server_timeout", 60),
        ("AGENTACCOUNTS_PROVIDER_RETRY_SECONDS", "3", "provider_retry_seconds", 3.0),
        ("AGENTACCOUNTS_PROVIDER_RETRY_SECONDS", "0.5", "provider_retry_seconds", 0.5),
        ("AGENTACCOUNTS_CLOUDFLARE_BUDGET", "200", "cloudflare_budget", 200),
        ("AGENTACCOUNTS_API_THREADS", "4", "api_threads", 4),
        ("AGENTACCOUNTS_LEADER_ELECT", "true", "leader_elect", True),
        ("AGENTACCOUNTS_LEADER_ELECT", "1", "leader_elect", True),
        ("AGENTACCOUNTS_LEADER_ELECT", "false", "leader_elect", False),
        ("AGENTACCOUNTS_LEADER_ELECTION_NAMESPACE", "ops", "leader_election_namespace", "ops"),
        ("agentaccounts_metrics_port", "9191", "metrics_port", 9191),  # env names are case-insensitive
        ("POD_NAME", "agentaccounts-7d9f-abcde", "pod_name", "agentaccounts-7d9f-abcde"),  # downward API
        (
            "AGENTACCOUNTS_OPERATOR_NAMESPACE",
            "agentaccounts-system",
            "operator_namespace",
            "agentaccounts-system",
        ),
        ("AGENTACCOUNTS_SIGNING_KEY_SECRET", "my-key", "signing_key_secret", "my-key"),
        ("AGENTACCOUNTS_WEBHOOK_PORT", "8443", "webhook_port", 8443),
        ("AGENTACCOUNTS_WEBHOOK_PORT", "0", "webhook_port", 0),  # admission off
        ("AGENTACCOUNTS_WEBHOOK_LISTEN", "0.0.0.0", "webhook_listen", "0.0.0.0"),
        ("AGENTACCOUNTS_WEBHOOK_HOST", "host.docker.internal", "webhook_host", "host.docker.internal"),
        (
            "AGENTACCOUNTS_WEBHOOK_SERVICE",
            "ops/agentaccounts-webhook",
            "webhook_service",
            "ops/agentaccounts-webhook",
        ),
        (
            "AGENTACCOUNTS_ALLOWED_API_BASE_URLS",
            "http://127.0.0.1:8787/client/v4",
            "allowed_api_base_urls",
            ["http://127.0.0.1:8787/client/v4"],
        ),
        (
            "AGENTACCOUNTS_ALLOWED_API_BASE_URLS",
            "https://api.cloudflare.com/client/v4, http://127.0.0.1:8787/client/v4 ,",
            "allowed_api_base_urls",
            ["https://api.cloudflare.com/client/v4", "http://127.0.0.1:8787/client/v4"],
        ),
        ("AGENTACCOUNTS_ALLOWED_API_BASE_URLS", "", "allowed_api_base_urls", []),  # allow nothing
        ("AGENTACCOUNTS_ALLOWED_API_BASE_URLS", " , ,", "allowed_api_base_urls", []),
    ],
)
def test_environment_overrides(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, field: str, expected: Any
) -> None:
    monkeypatch.setenv(variable, value)
    assert getattr(Settings(), field) == expected


@pytest.mark.parametrize(
    ("variable", "field"),
    [
        ("METRICS_PORT", "metrics_port"),
        ("API_THREADS", "api_threads"),
        ("AGENTACCOUNTS-METRICS-PORT", "metrics_port"),
        ("AGENTACCOUNTSMETRICS_PORT", "metrics_port"),
    ],
)
def test_variables_without_the_prefix_are_ignored(
    monkeypatch: pytest.MonkeyPatch, variable: str, field: str
) -> None:
    monkeypatch.setenv(variable, "7")
    assert getattr(Settings(), field) == DEFAULTS[field]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("AGENTACCOUNTS_METRICS_PORT", "70000"),
        ("AGENTACCOUNTS_METRICS_PORT", "-1"),
        ("AGENTACCOUNTS_METRICS_PORT", "http"),
        ("AGENTACCOUNTS_WATCH_SERVER_TIMEOUT", "5"),
        ("AGENTACCOUNTS_WATCH_CLIENT_TIMEOUT", "9"),
        ("AGENTACCOUNTS_PROVIDER_RETRY_SECONDS", "0"),
        ("AGENTACCOUNTS_ORPHAN_SWEEP_SECONDS", "-1"),
        ("AGENTACCOUNTS_CLOUDFLARE_BUDGET", "0"),
        ("AGENTACCOUNTS_CLOUDFLARE_WINDOW_SECONDS", "0"),
        ("AGENTACCOUNTS_API_THREADS", "0"),
        ("AGENTACCOUNTS_LEADER_ELECT", "maybe"),
        ("AGENTACCOUNTS_WEBHOOK_PORT", "65536"),
        ("AGENTACCOUNTS_WEBHOOK_PORT", "-1"),
    ],
)
def test_out_of_bounds_values_are_rejected(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(pydantic.ValidationError):
        Settings()


def test_explicit_values_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # cli._settings passes command-line flags as keyword arguments: flags win over the environment.
    monkeypatch.setenv("AGENTACCOUNTS_METRICS_PORT", "9090")
    monkeypatch.setenv("AGENTACCOUNTS_NAMESPACES", '["from-env"]')
    settings = Settings(metrics_port=0, namespaces=["from-flag"])
    assert (settings.metrics_port, settings.namespaces) == (0, ["from-flag"])


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(pydantic.ValidationError):
        settings.metrics_port = 1  # type: ignore[misc]


def test_allowed_api_base_urls_as_a_list_are_taken_as_they_are() -> None:
    urls = ["https://api.cloudflare.com/client/v4", "http://localhost:8787/client/v4"]
    assert Settings(allowed_api_base_urls=urls).allowed_api_base_urls == urls
