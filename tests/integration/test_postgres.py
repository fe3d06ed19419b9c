"""PostgreSQL provider, end to end: a real PostgreSQL server, the real control plane, the operator.

The server is Debian's `postgresql`, started for the session by postgres_support (TLS, loopback, a
CREATEROLE admin that is not a superuser). Each test gets its own namespace and AccountProvider; the
agent connects with nothing but the Secret's values, exactly as a pod would. Nothing is emulated.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from kubernetes import client
from psycopg import sql

from agentaccounts.kube import Kube
from agentaccounts.models import Requester
from agentaccounts.providers.base import Deps
from agentaccounts.providers.postgres import connection, roles
from agentaccounts.reconcile import Reconciler
from agentaccounts.settings import Settings
from agentaccounts.stamps import Signer
from cluster.launcher import free_port
from integration.postgres_support import (
    ADMIN,
    DATABASE,
    PostgresServer,
    agent_connect,
    assert_no_leaks,
    create_postgres_provider,
    postgres_fixture,  # noqa: F401  (the `postgres` fixture)
    refused,
    session_ended,
)
from integration.support import (
    GROUP,
    VERSION,
    OperatorProcess,
    condition,
    create_account,
    custom,
    events_for,
    get_account,
    phase,
    secret_data,
    wait_event,
    wait_for,
)

Start = Callable[..., OperatorProcess]
PROVIDER = {"name": "pg"}
SCOPES = [  # the issue's example
    {"permissions": ["SELECT"], "resources": ["table/analytics.events", "table/analytics.users"]},
    {"permissions": ["SELECT", "INSERT"], "resources": ["table/scratch.results"]},
]
ALLOWED = [
    {"permissions": ["SELECT"], "resources": ["table/analytics.*"]},
    {"permissions": ["SELECT", "INSERT"], "resources": ["table/scratch.*"]},
    {"permissions": ["USAGE", "CREATE"], "resources": ["schema/scratch"]},
]
MAKER = [  # may create objects of its own in scratch
    {"permissions": ["SELECT"], "resources": ["table/analytics.events"]},
    {"permissions": ["USAGE", "CREATE"], "resources": ["schema/scratch"]},
]
SECRET_KEYS = {"host", "port", "database", "username", "password", "uri", "sslmode", "expires-at", "ca.crt"}
INSUFFICIENT_PRIVILEGE = "42501"


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _status(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return dict((get_account(api, namespace, name) or {}).get("status") or {})


def _ready_provider(api: client.ApiClient, namespace: str, server: PostgresServer, **options: Any) -> None:
    create_postgres_provider(api, namespace, PROVIDER["name"], server, **options)
    wait_for(lambda: _provider_ready(api, namespace, PROVIDER["name"]), 20, "the AccountProvider to be Ready")


def _provider_ready(api: client.ApiClient, namespace: str, name: str) -> bool:
    body = custom(api).get_namespaced_custom_object(GROUP, VERSION, namespace, "accountproviders", name)
    conditions = (body.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _issue(api: client.ApiClient, namespace: str, name: str, lifetime: str, scopes: Any) -> dict[str, Any]:
    account = create_account(api, namespace, name, providerRef=PROVIDER, lifetime=lifetime, scopes=scopes)
    wait_for(lambda: phase(api, namespace, name) == "Ready", 30, f"{name} to be Ready")
    return account


def _login_refused(data: dict[str, str], directory: Path) -> bool:
    try:
        agent_connect(data, directory).close()
    except psycopg.OperationalError as exc:
        return "password authentication failed" in str(exc)
    return False


@contextlib.contextmanager
def _session(data: dict[str, str], directory: Path) -> Iterator[psycopg.Connection[Any]]:
    conn = agent_connect(data, directory)
    try:
        yield conn
    finally:
        conn.close()


def test_agent_role_has_exactly_its_grants_until_expiry(
    postgres: PostgresServer, api: client.ApiClient, namespace: str, start_operator: Start, tmp_path: Path
) -> None:
    operator = start_operator(namespace)
    _ready_provider(api, namespace, postgres, allowed=ALLOWED)
    account = _issue(api, namespace, "analyst", "10s", SCOPES)
    uid = account["metadata"]["uid"]
    data = secret_data(api, namespace, "analyst-credentials")
    status = _status(api, namespace, "analyst")
    role = roles.role_name("analyst", uid)

    assert set(data) == SECRET_KEYS
    assert (data["host"], data["port"], data["database"]) == (postgres.host, str(postgres.port), DATABASE)
    assert (data["username"], data["sslmode"], data["expires-at"]) == (
        role,
        "verify-full",
        status["expiresAt"],
    )
    assert status["accountRef"]["kind"] == "PostgresRole" and status["accountRef"]["name"] == role
    assert "refuses new logins" in status["providerNote"]
    attributes = postgres.role(role)
    assert attributes is not None
    assert attributes["login"] and attributes["connlimit"] == 5 and attributes["member_of"] == []
    assert not any(attributes[a] for a in ("super", "createdb", "createrole", "replication", "bypassrls"))
    assert attributes["validuntil"] == _when(status["expiresAt"])  # the server's own expiry
    assert attributes["comment"] == roles.marker(namespace, "analyst", uid, DATABASE)

    with _session(data, tmp_path) as agent:
        assert agent.execute("SELECT count(*) FROM analytics.events").fetchone() == (2,)
        assert agent.execute("SELECT name FROM analytics.users").fetchall() == [("ada",)]
        agent.execute("INSERT INTO scratch.results VALUES ('analyst', 1)")
        assert agent.execute("SELECT value FROM scratch.results WHERE run = 'analyst'").fetchone() == (1,)
        denied = {
            "a table not granted": "SELECT * FROM analytics.salaries",
            "INSERT where only SELECT was granted": "INSERT INTO analytics.events (kind) VALUES ('forged')",
            "UPDATE where only SELECT and INSERT were": "UPDATE scratch.results SET value = 2",
            "CREATE on a schema": "CREATE TABLE scratch.mine (x int)",
            "a sequence not granted": "SELECT nextval('analytics.ticket_numbers')",
        }
        for what, statement in denied.items():
            assert refused(lambda s=statement: agent.execute(s)) == INSUFFICIENT_PRIVILEGE, what
        with psycopg.connect(data["uri"], sslrootcert=str(postgres.ca_file)) as by_uri:  # the uri works too
            assert by_uri.execute("SELECT current_user").fetchone() == (role,)

        expires_at = _when(status["expiresAt"])
        wait_for(lambda: session_ended(agent), 30, "the agent's open session to be terminated")
        ended_after = datetime.now(UTC) - expires_at
    assert ended_after < timedelta(seconds=1), f"session ended {ended_after} after expiresAt"
    assert _login_refused(data, tmp_path)
    wait_for(lambda: phase(api, namespace, "analyst") == "Expired", 10, "Expired")
    assert postgres.roles_of(uid) == []
    assert condition(api, namespace, "analyst")["reason"] == "Expired"
    reasons = events_for(api, namespace, "analyst")
    assert ("Normal", "Issued") in reasons and ("Normal", "Expired") in reasons
    assert 'agentaccounts_revoked_total{provider="postgres",reason="expired"} 1.0' in operator.metrics()
    assert_no_leaks(api, namespace, operator, postgres, data["password"], postgres.admin_password)


def test_removal_ends_sessions_drops_the_role_and_what_it_created(
    postgres: PostgresServer, api: client.ApiClient, namespace: str, start_operator: Start, tmp_path: Path
) -> None:
    operator = start_operator(namespace)
    _ready_provider(api, namespace, postgres, allowed=ALLOWED)  # no reassignOwnedTo: objects are dropped
    uid = _issue(api, namespace, "maker", "1h", MAKER)["metadata"]["uid"]
    data = secret_data(api, namespace, "maker-credentials")
    table = f"made_{uid[:8]}"
    with _session(data, tmp_path) as agent:
        agent.execute(sql.SQL("CREATE TABLE scratch.{} (x int)").format(sql.Identifier(table)))
        agent.execute("BEGIN")  # an open transaction holding locks must not block the revocation
        agent.execute(sql.SQL("INSERT INTO scratch.{} VALUES (1)").format(sql.Identifier(table)))

        custom(api).delete_namespaced_custom_object(GROUP, VERSION, namespace, "agentaccounts", "maker")
        wait_for(lambda: session_ended(agent), 20, "the agent's session to be terminated")
    wait_for(lambda: get_account(api, namespace, "maker") is None, 20, "the finalizer to finish")
    assert _login_refused(data, tmp_path)
    assert postgres.roles_of(uid) == []
    assert postgres.sql("SELECT to_regclass(%s)", f"scratch.{table}") == [(None,)]  # dropped with the role
    wait_event(api, namespace, "maker", ("Normal", "Revoked"))
    assert_no_leaks(api, namespace, operator, postgres, data["password"], postgres.admin_password)


def test_operator_down_across_expiry(
    postgres: PostgresServer, api: client.ApiClient, namespace: str, start_operator: Start, tmp_path: Path
) -> None:
    first = start_operator(namespace)
    _ready_provider(api, namespace, postgres, allowed=ALLOWED, reassignOwnedTo="agent_leftovers")
    uid = _issue(api, namespace, "night-shift", "8s", MAKER)["metadata"]["uid"]
    data = secret_data(api, namespace, "night-shift-credentials")
    expires_at = _when(_status(api, namespace, "night-shift")["expiresAt"])
    table = f"kept_{uid[:8]}"
    with _session(data, tmp_path) as agent:
        agent.execute(sql.SQL("CREATE TABLE scratch.{} (x int)").format(sql.Identifier(table)))
        first.kill()

        wait_for(lambda: datetime.now(UTC) > expires_at, 20, "expiresAt to pass with the operator down")
        # The server refuses new logins on its own...
        assert _login_refused(data, tmp_path)
        # ...but VALID UNTIL does not end a session opened before it: only the operator does.
        assert agent.execute("SELECT count(*) FROM analytics.events").fetchone() == (2,)
        assert postgres.roles_of(uid) == [roles.role_name("night-shift", uid)]

        second = start_operator(namespace)
        wait_for(lambda: session_ended(agent), 30, "the restarted operator to end the session")
    wait_for(lambda: phase(api, namespace, "night-shift") == "Expired", 20, "Expired after the restart")
    assert postgres.roles_of(uid) == []
    owner = postgres.sql(
        "SELECT tableowner FROM pg_tables WHERE schemaname = 'scratch' AND tablename = %s", table
    )
    assert owner == [("agent_leftovers",)]  # reassignOwnedTo: what the agent made is kept
    assert_no_leaks(api, namespace, second, postgres, data["password"], postgres.admin_password)
    assert_no_leaks(api, namespace, first, postgres, data["password"], postgres.admin_password)


def test_sweep_drops_roles_whose_account_is_gone(
    postgres: PostgresServer, api: client.ApiClient, namespace: str, start_operator: Start, tmp_path: Path
) -> None:
    first = start_operator(namespace)  # default sweep period (5 min): it never sweeps
    _ready_provider(api, namespace, postgres, allowed=ALLOWED)
    alive = _issue(api, namespace, "alive", "1h", SCOPES)["metadata"]["uid"]
    first.kill()

    # What a crash, or an AgentAccount force-deleted while the operator was down, leaves behind: a role
    # made exactly as the operator makes them, for an account uid nobody has; it is even logged in.
    orphan_uid, password = str(uuid.uuid4()), "orphan-password-0123456789"
    orphan = _make_role(postgres, roles.role_name("crashed", orphan_uid), password,
                        roles.marker(namespace, "crashed", orphan_uid, DATABASE))  # fmt: skip
    foreign = _make_role(postgres, f"aa-foreign-{uuid.uuid4()}", password, None)  # our name shape, no marker
    other_uid = str(uuid.uuid4())
    elsewhere = _make_role(postgres, roles.role_name("job", other_uid), password,
                           roles.marker(f"{namespace}-other", "job", other_uid, DATABASE))  # fmt: skip
    try:
        orphan_session = postgres.connect(user=orphan, password=password)
        operator = start_operator(namespace, env={"AGENTACCOUNTS_ORPHAN_SWEEP_SECONDS": "1"})
        wait_for(lambda: postgres.role(orphan) is None, 30, "the orphaned role to be dropped")
        assert session_ended(orphan_session)
        orphan_session.close()

        def orphan_events() -> list[str]:
            selector = f"involvedObject.kind=AccountProvider,involvedObject.name={PROVIDER['name']}"
            events = client.CoreV1Api(api).list_namespaced_event(namespace, field_selector=selector).items
            return [e.message for e in events if e.reason == "OrphanDeleted"]

        messages = wait_for(orphan_events, 10, "an OrphanDeleted Event on the provider")
        assert any(orphan in m for m in messages), messages
        # More sweeps change nothing else: the live account's role, a role without our marker and a
        # role of a namespace this operator does not watch all stay.
        before = _sweeps(postgres)
        wait_for(lambda: _sweeps(postgres) >= before + 3, 20, "more sweeps")
        assert postgres.role(foreign) is not None and postgres.role(elsewhere) is not None
        assert postgres.roles_of(alive) == [roles.role_name("alive", alive)]
        assert phase(api, namespace, "alive") == "Ready"
        assert len(orphan_events()) == 1
        alive_data = secret_data(api, namespace, "alive-credentials")
        with _session(alive_data, tmp_path) as agent:
            assert agent.execute("SELECT count(*) FROM analytics.users").fetchone() == (1,)
        assert_no_leaks(api, namespace, operator, postgres, alive_data["password"], postgres.admin_password)
    finally:
        with postgres.connect(user=ADMIN, password=postgres.admin_password) as admin:
            for name in (n for n in (orphan, foreign, elsewhere) if postgres.role(n) is not None):
                for statement in ("GRANT {} TO CURRENT_USER", "DROP OWNED BY {}", "DROP ROLE {}"):
                    admin.execute(sql.SQL(statement).format(sql.Identifier(name)))


_SWEEP_LISTS = "starts_with(r.rolname"


def _sweeps(postgres: PostgresServer) -> int:
    """How many sweeps listed roles so far (the server logs every statement)."""
    return postgres.server_log().count(_SWEEP_LISTS)


def _make_role(postgres: PostgresServer, name: str, password: str, comment: str | None) -> str:
    """A LOGIN role made by the operator's admin, as the operator makes them."""
    role = sql.Identifier(name)
    with postgres.connect(user=ADMIN, password=postgres.admin_password) as admin:
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                role, sql.Literal(roles.scram_sha_256(password))
            )
        )
        admin.execute(sql.SQL("GRANT CONNECT ON DATABASE app TO {}").format(role))
        if comment:
            admin.execute(sql.SQL("COMMENT ON ROLE {} IS {}").format(role, sql.Literal(comment)))
    return name


def test_bad_input_fails_or_waits_with_a_precise_reason(
    postgres: PostgresServer, api: client.ApiClient, namespace: str, start_operator: Start
) -> None:
    start_operator(namespace, env={"AGENTACCOUNTS_PROVIDER_RETRY_SECONDS": "1"})
    _ready_provider(api, namespace, postgres)  # allowedScopes: everything, so the provider itself judges
    down_port = free_port()  # nothing listens there
    create_postgres_provider(api, namespace, "down", postgres, port=down_port, secret="pg-admin-2")
    create_postgres_provider(api, namespace, "no-secret", postgres, secret="absent", with_secret=False)

    def select(resource: str) -> list[dict[str, Any]]:
        return [{"permissions": ["SELECT"], "resources": [resource]}]

    failing = {
        "typo": (
            select("table/analytics.evnts"),
            "UnknownResource",
            "no table 'evnts' in schema 'analytics'",
        ),
        "no-schema": (select("table/nowhere.t"), "UnknownResource", "schema 'nowhere' does not exist"),
        "wrong-kind": (
            [{"permissions": ["USAGE"], "resources": ["table/analytics.events"]}],
            "InvalidSpec",
            "privilege USAGE does not apply to table/analytics.events",
        ),
        "sequence": (
            select("table/analytics.ticket_numbers"),
            "InvalidSpec",
            "is not a table: use sequence/analytics.ticket_numbers",
        ),
        "not-privilege": (
            [{"permissions": ["SELCT"], "resources": ["table/analytics.events"]}],
            "UnknownPermission",
            "did you mean 'SELECT'",
        ),
        "ungrantable": (
            select("table/analytics.salaries"),
            "ProviderRejected",
            f"the admin role '{ADMIN}' may not grant SELECT on table analytics.salaries",
        ),
    }
    uids = {}
    preview = create_account(api, namespace, "preview", providerRef=PROVIDER, scopes=SCOPES, dryRun=True)
    for name, (scopes, _, _) in failing.items():
        uids[name] = create_account(api, namespace, name, providerRef=PROVIDER, scopes=scopes)["metadata"][
            "uid"
        ]
    for provider, name in (("down", "unreachable"), ("no-secret", "waiting")):
        uids[name] = create_account(
            api, namespace, name, providerRef={"name": provider}, scopes=select("table/analytics.events")
        )["metadata"]["uid"]

    for name, (_, reason, fragment) in failing.items():
        wait_for(lambda n=name: phase(api, namespace, n) == "Failed", 20, f"{name} to fail")
        found = condition(api, namespace, name)
        assert found["reason"] == reason and fragment in found["message"], (name, found)
    for name, reason, fragment in (
        ("unreachable", "ProviderUnavailable", f"127.0.0.1:{down_port}/{DATABASE}"),
        ("waiting", "ProviderNotFound", f"admin Secret {namespace}/absent"),
    ):
        wait_for(
            lambda n=name, r=reason: condition(api, namespace, n).get("reason") == r, 20, f"{name}: {reason}"
        )
        assert fragment in condition(api, namespace, name)["message"]
        assert phase(api, namespace, name) == "Pending"
    # A dry run checks everything against the server and shows the statements, creating nothing.
    wait_for(lambda: phase(api, namespace, "preview") == "DryRun", 20, "the dry run")
    plan = _status(api, namespace, "preview")["plan"]
    role = roles.role_name("preview", preview["metadata"]["uid"])
    assert (plan["kind"], plan["role"], plan["connectionLimit"]) == ("PostgresRole", role, 5)
    assert plan["grants"] == [
        f'GRANT CONNECT ON DATABASE "app" TO "{role}"',
        f'GRANT USAGE ON SCHEMA "analytics" TO "{role}"',
        f'GRANT USAGE ON SCHEMA "scratch" TO "{role}"',
        f'GRANT SELECT ON TABLE "analytics"."events" TO "{role}"',
        f'GRANT SELECT ON TABLE "analytics"."users" TO "{role}"',
        f'GRANT SELECT, INSERT ON TABLE "scratch"."results" TO "{role}"',
    ]
    uids["preview"] = preview["metadata"]["uid"]
    assert all(postgres.roles_of(uid) == [] for uid in uids.values())  # nothing was created

    # Never grantable, whoever asks and whatever allowedScopes say: refused at `kubectl apply`.
    for scopes, fragment in (
        (
            [{"permissions": ["SUPERUSER"], "resources": ["table/analytics.events"]}],
            "role attribute SUPERUSER",
        ),
        ([{"permissions": ["SELECT"], "resources": ["role/pg_read_all_data"]}], "membership in role"),
    ):
        with pytest.raises(client.ApiException) as refusal:
            create_account(
                api, namespace, f"greedy-{uuid.uuid4().hex[:6]}", providerRef=PROVIDER, scopes=scopes
            )
        assert refusal.value.status == 403
        assert "rule never-grantable: " in str(refusal.value.body) and fragment in str(refusal.value.body)


# -- a crash between any two steps ---------------------------------------------------------------------
# The operator is driven in-process here so the crash can be placed exactly: before the N-th write,
# counting both the Kubernetes writes and the statements that change the database (the COMMIT too).
# Then a fresh reconciler, as after a restart, finishes the job.
KUBE_WRITES = ("create", "replace", "patch_status", "delete", "delete_labelled")


class Crash(BaseException):
    """Stands for the process dying: not an Exception, so nothing on the way catches it."""


class Steps:
    def __init__(self, crash_after: int) -> None:
        self.done, self.crash_after = 0, crash_after

    def step(self, what: str) -> None:
        self.done += 1
        if self.done > self.crash_after:
            raise Crash(f"killed before write #{self.done} ({what})")


class CrashingKube(Kube):
    def __init__(self, api_client: client.ApiClient, steps: Steps) -> None:
        super().__init__(api_client)
        self.steps = steps

    def __getattribute__(self, name: str) -> Any:
        attr = super().__getattribute__(name)
        if name in KUBE_WRITES:

            async def counted(*args: Any, **kwargs: Any) -> Any:
                self.steps.step(f"kube {name}")
                return await attr(*args, **kwargs)

            return counted
        return attr


class CrashingConnection:
    """A real admin connection whose every write (anything but a SELECT) and COMMIT is a step."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], steps: Steps) -> None:
        self._conn, self._steps = conn, steps

    async def execute(self, query: Any, params: Any = None) -> Any:
        text = query.as_string(self._conn) if isinstance(query, sql.Composable) else str(query)
        if not text.lstrip().upper().startswith("SELECT"):
            self._steps.step(" ".join(text.split()[:2]))
        return await self._conn.execute(query, params)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        async with self._conn.transaction() as tx:
            yield tx
            self._steps.step("COMMIT")  # raised inside the transaction: the server rolls it back

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    async def __aenter__(self) -> CrashingConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._conn.close()  # a dead process's connection: the server aborts what was open


def _now() -> datetime:
    return datetime.now(UTC)


def _noop(*_: str) -> None:
    pass


@pytest.fixture
def in_process(
    cluster: Any,
    api: client.ApiClient,
    namespace: str,
    postgres: PostgresServer,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[[int], tuple[Reconciler, Steps]]]:
    """Reconcilers, as after a restart each, whose Kubernetes and PostgreSQL writes crash after N."""
    create_postgres_provider(api, namespace, PROVIDER["name"], postgres, allowed=ALLOWED)
    real, made = connection.connect, []

    def reconciler(crash_after: int) -> tuple[Reconciler, Steps]:
        steps = Steps(crash_after)

        async def connect(server: connection.Server, login: connection.Login) -> Any:
            return CrashingConnection(await real(server, login), steps)

        monkeypatch.setattr(connection, "connect", connect)  # what the next provider built uses
        kube = CrashingKube(cluster.api_client(), steps)
        made.append(kube)
        deps = Deps(kube=kube, settings=Settings(), http=httpx.AsyncClient(), now=_now)
        return Reconciler(deps, _SIGNER[0]), steps

    yield reconciler
    for kube in made:
        kube.close()


_SIGNER: list[Signer] = []


async def _signer(cluster: Any) -> Signer:
    if not _SIGNER:
        settings, kube = Settings(), Kube(cluster.api_client())
        try:
            key = await kube.ensure_secret_key(
                settings.operator_namespace, settings.signing_key_secret, "key", lambda: os.urandom(32)
            )
        finally:
            kube.close()
        _SIGNER.append(Signer(key))
    return _SIGNER[0]


async def _create_stamped(cluster: Any, api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    # No operator runs here, so no admission webhook either: the stamp it would write is made with the
    # operator's own key, for the admin who creates the account.
    signer = await _signer(cluster)
    spec = {"providerRef": PROVIDER, "lifetime": "1h", "scopes": SCOPES}
    admin = Requester(username="admin", groups=["system:masters", "system:authenticated"])
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AgentAccount",
        "metadata": {"name": name, "annotations": signer.requester_stamp(namespace, spec, admin, _now())},
        "spec": spec,
    }
    return custom(api).create_namespaced_custom_object(GROUP, VERSION, namespace, "agentaccounts", body)  # type: ignore[no-any-return]


# timing patch; CREATE ROLE, COMMENT, 6 GRANTs, COMMIT; accountRef patch; Secret; status patch
ISSUE_WRITES = 13
# NOLOGIN, GRANT (the admin joins the role), DROP OWNED, DROP ROLE, COMMIT; the Secret's deletion
REVOKE_WRITES = 6


@pytest.mark.parametrize("crash_after", range(ISSUE_WRITES + 1))
async def test_crash_between_any_two_steps_leaves_exactly_one_role(
    cluster: Any,
    api: client.ApiClient,
    namespace: str,
    postgres: PostgresServer,
    in_process: Callable[[int], tuple[Reconciler, Steps]],
    crash_after: int,
    tmp_path: Path,
) -> None:
    body = await _create_stamped(cluster, api, namespace, "crashy")
    uid = body["metadata"]["uid"]
    crashing, steps = in_process(crash_after)
    with contextlib.suppress(Crash):
        await crashing.ensure_issued(body, _noop)
    assert steps.done == min(crash_after + 1, ISSUE_WRITES), "the issue path's writes are not as counted"

    fresh = get_account(api, namespace, "crashy")
    assert fresh is not None
    await in_process(10**6)[0].ensure_issued(fresh, _noop)  # the restart

    final = _status(api, namespace, "crashy")
    assert final["phase"] == "Ready"
    assert postgres.roles_of(uid) == [roles.role_name("crashy", uid)]
    with _session(secret_data(api, namespace, "crashy-credentials"), tmp_path) as agent:
        assert agent.execute("SELECT count(*) FROM analytics.events").fetchone() == (2,)
    if (fresh.get("status") or {}).get("expiresAt"):  # a restart never extends the lifetime
        assert final["expiresAt"] == fresh["status"]["expiresAt"]

    # Revoking, crashed too (at every point over the parameters), then finished: no role is left.
    ready = get_account(api, namespace, "crashy")
    assert ready is not None
    revoke_crash = crash_after % (REVOKE_WRITES + 1)
    crashing, steps = in_process(revoke_crash)
    with contextlib.suppress(Crash):
        await crashing.revoke(ready, "deleted", _noop)
    assert steps.done == min(revoke_crash + 1, REVOKE_WRITES), "the revoke path's writes are not as counted"
    await in_process(10**6)[0].revoke(ready, "deleted", _noop)
    assert postgres.roles_of(uid) == []
