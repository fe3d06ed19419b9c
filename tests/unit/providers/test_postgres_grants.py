"""postgres grants: the scope grammar -> targets and GRANT statements; the never-grantable rules (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from agentaccounts.errors import AgentAccountsError, InvalidSpec, NotPermitted, UnknownPermission
from agentaccounts.models import Scope
from agentaccounts.providers.postgres import grants
from agentaccounts.providers.postgres.grants import Grant, Target


def scopes(*items: tuple[list[str], list[str]]) -> list[Scope]:
    return [Scope(permissions=p, resources=r) for p, r in items]


def test_the_issues_example_becomes_exactly_its_targets_with_the_schemas_usage() -> None:
    wanted = grants.parse(
        scopes(
            (["SELECT"], ["table/analytics.events", "table/analytics.users"]),
            (["SELECT", "INSERT"], ["table/scratch.results"]),
        )
    )
    assert list(wanted.items()) == [
        (Target("schema", "analytics"), ("USAGE",)),
        (Target("schema", "scratch"), ("USAGE",)),
        (Target("table", "analytics", "events"), ("SELECT",)),
        (Target("table", "analytics", "users"), ("SELECT",)),
        (Target("table", "scratch", "results"), ("SELECT", "INSERT")),
    ]


def test_privileges_are_merged_per_object_in_postgres_order() -> None:
    wanted = grants.parse(
        scopes((["INSERT"], ["table/s.t"]), (["SELECT", "INSERT"], ["table/s.t"]), (["CREATE"], ["schema/s"]))
    )
    assert wanted == {
        Target("schema", "s"): ("USAGE", "CREATE"),
        Target("table", "s", "t"): ("SELECT", "INSERT"),
    }


@pytest.mark.parametrize(
    ("resource", "target"),
    [
        ("table/analytics.events", Target("table", "analytics", "events")),
        ("table/analytics.*", Target("table", "analytics", "*")),
        ("sequence/app.ids_seq", Target("sequence", "app", "ids_seq")),
        ("sequence/app.*", Target("sequence", "app", "*")),
        ("schema/Mixed_Case$1", Target("schema", "Mixed_Case$1")),
        ("table/my-schema.my-table", Target("table", "my-schema", "my-table")),
    ],
)
def test_resource_forms(resource: str, target: Target) -> None:
    assert grants.parse_resource(resource) == target
    assert str(target) == resource


@pytest.mark.parametrize(
    "resource",
    [
        "table/events",  # no schema
        "table/a.b.c",  # three parts
        "table/a.",
        "table/*.events",  # every schema: never
        "schema/a.b",
        "schema/*",
        "database/app",
        "function/a.f",
        "table/a.b c",
        'table/a."b"',
        "table/a.b;DROP",
        f"table/a.{'x' * 64}",  # longer than PostgreSQL's 63 bytes
        "TABLE/a.b",
        "",
    ],
)
def test_malformed_resources_are_invalid_spec_naming_the_forms(resource: str) -> None:
    with pytest.raises(InvalidSpec, match=r"is not one of table/<schema>\.<table>"):
        grants.parse(scopes((["SELECT"], [resource])))


@pytest.mark.parametrize(
    ("permission", "resource", "error", "fragment"),
    [
        (
            "USAGE",
            "table/a.b",
            InvalidSpec,
            "privilege USAGE does not apply to table/a.b: a table takes SELECT",
        ),
        ("INSERT", "sequence/a.s", InvalidSpec, "a sequence takes USAGE, SELECT, UPDATE"),
        ("SELECT", "schema/a", InvalidSpec, "a schema takes USAGE, CREATE"),
        ("CONNECT", "table/a.b", InvalidSpec, "does not apply"),
        ("EXECUTE", "table/a.b", InvalidSpec, "does not apply"),
        ("select", "table/a.b", UnknownPermission, "is written 'SELECT'"),
        ("SELCT", "table/a.b", UnknownPermission, "did you mean 'SELECT'"),
        ("ALL", "table/a.b", UnknownPermission, "is not a PostgreSQL privilege"),
        ("READ", "table/a.b", UnknownPermission, "is not a PostgreSQL privilege"),
    ],
)
def test_privileges_that_do_not_apply_or_do_not_exist(
    permission: str, resource: str, error: type[AgentAccountsError], fragment: str
) -> None:
    with pytest.raises(error) as raised:
        grants.parse(scopes(([permission], [resource])))
    assert type(raised.value) is error and fragment in raised.value.message


def test_a_scope_must_name_its_resources_and_not_resource_names() -> None:
    with pytest.raises(InvalidSpec, match="must name its resources"):
        grants.parse([Scope(permissions=["SELECT"])])
    with pytest.raises(InvalidSpec, match="resourceNames is for the kubernetes provider"):
        grants.parse([Scope(permissions=["SELECT"], resources=["table/a.b"], resource_names=["x"])])


@pytest.mark.parametrize(
    ("permissions", "resources", "fragment"),
    [
        (["SUPERUSER"], ["table/a.b"], "role attribute SUPERUSER"),
        (["superuser"], ["table/a.b"], "role attribute SUPERUSER"),
        (["CREATEDB"], ["schema/a"], "role attribute CREATEDB"),
        (["CREATEROLE"], ["table/a.b"], "role attribute CREATEROLE"),
        (["REPLICATION"], ["table/a.b"], "role attribute REPLICATION"),
        ([" bypassrls "], ["table/a.b"], "role attribute BYPASSRLS"),
        (["SELECT WITH GRANT OPTION"], ["table/a.b"], "never gets grant or admin options"),
        (["WITH ADMIN OPTION"], ["table/a.b"], "never gets grant or admin options"),
        (["MEMBER"], ["table/a.b"], "never a member of any role"),
        (["SET ROLE"], ["table/a.b"], "never a member of any role"),
        (["SELECT"], ["role/pg_read_all_data"], "membership in role 'pg_read_all_data'"),
        (["USAGE"], ["ROLE/data_owner"], "membership in role 'data_owner'"),
    ],
)
def test_never_grantable_whatever_the_resource(
    permissions: list[str], resources: list[str], fragment: str
) -> None:
    for check in (grants.check_never_grantable, grants.parse):
        with pytest.raises(NotPermitted) as raised:
            check(scopes((permissions, resources)))
        assert raised.value.message.startswith("rule never-grantable: ")
        assert fragment in raised.value.message


def test_never_grantable_comes_before_the_grammar() -> None:
    # A malformed resource next to a never-grantable ask: the rule is what the user is told.
    with pytest.raises(NotPermitted):
        grants.parse(scopes((["SELECT"], ["nonsense"]), (["SUPERUSER"], ["table/a.b"])))


@pytest.mark.parametrize(
    ("grant", "sql"),
    [
        (
            Grant("table", ("SELECT", "INSERT"), ("scratch", "results")),
            'GRANT SELECT, INSERT ON TABLE "scratch"."results" TO "aa-x-uid"',
        ),
        (Grant("schema", ("USAGE",), ("analytics",)), 'GRANT USAGE ON SCHEMA "analytics" TO "aa-x-uid"'),
        (
            Grant("sequence", ("USAGE", "SELECT"), ("s", "q")),
            'GRANT USAGE, SELECT ON SEQUENCE "s"."q" TO "aa-x-uid"',
        ),
        (grants.connect_grant("app"), 'GRANT CONNECT ON DATABASE "app" TO "aa-x-uid"'),
        # Identifiers are always quoted by psycopg.sql, whatever they hold: no injection through names.
        (
            Grant("table", ("SELECT",), ('we"ird', "Tab le")),
            'GRANT SELECT ON TABLE "we""ird"."Tab le" TO "aa-x-uid"',
        ),
    ],
)
def test_grant_statements_quote_every_identifier(grant: Grant, sql: str) -> None:
    assert grant.statement("aa-x-uid").as_string() == sql


def test_a_role_name_is_quoted_too() -> None:
    statement = Grant("schema", ("USAGE",), ("s",)).statement('x" TO PUBLIC; --')
    assert statement.as_string() == 'GRANT USAGE ON SCHEMA "s" TO "x"" TO PUBLIC; --"'


@pytest.mark.parametrize("kind", list(grants.PRIVILEGES))
def test_every_privilege_keyword_is_a_plain_word(kind: Any) -> None:
    # The privileges and kinds are put into statements as keywords (sql.SQL): they must stay words.
    assert all(p.replace(" ", "").isalpha() and p.isupper() for p in grants.PRIVILEGES[kind])
    assert kind.isalpha()
