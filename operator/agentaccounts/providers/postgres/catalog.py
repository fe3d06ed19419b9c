"""What the server says: the admin's own attributes, the objects the scopes name, our roles.

Reads only, in the catalog: every check here runs before anything is created, so a bad scope or a
short-handed admin costs nothing to undo. GRANT itself is no check: a grantor without grant options
gets a WARNING and the statement succeeds having granted nothing, so each privilege is first asked
of `has_*_privilege(..., '<privilege> WITH GRANT OPTION')` (true for an owner, too).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg import sql

from agentaccounts.errors import InvalidSpec, ProviderRejected, UnknownResource
from agentaccounts.providers.postgres import grants
from agentaccounts.providers.postgres.connection import Connection
from agentaccounts.providers.postgres.grants import Grant, Target, Wanted

README = "README: PostgreSQL provider"
# pg_class.relkind: what GRANT ... ON TABLE takes (tables, partitioned tables, views, materialized
# views, foreign tables), and sequences.
TABLE_KINDS = ["r", "p", "v", "m", "f"]
SEQUENCE_KINDS = ["S"]
_PRIVILEGE_CHECK = {
    "database": "has_database_privilege",
    "schema": "has_schema_privilege",
    "table": "has_table_privilege",
    "sequence": "has_sequence_privilege",
}


@dataclass(frozen=True)
class Role:
    oid: int
    name: str
    comment: str | None
    admin_has_privileges: bool  # the admin is an (inheriting) member: it may end sessions, DROP OWNED
    member_of: tuple[str, ...]
    dangerous: tuple[str, ...] = ()  # SUPERUSER, REPLICATION, BYPASSRLS: only a superuser gives these


async def check_admin(conn: Connection) -> str:
    """The admin's name; ProviderRejected if it is a superuser or cannot create roles."""
    cursor = await conn.execute(
        "SELECT rolname, rolsuper, rolcreaterole FROM pg_roles WHERE rolname = current_user"
    )
    row = await cursor.fetchone()
    if row is None:
        raise ProviderRejected("the admin role is not in pg_roles")
    name, superuser, createrole = row
    if superuser:
        raise ProviderRejected(
            f"the admin role {name!r} is a superuser; the operator works only with a role that has "
            f"CREATEROLE and holds what it grants WITH GRANT OPTION ({README})"
        )
    if not createrole:
        raise ProviderRejected(f"the admin role {name!r} lacks CREATEROLE ({README})")
    return str(name)


async def resolve(conn: Connection, wanted: Wanted, admin: str) -> list[Grant]:
    """The GRANTs for these targets on this server: every object exists and is of the kind named,
    `*` expanded to the objects of that kind that exist now, and the admin may grant each privilege.
    UnknownResource, InvalidSpec or ProviderRejected otherwise, naming the object."""
    database = await _one(conn, "SELECT current_database()")
    planned = [grants.connect_grant(str(database))]
    for target, privileges in wanted.items():
        for path, oid in await _objects(conn, target, str(database)):
            planned.append(Grant(target.kind, privileges, path))
            await _check_grantable(conn, admin, target.kind, oid, path, privileges)
    await _check_grantable(conn, admin, "database", None, planned[0].object, ("CONNECT",))
    return planned


async def _objects(conn: Connection, target: Target, database: str) -> list[tuple[tuple[str, ...], int]]:
    schema_oid = await _one(conn, "SELECT oid FROM pg_namespace WHERE nspname = %s", target.schema)
    if schema_oid is None:
        raise UnknownResource(
            f"{target}: schema {target.schema!r} does not exist in database {database!r} "
            "(names are case-sensitive)"
        )
    if target.kind == "schema":
        return [((target.schema,), int(schema_oid))]
    kinds = TABLE_KINDS if target.kind == "table" else SEQUENCE_KINDS
    if target.name == "*":
        cursor = await conn.execute(
            "SELECT relname, oid FROM pg_class WHERE relnamespace = %s::oid AND relkind::text = ANY(%s) "
            "ORDER BY relname",
            [schema_oid, kinds],
        )
        found: list[tuple[tuple[str, ...], int]] = [
            ((target.schema, str(name)), int(oid)) for name, oid in await cursor.fetchall()
        ]
        if not found:
            raise UnknownResource(f"{target}: schema {target.schema!r} has no {target.kind}s")
        return found
    cursor = await conn.execute(
        "SELECT oid, relkind::text FROM pg_class WHERE relnamespace = %s::oid AND relname = %s",
        [schema_oid, target.name],
    )
    row = await cursor.fetchone()
    if row is None:
        raise UnknownResource(
            f"{target}: no {target.kind} {target.name!r} in schema {target.schema!r} of database "
            f"{database!r} (names are case-sensitive)"
        )
    oid, relkind = row
    if relkind not in kinds:
        other = "sequence" if relkind in SEQUENCE_KINDS else "table" if relkind in TABLE_KINDS else None
        use = f": use {other}/{target.schema}.{target.name}" if other else ""
        raise InvalidSpec(f"{target}: {target.schema}.{target.name} is not a {target.kind}{use}")
    return [((target.schema, str(target.name)), int(oid))]


async def _check_grantable(
    conn: Connection,
    admin: str,
    kind: grants.Kind,
    oid: int | None,
    path: tuple[str, ...],
    privileges: tuple[str, ...],
) -> None:
    function = sql.Identifier(_PRIVILEGE_CHECK[kind])
    for privilege in privileges:
        if oid is None:
            query = sql.SQL("SELECT {}(current_database(), %s)").format(function)
            allowed = await _one(conn, query, f"{privilege} WITH GRANT OPTION")
        else:
            query = sql.SQL("SELECT {}(%s::oid, %s)").format(function)
            allowed = await _one(conn, query, oid, f"{privilege} WITH GRANT OPTION")
        if not allowed:
            raise ProviderRejected(
                f"the admin role {admin!r} may not grant {privilege} on {kind} {'.'.join(path)}: it must own "
                f"it or hold {privilege} on it WITH GRANT OPTION ({README})"
            )


_ROLE = """
SELECT r.oid, r.rolname, shobj_description(r.oid, 'pg_authid'), pg_has_role(current_user, r.oid, 'USAGE'),
       ARRAY(SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
             WHERE m.member = r.oid ORDER BY 1),
       r.rolsuper, r.rolreplication, r.rolbypassrls
FROM pg_roles r
"""


async def role(conn: Connection, name: str) -> Role | None:
    cursor = await conn.execute(_ROLE + "WHERE r.rolname = %s", [name])
    row = await cursor.fetchone()
    return _role(row) if row else None


async def roles_named(conn: Connection, prefix: str) -> list[Role]:
    """Every role whose name starts with `prefix` (ours carry a marker too: see roles.owner_of)."""
    cursor = await conn.execute(_ROLE + "WHERE starts_with(r.rolname, %s) ORDER BY r.rolname", [prefix])
    return [_role(row) for row in await cursor.fetchall()]


async def terminate(conn: Connection, name: str, wait_ms: int) -> list[int]:
    """End every session of role `name` (all databases), waiting up to `wait_ms` for each to be gone;
    returns the pids still there."""
    # The CASE is what guarantees pg_terminate_backend runs for this role's sessions only: SQL does not
    # promise to evaluate a WHERE clause's conditions in order: a plain `usename = %s AND NOT
    # pg_terminate_backend(pid)` was seen calling it for another role's session (a superuser's, which
    # the server refused; a non-superuser's it would have ended).
    cursor = await conn.execute(
        "SELECT pid, CASE WHEN usename = %s THEN pg_terminate_backend(pid, %s) END "
        "FROM pg_stat_activity WHERE usename = %s",
        [name, wait_ms, name],
    )
    return [int(pid) for pid, ended in await cursor.fetchall() if ended is not True]


def _role(row: tuple[Any, ...]) -> Role:
    oid, name, comment, privileged, member_of, superuser, replication, bypassrls = row
    flags = {"SUPERUSER": superuser, "REPLICATION": replication, "BYPASSRLS": bypassrls}
    return Role(
        oid=int(oid),
        name=str(name),
        comment=str(comment) if comment is not None else None,
        admin_has_privileges=bool(privileged),
        member_of=tuple(str(m) for m in (member_of or ())),
        dangerous=tuple(flag for flag, on in flags.items() if on),
    )


async def _one(conn: Connection, query: str | sql.Composed, *params: object) -> Any:
    cursor = await conn.execute(query, list(params) if params else None)
    row = await cursor.fetchone()
    return row[0] if row else None
