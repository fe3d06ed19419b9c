"""An agent's role: its deterministic name, the marker that proves it is ours, its password (pure).

Name: `aa-<account name>-<account uid>`, at most 63 bytes (PostgreSQL silently truncates longer
identifiers, which would break "same account, same name"): the account name is shortened, the uid
never. Deterministic, so an issue after a crash finds the role an earlier attempt created.

Marker: the role's comment, `agentaccounts.dev account-uid=<uid> account=<namespace>/<name>
database=<db>`. Only a role whose marker carries the account's uid is ever adopted, revoked or swept;
a role with our name shape but no marker is someone else's and is left alone. An agent role cannot
change its own comment (that takes CREATEROLE, or ADMIN OPTION on it).

Password: 32 random bytes, URL-safe. The server is sent only its SCRAM-SHA-256 verifier (what psql's
`\\password` sends), so the password itself appears in no statement the server could log.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from psycopg import sql

from agentaccounts.clock import rfc3339
from agentaccounts.errors import InvalidSpec

PREFIX = "aa-"
MAX_NAME_BYTES = 63  # NAMEDATALEN - 1
MARKER = "agentaccounts.dev"
SCRAM_ITERATIONS = 4096  # PostgreSQL's default (scram_iterations)
_MARKER = re.compile(
    rf"^{re.escape(MARKER)} account-uid=(?P<uid>\S+) account=(?P<namespace>[^/\s]+)/(?P<name>\S+) "
    r"database=(?P<database>.+)$"
)
# Everything an agent role is not, said explicitly when it is created. NOINHERIT: even a membership
# added behind our back would not hand the agent that role's rights without an explicit SET ROLE.
_ATTRIBUTES = sql.SQL("LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS")
# On adoption, what a CREATEROLE admin may say: naming SUPERUSER, REPLICATION or BYPASSRLS at all in
# ALTER ROLE takes a superuser, so an adopted role carrying one of those is refused instead
# (catalog.Role.dangerous), never altered.
_ADOPTED_ATTRIBUTES = sql.SQL("LOGIN NOCREATEDB NOCREATEROLE NOINHERIT")


def role_name(name: str, uid: str) -> str:
    """`aa-<name>-<uid>`, at most 63 bytes; the name shrinks, the uid stays whole."""
    room = MAX_NAME_BYTES - len(PREFIX) - len(uid.encode()) - 1
    if not uid or room < 1:
        raise InvalidSpec(f"uid {uid!r} is too long for a PostgreSQL role name")
    stem = name.encode()[:room].decode(errors="ignore").rstrip("-.") or "x"
    return f"{PREFIX}{stem}-{uid}"


@dataclass(frozen=True)
class Owner:
    """Whose role it is, as its marker says."""

    uid: str
    namespace: str
    name: str
    database: str


def marker(namespace: str, name: str, uid: str, database: str) -> str:
    return f"{MARKER} account-uid={uid} account={namespace}/{name} database={database}"


def owner_of(role: str, comment: str | None) -> Owner | None:
    """The account a role belongs to, if its comment is our marker and its name is the one we would
    give that account; None for any other role."""
    found = _MARKER.match(comment or "")
    if found is None:
        return None
    owner = Owner(found["uid"], found["namespace"], found["name"], found["database"])
    return owner if role == role_name(owner.name, owner.uid) else None


def new_password() -> str:
    return secrets.token_urlsafe(32)


def scram_sha_256(password: str, *, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802/7677, PostgreSQL's
    format). Passwords here are ASCII, which SASLprep leaves as they are."""
    salt = salt if salt is not None else os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def create_role(role: str, verifier: str, valid_until: datetime, limit: int) -> sql.Composed:
    """`VALID UNTIL` is the account's expiry: the server refuses new logins after it on its own."""
    return sql.SQL("CREATE ROLE {} WITH {} CONNECTION LIMIT {} PASSWORD {} VALID UNTIL {}").format(
        sql.Identifier(role), _ATTRIBUTES, sql.Literal(limit), sql.Literal(verifier), _until(valid_until)
    )


def alter_role(role: str, verifier: str, valid_until: datetime, limit: int) -> sql.Composed:
    """Adoption: the attributes again, a new password (the old one cannot be read back), the expiry."""
    return sql.SQL("ALTER ROLE {} WITH {} CONNECTION LIMIT {} PASSWORD {} VALID UNTIL {}").format(
        sql.Identifier(role),
        _ADOPTED_ATTRIBUTES,
        sql.Literal(limit),
        sql.Literal(verifier),
        _until(valid_until),
    )


def comment_role(role: str, text: str) -> sql.Composed:
    return sql.SQL("COMMENT ON ROLE {} IS {}").format(sql.Identifier(role), sql.Literal(text))


def disable_login(role: str) -> sql.Composed:
    return sql.SQL("ALTER ROLE {} WITH NOLOGIN CONNECTION LIMIT 0").format(sql.Identifier(role))


def revoke_membership(role: str, group: str) -> sql.Composed:
    return sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(group), sql.Identifier(role))


def join_as_admin(role: str) -> sql.Composed:
    """The admin becomes a member of the agent role: ending its sessions (pg_terminate_backend) and
    DROP/REASSIGN OWNED need the admin to have the role's privileges."""
    return sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(role))


def reassign_owned(role: str, to: str) -> sql.Composed:
    return sql.SQL("REASSIGN OWNED BY {} TO {}").format(sql.Identifier(role), sql.Identifier(to))


def drop_owned(role: str) -> sql.Composed:
    """Drops what the role owns in this database and revokes every privilege granted to it here."""
    return sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role))


def drop_role(role: str) -> sql.Composed:
    return sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role))


def _until(moment: datetime) -> sql.Composable:
    return sql.Literal(rfc3339(moment))  # whole seconds, rounded down: never later than expiresAt
