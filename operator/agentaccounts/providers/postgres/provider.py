"""The PostgreSQL provider: one LOGIN role per AgentAccount, with exactly the grants its scopes name.

Issue, in ONE transaction: CREATE ROLE (LOGIN, a password, VALID UNTIL = expiresAt, a connection
limit, every dangerous attribute off), its marker comment, CONNECT on the database, USAGE on the
schemas, the table and sequence privileges. A crash before the commit leaves nothing (the server
rolls the transaction back when the connection drops); after it, the role is complete, and the next
issue finds it by its deterministic name and marker and adopts it: same attributes again, a new
password (the old one cannot be read back), memberships someone added removed, the grants again.
The identity is recorded in status right after the commit.

Revoke, each step idempotent so a crash between two is finished by the next attempt: NOLOGIN (no
new logins from now on), end the role's sessions (VALID UNTIL does not: a session opened before it
lives on), then in one transaction REASSIGN OWNED to `reassignOwnedTo` if set, DROP OWNED (what the
role still owns is dropped, and every privilege granted to it is revoked) and DROP ROLE. A role that
is gone is success; a role with our name but not our marker is never touched.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any
from urllib.parse import quote

import psycopg

from agentaccounts.clock import rfc3339
from agentaccounts.errors import AgentAccountsError, ObjectConflict, ProviderRejected, ProviderUnavailable
from agentaccounts.models import AccountRef
from agentaccounts.providers.base import Issued, IssueRequest, Recorder
from agentaccounts.providers.postgres import catalog, connection, grants, roles
from agentaccounts.providers.postgres.catalog import Role
from agentaccounts.providers.postgres.connection import Connect, Connection, Login, Server
from agentaccounts.providers.postgres.spec import PostgresBlock

log = logging.getLogger(__name__)

KIND = "PostgresRole"
TERMINATE_WAIT_MS = 5000  # pg_terminate_backend waits this long for each session to be gone


class PostgresProvider:
    """A configured PostgreSQL provider; satisfies `agentaccounts.providers.base.Provider`."""

    type = "postgres"

    def __init__(
        self, block: PostgresBlock, server: Server, login: Login, connect: Connect | None = None
    ) -> None:
        self.block = block
        self.server = server
        self._login = login
        self._connect = connect or connection.connect

    # -- the Provider contract --------------------------------------------------------------------
    async def validate(self, request: IssueRequest) -> None:
        """The grammar and never-grantable rules, then on the server: every object exists, the admin is
        no superuser, has CREATEROLE and may grant each privilege."""
        wanted = grants.parse(request.scopes)
        async with self._session("checking the scopes") as conn:
            await catalog.resolve(conn, wanted, await catalog.check_admin(conn))

    async def plan(self, request: IssueRequest) -> dict[str, Any]:
        wanted = grants.parse(request.scopes)
        role = roles.role_name(request.name, request.uid)
        async with self._session("planning the role") as conn:
            planned = await catalog.resolve(conn, wanted, await catalog.check_admin(conn))
            statements = [g.statement(role).as_string(conn) for g in planned]
        return {
            "kind": KIND,
            "role": role,
            "server": str(self.server),
            "validUntil": rfc3339(request.expires_at),
            "connectionLimit": self.block.connection_limit,
            "grants": statements,
        }

    async def issue(self, request: IssueRequest, record: Recorder) -> Issued:
        wanted = grants.parse(request.scopes)  # again here: issue must not rely on validate having run
        role = roles.role_name(request.name, request.uid)
        password = roles.new_password()
        verifier = roles.scram_sha_256(password)
        async with self._session(f"issuing role {role}", password, verifier) as conn:
            warnings: list[str] = []
            conn.add_notice_handler(
                lambda d: warnings.append(d.message_primary or "") if _warning(d) else None
            )
            planned = await catalog.resolve(conn, wanted, await catalog.check_admin(conn))
            limit, until = self.block.connection_limit, request.expires_at
            async with conn.transaction():
                found = await catalog.role(conn, role)
                if found is None:
                    await conn.execute(roles.create_role(role, verifier, until, limit))
                    await conn.execute(roles.comment_role(role, self._marker(request)))
                else:
                    self._check_ours(found, request)
                    await conn.execute(roles.alter_role(role, verifier, until, limit))
                    for group in found.member_of:
                        await conn.execute(roles.revoke_membership(role, group))
                for grant in planned:
                    await conn.execute(grant.statement(role))
                if warnings:  # a GRANT that granted less than asked: roll everything back
                    raise ProviderRejected(
                        f"issuing role {role}: the server granted less than asked: {warnings[0]}"
                    )
            created = await catalog.role(conn, role)
        ref = AccountRef(kind=KIND, name=role, id=str(created.oid if created else ""))
        await record(ref)
        done = "Adopted" if found else "Created"
        log.info("%s role %s on %s, valid until %s", done, role, self.server, rfc3339(until))
        return Issued(
            account_ref=ref,
            secret_data=self._secret_data(role, password, request),
            note=(
                f"PostgreSQL refuses new logins of role {role} after {rfc3339(until)} on its own (VALID "
                "UNTIL); the operator ends its open sessions and drops it at expiry."
            ),
        )

    async def revoke(self, request: IssueRequest, ref: AccountRef | None) -> None:
        """End this account's role. The name is derived from the account, never taken from status (which
        anyone with status access can write): a recorded name that differs is ignored."""
        role = roles.role_name(request.name, request.uid)
        if ref is not None and ref.kind == KIND and ref.name and ref.name != role:
            log.warning("status.accountRef names role %r, not %r: ignoring it", ref.name, role)
        async with self._session(f"revoking role {role}") as conn:
            found = await catalog.role(conn, role)
            if found is None:
                log.info("PostgreSQL role %s was already gone", role)
                return
            owner = roles.owner_of(found.name, found.comment)
            if owner is None or owner.uid != request.uid:
                log.warning("PostgreSQL role %s does not carry this account's marker: left untouched", role)
                return
            await self._end(conn, found)
        log.info("Dropped PostgreSQL role %s on %s", role, self.server)

    # -- the orphan sweep ---------------------------------------------------------------------------
    async def sweep_orphans(
        self, live_uids: Callable[[], Awaitable[set[str]]], namespaces: Collection[str] | None
    ) -> list[str]:
        """Drop our roles of this provider's database whose AgentAccount is gone. Candidates are listed
        BEFORE the live set is read: a role exists only after its AgentAccount does, so a listed role
        whose uid is not live afterwards belongs to an account that is gone. Roles of namespaces outside
        `namespaces` (None: all) are spared: their accounts are invisible to this operator."""
        async with self._session("listing roles for the orphan sweep") as conn:
            candidates = [
                (found, owner)
                for found in await catalog.roles_named(conn, roles.PREFIX)
                if (owner := roles.owner_of(found.name, found.comment)) is not None
                and owner.database == self.server.database
                and (namespaces is None or owner.namespace in namespaces)
            ]
        live = await live_uids()
        dropped = []
        for found, owner in candidates:
            if owner.uid in live:
                continue
            try:
                async with self._session(f"dropping orphaned role {found.name}") as conn:
                    current = await catalog.role(conn, found.name)
                    if current is not None:
                        await self._end(conn, current)
            except AgentAccountsError as exc:  # one stuck role must not stop the sweep
                log.warning("Could not drop orphaned PostgreSQL role %s: %s", found.name, exc.message)
                continue
            log.info("Dropped orphaned PostgreSQL role %s (%s/%s)", found.name, owner.namespace, owner.name)
            dropped.append(f"role {found.name} of {owner.namespace}/{owner.name} on {self.server}")
        return dropped

    # -- steps --------------------------------------------------------------------------------------
    async def _end(self, conn: Connection, role: Role) -> None:
        await conn.execute(roles.disable_login(role.name))  # autocommit: no new logins from now on
        if not role.admin_has_privileges:
            await conn.execute(roles.join_as_admin(role.name))
        await self._terminate(conn, role.name)
        async with conn.transaction():
            if self.block.reassign_owned_to:
                await conn.execute(roles.reassign_owned(role.name, self.block.reassign_owned_to))
            await conn.execute(roles.drop_owned(role.name))
            # A login that passed authentication just before NOLOGIN may have started since.
            await self._terminate(conn, role.name)
            await conn.execute(roles.drop_role(role.name))

    async def _terminate(self, conn: Connection, role: str) -> None:
        survivors = await catalog.terminate(conn, role, TERMINATE_WAIT_MS)
        if survivors:
            raise ProviderUnavailable(
                f"sessions {survivors} of role {role} did not end within {TERMINATE_WAIT_MS} ms; retrying",
                delay=connection.RETRY_SECONDS,
            )

    def _check_ours(self, found: Role, request: IssueRequest) -> None:
        owner = roles.owner_of(found.name, found.comment)
        if owner is None or owner.uid != request.uid:
            raise ObjectConflict(
                f"PostgreSQL role {found.name} exists and does not carry this AgentAccount's marker "
                f"({roles.MARKER} account-uid={request.uid}); it was left untouched"
            )
        if found.dangerous:  # someone with superuser rights changed it: never hand it to an agent
            raise ObjectConflict(
                f"PostgreSQL role {found.name} has {', '.join(found.dangerous)}, which no agent role may "
                "have; it was left untouched (a superuser must drop it)"
            )

    def _marker(self, request: IssueRequest) -> str:
        return roles.marker(request.namespace, request.name, request.uid, self.server.database)

    def _secret_data(self, role: str, password: str, request: IssueRequest) -> dict[str, str]:
        """libpq's names, as servicebinding.io's postgresql type has them."""
        server = self.server
        host = f"[{server.host}]" if ":" in server.host else server.host
        query = f"sslmode={server.sslmode}"
        if server.sslmode == "verify-full" and not self.block.ca_bundle:
            query += "&sslrootcert=system"  # the agent's libpq: the system's CAs
        data = {
            "host": server.host,
            "port": str(server.port),
            "database": server.database,
            "username": role,
            "password": password,
            "sslmode": server.sslmode,
            "uri": (
                f"postgresql://{quote(role, safe='')}:{quote(password, safe='')}@{host}:{server.port}/"
                f"{quote(server.database, safe='')}?{query}"
            ),
            "expires-at": rfc3339(request.expires_at),
        }
        if self.block.ca_bundle:
            data["ca.crt"] = self.block.ca_bundle
        return data

    @contextlib.asynccontextmanager
    async def _session(self, doing: str, *secrets: str) -> AsyncIterator[Connection]:
        """An admin connection; every psycopg error inside becomes one of ours (connection.translate),
        scrubbed of the admin password and of `secrets`."""
        try:
            conn = await self._connect(self.server, self._login)
            async with conn:
                yield conn
        except psycopg.Error as exc:
            scrub = (self._login.password or "", *secrets)
            raise connection.translate(exc, f"{doing} on {self.server}", scrub) from exc


def _warning(diag: psycopg.errors.Diagnostic) -> bool:
    return diag.severity_nonlocalized == "WARNING"
