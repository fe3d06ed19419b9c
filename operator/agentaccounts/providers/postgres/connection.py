"""Where and as whom the operator connects, and the ONE translation of PostgreSQL errors.

The server (host, port, database, sslMode, caBundle) comes from the provider block; the admin's user
and password from the URI in `adminSecretRef`, and nothing else of it (its host or options are
ignored: the block says where the credential goes). The password is only ever handed to libpq: never
logged, never in an exception message (every message is scrubbed of it anyway).

TLS: `verify-full` by default. Without a `caBundle` the server is checked against the system's CA
bundle (`system_ca_file`). The modes that may send the admin session in clear text
(`disable`, `allow`, `prefer`) are accepted for a loopback host only, as Cloudflare's apiBaseURL
accepts plain http only for loopback.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import shutil
import ssl
import tempfile
import weakref
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import psycopg.errors
from psycopg.conninfo import conninfo_to_dict

from agentaccounts.errors import (
    AgentAccountsError,
    InvalidSpec,
    ProviderRejected,
    ProviderUnavailable,
    UnknownResource,
)
from agentaccounts.providers.postgres.spec import PostgresBlock

CONNECT_TIMEOUT = 5  # seconds, libpq's connect_timeout: an unreachable server is Pending, not a hang
# Every statement has a deadline, and waiting for a lock too (DROP OWNED can queue behind an agent's
# open transaction): a stuck server delays an issue or a revocation by at most this, then it retries.
OPTIONS = "-c statement_timeout=15000 -c lock_timeout=5000"
RETRY_SECONDS = 5.0
CLEAR_TEXT_MODES = ("disable", "allow", "prefer")


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    database: str
    sslmode: str
    ca_file: str | None = None

    def __str__(self) -> str:
        return f"{self.host}:{self.port}/{self.database}"

    @property
    def sslrootcert(self) -> str | None:
        if self.ca_file:
            return self.ca_file
        return system_ca_file() if self.sslmode == "verify-full" else None


@dataclass(frozen=True)
class Login:
    user: str
    password: str | None = field(default=None, repr=False)


def system_ca_file() -> str:
    """The platform's CA bundle, as Python's own ssl module finds it. libpq's `sslrootcert=system`
    asks the OpenSSL libpq was built with, and psycopg's binary wheel ships its own, which looks in a
    directory no distribution has (measured: "certificate verify failed" for any server)."""
    return ssl.get_default_verify_paths().cafile or "system"


Connection = psycopg.AsyncConnection[Any]
Connect = Callable[[Server, Login], Awaitable[Connection]]


def check_block(block: PostgresBlock, where: str) -> None:
    """What the CRD cannot say about a block; InvalidSpec before the admin Secret is read."""
    if not block.host:
        raise InvalidSpec(f"{where}: postgres needs host")
    if block.admin_secret_ref is None:
        raise InvalidSpec(f"{where}: postgres needs adminSecretRef")
    if block.ssl_mode in CLEAR_TEXT_MODES and not is_loopback(block.host):
        raise InvalidSpec(
            f"{where}: sslMode {block.ssl_mode} may send the admin session unencrypted; it is allowed for a "
            "loopback host only (use require, verify-ca or verify-full)"
        )
    if block.ssl_mode == "verify-ca" and not block.ca_bundle:
        raise InvalidSpec(f"{where}: sslMode verify-ca needs caBundle (verify-full can use the system CAs)")
    if block.ca_bundle is not None and "-----BEGIN CERTIFICATE-----" not in block.ca_bundle:
        raise InvalidSpec(f"{where}: caBundle holds no PEM certificate")


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_admin_uri(uri: str, where: str) -> Login:
    """User and password from a libpq URI or key=value string. A parse error never echoes the text."""
    try:
        params = conninfo_to_dict(uri.strip())
    except psycopg.Error:
        raise InvalidSpec(
            f"{where} is not a libpq connection URI (postgresql://user:password@host/db)"
        ) from None
    user = params.get("user")
    if not user:
        raise InvalidSpec(f"{where}: the connection URI names no user")
    password = params.get("password")
    return Login(str(user), str(password) if password else None)


async def connect(server: Server, login: Login) -> Connection:
    """An autocommit connection as the admin; psycopg errors propagate (see `translate`)."""
    conn = await psycopg.AsyncConnection.connect(
        host=server.host,
        port=server.port,
        dbname=server.database,
        user=login.user,
        password=login.password,
        sslmode=server.sslmode,
        sslrootcert=server.sslrootcert,
        connect_timeout=CONNECT_TIMEOUT,
        application_name="agentaccounts-operator",
        options=OPTIONS,
        autocommit=True,
    )
    return conn


def translate(exc: psycopg.Error, doing: str, secrets: Iterable[str]) -> AgentAccountsError:
    """A psycopg error as one of ours: what the operator was doing, the server's words, no secret."""
    text = scrub(f"{doing}: {describe(exc)}", secrets)
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return ProviderRejected(
            f"{text} (the admin role lacks a right it needs: README, PostgreSQL provider)"
        )
    if isinstance(exc, psycopg.errors.UndefinedTable | psycopg.errors.InvalidSchemaName):
        return UnknownResource(text)
    if isinstance(exc, psycopg.errors.DuplicateObject):
        return ProviderUnavailable(f"{text} (created concurrently; retrying adopts it)", delay=RETRY_SECONDS)
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) or (exc.sqlstate or "").startswith(
        ("08", "40", "53", "57", "58")  # connection, rollback, resources, operator intervention, system
    ):
        return ProviderUnavailable(text, delay=RETRY_SECONDS)
    return ProviderRejected(text)


def describe(exc: psycopg.Error) -> str:
    diag = exc.diag
    parts = [diag.message_primary or str(exc), diag.message_detail, diag.message_hint]
    return " ".join(" ".join(str(p).split()) for p in parts if p)


def scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


class CaFiles:
    """caBundle PEMs as files, since libpq reads root certificates only from a file: one per distinct
    bundle, in a private directory (mode 0700) made once per process and removed when it ends."""

    def __init__(self) -> None:
        self._dir: Path | None = None

    def path(self, pem: str) -> str:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="agentaccounts-postgres-ca-"))
            weakref.finalize(self, shutil.rmtree, self._dir, ignore_errors=True)  # gone with us
        target = self._dir / f"{hashlib.sha256(pem.encode()).hexdigest()[:24]}.crt"
        if not target.exists():
            partial = target.with_suffix(f".{os.getpid()}.tmp")
            partial.write_text(pem)
            partial.replace(target)  # atomic: a concurrent reader never sees half a bundle
        return str(target)
