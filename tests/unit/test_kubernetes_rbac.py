"""Scopes -> RBAC rules, the never-grantable rules, object names and kubeconfigs for the Kubernetes
provider (pure, no cluster).

The grammar is RBAC's: `resources` are `resource[.group][/subresource]` (`pods/log` is the log
subresource, never a pod named "log") and object names go in `resourceNames`.
"""

from __future__ import annotations

import base64
import itertools
import re
from typing import Any

import pydantic
import pytest
import yaml

from agentaccounts.errors import InvalidSpec, NotPermitted, UnknownResource
from agentaccounts.models import Scope
from agentaccounts.providers.kubernetes.rbac import (
    GROUP,
    MAX_CHECKS,
    MAX_NAME,
    VERBS,
    Permission,
    ResourceRef,
    check_never_grantable,
    kubeconfig,
    never_grantable,
    object_name,
    parse_resource,
    permissions,
    rules_for,
    secret_names,
)

# What discovery returns on a small cluster (group "" is core; subresources are listed as in discovery).
SERVED: dict[str, set[str]] = {
    "": {"configmaps", "secrets", "pods", "pods/log", "services", "serviceaccounts", "serviceaccounts/token"},
    "apps": {"deployments", "statefulsets", "deployments/scale"},
    "coordination.k8s.io": {"leases"},
    "batch": {"jobs", "cronjobs"},
    "rbac.authorization.k8s.io": {"roles", "rolebindings"},
    GROUP: {"agentaccounts", "accountproviders", "agentaccounts/status"},
}
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LEADER = ("ops", "agentaccounts-operator")  # (namespace, name) of the operator's leader Lease


def scope(permissions: list[str], resources: list[str], names: list[str] | None = None) -> Scope:
    return Scope(permissions=permissions, resources=resources, resourceNames=names or [])


def rule(group: str, resource: str, verbs: list[str], names: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"apiGroups": [group], "resources": [resource], "verbs": verbs}
    if names:
        out["resourceNames"] = names
    return out


def permission(verb: str, resource: str, name: str = "") -> Permission:
    return Permission(verb, parse_resource(resource), name)


# -- parse_resource -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("configmaps", ResourceRef("", "configmaps")),
        ("deployments.apps", ResourceRef("apps", "deployments")),
        ("pods/log", ResourceRef("", "pods", "log")),  # the log subresource, not a pod named "log"
        ("deployments.apps/scale", ResourceRef("apps", "deployments", "scale")),
        ("serviceaccounts/token", ResourceRef("", "serviceaccounts", "token")),
        ("leases.coordination.k8s.io", ResourceRef("coordination.k8s.io", "leases")),
        ("ConfigMaps", ResourceRef("", "configmaps")),  # resource names are case-insensitive
        ("Pods/Log", ResourceRef("", "pods", "log")),  # and so are subresources
    ],
)
def test_parse_resource(text: str, expected: ResourceRef) -> None:
    assert parse_resource(text) == expected


@pytest.mark.parametrize(
    "text",
    ["configmaps", "deployments.apps", "pods/log", "deployments.apps/scale", "leases.coordination.k8s.io"],
)
def test_resource_ref_prints_back_in_the_same_grammar(text: str) -> None:
    assert str(parse_resource(text)) == text


@pytest.mark.parametrize(
    ("text", "rbac"),
    [("configmaps", "configmaps"), ("pods/log", "pods/log"), ("deployments.apps/scale", "deployments/scale")],
)
def test_rbac_resource_is_resource_slash_subresource_without_the_group(text: str, rbac: str) -> None:
    assert parse_resource(text).rbac_resource == rbac


@pytest.mark.parametrize(
    "text",
    [
        "",
        "*",
        "*.apps",
        "deployments.*",
        "secrets/*",
        "pods/*",
        "configmaps/",
        "deployments.apps/",
        "/log",
        ".apps",
        "a/b/c",
        "pods/log/x",
        " configmaps",
        "configmaps ",
        "configmaps\n",
    ],
)
def test_parse_resource_rejects(text: str) -> None:
    with pytest.raises(InvalidSpec) as caught:
        parse_resource(text)
    assert repr(text) in caught.value.message


def test_a_slash_error_points_names_to_resource_names() -> None:
    with pytest.raises(InvalidSpec, match="object names go in resourceNames"):
        parse_resource("secrets/a/b")


# -- permissions ----------------------------------------------------------------------------------


def test_permissions_are_every_verb_resource_and_name_in_spec_order() -> None:
    wanted = list(
        permissions(
            [scope(["get", "LIST"], ["configmaps", "pods/log"], ["a", "b"]), scope(["watch"], ["jobs.batch"])]
        )
    )
    assert [str(p) for p in wanted] == [
        "get configmaps named 'a'",
        "get configmaps named 'b'",
        "list configmaps named 'a'",
        "list configmaps named 'b'",
        "get pods/log named 'a'",
        "get pods/log named 'b'",
        "list pods/log named 'a'",
        "list pods/log named 'b'",
        "watch jobs.batch",
    ]


def test_a_permission_is_one_subject_access_review() -> None:
    assert permission("get", "deployments.apps/scale", "web").attributes("agents") == {
        "namespace": "agents",
        "verb": "get",
        "group": "apps",
        "resource": "deployments",
        "subresource": "scale",
        "name": "web",
    }
    assert permission("list", "configmaps").attributes("agents")["name"] == ""


@pytest.mark.parametrize(
    "scopes",
    [
        [scope(["get"], ["configmaps"], [f"n{i}" for i in range(MAX_CHECKS)])],
        [scope(list(VERBS), ["configmaps"], [f"n{i}" for i in range(MAX_CHECKS // len(VERBS))])],
        [scope(["get"], ["configmaps"], [f"n{i}" for i in range(MAX_CHECKS // 2)])] * 2,
    ],
    ids=["names", "verbs-x-names", "across-scopes"],
)
def test_exactly_max_checks_permissions_are_accepted(scopes: list[Scope]) -> None:
    assert len(list(permissions(scopes))) == MAX_CHECKS


@pytest.mark.parametrize(
    "scopes",
    [
        [scope(["get"], ["configmaps"], [f"n{i}" for i in range(MAX_CHECKS + 1)])],
        [scope(["get"], ["configmaps"], [f"n{i}" for i in range(MAX_CHECKS // 2)])] * 2
        + [scope(["get"], ["pods"])],
        [scope(list(VERBS), [f"r{i}" for i in range(64)], ["a", "b"])],  # 8 x 64 x 2 = 1024
    ],
    ids=["names", "across-scopes", "verbs-x-resources-x-names"],
)
def test_more_than_max_checks_permissions_are_refused(scopes: list[Scope]) -> None:
    with pytest.raises(InvalidSpec) as caught:
        list(permissions(scopes))
    assert f"more than {MAX_CHECKS}" in caught.value.message
    with pytest.raises(InvalidSpec):
        rules_for(scopes, SERVED)


def test_an_empty_resource_name_is_refused_not_read_as_every_object() -> None:
    # Permission name "" means "every object": resourceNames [""] must not widen a scope that names
    # one (empty) object into a grant on all of them. The CRD says minLength 1; the model repeats it.
    with pytest.raises((InvalidSpec, pydantic.ValidationError)):
        rules_for([scope(["get"], ["configmaps"], [""])], SERVED)
    with pytest.raises((InvalidSpec, pydantic.ValidationError)):
        rules_for([scope(["get"], ["configmaps"], ["a", ""])], SERVED)


# -- never_grantable ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wanted", "namespace", "fragment"),
    [
        # anything in our own API group: an agent could change its own limits
        (permission("get", f"agentaccounts.{GROUP}"), "agents", f"nothing in {GROUP}"),
        (permission("update", f"agentaccounts.{GROUP}/status"), "agents", f"nothing in {GROUP}"),
        (permission("get", f"accountproviders.{GROUP}", "p"), "agents", f"nothing in {GROUP}"),
        # minting ServiceAccount tokens, whatever the verb
        (permission("create", "serviceaccounts/token"), "agents", "serviceaccounts/token"),
        (permission("get", "serviceaccounts/token", "default"), "agents", "serviceaccounts/token"),
        # writes on the escalating resources, named or not
        (permission("create", "secrets"), "agents", "escalate"),
        (permission("patch", "secrets", "app-config"), "agents", "escalate"),
        (permission("update", "serviceaccounts", "default"), "agents", "escalate"),
        (permission("create", "roles.rbac.authorization.k8s.io"), "agents", "escalate"),
        (permission("deletecollection", "rolebindings.rbac.authorization.k8s.io"), "agents", "escalate"),
        # reading Secrets without names would include other agents' credentials
        (permission("get", "secrets"), "agents", "without resourceNames"),
        (permission("list", "secrets"), "agents", "without resourceNames"),
        (permission("watch", "secrets"), "agents", "without resourceNames"),
        # the operator's leader Lease, named or not, read or write
        (permission("update", "leases.coordination.k8s.io", LEADER[1]), LEADER[0], "leader Lease"),
        (permission("get", "leases.coordination.k8s.io", LEADER[1]), LEADER[0], "leader Lease"),
        (permission("list", "leases.coordination.k8s.io"), LEADER[0], "leader Lease"),
    ],
)
def test_never_grantable(wanted: Permission, namespace: str, fragment: str) -> None:
    why = never_grantable(wanted, namespace, frozenset({LEADER}))
    assert why is not None
    assert fragment in why


@pytest.mark.parametrize(
    ("wanted", "namespace"),
    [
        (permission("get", "configmaps"), "agents"),
        (permission("create", "configmaps"), "agents"),
        (permission("get", "pods/log"), "agents"),
        (permission("get", "secrets", "app-config"), "agents"),
        (permission("watch", "secrets", "app-config"), "agents"),
        (permission("list", "serviceaccounts"), "agents"),
        (permission("get", "roles.rbac.authorization.k8s.io"), "agents"),
        (permission("watch", "rolebindings.rbac.authorization.k8s.io"), "agents"),
        (permission("get", "serviceaccounts", "token"), "agents"),  # a ServiceAccount named "token"
        (permission("update", "leases.coordination.k8s.io", "my-lock"), LEADER[0]),  # another Lease
        (permission("update", "leases.coordination.k8s.io", LEADER[1]), "agents"),  # same name, elsewhere
        (permission("update", "leases.coordination.k8s.io"), "agents"),
        (permission("create", "deployments.apps"), "agents"),
    ],
)
def test_grantable(wanted: Permission, namespace: str) -> None:
    assert never_grantable(wanted, namespace, frozenset({LEADER})) is None


def test_without_protected_leases_any_lease_is_grantable() -> None:
    assert (
        never_grantable(permission("update", "leases.coordination.k8s.io", LEADER[1]), LEADER[0], frozenset())
        is None
    )


def test_check_never_grantable_names_the_rule_and_the_first_offender() -> None:
    scopes = [
        scope(["get"], ["configmaps"]),
        scope(["get", "create"], ["secrets"], ["a"]),
        scope(["create"], ["roles.rbac.authorization.k8s.io"]),
    ]
    with pytest.raises(NotPermitted) as caught:
        check_never_grantable(scopes, "agents")
    assert caught.value.message.startswith("rule never-grantable: create secrets")
    assert caught.value.reason == "NotPermitted"


def test_check_never_grantable_returns_every_permission_in_spec_order() -> None:
    scopes = [scope(["get"], ["secrets"], ["a", "b"]), scope(["list"], ["configmaps"])]
    assert check_never_grantable(scopes, "agents", frozenset({LEADER})) == [
        permission("get", "secrets", "a"),
        permission("get", "secrets", "b"),
        permission("list", "configmaps"),
    ]


@pytest.mark.parametrize(
    "resource", ["roles.RBAC.authorization.k8s.io", "agentaccounts.AgentAccounts.dev", "Secrets"]
)
def test_a_mixed_case_group_is_still_never_grantable(resource: str) -> None:
    # Resource names are case-insensitive (lowercased); API groups must be too, or `create
    # roles.RBAC.authorization.k8s.io` passes never_grantable, and admission for anyone whose RBAC
    # says apiGroups ["*"]. Refusing a mixed-case group as invalid would do as well.
    with pytest.raises((NotPermitted, InvalidSpec)) as caught:
        check_never_grantable([scope(["create"], [resource])], "agents")
    if isinstance(caught.value, NotPermitted):
        assert caught.value.message.startswith("rule never-grantable: ")


# -- rules_for ------------------------------------------------------------------------------------


def test_one_scope_one_rule_per_resource() -> None:
    rules = rules_for(
        [
            scope(["get", "list"], ["configmaps", "deployments.apps"]),
            scope(["get", "list"], ["secrets"], ["app-config"]),
        ],
        SERVED,
    )
    assert rules == [
        rule("", "configmaps", ["get", "list"]),
        rule("", "secrets", ["get", "list"], ["app-config"]),
        rule("apps", "deployments", ["get", "list"]),
    ]


def test_verbs_merge_per_group_resource_and_name() -> None:
    rules = rules_for(
        [
            scope(["get"], ["configmaps"]),
            scope(["get"], ["secrets"], ["a"]),
            scope(["list", "get"], ["configmaps"]),
            scope(["watch"], ["configmaps"]),
            scope(["watch"], ["secrets"], ["b"]),
            scope(["list"], ["secrets"], ["a"]),
            scope(["delete"], ["leases.coordination.k8s.io"], ["lock"]),
            scope(["update"], ["leases.coordination.k8s.io"], ["lock"]),
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
    rules = rules_for(
        [scope(["get"], ["configmaps"], ["app-config"]), scope(["list"], ["configmaps"])], SERVED
    )
    assert rules == [rule("", "configmaps", ["list"]), rule("", "configmaps", ["get"], ["app-config"])]


def test_every_resource_name_applies_to_every_resource_of_its_scope() -> None:
    rules = rules_for([scope(["get"], ["configmaps", "secrets"], ["b", "a"])], SERVED)
    assert rules == [
        rule("", "configmaps", ["get"], ["a"]),
        rule("", "configmaps", ["get"], ["b"]),
        rule("", "secrets", ["get"], ["a"]),
        rule("", "secrets", ["get"], ["b"]),
    ]


def test_rules_are_ordered_deterministically_whatever_the_input_order() -> None:
    scopes = [
        scope(["watch", "get"], ["deployments.apps", "configmaps"]),
        scope(["create"], ["jobs.batch", "pods"]),
        scope(["get"], ["secrets"], ["z", "y"]),
        scope(["list"], ["secrets", "leases.coordination.k8s.io"], ["a"]),
        scope(["get"], ["pods/log", "deployments.apps/scale"]),
    ]
    outputs = {
        repr(
            rules_for(
                [scope(s.permissions[::-1], s.resources[::-1], s.resource_names[::-1]) for s in order], SERVED
            )
        )
        for order in itertools.permutations(scopes)
    }
    assert len(outputs) == 1
    rules = rules_for(scopes, SERVED)
    keys = [(r["apiGroups"][0], r["resources"][0], r.get("resourceNames", [])) for r in rules]
    assert keys == sorted(keys)
    assert len(keys) == 10
    for r in rules:
        assert r["verbs"] == [v for v in VERBS if v in r["verbs"]], "verbs are listed in canonical order"


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        ("pods/log", rule("", "pods/log", ["get"])),
        ("deployments.apps/scale", rule("apps", "deployments/scale", ["get"])),
        ("Pods/LOG", rule("", "pods/log", ["get"])),
    ],
)
def test_a_subresource_is_an_rbac_subresource(resource: str, expected: dict[str, Any]) -> None:
    assert rules_for([scope(["get"], [resource])], SERVED) == [expected]


def test_pods_log_does_not_grant_pods() -> None:
    (only,) = rules_for([scope(["get"], ["pods/log"])], SERVED)
    assert only["resources"] == ["pods/log"]
    assert "resourceNames" not in only


def test_a_named_subresource_keeps_the_name() -> None:
    assert rules_for([scope(["get"], ["pods/log"], ["web-0"])], SERVED) == [
        rule("", "pods/log", ["get"], ["web-0"])
    ]


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
        ("cronjob.batch", ["'cronjob.batch'", "'batch'"]),  # singular is not the plural
        ("pods/exec", ["'pods/exec'", "core API group"]),  # pods is served, pods/exec is not
        ("statefulsets.apps/scale", ["'statefulsets.apps/scale'", "'statefulsets/scale'", "'apps'"]),
        ("configmaps/log", ["'configmaps/log'", "core API group"]),
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


@pytest.mark.parametrize(
    ("verb", "resource", "names"),
    [
        (verb, resource, names)
        for verb in ("create", "update", "patch", "delete", "deletecollection")
        for resource, names in (
            ("secrets", []),
            ("secrets", ["a"]),
            ("serviceaccounts", []),
            ("serviceaccounts", ["default"]),
            ("roles.rbac.authorization.k8s.io", []),
            ("rolebindings.rbac.authorization.k8s.io", ["b"]),
        )
    ],
)
def test_writing_escalating_resources_is_refused(verb: str, resource: str, names: list[str]) -> None:
    with pytest.raises(NotPermitted) as caught:
        rules_for([scope([verb], [resource], names)], SERVED)
    message = caught.value.message
    assert message.startswith("rule never-grantable: ")
    assert f"{verb} {resource}" in message
    assert "escalate" in message


@pytest.mark.parametrize(
    "resource",
    ["serviceaccounts", "roles.rbac.authorization.k8s.io", "rolebindings.rbac.authorization.k8s.io"],
)
def test_reading_escalating_resources_is_allowed(resource: str) -> None:
    ref = parse_resource(resource)
    assert rules_for([scope(["get", "list", "watch"], [resource])], SERVED) == [
        rule(ref.group, ref.resource, ["get", "list", "watch"])
    ]


def test_reading_named_secrets_is_allowed() -> None:
    assert rules_for([scope(["get", "watch"], ["secrets"], ["app-config"])], SERVED) == [
        rule("", "secrets", ["get", "watch"], ["app-config"])
    ]


@pytest.mark.parametrize("verb", ["get", "list", "watch"])
def test_reading_secrets_without_names_is_refused(verb: str) -> None:
    with pytest.raises(NotPermitted) as caught:
        rules_for([scope([verb], ["secrets"])], SERVED)
    assert caught.value.message.startswith(f"rule never-grantable: {verb} secrets without resourceNames")


@pytest.mark.parametrize(
    ("resource", "names", "fragment"),
    [
        ("serviceaccounts/token", [], "serviceaccounts/token"),
        ("serviceaccounts/token", ["default"], "serviceaccounts/token"),
        (f"agentaccounts.{GROUP}", [], GROUP),
        (f"agentaccounts.{GROUP}/status", ["bot"], GROUP),
    ],
)
def test_rules_for_refuses_the_other_never_grantable_rules(
    resource: str, names: list[str], fragment: str
) -> None:
    # served, so nothing but the never-grantable rule stands in the way
    with pytest.raises(NotPermitted) as caught:
        rules_for([scope(["get"], [resource], names)], SERVED)
    assert caught.value.message.startswith("rule never-grantable: ")
    assert fragment in caught.value.message


def test_never_grantable_is_judged_before_served_resources() -> None:
    with pytest.raises(NotPermitted):
        rules_for([scope(["create"], ["secrets"], ["a"])], {})


# -- secret_names ---------------------------------------------------------------------------------


def test_secret_names_are_the_names_that_secret_rules_grant() -> None:
    rules = rules_for(
        [
            scope(["get"], ["secrets"], ["b", "a"]),
            scope(["get"], ["configmaps"], ["not-a-secret"]),
            scope(["list"], ["secrets"], ["c"]),
            scope(["get"], ["pods"]),
        ],
        SERVED,
    )
    assert secret_names(rules) == {"a", "b", "c"}


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        ([], set()),
        ([rule("", "secrets", ["get"])], set()),  # unnamed: none by name
        ([rule("", "configmaps", ["get"], ["x"])], set()),
        ([rule("example.com", "secrets", ["get"], ["x"])], set()),  # another group's "secrets"
        ([rule("", "secrets", ["get"], ["x", "y"])], {"x", "y"}),
        (
            [
                {
                    "apiGroups": [""],
                    "resources": ["configmaps", "secrets"],
                    "verbs": ["get"],
                    "resourceNames": ["z"],
                }
            ],
            {"z"},
        ),
    ],
)
def test_secret_names_of_hand_written_rules(rules: list[dict[str, Any]], expected: set[str]) -> None:
    assert secret_names(rules) == expected


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
