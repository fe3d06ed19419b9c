"""The pydantic models of the CRs: defaults, the checks repeated from the CRD schema, status parsing."""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pydantic
import pytest

from agentaccounts.models import (
    MAX_DURATION,
    AccountRef,
    AgentAccount,
    ProviderObject,
    ProviderPolicy,
    Requester,
    Scope,
)
from agentaccounts.providers import ProviderSpec
from agentaccounts.providers.kubernetes.spec import KubernetesBlock

UID = "5c1b2f3e-9a8d-4c7b-b6a5-0f1e2d3c4b5a"
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

# What the API server hands a handler for crds/examples/triage-bot.yaml after it was issued once.
BODY: dict[str, Any] = {
    "apiVersion": "agentaccounts.dev/v1alpha1",
    "kind": "AgentAccount",
    "metadata": {
        "name": "triage-bot",
        "namespace": "agents",
        "uid": UID,
        "generation": 3,
        "resourceVersion": "48213",
        "creationTimestamp": "2030-01-01T11:59:58Z",
        "finalizers": ["agentaccounts.dev/revoke"],
        "annotations": {
            "kopf.zalando.org/last-handled-configuration": "{}",
            "agentaccounts.dev/requested-by": "alice",
        },
    },
    "spec": {
        "providerRef": {"kind": "ClusterAccountProvider", "name": "in-cluster"},
        "lifetime": "30m",
        "scopes": [
            {"permissions": ["get", "list", "watch"], "resources": ["configmaps", "deployments.apps"]},
            {"permissions": ["get"], "resources": ["secrets"], "resourceNames": ["app-config"]},
        ],
        "secretName": "triage-bot-kubeconfig",
        "keepExpiredFor": "2h",
    },
    "status": {
        "phase": "Ready",
        "provider": "kubernetes",
        "issuedAt": "2030-01-01T12:00:00Z",
        "expiresAt": "2030-01-01T12:30:00Z",
        "secretName": "triage-bot-kubeconfig",
        "accountRef": {"kind": "ServiceAccount", "name": "agentaccount-triage-bot", "namespace": "agents"},
        "providerNote": "a note the model does not need",
        "observedGeneration": 3,
        "conditions": [{"type": "Ready", "status": "True", "reason": "Issued", "message": "ok"}],
    },
}


def minimal(**spec: Any) -> dict[str, Any]:
    """A freshly created AgentAccount: no status, only the required spec fields unless overridden."""
    return {
        "metadata": {"name": "bot", "namespace": "agents", "uid": UID, "generation": 1},
        "spec": {"providerRef": {"name": "in-cluster"}, "scopes": [{"permissions": ["get"]}], **spec},
    }


def error_locations(exc: pydantic.ValidationError) -> set[tuple[str | int, ...]]:
    return {tuple(e["loc"]) for e in exc.errors()}


# -- AgentAccount ---------------------------------------------------------------------------------


def test_from_body_reads_a_realistic_object() -> None:
    account = AgentAccount.from_body(copy.deepcopy(BODY))

    assert (account.namespace, account.name, account.uid, account.generation) == (
        "agents",
        "triage-bot",
        UID,
        3,
    )
    assert account.spec.provider_ref.kind == "ClusterAccountProvider"
    assert account.spec.provider_ref.name == "in-cluster"
    assert account.spec.lifetime == timedelta(minutes=30)
    assert account.spec.keep_expired_for == timedelta(hours=2)
    assert [s.permissions for s in account.spec.scopes] == [["get", "list", "watch"], ["get"]]
    assert [s.resources for s in account.spec.scopes] == [["configmaps", "deployments.apps"], ["secrets"]]
    assert [s.resource_names for s in account.spec.scopes] == [[], ["app-config"]]
    assert account.spec.dry_run is False
    assert account.secret_name == "triage-bot-kubeconfig"
    assert account.annotations["agentaccounts.dev/requested-by"] == "alice"
    assert account.created_at == datetime(2030, 1, 1, 11, 59, 58, tzinfo=UTC)


def test_defaults_of_a_minimal_spec() -> None:
    account = AgentAccount.from_body(minimal())

    assert account.spec.provider_ref.kind == "AccountProvider"
    assert account.spec.lifetime is None  # the provider's defaultLifetime applies
    assert account.spec.keep_expired_for == timedelta(hours=1)
    assert account.spec.secret_name is None
    assert account.secret_name == "bot-credentials"
    assert account.spec.scopes[0].resources == []
    assert account.spec.scopes[0].resource_names == []
    assert account.spec.dry_run is False
    assert account.annotations == {}
    assert account.created_at is None
    assert account.status.phase is None
    assert account.status.issued_at is None


@pytest.mark.parametrize("status", [None, {}], ids=["null", "empty"])
def test_missing_or_null_status_is_an_empty_status(status: dict[str, Any] | None) -> None:
    body = minimal()
    body["status"] = status
    assert AgentAccount.from_body(body).status == AgentAccount.from_body(minimal()).status


def test_generation_defaults_to_one() -> None:
    body = minimal()
    del body["metadata"]["generation"]
    assert AgentAccount.from_body(body).generation == 1


def test_explicit_secret_name_wins_over_the_default() -> None:
    assert AgentAccount.from_body(minimal(secretName="creds")).secret_name == "creds"


def test_default_secret_name_is_a_valid_secret_name_for_the_longest_account_name() -> None:
    # AgentAccount names are DNS subdomains of up to 253 characters, and so are Secret names: the
    # default `<name>-credentials` must not grow past that (the API server would refuse the Secret).
    long_name = "a" * 253
    body = minimal()
    body["metadata"]["name"] = long_name
    account = AgentAccount.from_body(body)

    assert len(account.secret_name) <= 253
    assert DNS_SUBDOMAIN.match(account.secret_name)
    assert account.secret_name == AgentAccount.from_body(copy.deepcopy(body)).secret_name


@pytest.mark.parametrize(
    ("mutate", "location"),
    [
        (lambda s: s.pop("providerRef"), ("spec", "providerRef")),
        (lambda s: s["providerRef"].pop("name"), ("spec", "providerRef", "name")),
        (lambda s: s["providerRef"].update(name=""), ("spec", "providerRef", "name")),
        (lambda s: s["providerRef"].update(kind="Role"), ("spec", "providerRef", "kind")),
        (lambda s: s.pop("scopes"), ("spec", "scopes")),
        (lambda s: s.update(scopes=[]), ("spec", "scopes")),
        (lambda s: s.update(scopes=[{"resources": ["configmaps"]}]), ("spec", "scopes", 0, "permissions")),
        (lambda s: s.update(scopes=[{"permissions": []}]), ("spec", "scopes", 0, "permissions")),
        (lambda s: s.update(lifetime="soon"), ("spec", "lifetime")),
        (lambda s: s.update(lifetime="1.5h"), ("spec", "lifetime")),
        (lambda s: s.update(keepExpiredFor="-1m"), ("spec", "keepExpiredFor")),
    ],
    ids=[
        "no-providerRef",
        "no-provider-name",
        "empty-provider-name",
        "unknown-provider-kind",
        "no-scopes",
        "empty-scopes",
        "scope-without-permissions",
        "scope-with-empty-permissions",
        "lifetime-soon",
        "fractional-lifetime",
        "negative-keepExpiredFor",
    ],
)
def test_invalid_specs_are_rejected_at_the_right_field(mutate: Any, location: tuple[str | int, ...]) -> None:
    body = copy.deepcopy(BODY)
    mutate(body["spec"])
    with pytest.raises(pydantic.ValidationError) as caught:
        AgentAccount.from_body(body)
    assert location in error_locations(caught.value)


@pytest.mark.parametrize("field", ["lifetime", "keepExpiredFor"])
def test_durations_beyond_the_maximum_are_accepted_as_the_maximum(field: str) -> None:
    # "4000d" matches the CRD pattern and maxLength, so `kubectl apply` takes it: the model must too.
    # Before, a Ready account edited to keepExpiredFor: 4000d went Failed and was never revoked.
    account = AgentAccount.from_body(minimal(**{field: "4000d"}))
    spec = account.spec
    assert (spec.lifetime if field == "lifetime" else spec.keep_expired_for) == MAX_DURATION


def test_an_invalid_spec_still_yields_what_revocation_needs() -> None:
    body = minimal(secretName="creds")
    body["spec"]["scopes"] = []
    body["status"] = {"phase": "Ready", "provider": "kubernetes", "expiresAt": "2030-01-01T00:00:00Z"}
    with pytest.raises(pydantic.ValidationError):
        AgentAccount.from_body(body)
    account = AgentAccount.for_revocation(body)
    assert (account.uid, account.secret_name, account.status.phase) == (UID, "creds", "Ready")
    assert account.spec.provider_ref.name == body["spec"]["providerRef"]["name"]
    assert account.spec.keep_expired_for == MAX_DURATION  # the audit record is kept, never cut short


def test_models_are_frozen() -> None:
    account = AgentAccount.from_body(minimal())
    with pytest.raises(pydantic.ValidationError):
        account.name = "other"  # type: ignore[misc]


def test_durations_serialise_back_to_duration_strings() -> None:
    spec = AgentAccount.from_body(minimal(lifetime="90m")).spec
    dumped = spec.model_dump(by_alias=True)
    assert dumped["lifetime"] == "1h30m"
    assert dumped["keepExpiredFor"] == "1h"
    assert dumped["providerRef"] == {"kind": "AccountProvider", "name": "in-cluster"}


def test_resource_names_are_read_by_their_crd_name_and_by_field_name() -> None:
    by_alias = Scope.model_validate(
        {"permissions": ["get"], "resources": ["secrets"], "resourceNames": ["a"]}
    )
    by_field = Scope(permissions=["get"], resources=["secrets"], resource_names=["a"])
    assert by_alias == by_field
    assert by_alias.resource_names == ["a"]
    assert by_alias.model_dump(by_alias=True)["resourceNames"] == ["a"]


@pytest.mark.parametrize(("value", "expected"), [(True, True), (False, False), ("true", True)])
def test_dry_run(value: Any, expected: bool) -> None:
    assert AgentAccount.from_body(minimal(dryRun=value)).spec.dry_run is expected


def test_dry_run_must_be_a_boolean() -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        AgentAccount.from_body(minimal(dryRun="perhaps"))
    assert ("spec", "dryRun") in error_locations(caught.value)


def test_null_annotations_are_no_annotations() -> None:
    body = minimal()
    body["metadata"]["annotations"] = None
    assert AgentAccount.from_body(body).annotations == {}


def test_a_requester_needs_only_a_username() -> None:
    assert Requester(username="alice") == Requester(username="alice", uid="", groups=[], extra={})
    with pytest.raises(pydantic.ValidationError):
        Requester.model_validate({"uid": "1"})


# -- status ---------------------------------------------------------------------------------------


def test_status_of_a_realistic_object() -> None:
    status = AgentAccount.from_body(copy.deepcopy(BODY)).status

    assert status.phase == "Ready"
    assert status.provider == "kubernetes"
    assert status.issued_at == datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    assert status.expires_at == datetime(2030, 1, 1, 12, 30, tzinfo=UTC)
    assert status.revoked_at is None
    assert status.secret_name == "triage-bot-kubeconfig"
    assert status.account_ref == AccountRef(
        kind="ServiceAccount", name="agentaccount-triage-bot", namespace="agents"
    )
    assert status.observed_generation == 3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2030-01-01T12:00:00Z", datetime(2030, 1, 1, 12, tzinfo=UTC)),
        ("2030-01-01T12:00:00.250Z", datetime(2030, 1, 1, 12, 0, 0, 250_000, tzinfo=UTC)),
        ("2030-01-01T14:00:00+02:00", datetime(2030, 1, 1, 12, tzinfo=UTC)),
        ("2030-01-01T07:00:00-05:00", datetime(2030, 1, 1, 12, tzinfo=UTC)),
    ],
)
def test_status_timestamps_are_rfc3339_instants(text: str, expected: datetime) -> None:
    body = minimal()
    body["status"] = {"issuedAt": text, "expiresAt": text, "revokedAt": text}
    status = AgentAccount.from_body(body).status

    for value in (status.issued_at, status.expires_at, status.revoked_at):
        assert value is not None
        assert value.utcoffset() is not None, "timestamps must be timezone-aware to compare with `now`"
        assert value == expected


@pytest.mark.parametrize(
    ("status", "location"),
    [
        ({"phase": "Running"}, ("status", "phase")),
        ({"phase": "dryrun"}, ("status", "phase")),
        ({"expiresAt": "tomorrow"}, ("status", "expiresAt")),
        ({"accountRef": {"name": "no-kind"}}, ("status", "accountRef", "kind")),
    ],
)
def test_invalid_status_is_rejected(status: dict[str, Any], location: tuple[str, ...]) -> None:
    body = minimal()
    body["status"] = status
    with pytest.raises(pydantic.ValidationError) as caught:
        AgentAccount.from_body(body)
    assert location in error_locations(caught.value)


# -- providers ------------------------------------------------------------------------------------

CLOUDFLARE = {"accountId": "0123456789abcdef0123456789abcdef", "apiTokenSecretRef": {"name": "cf-parent"}}


@pytest.mark.parametrize(
    ("spec", "type_"),
    [
        ({"kubernetes": {}}, "kubernetes"),
        ({"kubernetes": {"server": "https://kubernetes.default.svc"}}, "kubernetes"),
        ({"cloudflare": CLOUDFLARE}, "cloudflare"),
        ({"cloudflare": {"mode": "temporaryAccount"}}, "cloudflare"),
        ({"kubernetes": None, "cloudflare": CLOUDFLARE}, "cloudflare"),
    ],
)
def test_provider_spec_with_exactly_one_block(spec: dict[str, Any], type_: str) -> None:
    assert ProviderSpec.model_validate(spec).type == type_


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"policy": {"maxLifetime": "24h"}},
        {"kubernetes": None},
        {"kubernetes": {}, "cloudflare": CLOUDFLARE},
    ],
    ids=["empty", "limits-only", "null-block", "both-blocks"],
)
def test_provider_spec_without_exactly_one_block_is_rejected(spec: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError, match="exactly one provider block"):
        ProviderSpec.model_validate(spec)


def test_provider_spec_defaults() -> None:
    spec = ProviderSpec.model_validate({"cloudflare": CLOUDFLARE})

    assert spec.max_lifetime == timedelta(hours=24)
    assert spec.default_lifetime == timedelta(hours=1)
    assert spec.cloudflare is not None
    assert spec.cloudflare.mode == "token"
    assert spec.cloudflare.api_base_url == "https://api.cloudflare.com/client/v4"
    assert spec.cloudflare.api_token_secret_ref is not None
    assert spec.cloudflare.api_token_secret_ref.key == "token"
    assert spec.cloudflare.api_token_secret_ref.namespace is None


@pytest.mark.parametrize(
    "spec",
    [
        {"kubernetes": {}, "policy": {"maxLifetime": "a day"}},
        {"kubernetes": {}, "policy": {"defaultLifetime": "-1h"}},
        {"kubernetes": {}, "policy": {"maxActiveAccounts": -1}},
        {"kubernetes": {}, "policy": {"allowedScopes": [{"resources": ["configmaps"]}]}},
        {"kubernetes": {}, "policy": {"allowedScopes": [{"permissions": []}]}},
        {"kubernetes": {}, "policy": {"allowedScopes": "everything"}},
        {"kubernetes": {}, "policy": {"allowedNamespaces": {"matchLabels": {"team": ["a"]}}}},
        {"cloudflare": {**CLOUDFLARE, "mode": "account"}},
        {"cloudflare": {**CLOUDFLARE, "apiTokenSecretRef": {"key": "token"}}},
    ],
    ids=[
        "bad-maxLifetime",
        "bad-defaultLifetime",
        "negative-maxActiveAccounts",
        "allowedScopes-without-permissions",
        "allowedScopes-empty-permissions",
        "allowedScopes-not-a-list",
        "matchLabels-not-strings",
        "unknown-mode",
        "secret-ref-without-name",
    ],
)
def test_invalid_provider_specs_are_rejected(spec: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        ProviderSpec.model_validate(spec)


def test_a_phase_of_dry_run_is_a_known_phase() -> None:
    body = minimal(dryRun=True)
    body["status"] = {"phase": "DryRun"}
    assert AgentAccount.from_body(body).status.phase == "DryRun"


def test_provider_policy_defaults() -> None:
    policy = ProviderSpec.model_validate({"kubernetes": {}}).policy

    assert policy == ProviderPolicy()
    assert policy.max_lifetime == timedelta(hours=24)
    assert policy.default_lifetime == timedelta(hours=1)
    assert policy.allowed_namespaces is None  # every namespace
    assert policy.allowed_scopes is None  # provider-type dependent: see policies.check_allowed_scopes
    assert policy.max_active_accounts is None
    assert policy.require_approval is False


def test_provider_policy_is_read_from_the_crd_names() -> None:
    spec = ProviderSpec.model_validate(
        {
            "kubernetes": {},
            "policy": {
                "maxLifetime": "2h",
                "defaultLifetime": "15m",
                "allowedNamespaces": {
                    "matchLabels": {"team": "a"},
                    "matchExpressions": [{"key": "env", "operator": "In", "values": ["dev"]}],
                },
                "allowedScopes": [
                    {"permissions": ["get", "list"]},
                    {"permissions": ["*"], "resources": ["pods/log"]},
                ],
                "maxActiveAccounts": 0,
                "requireApproval": True,
            },
        }
    )
    policy = spec.policy
    assert (spec.max_lifetime, spec.default_lifetime) == (timedelta(hours=2), timedelta(minutes=15))
    assert (policy.max_lifetime, policy.default_lifetime) == (timedelta(hours=2), timedelta(minutes=15))
    assert policy.allowed_namespaces is not None
    assert policy.allowed_namespaces.match_labels == {"team": "a"}
    assert policy.allowed_namespaces.match_expressions == [
        {"key": "env", "operator": "In", "values": ["dev"]}
    ]
    assert policy.allowed_scopes is not None
    assert [(p.permissions, p.resources) for p in policy.allowed_scopes] == [
        (["get", "list"], ["*"]),  # resources default to every resource
        (["*"], ["pods/log"]),
    ]
    assert policy.max_active_accounts == 0
    assert policy.require_approval is True


def test_an_empty_allowed_scopes_list_allows_nothing_rather_than_meaning_absent() -> None:
    assert (
        ProviderSpec.model_validate({"kubernetes": {}, "policy": {"allowedScopes": []}}).policy.allowed_scopes
        == []
    )


def test_resolved_provider_defaults_to_cluster_scope() -> None:
    provider = ProviderObject(
        kind="ClusterAccountProvider", name="in-cluster", spec=ProviderSpec(kubernetes=KubernetesBlock())
    )
    assert provider.namespace == ""
    assert provider.spec.type == "kubernetes"
