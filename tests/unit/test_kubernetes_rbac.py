"""Scopes -> RBAC rules, object names and kubeconfigs for the Kubernetes provider (pure, no cluster)."""

from __future__ import annotations

import base64
import itertools
import re
from typing import Any

import pytest
import yaml

from agentaccounts.errors import InvalidSpec, UnknownResource
from agentaccounts.models import Scope
from agentaccounts.providers.kubernetes_rbac import (
    MAX_NAME,
    VERBS,
    ResourceRef,
    kubeconfig,
    object_name,
    parse_resource,
    rules_for,
)

# What discovery returns on a small cluster (group "" is core; subresources are listed as in discovery).
SERVED: dict[str, set[str]] = {
    "": {"configmaps", "secrets", "pods", "pods/log", "services", "serviceaccounts"},
    "apps": {"deployments", "statefulsets", "deployments/scale"},
    "coordination.k8s.io": {"leases"},
    "batch": {"jobs", "cronjobs"},
}
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def scope(permissions: list[str], resources: list[str]) -> Scope:
    return Scope(permissions=permissions, resources=resources)


def rule(group: str, resource: str, verbs: list[str], names: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"apiGroups": [group], "resources": [resource], "verbs": verbs}
    if names:
        out["resourceNames"] = names
    return out


# -- parse_resource -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("configmaps", ResourceRef("", "configmaps")),
        ("deployments.apps", ResourceRef("apps", "deployments")),
        ("secrets/app-config", ResourceRef("", "secrets", "app-config")),
        ("leases.coordination.k8s.io/lock", ResourceRef("coordination.k8s.io", "leases", "lock")),
        ("ConfigMaps", ResourceRef("", "configmaps")),  # resource names are case-insensitive
        ("deployments.apps/web.v2", ResourceRef("apps", "deployments", "web.v2")),  # dots in the name stay
    ],
)
def test_parse_resource(text: str, expected: ResourceRef) -> None:
    assert parse_resource(text) == expected


@pytest.mark.parametrize(
    "text",
    ["configmaps", "deployments.apps", "secrets/app-config", "leases.coordination.k8s.io/lock"],
)
def test_resource_ref_prints_back_in_the_same_grammar(text: str) -> None:
    assert str(parse_resource(text)) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "*",
        "*.apps",
        "deployments.*",
        "secrets/*",
        "configmaps/",
        "deployments.apps/",
        "/app-config",
        ".apps",
        "a/b/c",
        "secrets/a/b",
        " configmaps",
        "configmaps ",
        "configmaps\n",
    ],
)
def test_parse_resource_rejects(text: str) -> None:
    with pytest.raises(InvalidSpec) as caught:
        parse_resource(text)
    assert repr(text) in caught.value.message


# -- rules_for ------------------------------------------------------------------------------------


def test_one_scope_one_rule_per_resource() -> None:
    rules = rules_for(
        [scope(["get", "list"], ["configmaps", "deployments.apps", "secrets/app-config"])], SERVED
    )
    assert rules == [
        rule("", "configmaps", ["get", "list"]),
        rule("", "secrets", ["get", "list"], ["app-config"]),
        rule("apps", "deployments", ["get", "list"]),
    ]


def test_verbs_merge_per_group_resource_and_name() -> None:
    rules = rules_for(
        [
            scope(["get"], ["configmaps", "secrets/a"]),
            scope(["list", "get"], ["configmaps"]),
            scope(["watch"], ["configmaps", "secrets/b"]),
            scope(["list"], ["secrets/a"]),
            scope(["delete"], ["leases.coordination.k8s.io/lock"]),
            scope(["update"], ["leases.coordination.k8s.io/lock"]),
        ],
        SERVED,
    )
    assert rules == [
        rule("", "configmaps", ["get", "list", "watch"]),
        rule("", "secrets", ["get", "list"], ["a"]),
        rule("", "secrets", ["watch"], ["b"]),
        rule("coordination.k8s.io", "leases", ["update", "delete"], ["lock"]),
    ]


def test_a_named_and_an_unnamed_grant_stay_separate_rules() -> None:
    rules = rules_for([scope(["get"], ["secrets/app-config"]), scope(["list"], ["secrets"])], SERVED)
    assert rules == [rule("", "secrets", ["list"]), rule("", "secrets", ["get"], ["app-config"])]


def test_rules_are_ordered_deterministically_whatever_the_input_order() -> None:
    scopes = [
        scope(["watch", "get"], ["deployments.apps", "configmaps"]),
        scope(["create"], ["jobs.batch", "pods"]),
        scope(["get"], ["secrets/z"]),
        scope(["list"], ["secrets/a", "leases.coordination.k8s.io"]),
    ]
    outputs = {
        repr(rules_for([scope(s.permissions[::-1], s.resources[::-1]) for s in order], SERVED))
        for order in itertools.permutations(scopes)
    }
    assert len(outputs) == 1
    rules = rules_for(scopes, SERVED)
    keys = [(r["apiGroups"][0], r["resources"][0], r.get("resourceNames", [])) for r in rules]
    assert keys == sorted(keys)
    for r in rules:
        assert r["verbs"] == [v for v in VERBS if v in r["verbs"]], "verbs are listed in canonical order"


def test_verbs_are_case_insensitive() -> None:
    assert rules_for([scope(["GET", "List"], ["configmaps"])], SERVED) == [
        rule("", "configmaps", ["get", "list"])
    ]


def test_all_standard_verbs_are_accepted() -> None:
    assert rules_for([scope(list(VERBS), ["configmaps"])], SERVED) == [rule("", "configmaps", list(VERBS))]


@pytest.mark.parametrize(
    ("verbs", "named"),
    [
        (["*"], ["*"]),
        (["get", "escalate"], ["escalate"]),
        (["impersonate", "bind", "get"], ["bind", "impersonate"]),
        (["read"], ["read"]),
    ],
)
def test_unknown_verbs_are_invalid(verbs: list[str], named: list[str]) -> None:
    with pytest.raises(InvalidSpec) as caught:
        rules_for([scope(verbs, ["configmaps"])], SERVED)
    assert f"unknown verb(s) {', '.join(named)}" in caught.value.message
    assert caught.value.reason == "InvalidSpec"


@pytest.mark.parametrize(
    ("resource", "fragments"),
    [
        ("widgets", ["'widgets'", "core API group"]),
        ("widgets.example.com", ["'widgets.example.com'", "'example.com'"]),
        ("deployments", ["'deployments'", "core API group"]),  # served, but in apps, not core
        ("configmaps.apps", ["'configmaps.apps'", "'apps'"]),
        ("cronjob.batch/nightly", ["'cronjob.batch/nightly'", "'batch'"]),  # singular is not the plural
    ],
)
def test_unknown_resources(resource: str, fragments: list[str]) -> None:
    with pytest.raises(UnknownResource) as caught:
        rules_for([scope(["get"], ["configmaps", resource])], SERVED)
    for fragment in fragments:
        assert fragment in caught.value.message
    assert caught.value.reason == "UnknownResource"


def test_a_scope_without_resources_is_invalid() -> None:
    with pytest.raises(InvalidSpec, match="needs resources"):
        rules_for([scope(["get"], ["configmaps"]), scope(["list"], [])], SERVED)


def test_a_bad_resource_string_is_invalid_not_unknown() -> None:
    with pytest.raises(InvalidSpec) as caught:
        rules_for([scope(["get"], ["secrets/*"])], SERVED)
    assert not isinstance(caught.value, UnknownResource)


def test_no_scopes_no_rules() -> None:
    assert rules_for([], SERVED) == []


# -- object_name ----------------------------------------------------------------------------------


def test_short_names_are_prefixed() -> None:
    assert object_name("triage-bot") == "agentaccount-triage-bot"


@pytest.mark.parametrize("length", [1, 63, 240, 241, 252, 253])
def test_object_name_is_a_valid_bounded_deterministic_name(length: int) -> None:
    account_name = "a" * length
    name = object_name(account_name)

    assert len(name) <= MAX_NAME
    assert DNS_SUBDOMAIN.match(name)
    assert name == object_name(account_name)
    assert name.startswith("agentaccount-a")
    if len("agentaccount-") + length <= MAX_NAME:
        assert name == f"agentaccount-{account_name}"


def test_long_names_sharing_a_prefix_get_different_object_names() -> None:
    base = "x" * 245
    names = {object_name(base + suffix) for suffix in ("a", "b", "-c", ".d", "eeeeeeee")}
    assert len(names) == 5
    assert all(len(n) <= MAX_NAME and DNS_SUBDOMAIN.match(n) for n in names)


def test_a_cut_at_a_dash_or_dot_still_gives_a_valid_name() -> None:
    # 242 characters survive the cut; make the last of them a separator
    for sep in "-.":
        name = object_name("a" * 228 + sep + "b" * 30)
        assert len(name) <= MAX_NAME
        assert DNS_SUBDOMAIN.match(name), name


# -- kubeconfig -----------------------------------------------------------------------------------

CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def test_kubeconfig_is_yaml_scoped_to_the_namespace_with_the_token() -> None:
    text = kubeconfig("https://kubernetes.default.svc", CA, "agents", "tok.en-123", "agentaccount-bot")
    config = yaml.safe_load(text)

    assert config["apiVersion"] == "v1"
    assert config["kind"] == "Config"
    contexts = {c["name"]: c["context"] for c in config["contexts"]}
    clusters = {c["name"]: c["cluster"] for c in config["clusters"]}
    users = {u["name"]: u["user"] for u in config["users"]}
    context = contexts[config["current-context"]]
    assert context["namespace"] == "agents"
    assert users[context["user"]] == {"token": "tok.en-123"}
    assert context["user"] == "agentaccount-bot"
    cluster = clusters[context["cluster"]]
    assert cluster["server"] == "https://kubernetes.default.svc"
    assert base64.b64decode(cluster["certificate-authority-data"]).decode() == CA


def test_kubeconfig_without_a_ca_has_no_ca_data() -> None:
    config = yaml.safe_load(kubeconfig("https://127.0.0.1:6443", "", "ns", "t", "u"))
    assert config["clusters"][0]["cluster"] == {"server": "https://127.0.0.1:6443"}


def test_kubeconfig_survives_awkward_yaml_values() -> None:
    # values YAML would otherwise read as other types or syntax
    config = yaml.safe_load(kubeconfig("https://h:1", "", "yes", "#not-a-comment: x", "null"))
    context = config["contexts"][0]["context"]
    assert context["namespace"] == "yes"
    assert context["user"] == "null"
    assert config["users"][0]["user"]["token"] == "#not-a-comment: x"


@pytest.mark.parametrize(
    "resource",
    [
        "secrets",
        "secrets/a",
        "serviceaccounts",
        "roles.rbac.authorization.k8s.io",
        "rolebindings.rbac.authorization.k8s.io",
    ],
)
@pytest.mark.parametrize("verb", ["create", "update", "patch", "delete", "deletecollection"])
def test_writing_escalating_resources_is_refused(resource: str, verb: str) -> None:
    with pytest.raises(InvalidSpec, match="escalate"):
        rules_for([scope([verb], [resource])], SERVED)


def test_reading_escalating_resources_is_allowed() -> None:
    assert rules_for([scope(["get", "list", "watch"], ["secrets"])], SERVED) == [
        rule("", "secrets", ["get", "list", "watch"])
    ]
