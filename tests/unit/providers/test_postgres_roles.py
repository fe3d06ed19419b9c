"""postgres roles: names within 63 bytes, the marker, SCRAM verifiers, the role statements (pure)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime

import pytest

from agentaccounts.errors import InvalidSpec
from agentaccounts.providers.postgres import roles

UID = "5c1b2f3e-9a8d-4c7b-b6a5-0f1e2d3c4b5a"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("analyst", f"aa-analyst-{UID}"),
        ("x" * 253, f"aa-{'x' * 23}-{UID}"),
        ("ab-" + "c" * 30, f"aa-ab-{'c' * 20}-{UID}"),
        ("a" * 22 + "-b", f"aa-{'a' * 22}-{UID}"),  # never ends the stem on a separator
        ("a" * 22 + ".b", f"aa-{'a' * 22}-{UID}"),
    ],
)
def test_role_names_are_deterministic_and_at_most_63_bytes(name: str, expected: str) -> None:
    assert roles.role_name(name, UID) == expected == roles.role_name(name, UID)
    assert len(expected.encode()) <= 63


def test_the_uid_is_never_shortened_and_a_uid_too_long_is_refused() -> None:
    for name in ("a", "b" * 200):
        assert roles.role_name(name, UID).endswith(f"-{UID}")
    assert roles.role_name("n", "u" * 58) == f"aa-n-{'u' * 58}"
    with pytest.raises(InvalidSpec, match="too long for a PostgreSQL role name"):
        roles.role_name("n", "u" * 59)
    with pytest.raises(InvalidSpec):
        roles.role_name("n", "")


def test_two_accounts_never_share_a_role_even_with_the_same_long_name() -> None:
    other = "6d2c3f4e-9a8d-4c7b-b6a5-0f1e2d3c4b5a"
    assert roles.role_name("y" * 100, UID) != roles.role_name("y" * 100, other)


def test_the_marker_round_trips_and_ties_the_role_to_its_account() -> None:
    role = roles.role_name("analyst", UID)
    text = roles.marker("agents", "analyst", UID, "app db")
    assert text == f"agentaccounts.dev account-uid={UID} account=agents/analyst database=app db"
    owner = roles.owner_of(role, text)
    assert owner == roles.Owner(UID, "agents", "analyst", "app db")


@pytest.mark.parametrize(
    ("role", "comment"),
    [
        (roles.role_name("analyst", UID), None),  # our name shape, no marker: someone else's
        (roles.role_name("analyst", UID), "created by hand"),
        (roles.role_name("analyst", UID), f"agentaccounts.dev account-uid={UID}"),  # incomplete
        # A marker whose uid or name does not give this role's name (copied onto another role)
        (f"aa-analyst-{UID[:-1]}0", roles.marker("agents", "analyst", UID, "app")),
        ("dba", roles.marker("agents", "analyst", UID, "app")),
        (roles.role_name("analyst", UID), roles.marker("agents", "other", UID, "app")),
    ],
)
def test_a_role_is_ours_only_with_a_matching_marker(role: str, comment: str | None) -> None:
    assert roles.owner_of(role, comment) is None


def test_passwords_are_long_random_and_safe_in_a_uri() -> None:
    passwords = {roles.new_password() for _ in range(50)}
    assert len(passwords) == 50
    assert all(len(p) >= 43 and all(c.isalnum() or c in "-_" for c in p) for p in passwords)


def test_scram_verifier_is_postgresql_s_format_and_checks_out() -> None:
    salt = bytes(range(16))
    verifier = roles.scram_sha_256("pencil", salt=salt)
    method, rest = verifier.split("$", 1)
    head, keys = rest.split("$")
    iterations, salt_b64 = head.split(":")
    stored_b64, server_b64 = keys.split(":")
    assert (method, iterations, base64.b64decode(salt_b64)) == ("SCRAM-SHA-256", "4096", salt)
    # RFC 5802: StoredKey = H(HMAC(SaltedPassword, "Client Key")),
    #           ServerKey = HMAC(SaltedPassword, "Server Key")
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", salt, 4096)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    assert base64.b64decode(stored_b64) == hashlib.sha256(client_key).digest()
    assert base64.b64decode(server_b64) == hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    assert "pencil" not in verifier
    assert roles.scram_sha_256("pencil") != roles.scram_sha_256("pencil")  # a fresh salt each time


WHEN = datetime(2026, 11, 28, 18, 0, 0, 999_999, tzinfo=UTC)


def test_create_role_says_every_dangerous_attribute_off_and_the_servers_own_expiry() -> None:
    text = roles.create_role("aa-x-uid", "SCRAM-SHA-256$4096:c2FsdA==$a:b", WHEN, 5).as_string()
    assert text == (
        'CREATE ROLE "aa-x-uid" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION '
        "NOBYPASSRLS CONNECTION LIMIT 5 PASSWORD 'SCRAM-SHA-256$4096:c2FsdA==$a:b' "
        "VALID UNTIL '2026-11-28T18:00:00Z'"  # whole seconds, rounded down: never later than expiresAt
    )


def test_adoption_never_names_what_only_a_superuser_may_name() -> None:
    text = roles.alter_role("aa-x-uid", "v", WHEN, 3).as_string()
    assert text.startswith(
        'ALTER ROLE "aa-x-uid" WITH LOGIN NOCREATEDB NOCREATEROLE NOINHERIT CONNECTION LIMIT 3'
    )
    assert not any(word in text for word in ("SUPERUSER", "REPLICATION", "BYPASSRLS"))


@pytest.mark.parametrize(
    ("statement", "sql"),
    [
        (roles.comment_role('a"b', "it's ours"), "COMMENT ON ROLE \"a\"\"b\" IS 'it''s ours'"),
        (roles.disable_login("r"), 'ALTER ROLE "r" WITH NOLOGIN CONNECTION LIMIT 0'),
        (roles.revoke_membership("r", "pg_read_all_data"), 'REVOKE "pg_read_all_data" FROM "r"'),
        (roles.join_as_admin("r"), 'GRANT "r" TO CURRENT_USER'),
        (roles.reassign_owned("r", "keeper"), 'REASSIGN OWNED BY "r" TO "keeper"'),
        (roles.drop_owned("r"), 'DROP OWNED BY "r"'),
        (roles.drop_role("r"), 'DROP ROLE IF EXISTS "r"'),
    ],
)
def test_role_statements_quote_identifiers_and_literals(statement: object, sql: str) -> None:
    assert statement.as_string() == sql  # type: ignore[attr-defined]
