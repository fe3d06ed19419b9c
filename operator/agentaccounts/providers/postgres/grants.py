"""The scope grammar -> the grants an agent role gets; what no agent role is ever given (pure).

    resource                   permissions                                   the GRANT
    table/<schema>.<table>     SELECT INSERT UPDATE DELETE TRUNCATE          ON TABLE schema.table
                               REFERENCES TRIGGER                            (tables, views, ...)
    table/<schema>.*           the same                                      every one in the schema
    sequence/<schema>.<seq>    USAGE SELECT UPDATE                           ON SEQUENCE schema.seq
    sequence/<schema>.*        the same                                      every one in the schema
    schema/<schema>            USAGE CREATE                                  ON SCHEMA schema

Implied, and nothing else: CONNECT on the provider's database, USAGE on the schema of every table or
sequence named. `*` means the objects that exist when the role is issued (never future ones). Names
are exact, as the catalog stores them (case-sensitive; what an unquoted CREATE made is lower case).
Permissions are written as PostgreSQL spells them, in capitals, so allowedScopes patterns (which
compare verbatim) mean one thing.

Never granted, whoever asks: the role attributes SUPERUSER, CREATEDB, CREATEROLE, REPLICATION and
BYPASSRLS, membership in any role (`role/<name>`: predefined roles such as pg_read_all_data reach every
table), and grant or admin options (the agent could pass its rights to roles that outlive it).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Literal

from psycopg import sql

from agentaccounts.errors import InvalidSpec, NotPermitted, UnknownPermission
from agentaccounts.models import Scope

Kind = Literal["database", "schema", "table", "sequence"]
PRIVILEGES: dict[Kind, tuple[str, ...]] = {
    "table": ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"),
    "sequence": ("USAGE", "SELECT", "UPDATE"),
    "schema": ("USAGE", "CREATE"),
    "database": ("CONNECT",),
}
# Every privilege PostgreSQL has: one of these on the wrong kind of object is "does not apply"
# (InvalidSpec); anything else is not a privilege at all (UnknownPermission).
ALL_PRIVILEGES = frozenset(
    {p for ps in PRIVILEGES.values() for p in ps} | {"TEMPORARY", "TEMP", "EXECUTE", "SET", "ALTER SYSTEM"}
)
NEVER = "rule never-grantable: "
NEVER_ATTRIBUTES = ("SUPERUSER", "CREATEDB", "CREATEROLE", "REPLICATION", "BYPASSRLS")
_MEMBERSHIP_WORDS = {"MEMBER", "MEMBERSHIP", "SET ROLE", "INHERIT", "ADMIN"}
_NAME = r"[A-Za-z0-9_$][A-Za-z0-9_$-]{0,62}"
_RESOURCE = re.compile(
    rf"^(?P<kind>table|sequence)/(?P<schema>{_NAME})\.(?P<name>{_NAME}|\*)$|^schema/(?P<only>{_NAME})$"
)
RESOURCE_FORMS = (
    "table/<schema>.<table>, table/<schema>.*, sequence/<schema>.<sequence>, sequence/<schema>.* "
    "or schema/<schema>"
)


@dataclass(frozen=True)
class Target:
    """One object a scope names. `name` None: the schema itself (kind schema); "*": every table or
    sequence of the schema."""

    kind: Kind
    schema: str
    name: str | None = None

    def __str__(self) -> str:
        if self.kind == "schema":
            return f"schema/{self.schema}"
        return f"{self.kind}/{self.schema}.{self.name}"


Wanted = dict[Target, tuple[str, ...]]  # target -> privileges, in the order scopes first name them


@dataclass(frozen=True)
class Grant:
    """One GRANT statement's worth: privileges on one concrete object (an identifier path)."""

    kind: Kind
    privileges: tuple[str, ...]
    object: tuple[str, ...]  # (database,), (schema,), (schema, table)

    def statement(self, role: str) -> sql.Composed:
        # The privileges and the kind are keywords from the tables above, never user text; every
        # identifier is quoted by psycopg.
        return sql.SQL("GRANT {} ON {} {} TO {}").format(
            sql.SQL(", ").join(sql.SQL(p) for p in self.privileges),
            sql.SQL(self.kind.upper()),
            sql.Identifier(*self.object),
            sql.Identifier(role),
        )


def check_never_grantable(scopes: list[Scope]) -> None:
    """NotPermitted (rule never-grantable) for anything no agent role is ever given, naming it."""
    for scope in scopes:
        for permission in scope.permissions:
            word = " ".join(permission.upper().split())
            if word in NEVER_ATTRIBUTES:
                raise NotPermitted(
                    f"{NEVER}role attribute {word} is never given to an agent role (agent roles are always "
                    "NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS)"
                )
            if "GRANT OPTION" in word or "ADMIN OPTION" in word or word.startswith("WITH "):
                raise NotPermitted(
                    f"{NEVER}{permission!r}: an agent role never gets grant or admin options, which would "
                    "let it hand its rights to roles that outlive it"
                )
            if word in _MEMBERSHIP_WORDS:
                raise NotPermitted(f"{NEVER}{permission!r}: an agent role is never a member of any role")
        for resource in scope.resources:
            if resource.lower().startswith("role/") or resource.lower() == "role":
                raise NotPermitted(
                    f"{NEVER}membership in role {resource[5:]!r} is never granted: it would give the agent "
                    "that role's rights (predefined roles such as pg_read_all_data reach every table)"
                )


def parse(scopes: list[Scope]) -> Wanted:
    """The scopes as targets and privileges: never-grantable first, then the grammar (InvalidSpec,
    UnknownPermission), with the implied schema USAGE added."""
    check_never_grantable(scopes)
    wanted: dict[Target, list[str]] = {}
    for scope in scopes:
        if scope.resource_names:
            raise InvalidSpec("resourceNames is for the kubernetes provider; PostgreSQL uses resources")
        if not scope.resources:
            raise InvalidSpec(f"a PostgreSQL scope must name its resources: {RESOURCE_FORMS}")
        for resource in scope.resources:
            target = parse_resource(resource)
            for permission in scope.permissions:
                _check_applies(permission, target)
                privileges = wanted.setdefault(target, [])
                if permission not in privileges:
                    privileges.append(permission)
    for target in list(wanted):
        if target.kind != "schema":
            usage = wanted.setdefault(Target("schema", target.schema), [])
            if "USAGE" not in usage:
                usage.append("USAGE")
    order = {kind: n for n, kind in enumerate(("schema", "table", "sequence"))}
    ranked = sorted(wanted.items(), key=lambda item: order[item[0].kind])  # stable: spec order within
    return {target: _canonical(target.kind, privileges) for target, privileges in ranked}


def parse_resource(resource: str) -> Target:
    found = _RESOURCE.match(resource)
    if found is None:
        raise InvalidSpec(
            f"resource {resource!r} is not one of {RESOURCE_FORMS} (names: up to 63 letters, digits, "
            "_, $ or -)"
        )
    if found["only"]:
        return Target("schema", found["only"])
    kind: Kind = "table" if found["kind"] == "table" else "sequence"
    return Target(kind, found["schema"], found["name"])


def connect_grant(database: str) -> Grant:
    return Grant("database", ("CONNECT",), (database,))


def _check_applies(permission: str, target: Target) -> None:
    applicable = PRIVILEGES[target.kind]
    if permission in applicable:
        return
    if permission in ALL_PRIVILEGES:
        raise InvalidSpec(
            f"privilege {permission} does not apply to {target}: a {target.kind} takes "
            f"{', '.join(applicable)}"
        )
    if permission.upper() in ALL_PRIVILEGES:
        raise UnknownPermission(f"privilege {permission!r} is written {permission.upper()!r}")
    close = difflib.get_close_matches(permission.upper(), sorted(ALL_PRIVILEGES), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise UnknownPermission(
        f"{permission!r} is not a PostgreSQL privilege (a {target.kind} takes {', '.join(applicable)}){hint}"
    )


def _canonical(kind: Kind, privileges: list[str]) -> tuple[str, ...]:
    return tuple(p for p in PRIVILEGES[kind] if p in privileges)
