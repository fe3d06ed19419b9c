"""The CRDs in crds/ without a cluster: structure, docs, printer columns, and a local validation mirror.

The mirror runs `jsonschema` over each openAPIV3Schema with the x-kubernetes-* keys dropped, so the example
manifests and a table of malformed specs are checked in milliseconds. It is not the API server: CEL rules
(x-kubernetes-validations) are skipped here and mirrored by the pydantic models instead, and the real
check against kube-apiserver lives in the integration tests.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import jsonschema
import pydantic
import pytest
import yaml

from agentaccounts import stamps
from agentaccounts.models import (
    AgentAccount,
    AgentAccountSpec,
    AgentAccountStatus,
    LabelSelector,
    Phase,
    ProviderPolicy,
    ProviderRef,
    Scope,
    ScopePattern,
    parse_duration,
)
from agentaccounts.providers import ProviderSpec

REPO = Path(__file__).resolve().parents[2]
CRDS = {
    doc["spec"]["names"]["kind"]: doc
    for path in sorted((REPO / "crds").glob("*.yaml"))
    for doc in yaml.safe_load_all(path.read_text())
    if doc
}
EXAMPLES = [
    (f"{path.name}#{i}", doc)
    for path in sorted((REPO / "crds" / "examples").glob("*.yaml"))
    for i, doc in enumerate(yaml.safe_load_all(path.read_text()))
    if doc
]
KINDS = sorted(CRDS)


def version(kind: str) -> dict[str, Any]:
    (storage,) = [v for v in CRDS[kind]["spec"]["versions"] if v["storage"]]
    return storage  # type: ignore[no-any-return]


def schema(kind: str) -> dict[str, Any]:
    return version(kind)["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, str, dict[str, Any]]]:
    """Every named property below `node`, as (path, field name, schema); `[]` marks array items."""
    for name, child in (node.get("properties") or {}).items():
        yield f"{path}.{name}", name, child
        yield from walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")


def go_pattern(pattern: str) -> str:
    # kube-apiserver compiles `pattern` with Go's RE2, where `$` (without the m flag) is the end of the
    # text. In Python `$` also matches before a trailing newline, so "30m\n" would slip through the mirror.
    return pattern[:-1] + r"\Z" if pattern.endswith("$") and not pattern.endswith(r"\$") else pattern


def to_json_schema(node: Any) -> Any:
    """openAPIV3Schema -> JSON Schema: drop x-kubernetes-* extensions, give patterns Go's `$`."""
    if isinstance(node, list):
        return [to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-"):
            continue
        out[key] = go_pattern(value) if key == "pattern" and isinstance(value, str) else to_json_schema(value)
    return out


@functools.cache
def validator(kind: str) -> jsonschema.Draft7Validator:
    converted = to_json_schema(schema(kind))
    jsonschema.Draft7Validator.check_schema(converted)
    return jsonschema.Draft7Validator(converted)


def errors(kind: str, obj: dict[str, Any]) -> list[jsonschema.ValidationError]:
    return list(validator(kind).iter_errors(obj))


# -- structure ------------------------------------------------------------------------------------


def test_the_three_kinds_are_defined() -> None:
    assert KINDS == ["AccountProvider", "AgentAccount", "ClusterAccountProvider"]


@pytest.mark.parametrize("kind", KINDS)
def test_one_served_storage_version_with_a_status_subresource(kind: str) -> None:
    crd = CRDS[kind]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["spec"]["group"] == "agentaccounts.dev"
    assert crd["metadata"]["name"] == f"{crd['spec']['names']['plural']}.agentaccounts.dev"
    assert [v["name"] for v in crd["spec"]["versions"] if v["storage"]] == ["v1alpha1"]
    assert version(kind)["served"] is True
    assert version(kind)["subresources"]["status"] == {}


@pytest.mark.parametrize("kind", KINDS)
def test_every_property_has_a_type(kind: str) -> None:
    root = schema(kind)
    assert root["type"] == "object"
    untyped = [
        path
        for path, _, node in walk(root)
        if "type" not in node and not node.get("x-kubernetes-preserve-unknown-fields")
    ]
    untyped_items = [
        path
        for path, _, node in walk(root)
        if node.get("type") == "array" and "type" not in node.get("items", {})
    ]
    assert untyped == []
    assert untyped_items == []


@pytest.mark.parametrize("kind", KINDS)
def test_every_spec_field_has_a_description(kind: str) -> None:
    # `kubectl explain <kind>.spec` is the user's manual: every field under spec says what it does.
    spec = schema(kind)["properties"]["spec"]
    assert spec.get("description")
    missing = [path for path, _, node in walk(spec, ".spec") if not str(node.get("description", "")).strip()]
    assert missing == [], f"{kind}: fields without a description: {missing}"


@pytest.mark.parametrize(
    ("kind", "short", "scope"),
    [
        ("AgentAccount", "aga", "Namespaced"),
        ("AccountProvider", "ap", "Namespaced"),
        ("ClusterAccountProvider", "cap", "Cluster"),
    ],
)
def test_names_and_scope(kind: str, short: str, scope: str) -> None:
    spec = CRDS[kind]["spec"]
    assert short in spec["names"]["shortNames"]
    assert "agentaccounts" in spec["names"]["categories"]
    assert spec["scope"] == scope


def test_agentaccount_printer_columns() -> None:
    columns = {c["name"]: c for c in version("AgentAccount")["additionalPrinterColumns"]}
    assert {"Provider", "Phase", "Expires", "Age"} <= set(columns)
    assert columns["Provider"]["jsonPath"] == ".spec.providerRef.name"
    assert columns["Phase"]["jsonPath"] == ".status.phase"
    assert columns["Expires"]["jsonPath"] == ".status.expiresAt"
    assert (columns["Age"]["jsonPath"], columns["Age"]["type"]) == (".metadata.creationTimestamp", "date")
    # the default view shows these four; the rest need -o wide
    assert all(columns[name].get("priority", 0) == 0 for name in ("Provider", "Phase", "Expires", "Age"))


@pytest.mark.parametrize("kind", KINDS)
def test_printer_columns_point_at_fields_in_the_schema(kind: str) -> None:
    fields = {path for path, _, _ in walk(schema(kind))}
    for column in version(kind)["additionalPrinterColumns"]:
        path = column["jsonPath"]
        if path.startswith(".metadata.") or "[" in path:
            continue
        assert path in fields, f"{kind} column {column['name']}: {path} is not in the schema"


# -- the local validation mirror ------------------------------------------------------------------

DURATION_SAMPLES = [
    "45s", "30m", "1h30m", "2d", "0s", "1500ms", "", "1.5h", "-1m", "10", "1y", " 5m", "5m ", "5m\n", "5M",
    # Beyond the model's 3650d maximum: the CRD takes them, so the model must (they count as 3650d).
    "3651d", "4000d", "87601h", "9999999999999999999999999999999d",
]  # fmt: skip


def _parses(text: str) -> bool:
    try:
        parse_duration(text)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("text", DURATION_SAMPLES)
def test_crd_duration_pattern_agrees_with_parse_duration(text: str) -> None:
    node = schema("AgentAccount")["properties"]["spec"]["properties"]["lifetime"]
    crd_accepts = bool(re.search(go_pattern(node["pattern"]), text)) and len(text) <= node["maxLength"]
    assert crd_accepts is _parses(text)


@pytest.mark.parametrize("kind", KINDS)
def test_every_duration_field_uses_the_same_pattern(kind: str) -> None:
    durations = {"lifetime", "keepExpiredFor", "maxLifetime", "defaultLifetime"}
    patterns = {node.get("pattern") for _, name, node in walk(schema(kind)) if name in durations}
    assert patterns == {schema("AgentAccount")["properties"]["spec"]["properties"]["lifetime"]["pattern"]}


def test_there_are_examples_of_every_kind_users_write() -> None:
    assert {doc["kind"] for _, doc in EXAMPLES} >= {"AgentAccount", "ClusterAccountProvider"}


@pytest.mark.parametrize(("name", "doc"), EXAMPLES, ids=[name for name, _ in EXAMPLES])
def test_examples_are_valid(name: str, doc: dict[str, Any]) -> None:
    group, _, api_version = doc["apiVersion"].partition("/")
    crd = CRDS[doc["kind"]]
    assert group == crd["spec"]["group"]
    assert api_version == version(doc["kind"])["name"]
    assert errors(doc["kind"], doc) == []
    # ...and the operator reads them (this also mirrors the CEL exactly-one-provider-block rule)
    if doc["kind"] == "AgentAccount":
        assert AgentAccount.from_body(doc).name == doc["metadata"]["name"]
    else:
        ProviderSpec.model_validate(doc["spec"])


def _agentaccount() -> dict[str, Any]:
    return copy.deepcopy(next(doc for _, doc in EXAMPLES if doc["kind"] == "AgentAccount"))


@pytest.mark.parametrize(
    ("mutate", "path", "keyword", "fragment"),
    [
        (lambda s: s.pop("providerRef"), ("spec",), "required", "'providerRef'"),
        (lambda s: s.update(lifetime="soon"), ("spec", "lifetime"), "pattern", "'soon'"),
        (lambda s: s.update(scopes=[]), ("spec", "scopes"), "minItems", ""),
        (lambda s: s.pop("scopes"), ("spec",), "required", "'scopes'"),
        (lambda s: s.update(lifetime="30m\n"), ("spec", "lifetime"), "pattern", ""),
        (lambda s: s.update(lifetime=1800), ("spec", "lifetime"), "type", "'string'"),
        (lambda s: s.update(keepExpiredFor="1 hour"), ("spec", "keepExpiredFor"), "pattern", ""),
        (lambda s: s["providerRef"].pop("name"), ("spec", "providerRef"), "required", "'name'"),
        (lambda s: s["providerRef"].update(name=""), ("spec", "providerRef", "name"), "minLength", ""),
        (lambda s: s["providerRef"].update(kind="Role"), ("spec", "providerRef", "kind"), "enum", "'Role'"),
        (
            lambda s: s.update(scopes=[{"resources": ["a"]}]),
            ("spec", "scopes", 0),
            "required",
            "'permissions'",
        ),
        (
            lambda s: s["scopes"][0].update(permissions=[]),
            ("spec", "scopes", 0, "permissions"),
            "minItems",
            "",
        ),
        (
            lambda s: s["scopes"][0].update(permissions=[""]),
            ("spec", "scopes", 0, "permissions", 0),
            "minLength",
            "",
        ),
        (
            lambda s: s["scopes"][0].update(resources=[""]),
            ("spec", "scopes", 0, "resources", 0),
            "minLength",
            "",
        ),
        (lambda s: s.update(scopes=[{"permissions": ["get"]}] * 65), ("spec", "scopes"), "maxItems", ""),
        (lambda s: s.update(secretName="Bad_Name"), ("spec", "secretName"), "pattern", ""),
        (lambda s: s.update(secretName="x" * 254), ("spec", "secretName"), "maxLength", ""),
        (
            lambda s: s["scopes"][0].update(resourceNames=[""]),
            ("spec", "scopes", 0, "resourceNames", 0),
            "minLength",
            "",
        ),
        (
            lambda s: s["scopes"][0].update(resourceNames=[f"n{i}" for i in range(65)]),
            ("spec", "scopes", 0, "resourceNames"),
            "maxItems",
            "",
        ),
        (
            lambda s: s["scopes"][0].update(resourceNames="app-config"),
            ("spec", "scopes", 0, "resourceNames"),
            "type",
            "'array'",
        ),
        (lambda s: s.update(dryRun="yes"), ("spec", "dryRun"), "type", "'boolean'"),
    ],
    ids=[
        "missing-providerRef",
        "lifetime-soon",
        "empty-scopes",
        "missing-scopes",
        "lifetime-trailing-newline",
        "lifetime-integer",
        "keepExpiredFor-words",
        "providerRef-without-name",
        "providerRef-empty-name",
        "providerRef-unknown-kind",
        "scope-without-permissions",
        "scope-empty-permissions",
        "scope-empty-permission",
        "scope-empty-resource",
        "too-many-scopes",
        "secretName-not-dns",
        "secretName-too-long",
        "resourceName-empty",
        "too-many-resourceNames",
        "resourceNames-not-a-list",
        "dryRun-not-boolean",
    ],
)
def test_malformed_agentaccounts_are_rejected(
    mutate: Any, path: tuple[str | int, ...], keyword: str, fragment: str
) -> None:
    doc = _agentaccount()
    mutate(doc["spec"])
    found = errors("AgentAccount", doc)
    matching = [e for e in found if (tuple(e.absolute_path), e.validator) == (path, keyword)]
    assert matching, [(list(e.absolute_path), e.validator, e.message) for e in found]
    assert any(fragment in e.message for e in matching)


def test_an_agentaccount_without_spec_is_rejected() -> None:
    doc = _agentaccount()
    del doc["spec"]
    assert any("'spec' is a required property" in e.message for e in errors("AgentAccount", doc))


def test_a_status_phase_outside_the_enum_is_rejected() -> None:
    doc = _agentaccount()
    doc["status"] = {"phase": "Running"}
    assert [tuple(e.absolute_path) for e in errors("AgentAccount", doc)] == [("status", "phase")]


CF_ACCOUNT = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize("kind", ["AccountProvider", "ClusterAccountProvider"])
@pytest.mark.parametrize(
    ("spec", "valid"),
    [
        ({"kubernetes": {}}, True),
        ({"kubernetes": {}, "policy": {}}, True),
        ({"kubernetes": {}, "policy": {"maxLifetime": "12h", "defaultLifetime": "30m"}}, True),
        (
            {
                "kubernetes": {},
                "policy": {
                    "allowedScopes": [
                        {"permissions": ["get", "list"]},
                        {"permissions": ["*"], "resources": ["pods/*"]},
                    ],
                    "maxActiveAccounts": 0,
                    "requireApproval": True,
                },
            },
            True,
        ),
        ({"cloudflare": {"accountId": CF_ACCOUNT, "apiTokenSecretRef": {"name": "cf"}}}, True),
        ({"cloudflare": {"mode": "temporaryAccount", "apiBaseURL": "http://127.0.0.1:8787/client/v4"}}, True),
        ({"kubernetes": {}, "policy": {"maxLifetime": "1 day"}}, False),
        ({"kubernetes": {}, "policy": {"defaultLifetime": "1h\n"}}, False),
        ({"kubernetes": {}, "policy": {"maxActiveAccounts": -1}}, False),
        ({"kubernetes": {}, "policy": {"maxActiveAccounts": "3"}}, False),
        ({"kubernetes": {}, "policy": {"requireApproval": "yes"}}, False),
        ({"kubernetes": {}, "policy": {"allowedScopes": [{"resources": ["pods"]}]}}, False),
        ({"kubernetes": {}, "policy": {"allowedScopes": [{"permissions": []}]}}, False),
        ({"kubernetes": {}, "policy": {"allowedScopes": [{"permissions": [""]}]}}, False),
        (
            {"kubernetes": {}, "policy": {"allowedScopes": [{"permissions": ["get"], "resources": [""]}]}},
            False,
        ),
        ({"kubernetes": {}, "policy": "strict"}, False),
        ({"cloudflare": {"mode": "bogus"}}, False),
        ({"cloudflare": {"accountId": "XYZ", "apiTokenSecretRef": {"name": "cf"}}}, False),
        ({"cloudflare": {"accountId": CF_ACCOUNT, "apiTokenSecretRef": {"key": "token"}}}, False),
        ({"cloudflare": {"mode": "temporaryAccount", "apiBaseURL": "ftp://example.com"}}, False),
    ],
)
def test_provider_specs(kind: str, spec: dict[str, Any], valid: bool) -> None:
    doc = {"apiVersion": "agentaccounts.dev/v1alpha1", "kind": kind, "metadata": {"name": "p"}, "spec": spec}
    assert (errors(kind, doc) == []) is valid


@pytest.mark.parametrize(
    ("expressions", "valid"),
    [
        ([{"key": "team", "operator": "In", "values": ["a"]}], True),
        ([{"key": "team", "operator": "Exists"}], True),
        ([{"key": "team", "operator": "in", "values": ["a"]}], False),
        ([{"key": "team", "operator": "Gt", "values": ["1"]}], False),
        ([{"operator": "Exists"}], False),
        ([{"key": "team"}], False),
        ([{"key": "k", "operator": "Exists"}] * 17, False),
    ],
)
def test_allowed_namespaces_selector(expressions: list[dict[str, Any]], valid: bool) -> None:
    spec = {"kubernetes": {}, "policy": {"allowedNamespaces": {"matchExpressions": expressions}}}
    doc = {
        "apiVersion": "agentaccounts.dev/v1alpha1",
        "kind": "ClusterAccountProvider",
        "metadata": {"name": "p"},
    }
    assert (errors("ClusterAccountProvider", {**doc, "spec": spec}) == []) is valid


# -- the CRDs and the models agree ----------------------------------------------------------------


def crd_names(node: dict[str, Any]) -> set[str]:
    return set(node.get("properties") or {})


def model_names(model: type[pydantic.BaseModel]) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items()}


def model_required(model: type[pydantic.BaseModel]) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items() if field.is_required()}


def at(kind: str, *path: str) -> dict[str, Any]:
    """The schema node at `path` below the root; "[]" steps into array items."""
    node = schema(kind)
    for step in path:
        node = node["items"] if step == "[]" else node["properties"][step]
    return node


PROVIDER_KINDS = ["AccountProvider", "ClusterAccountProvider"]


@pytest.mark.parametrize(
    ("kind", "path", "model"),
    [
        ("AgentAccount", ("spec",), AgentAccountSpec),
        ("AgentAccount", ("spec", "providerRef"), ProviderRef),
        ("AgentAccount", ("spec", "scopes", "[]"), Scope),
        *[(k, ("spec",), ProviderSpec) for k in PROVIDER_KINDS],
        *[(k, ("spec", "policy", "allowedScopes", "[]"), ScopePattern) for k in PROVIDER_KINDS],
        ("ClusterAccountProvider", ("spec", "policy"), ProviderPolicy),
        ("ClusterAccountProvider", ("spec", "policy", "allowedNamespaces"), LabelSelector),
    ],
)
def test_crd_fields_are_the_model_fields(
    kind: str, path: tuple[str, ...], model: type[pydantic.BaseModel]
) -> None:
    node = at(kind, *path)
    assert crd_names(node) == model_names(model)
    assert set(node.get("required") or []) == model_required(model)


def test_a_namespaced_provider_policy_has_no_namespace_selector() -> None:
    # An AccountProvider serves its own namespace only: the rest of the policy is the cluster one's.
    assert crd_names(at("AccountProvider", "spec", "policy")) == model_names(ProviderPolicy) - {
        "allowedNamespaces"
    }
    assert at("AccountProvider", "spec", "policy") == {
        **at("ClusterAccountProvider", "spec", "policy"),
        "properties": {
            k: v
            for k, v in at("ClusterAccountProvider", "spec", "policy")["properties"].items()
            if k != "allowedNamespaces"
        },
        "description": at("AccountProvider", "spec", "policy")["description"],
    }


def test_the_model_reads_every_status_field_it_needs_from_the_crd() -> None:
    assert model_names(AgentAccountStatus) <= crd_names(at("AgentAccount", "status"))


def test_status_phase_enum_is_the_model_phase() -> None:
    assert at("AgentAccount", "status", "phase")["enum"] == list(get_args(Phase))
    assert "DryRun" in at("AgentAccount", "status", "phase")["enum"]


def test_status_records_requester_approval_and_plan() -> None:
    status = at("AgentAccount", "status")["properties"]
    assert crd_names(status["requester"]) == {"username", "uid", "groups"}
    assert crd_names(status["approval"]) == {"decision", "by", "at"}
    assert status["approval"]["properties"]["decision"]["enum"] == ["Approved", "Denied"]
    assert status["plan"]["type"] == "object"
    assert status["plan"].get("x-kubernetes-preserve-unknown-fields") is True


@pytest.mark.parametrize("kind", PROVIDER_KINDS)
def test_policy_defaults_are_the_model_defaults(kind: str) -> None:
    policy = at(kind, "spec", "policy")
    # `default: {}` makes the API server fill in the policy's own defaults even when it is absent
    assert policy["default"] == {}
    props = policy["properties"]
    model = ProviderPolicy()
    assert parse_duration(props["maxLifetime"]["default"]) == model.max_lifetime
    assert parse_duration(props["defaultLifetime"]["default"]) == model.default_lifetime
    assert props["requireApproval"]["default"] is model.require_approval
    assert "default" not in props.get("maxActiveAccounts", {})  # absent = unlimited
    assert "default" not in props["allowedScopes"]  # absent differs from [] (see policies)


def test_agentaccount_defaults_are_the_model_defaults() -> None:
    spec = at("AgentAccount", "spec")["properties"]
    model = AgentAccountSpec.model_validate(
        {"providerRef": {"name": "p"}, "scopes": [{"permissions": ["get"]}]}
    )
    assert parse_duration(spec["keepExpiredFor"]["default"]) == model.keep_expired_for
    assert (
        spec["providerRef"]["properties"]["kind"].get("default", "AccountProvider") == model.provider_ref.kind
    )
    assert spec["dryRun"].get("default", False) is model.dry_run


@pytest.mark.parametrize("kind", PROVIDER_KINDS)
def test_lifetime_limits_are_in_the_policy_only(kind: str) -> None:
    spec = at(kind, "spec")
    assert not {"maxLifetime", "defaultLifetime"} & crd_names(spec)
    columns = {c["name"]: c["jsonPath"] for c in version(kind)["additionalPrinterColumns"]}
    assert columns["Max-Lifetime"] == ".spec.policy.maxLifetime"


def test_resource_names_follow_the_resources_rules() -> None:
    scope = at("AgentAccount", "spec", "scopes", "[]")["properties"]
    assert scope["resourceNames"]["items"] == scope["resources"]["items"]
    assert scope["resourceNames"]["maxItems"] == scope["resources"]["maxItems"]


def test_requester_column_shows_the_requested_by_annotation() -> None:
    columns = {c["name"]: c for c in version("AgentAccount")["additionalPrinterColumns"]}
    escaped = stamps.REQUESTED_BY.replace(".", "\\.")
    assert columns["Requester"]["jsonPath"] == f".metadata.annotations.{escaped}"
    assert columns["Requester"].get("priority", 0) == 0


def test_provider_and_scopes_are_immutable_once_issued() -> None:
    rules = schema("AgentAccount")["x-kubernetes-validations"]
    (immutable,) = [r for r in rules if "oldSelf" in r["rule"]]
    text = " ".join(immutable["rule"].split())
    # only a transition rule (oldSelf) can say "once issued"; before issue the spec stays editable
    assert text.startswith("!has(oldSelf.status) || !has(oldSelf.status.issuedAt) || ")
    assert "self.spec.providerRef == oldSelf.spec.providerRef" in text
    assert "self.spec.scopes == oldSelf.spec.scopes" in text
    # the lifetime may still be extended or shortened; keepExpiredFor is bookkeeping
    assert "lifetime" not in text
    assert "keepExpiredFor" not in text
    assert "create a new AgentAccount" in " ".join(immutable["message"].split())
