"""The pydantic models of the CRs: defaults, the checks repeated from the CRD schema, status parsing."""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pydantic
import pytest

from agentaccounts.models import AccountRef, AgentAccount, KubernetesBlock, Provider, ProviderSpec

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
        "annotations": {"kopf.zalando.org/last-handled-configuration": "{}"},
    },
    "spec": {
        "providerRef": {"kind": "ClusterAccountProvider", "name": "in-cluster"},
        "lifetime": "30m",
        "scopes": [
            {"permissions": ["get", "list", "watch"], "resources": ["configmaps", "deployments.apps"]},
            {"permissions": ["get"], "resources": ["secrets/app-config"]},
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
    assert [s.resources for s in account.spec.scopes] == [
        ["configmaps", "deployments.apps"],
        ["secrets/app-config"],
    ]
    assert account.secret_name == "triage-bot-kubeconfig"


def test_defaults_of_a_minimal_spec() -> None:
    account = AgentAccount.from_body(minimal())

    assert account.spec.provider_ref.kind == "AccountProvider"
    assert account.spec.lifetime is None  # the provider's defaultLifetime applies
    assert account.spec.keep_expired_for == timedelta(hours=1)
    assert account.spec.secret_name is None
    assert account.secret_name == "bot-credentials"
    assert account.spec.scopes[0].resources == []
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
def test_out_of_range_durations_are_validation_errors(field: str) -> None:
    # "1000000000d" matches the CRD pattern and maxLength; it must fail like any other bad spec.
    with pytest.raises(pydantic.ValidationError) as caught:
        AgentAccount.from_body(minimal(**{field: "1000000000d"}))
    assert ("spec", field) in error_locations(caught.value)


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
        {"maxLifetime": "24h"},
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
        {"kubernetes": {}, "maxLifetime": "a day"},
        {"kubernetes": {}, "defaultLifetime": "-1h"},
        {"cloudflare": {**CLOUDFLARE, "mode": "account"}},
        {"cloudflare": {**CLOUDFLARE, "apiTokenSecretRef": {"key": "token"}}},
    ],
    ids=["bad-maxLifetime", "bad-defaultLifetime", "unknown-mode", "secret-ref-without-name"],
)
def test_invalid_provider_specs_are_rejected(spec: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        ProviderSpec.model_validate(spec)


def test_resolved_provider_defaults_to_cluster_scope() -> None:
    provider = Provider(
        kind="ClusterAccountProvider", name="in-cluster", spec=ProviderSpec(kubernetes=KubernetesBlock())
    )
    assert provider.namespace == ""
    assert provider.spec.type == "kubernetes"
