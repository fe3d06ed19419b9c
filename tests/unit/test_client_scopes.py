"""client/scopes.py: the `--scope` syntax, lifetimes and timeouts as typed, and the manifest."""

from __future__ import annotations

from typing import Any

import pytest

from agentaccounts.client.errors import UsageError
from agentaccounts.client.scopes import format_scope, lifetime, manifest, parse_scope, seconds


@pytest.mark.parametrize(
    ("text", "scope"),
    [
        ("get,list:configmaps", {"permissions": ["get", "list"], "resources": ["configmaps"]}),
        (
            "get,list,watch:configmaps,deployments.apps,pods/log",
            {
                "permissions": ["get", "list", "watch"],
                "resources": ["configmaps", "deployments.apps", "pods/log"],
            },
        ),
        (
            "get:secrets:app-config,app-flags",
            {"permissions": ["get"], "resources": ["secrets"], "resourceNames": ["app-config", "app-flags"]},
        ),
        ("get, list:configmaps", {"permissions": ["get", "list"], "resources": ["configmaps"]}),
        ("Workers Scripts Read:account", {"permissions": ["Workers Scripts Read"], "resources": ["account"]}),
        ("Workers KV Storage Read:", {"permissions": ["Workers KV Storage Read"]}),  # the whole account
        (
            "Access: Apps and Policies Read:zones",
            {"permissions": ["Access: Apps and Policies Read"], "resources": ["zones"]},
        ),
        (
            "Workers R2 Storage Bucket Item Read:r2-bucket/eu/build-cache",
            {
                "permissions": ["Workers R2 Storage Bucket Item Read"],
                "resources": ["r2-bucket/eu/build-cache"],
            },
        ),
    ],
)
def test_scopes_parse_into_the_crds_shape(text: str, scope: dict[str, Any]) -> None:
    assert parse_scope(text) == scope


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("configmaps", "use PERMISSIONS:RESOURCES[:NAMES]"),  # the forgotten colon
        (":configmaps", "use PERMISSIONS:RESOURCES[:NAMES]"),
        ("get:configmaps:a:b", "use PERMISSIONS:RESOURCES[:NAMES]"),
        ("get,,list:configmaps", "an empty entry in its permissions"),
        ("get:configmaps,", "an empty entry in its resources"),
        ("get:secrets:", "an empty entry in its names"),
        ("get::app-config", "name the resources too"),
        ("Access: Apps and Policies Read", "use PERMISSIONS:RESOURCES[:NAMES]"),
    ],
)
def test_malformed_scopes_are_usage_errors_that_say_why(text: str, problem: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_scope(text)
    assert problem in caught.value.message and repr(text) in caught.value.message
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(
    "text", ["get,list:configmaps", "get:secrets:app-config,app-flags", "Workers KV Storage Read:"]
)
def test_format_scope_is_the_inverse(text: str) -> None:
    assert format_scope(parse_scope(text)) == text


def test_lifetimes_are_checked_as_the_crd_would_and_kept_as_written() -> None:
    assert lifetime("1h30m") == "1h30m"
    assert lifetime("2d") == "2d"
    with pytest.raises(UsageError, match="invalid duration 'soon'"):
        lifetime("soon")
    with pytest.raises(UsageError, match=r"greater than zero \(to end an account, revoke it\)"):
        lifetime("0s")


@pytest.mark.parametrize(("text", "value"), [("60", 60.0), ("2.5", 2.5), ("60s", 60.0), ("2m", 120.0)])
def test_timeouts_take_seconds_or_durations(text: str, value: float) -> None:
    assert seconds(text) == value


def test_a_bad_timeout_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        seconds("a while")


def test_the_manifest_names_the_provider_and_generates_a_name() -> None:
    scope = parse_scope("get:configmaps")
    body = manifest("agents", "in-cluster", "ClusterAccountProvider", [scope], "30m")
    assert body == {
        "apiVersion": "agentaccounts.dev/v1alpha1",
        "kind": "AgentAccount",
        "metadata": {"namespace": "agents", "generateName": "agent-"},
        "spec": {
            "providerRef": {"kind": "ClusterAccountProvider", "name": "in-cluster"},
            "scopes": [scope],
            "lifetime": "30m",
        },
    }
    named = manifest("agents", "local", "AccountProvider", [scope], name="triage")
    assert named["metadata"] == {"namespace": "agents", "name": "triage"}
    assert "lifetime" not in named["spec"]  # the provider's defaultLifetime


@pytest.mark.parametrize(
    ("kind", "scopes", "problem"),
    [
        ("Provider", [{"permissions": ["get"]}], "provider kind"),
        ("AccountProvider", [], "at least one scope"),
    ],
)
def test_a_manifest_needs_a_real_kind_and_a_scope(kind: str, scopes: list[Any], problem: str) -> None:
    with pytest.raises(UsageError, match=problem):
        manifest("agents", "p", kind, scopes)
