"""postgres: the block (model == CRDs), building a provider (admin Secret rules, TLS rules), admission, the
one error translation, and the Secret's keys. No server: that is tests/integration/test_postgres.py."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import psycopg.errors
import pytest
import yaml

from agentaccounts.errors import (
    AgentAccountsError,
    InvalidSpec,
    NotPermitted,
    ProviderNotFound,
    ProviderRejected,
    ProviderUnavailable,
    UnknownResource,
)
from agentaccounts.models import AgentAccount, ProviderObject, Requester
from agentaccounts.providers import TYPES, ProviderSpec, provider_for
from agentaccounts.providers import postgres as postgres_type
from agentaccounts.providers.base import Deps, IssueRequest
from agentaccounts.providers.postgres import connection
from agentaccounts.providers.postgres.provider import PostgresProvider
from agentaccounts.providers.postgres.spec import HOST_PATTERN, PostgresBlock
from agentaccounts.providers.resolve import parse_provider
from agentaccounts.settings import Settings
from unit.fakes import FakeKube
from unit.test_crd_schema import errors

REPO = Path(__file__).resolve().parents[3]
ADMIN_PASSWORD = "s3cr3t-Admin-PW"
URI = f"postgresql://agentaccounts_admin:{ADMIN_PASSWORD}@db.example.internal:5432/app"
CA = "-----BEGIN CERTIFICATE-----\nRkFLRQ==\n-----END CERTIFICATE-----\n"
UID = "5c1b2f3e-9a8d-4c7b-b6a5-0f1e2d3c4b5a"


def block(**fields: Any) -> dict[str, Any]:
    return {"host": "db.example.internal", "adminSecretRef": {"name": "pg-admin"}, **fields}


def provider_object(kind: str = "AccountProvider", **fields: Any) -> ProviderObject:
    meta: dict[str, Any] = {"name": "pg"} | ({"namespace": "agents"} if kind == "AccountProvider" else {})
    return parse_provider(kind, {"metadata": meta, "spec": {"postgres": block(**fields)}})


def deps(kube: FakeKube, **settings: Any) -> Deps:
    return Deps(kube=kube, settings=Settings(**settings), http=None)  # type: ignore[arg-type]


def kube_with_admin(namespace: str = "agents", value: str = URI, key: str = "uri") -> FakeKube:
    kube = FakeKube()
    kube.add_secret(namespace, "pg-admin", data={key: value})
    return kube


# -- the block: model and CRDs --------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["AccountProvider", "ClusterAccountProvider"])
@pytest.mark.parametrize(
    ("spec", "valid"),
    [
        ({"postgres": block()}, True),
        ({"postgres": block(port=6432, database="analytics", sslMode="require", connectionLimit=1)}, True),
        ({"postgres": block(caBundle=CA, sslMode="verify-ca", reassignOwnedTo="agent_leftovers")}, True),
        ({"postgres": block(host="10.0.0.7")}, True),
        ({"postgres": block(host="::1", sslMode="disable")}, True),
        ({"postgres": block(adminSecretRef={"namespace": "db", "name": "pg-admin", "key": "dsn"})}, True),
        ({"postgres": {"host": "db"}}, False),  # adminSecretRef is required
        ({"postgres": {"adminSecretRef": {"name": "a"}}}, False),  # host is required
        ({"postgres": block(host="/var/run/postgresql")}, False),  # a socket directory, not a host
        ({"postgres": block(host="a,b")}, False),  # a host list
        ({"postgres": block(host="db ")}, False),
        ({"postgres": block(port=0)}, False),
        ({"postgres": block(port=70000)}, False),
        ({"postgres": block(sslMode="verify")}, False),
        ({"postgres": block(database="")}, False),
        ({"postgres": block(database="d" * 64)}, False),
        ({"postgres": block(connectionLimit=0)}, False),
        ({"postgres": block(connectionLimit=1001)}, False),
        ({"postgres": block(caBundle="not a certificate")}, False),
        ({"postgres": block(reassignOwnedTo="")}, False),
        ({"postgres": block(adminSecretRef={"key": "uri"})}, False),
    ],
)
def test_provider_specs_in_the_crds(kind: str, spec: dict[str, Any], valid: bool) -> None:
    doc = {"apiVersion": "agentaccounts.dev/v1alpha1", "kind": kind, "metadata": {"name": "p"}, "spec": spec}
    assert (errors(kind, doc) == []) is valid
    if valid:  # and whatever the CRD takes, the model takes
        assert ProviderSpec.model_validate(spec).type == "postgres"


@pytest.mark.parametrize(
    "fields",
    [{"host": "/tmp"}, {"port": 0}, {"sslMode": "verify"}, {"connectionLimit": 0}, {"database": ""}],
)
def test_the_model_refuses_what_the_crd_refuses(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ProviderSpec.model_validate({"postgres": block(**fields)})


def _crd_block(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((REPO / "crds" / name).read_text())
    return doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
        "postgres"
    ]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "name", ["agentaccounts.dev_accountproviders.yaml", "agentaccounts.dev_clusteraccountproviders.yaml"]
)
def test_crd_defaults_and_patterns_are_the_models(name: str) -> None:
    props = _crd_block(name)["properties"]
    model = PostgresBlock.model_validate(block())
    assert props["port"]["default"] == model.port
    assert props["database"]["default"] == model.database
    assert props["sslMode"]["default"] == model.ssl_mode == "verify-full"
    assert props["connectionLimit"]["default"] == model.connection_limit
    assert props["adminSecretRef"]["properties"]["key"]["default"] == "uri"
    assert model.admin_secret_ref is not None and model.admin_secret_ref.key == "uri"
    assert props["host"]["pattern"] == HOST_PATTERN
    assert props["sslMode"]["enum"] == [*connection.CLEAR_TEXT_MODES, "require", "verify-ca", "verify-full"]


def test_the_provider_is_in_the_table_and_issues_nothing_without_allowed_scopes() -> None:
    entry = TYPES["postgres"]
    assert entry.block is PostgresBlock and entry.sweep is not None
    assert entry.rbac_delegated is False and entry.revocable_without_object is False


# -- building: the admin Secret, TLS ---------------------------------------------------------------
async def test_build_reads_the_admin_uri_and_takes_only_user_and_password_from_it() -> None:
    provider = await provider_for(provider_object(), deps(kube_with_admin()))
    assert isinstance(provider, PostgresProvider)
    assert str(provider.server) == "db.example.internal:5432/postgres"  # the block's, not the URI's
    assert provider.server.sslmode == "verify-full"
    # The platform's CA bundle, not libpq's "system": the binary wheel's OpenSSL looks elsewhere.
    assert provider.server.sslrootcert == (ssl.get_default_verify_paths().cafile or "system")
    assert provider._login.user == "agentaccounts_admin"
    assert ADMIN_PASSWORD not in repr(provider._login)


async def test_a_ca_bundle_becomes_a_private_file_shared_by_every_build() -> None:
    kube = kube_with_admin()
    d = deps(kube)
    first = await provider_for(provider_object(caBundle=CA), d)
    second = await provider_for(provider_object(caBundle=CA), d)
    assert isinstance(first, PostgresProvider) and isinstance(second, PostgresProvider)
    assert first.server.ca_file == second.server.ca_file == first.server.sslrootcert
    path = Path(first.server.ca_file or "")
    assert path.read_text() == CA and (path.parent.stat().st_mode & 0o077) == 0  # noqa: ASYNC240


@pytest.mark.parametrize(
    ("kind", "ref", "secret_namespace", "error", "fragment"),
    [
        (
            "AccountProvider",
            {"name": "pg-admin", "namespace": "other"},
            "other",
            InvalidSpec,
            "its own namespace",
        ),
        ("ClusterAccountProvider", {"name": "pg-admin"}, "agents", InvalidSpec, "namespace is required"),
        (
            "AccountProvider",
            {"name": "pg-admin"},
            "elsewhere",
            ProviderNotFound,
            "agents/pg-admin (key 'uri')",
        ),
        ("AccountProvider", {"name": "pg-admin", "key": "dsn"}, "agents", ProviderNotFound, "key 'dsn'"),
    ],
)
async def test_admin_secret_rules_are_cloudflares(
    kind: str, ref: dict[str, str], secret_namespace: str, error: type[AgentAccountsError], fragment: str
) -> None:
    with pytest.raises(error) as raised:
        await provider_for(provider_object(kind, adminSecretRef=ref), deps(kube_with_admin(secret_namespace)))
    assert fragment in raised.value.message
    if error is ProviderNotFound:
        assert isinstance(raised.value, ProviderNotFound) and raised.value.delay > 0  # Pending, retried


async def test_a_cluster_provider_reads_the_namespace_it_names() -> None:
    obj = provider_object("ClusterAccountProvider", adminSecretRef={"namespace": "db", "name": "pg-admin"})
    assert isinstance(await provider_for(obj, deps(kube_with_admin("db"))), PostgresProvider)


async def test_an_empty_admin_uri_waits() -> None:
    with pytest.raises(ProviderNotFound):
        await provider_for(provider_object(), deps(kube_with_admin(value="  \n")))


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (f"postgresql://db/app?password={ADMIN_PASSWORD}", "names no user"),
        (f"postgresql://u:{ADMIN_PASSWORD}@db/app?bogus=%zz", "is not a libpq connection URI"),
        (f"host=db password='{ADMIN_PASSWORD}", "is not a libpq connection URI"),
    ],
)
async def test_a_bad_admin_uri_is_invalid_spec_and_never_echoed(value: str, fragment: str) -> None:
    with pytest.raises(InvalidSpec) as raised:
        await provider_for(provider_object(), deps(kube_with_admin(value=value)))
    assert fragment in raised.value.message
    assert ADMIN_PASSWORD not in raised.value.message and raised.value.__cause__ is None


async def test_key_value_admin_strings_work_too() -> None:
    kube = kube_with_admin(value=f"user=admin password={ADMIN_PASSWORD} host=elsewhere")
    provider = await provider_for(provider_object(), deps(kube))
    assert isinstance(provider, PostgresProvider) and provider._login.user == "admin"


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"sslMode": "disable"}, "loopback host only"),
        ({"sslMode": "prefer"}, "loopback host only"),
        ({"sslMode": "allow", "host": "10.1.2.3"}, "loopback host only"),
        ({"sslMode": "verify-ca"}, "verify-ca needs caBundle"),
        ({"caBundle": "no pem here"}, "caBundle holds no PEM certificate"),
    ],
)
async def test_tls_rules_are_checked_before_the_admin_secret_is_read(
    fields: dict[str, Any], fragment: str
) -> None:
    kube = kube_with_admin()
    with pytest.raises(InvalidSpec, match=fragment):
        await provider_for(provider_object(**fields), deps(kube))
    assert not any("Secret" in str(call) for call in kube.calls)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.3.2.1", "::1", "localhost", "LOCALHOST"])
async def test_clear_text_is_allowed_on_loopback_only(host: str) -> None:
    provider = await provider_for(provider_object(host=host, sslMode="disable"), deps(kube_with_admin()))
    assert isinstance(provider, PostgresProvider) and provider.server.sslrootcert is None


async def test_a_block_the_crd_would_refuse_says_what_is_missing() -> None:
    obj = ProviderObject(
        kind="AccountProvider",
        namespace="agents",
        name="pg",
        spec=ProviderSpec.model_validate({"postgres": {}}),
    )
    with pytest.raises(InvalidSpec, match="postgres needs host"):
        await provider_for(obj, deps(FakeKube()))


# -- admission ---------------------------------------------------------------------------------------
def account(*scopes: dict[str, Any]) -> AgentAccount:
    body = {
        "metadata": {"name": "analyst", "namespace": "agents", "uid": UID},
        "spec": {"providerRef": {"name": "pg"}, "scopes": list(scopes)},
    }
    return AgentAccount.from_body(body)


async def test_admit_refuses_never_grantable_naming_the_rule() -> None:
    alice = Requester(username="alice")
    for scope in (
        {"permissions": ["SELECT", "SUPERUSER"], "resources": ["table/a.b"]},
        {"permissions": ["SELECT"], "resources": ["table/a.b", "role/pg_write_all_data"]},
    ):
        with pytest.raises(NotPermitted) as raised:
            await postgres_type.admit(account(scope), alice, None)  # type: ignore[arg-type]
        assert raised.value.message.startswith("rule never-grantable: ")
    with pytest.raises(InvalidSpec, match="resourceNames"):
        await postgres_type.admit(
            account({"permissions": ["SELECT"], "resources": ["table/a.b"], "resourceNames": ["x"]}),
            alice,
            None,  # type: ignore[arg-type]
        )
    # The rest is the server's to judge (validate: UnknownResource, InvalidSpec, ProviderRejected).
    await postgres_type.admit(
        account({"permissions": ["SELECT"], "resources": ["table/a.nope"]}), alice, None
    )  # type: ignore[arg-type]


# -- the one translation of PostgreSQL errors ---------------------------------------------------------
@pytest.mark.parametrize(
    ("exc", "error"),
    [
        (psycopg.errors.InsufficientPrivilege("permission denied to create role"), ProviderRejected),
        (psycopg.errors.UndefinedTable("relation does not exist"), UnknownResource),
        (psycopg.errors.InvalidSchemaName("schema does not exist"), UnknownResource),
        (psycopg.errors.DuplicateObject("role already exists"), ProviderUnavailable),
        (psycopg.OperationalError("connection refused"), ProviderUnavailable),
        (psycopg.errors.QueryCanceled("canceling statement due to statement timeout"), ProviderUnavailable),
        (psycopg.errors.LockNotAvailable("lock timeout"), ProviderUnavailable),
        (psycopg.errors.AdminShutdown("terminating connection"), ProviderUnavailable),
        (psycopg.errors.DependentObjectsStillExist("role cannot be dropped"), ProviderRejected),
        (psycopg.errors.SyntaxError("syntax error"), ProviderRejected),
    ],
    ids=lambda v: type(v).__name__,
)
def test_translate_maps_each_error_to_ours(exc: psycopg.Error, error: type[AgentAccountsError]) -> None:
    translated = connection.translate(exc, "issuing role r on h:5432/app", [])
    assert type(translated) is error
    assert translated.message.startswith("issuing role r on h:5432/app: ")
    if isinstance(translated, ProviderUnavailable):
        assert translated.delay == connection.RETRY_SECONDS


def test_translate_scrubs_every_secret_it_is_given() -> None:
    exc = psycopg.errors.SyntaxError(f"syntax error at or near \"'{ADMIN_PASSWORD}'\" and pw-2")
    message = connection.translate(exc, "doing", [ADMIN_PASSWORD, "pw-2", ""]).message
    assert ADMIN_PASSWORD not in message and "pw-2" not in message and "***" in message


# -- the Secret --------------------------------------------------------------------------------------
def _provider(ca_file: str | None = None, **fields: Any) -> PostgresProvider:
    server = connection.Server("db.example.internal", 5433, "app db", "verify-full", ca_file)
    return PostgresProvider(
        PostgresBlock.model_validate(block(**fields)), server, connection.Login("admin", "pw")
    )


def _request() -> IssueRequest:
    return IssueRequest("agents", "analyst", UID, [], datetime(2026, 11, 28, 18, 0, 0, 5, tzinfo=UTC), "s")


def test_the_secret_has_libpqs_names_and_a_uri_that_says_the_same() -> None:
    data = _provider()._secret_data("aa-analyst-uid", "p@ss/w:rd", _request())
    assert data == {
        "host": "db.example.internal",
        "port": "5433",
        "database": "app db",
        "username": "aa-analyst-uid",
        "password": "p@ss/w:rd",
        "sslmode": "verify-full",
        "uri": "postgresql://aa-analyst-uid:p%40ss%2Fw%3Ard@db.example.internal:5433/app%20db"
        "?sslmode=verify-full&sslrootcert=system",
        "expires-at": "2026-11-28T18:00:00Z",
    }
    parsed = psycopg.conninfo.conninfo_to_dict(data["uri"])
    assert (parsed["user"], parsed["password"], parsed["dbname"]) == ("aa-analyst-uid", "p@ss/w:rd", "app db")


def test_with_a_ca_bundle_the_secret_carries_it() -> None:
    provider = _provider("/run/ca.crt", caBundle=CA)
    data = provider._secret_data("r", "p", _request())
    assert data["ca.crt"] == CA and data["uri"].endswith("?sslmode=verify-full")
