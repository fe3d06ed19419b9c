"""A real PostgreSQL server for the tests (Debian's `postgresql` package), and helpers to act as the
agent and as the DBA.

One server per test session, started here in a private temporary directory: `initdb` and `postgres`
run as the unprivileged `postgres` user when the tests run as root (CI does), as the current user
otherwise. It listens on 127.0.0.1 on a free port only (no Unix socket), speaks TLS with a CA made for
it (so the provider's default sslMode, verify-full, is what the tests use), logs every statement (so a
test can prove no password reached the server's log) and dies with pytest, even on SIGKILL
(PR_SET_PDEATHSIG on the postmaster).

What the server holds, made by its bootstrap superuser (which the operator never sees):
- `agentaccounts_admin`: LOGIN CREATEROLE, not a superuser; CONNECT on database `app`, USAGE on
  schemas analytics and scratch, CREATE on scratch, SELECT on analytics.events and analytics.users,
  SELECT/INSERT/UPDATE on scratch.results, all WITH GRANT OPTION; SELECT on analytics.salaries
  WITHOUT grant option (it may read it, not hand it out); a member of `agent_leftovers`.
- `data_owner` (NOLOGIN) owns the schemas and tables; `agent_leftovers` (NOLOGIN) receives what agent
  roles created when a provider says `reassignOwnedTo: agent_leftovers`.
- PUBLIC's CONNECT on `app` is revoked, so an agent connects only through the grant it was given.

Test modules import the fixture by name (`from integration.postgres_support import
postgres_fixture  # noqa: F401`), as cloudflare_support's emulator fixture is imported.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from kubernetes import client
from psycopg import sql

from agentaccounts import webhook_tls
from agentaccounts.providers.postgres import roles
from cluster.launcher import free_port
from integration.support import GROUP, VERSION, OperatorProcess, custom, wait_for

ADMIN = "agentaccounts_admin"
DATABASE = "app"
SUPERUSER = "bootstrap"
SETUP_POSTGRES = [
    "CREATE ROLE agentaccounts_admin LOGIN CREATEROLE PASSWORD {admin_password}",
    "CREATE ROLE data_owner NOLOGIN",
    "CREATE ROLE agent_leftovers NOLOGIN",
    "GRANT agent_leftovers TO agentaccounts_admin",
    "CREATE DATABASE app OWNER data_owner",
    "REVOKE CONNECT, TEMPORARY ON DATABASE app FROM PUBLIC",
    "GRANT CONNECT ON DATABASE app TO agentaccounts_admin WITH GRANT OPTION",
]
SETUP_APP = [
    "CREATE SCHEMA analytics AUTHORIZATION data_owner",
    "CREATE SCHEMA scratch AUTHORIZATION data_owner",
    "SET ROLE data_owner",
    "CREATE TABLE analytics.events (id bigint GENERATED ALWAYS AS IDENTITY, kind text)",
    "INSERT INTO analytics.events (kind) VALUES ('signup'), ('login')",
    "CREATE TABLE analytics.users (id int, name text)",
    "INSERT INTO analytics.users VALUES (1, 'ada')",
    "CREATE TABLE analytics.salaries (user_id int, amount int)",
    "CREATE SEQUENCE analytics.ticket_numbers",
    "CREATE TABLE scratch.results (run text, value int)",
    "RESET ROLE",
    "GRANT USAGE ON SCHEMA analytics, scratch TO agentaccounts_admin WITH GRANT OPTION",
    "GRANT CREATE ON SCHEMA scratch TO agentaccounts_admin WITH GRANT OPTION",
    "GRANT SELECT ON analytics.events, analytics.users TO agentaccounts_admin WITH GRANT OPTION",
    "GRANT SELECT ON analytics.salaries TO agentaccounts_admin",
    "GRANT SELECT, INSERT, UPDATE ON scratch.results TO agentaccounts_admin WITH GRANT OPTION",
]


@dataclass
class PostgresServer:
    port: int
    ca_pem: str
    ca_file: Path
    log: Path
    superuser_password: str
    admin_password: str
    host: str = "127.0.0.1"

    @property
    def admin_uri(self) -> str:
        return f"postgresql://{ADMIN}:{self.admin_password}@{self.host}:{self.port}/{DATABASE}"

    def connect(
        self, user: str = SUPERUSER, password: str | None = None, dbname: str = DATABASE
    ) -> psycopg.Connection[Any]:
        return psycopg.connect(
            host=self.host,
            port=self.port,
            dbname=dbname,
            user=user,
            password=password if password is not None else self.superuser_password,
            sslmode="verify-full",
            sslrootcert=str(self.ca_file),
            connect_timeout=5,
            autocommit=True,
        )

    def sql(self, statement: str, *params: Any, dbname: str = DATABASE) -> list[tuple[Any, ...]]:
        """One statement as the bootstrap superuser (the DBA's view, never the operator's)."""
        with self.connect(dbname=dbname) as conn:
            cursor = conn.execute(statement, list(params) if params else None)  # type: ignore[arg-type]
            return cursor.fetchall() if cursor.description else []

    def role(self, name: str) -> dict[str, Any] | None:
        rows = self.sql(
            "SELECT rolname, rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolreplication, "
            "rolbypassrls, rolinherit, rolconnlimit, rolvaliduntil, shobj_description(oid, 'pg_authid'), "
            "ARRAY(SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
            "WHERE m.member = r.oid) FROM pg_roles r WHERE rolname = %s",
            name,
        )
        if not rows:
            return None
        keys = "name login super createdb createrole replication bypassrls inherit connlimit validuntil "
        return dict(zip([*keys.split(), "comment", "member_of"], rows[0], strict=True))

    def roles_of(self, uid: str) -> list[str]:
        """Every role that carries this account uid, in its name or in its comment."""
        rows = self.sql(
            "SELECT rolname FROM pg_roles "
            "WHERE rolname LIKE %s OR shobj_description(oid, 'pg_authid') LIKE %s",
            f"%{uid}",
            f"%{uid}%",
        )
        return sorted(name for (name,) in rows)

    def server_log(self) -> str:
        return self.log.read_text(errors="replace")


def _bindir() -> Path:
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(re.sub(r"\D", "", p.parent.parent.name) or 0),
    )
    if not found:
        pytest.fail(
            "PostgreSQL is not installed: apt-get install -y postgresql (.ci/run does)", pytrace=False
        )
    return found[-1].parent


def _run_as() -> dict[str, Any]:
    """subprocess options that run the server as `postgres` when we are root (initdb refuses root)."""
    if os.geteuid() != 0:
        return {}
    entry = pwd.getpwnam("postgres")
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG, set after the switch to `postgres` (a credential change clears it): SIGQUIT is
    # PostgreSQL's immediate shutdown, so a SIGKILLed pytest leaves no server behind.
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGQUIT)


def _chown(path: Path, options: dict[str, Any]) -> None:
    if options:
        os.chown(path, options["user"], options["group"])


@pytest.fixture(scope="session", name="postgres")
def postgres_fixture() -> Iterator[PostgresServer]:
    bindir, run_as = _bindir(), _run_as()
    root = Path(tempfile.mkdtemp(prefix="agentaccounts-postgres-"))  # mode 0700
    _chown(root, run_as)
    superuser_password, admin_password = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    pwfile = root / "pwfile"
    pwfile.write_text(superuser_password)
    _chown(pwfile, run_as)
    data, log = root / "data", root / "server.log"
    subprocess.run(
        [bindir / "initdb", "-D", data, "-U", SUPERUSER, f"--pwfile={pwfile}", "--auth=scram-sha-256",
         "-E", "UTF8", "--no-locale", "--no-sync"],
        check=True, capture_output=True, timeout=120, **run_as,
    )  # fmt: skip
    pwfile.unlink()
    tls = webhook_tls.make(["127.0.0.1", "localhost"], directory=root)
    for path in (tls.certfile, tls.keyfile):
        _chown(path, run_as)
    ca_file = root / "ca.crt"
    ca_file.write_bytes(tls.ca_pem)
    port = free_port()
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(
            f"listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = ''\n"
            f"ssl = on\nssl_cert_file = '{tls.certfile}'\nssl_key_file = '{tls.keyfile}'\n"
            "log_statement = 'all'\nlog_connections = on\nfsync = off\nsynchronous_commit = off\n"
            "full_page_writes = off\nmax_connections = 40\nshared_buffers = 16MB\n"
        )
    (data / "pg_hba.conf").write_text("hostssl all all 127.0.0.1/32 scram-sha-256\n")
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [bindir / "postgres", "-D", data],
            stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent, **run_as,
        )  # fmt: skip
    server = PostgresServer(port, tls.ca_pem.decode(), ca_file, log, superuser_password, admin_password)
    try:
        wait_for(lambda: _accepts(server, proc), 30, "PostgreSQL to accept connections")
        with server.connect(dbname="postgres") as conn:
            for statement in SETUP_POSTGRES:
                # A SCRAM verifier, as the operator sends its roles' passwords: the server's statement log
                # never holds the admin's password either.
                verifier = sql.Literal(roles.scram_sha_256(admin_password))
                conn.execute(sql.SQL(statement).format(admin_password=verifier))  # type: ignore[arg-type]
        with server.connect() as conn:
            for statement in SETUP_APP:
                conn.execute(statement)  # type: ignore[arg-type]
        yield server
    finally:
        proc.send_signal(signal.SIGINT)  # fast shutdown: ends sessions, then exits
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        shutil.rmtree(root, ignore_errors=True)


def _accepts(server: PostgresServer, proc: subprocess.Popen[bytes]) -> bool:
    assert proc.poll() is None, f"postgres exited ({proc.returncode}):\n{server.server_log()[-3000:]}"
    try:
        server.connect(dbname="postgres").close()
    except psycopg.OperationalError:
        return False
    return True


# -- Kubernetes objects ------------------------------------------------------------------------------
def create_admin_secret(api: client.ApiClient, namespace: str, name: str, uri: str) -> None:
    client.CoreV1Api(api).create_namespaced_secret(
        namespace, {"metadata": {"name": name}, "stringData": {"uri": uri}}
    )


def create_postgres_provider(
    api: client.ApiClient,
    namespace: str,
    name: str,
    server: PostgresServer,
    *,
    allowed: list[dict[str, Any]] | None = None,
    secret: str = "pg-admin",
    with_secret: bool = True,
    **block: Any,
) -> None:
    """A namespaced AccountProvider for `server` (verify-full with the server's CA), and its admin Secret."""
    if with_secret:
        create_admin_secret(api, namespace, secret, server.admin_uri)
    spec = {
        "postgres": {
            "host": server.host,
            "port": server.port,
            "database": DATABASE,
            "caBundle": server.ca_pem,
            "adminSecretRef": {"name": secret},
            **block,
        },
        "policy": {
            "maxLifetime": "1h",
            "allowedScopes": allowed if allowed is not None else [{"permissions": ["*"], "resources": ["*"]}],
        },
    }
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AccountProvider",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }
    custom(api).create_namespaced_custom_object(GROUP, VERSION, namespace, "accountproviders", body)


# -- the agent ---------------------------------------------------------------------------------------
def agent_connect(data: dict[str, str], directory: Path, **overrides: Any) -> psycopg.Connection[Any]:
    """Connect exactly as an agent would, from the Secret's keys (its CA written to a file, as a
    mounted Secret would be)."""
    ca = directory / "agent-ca.crt"
    ca.write_text(data["ca.crt"])
    return psycopg.connect(
        host=data["host"],
        port=data["port"],
        dbname=data["database"],
        user=data["username"],
        password=data["password"],
        sslmode=data["sslmode"],
        sslrootcert=str(ca),
        connect_timeout=5,
        autocommit=True,
        **overrides,
    )


def refused(call: Any) -> str | None:
    """The SQLSTATE of the error `call()` raised, or None if it succeeded."""
    try:
        call()
    except psycopg.Error as exc:
        return exc.sqlstate or type(exc).__name__
    return None


def session_ended(conn: psycopg.Connection[Any]) -> bool:
    """True once the server has terminated this session (the next statement fails)."""
    try:
        conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return True
    return False


# -- checks ------------------------------------------------------------------------------------------
def assert_no_leaks(
    api: client.ApiClient, namespace: str, operator: OperatorProcess, server: PostgresServer, *secrets: str
) -> None:
    """No password in the operator's log, any Event, any AgentAccount or AccountProvider, the metrics,
    or the PostgreSQL server's own statement log."""
    secrets = tuple(s for s in secrets if s)
    assert secrets, "nothing to look for"
    places: dict[str, str] = {"operator log": operator.output(), "server log": server.server_log()}
    with contextlib.suppress(OSError):  # a killed operator serves no metrics
        places["metrics"] = operator.metrics()
    for event in client.CoreV1Api(api).list_namespaced_event(namespace).items:
        places[f"Event {event.reason} on {event.involved_object.name}"] = f"{event.reason} {event.message}"
    for plural in ("agentaccounts", "accountproviders"):
        for item in custom(api).list_namespaced_custom_object(GROUP, VERSION, namespace, plural)["items"]:
            places[f"{item['kind']}/{item['metadata']['name']}"] = json.dumps(item)
    for where, text in places.items():
        for n, value in enumerate(secrets):
            forms = {value, base64.b64encode(value.encode()).decode()}
            assert not any(form in text for form in forms), f"password #{n} leaked into {where}"
