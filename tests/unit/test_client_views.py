"""client/views.py: what a caller is shown (summary, env lines, the private kubeconfig, status text,
the list table), and client/errors.py: which exit code each API failure becomes."""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agentaccounts.client.accounts import revoking_lifetime
from agentaccounts.client.errors import EXIT_CODES, translated
from agentaccounts.client.views import (
    Credentials,
    RequestedAccount,
    countdown,
    env_lines,
    remove_private_kubeconfig,
    status_text,
    table,
    view,
)
from agentaccounts.kube import KubeApiError

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
READY: dict[str, Any] = {
    "metadata": {
        "name": "triage",
        "namespace": "agents",
        "generation": 1,
        "annotations": {"agentaccounts.dev/requested-by": "mallory"},  # unsigned: status wins
    },
    "spec": {
        "providerRef": {"kind": "ClusterAccountProvider", "name": "in-cluster"},
        "lifetime": "30m",
        "scopes": [{"permissions": ["get", "list"], "resources": ["configmaps"]}],
    },
    "status": {
        "phase": "Ready",
        "provider": "kubernetes",
        "issuedAt": "2030-01-01T11:50:00Z",
        "expiresAt": "2030-01-01T12:20:00Z",
        "secretName": "triage-credentials",
        "requester": {"username": "alice", "groups": ["devs"]},
        "accountRef": {
            "kind": "ServiceAccount",
            "name": "agentaccount-triage",
            "namespace": "agents",
            "id": "u1",
        },
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "Issued", "message": "credentials in ..."}
        ],
    },
}


def test_the_view_says_everything_but_a_credential() -> None:
    summary = view(READY, NOW)
    assert summary.model_dump(mode="json", by_alias=True) == {
        "name": "triage",
        "namespace": "agents",
        "phase": "Ready",
        "reason": "Issued",
        "message": "credentials in ...",
        "provider": {"kind": "ClusterAccountProvider", "name": "in-cluster", "type": "kubernetes"},
        "lifetime": "30m",
        "issuedAt": "2030-01-01T11:50:00Z",
        "expiresAt": "2030-01-01T12:20:00Z",
        "expiresInSeconds": 1200,
        "revokedAt": None,
        "secretName": "triage-credentials",
        "scopes": ["get,list:configmaps"],
        "requester": "alice",
        "accountRef": {
            "kind": "ServiceAccount",
            "name": "agentaccount-triage",
            "namespace": "agents",
            "id": "u1",
        },
        "shortenedBy": None,
    }


def test_a_revoked_account_says_who_ended_it() -> None:
    revoked = json.loads(json.dumps(READY))
    payload = {"username": "alice", "shortenedBy": {"username": "bob", "at": "2030-01-01T12:00:00+00:00"}}
    revoked["metadata"]["annotations"]["agentaccounts.dev/requester"] = json.dumps(payload)
    summary = view(revoked, NOW)
    assert summary.shortened_by == "bob at 2030-01-01T12:00:00+00:00"
    assert "Shortened: by bob at 2030-01-01T12:00:00+00:00" in status_text(summary).splitlines()
    revoked["metadata"]["annotations"]["agentaccounts.dev/requester"] = "not json"
    assert view(revoked, NOW).shortened_by is None


def test_a_fresh_account_shows_its_stamped_requester_and_no_expiry() -> None:
    fresh = {"metadata": READY["metadata"], "spec": READY["spec"]}
    summary = view(fresh, NOW)
    assert (summary.requester, summary.phase, summary.expires_in_seconds) == ("mallory", None, None)
    assert summary.provider.type is None


@pytest.mark.parametrize(
    ("seconds", "text"), [(1200, "in 20m"), (5400, "in 1h30m"), (-65, "1m5s ago"), (None, "-")]
)
def test_countdown(seconds: int | None, text: str) -> None:
    assert countdown(seconds) == text


def test_status_text_for_people() -> None:
    text = status_text(view(READY, NOW))
    assert text.splitlines() == [
        "Name:      agents/triage",
        "Phase:     Ready (Issued)",
        "Message:   credentials in ...",
        "Provider:  ClusterAccountProvider/in-cluster (kubernetes)",
        "Lifetime:  30m",
        "Issued:    2030-01-01T11:50:00Z",
        "Expires:   2030-01-01T12:20:00Z (in 20m)",
        "Revoked:   -",
        "Requester: alice",
        "Identity:  ServiceAccount agents/agentaccount-triage (id u1)",
        "Secret:    triage-credentials",
        "Scope:     get,list:configmaps",
    ]


def test_the_table_lines_up_like_kubectls() -> None:
    other = json.loads(json.dumps(READY))
    other["metadata"].update(name="a-much-longer-name", namespace="ops")
    assert table([view(READY, NOW), view(other, NOW)], all_namespaces=True).splitlines() == [
        "NAMESPACE   NAME                 PHASE   PROVIDER     EXPIRES   REQUESTER",
        "agents      triage               Ready   in-cluster   in 20m    alice",
        "ops         a-much-longer-name   Ready   in-cluster   in 20m    alice",
    ]


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_env_for_kubernetes_exports_only_kubeconfig_pointing_at_a_private_file(private_tmp: Path) -> None:
    credentials = Credentials(secret_name="s", data={"kubeconfig": "apiVersion: v1\n", "token": "t0ken"})
    lines = env_lines(view(READY, NOW), credentials)

    assert lines[0] == "# AgentAccount agents/triage: expires 2030-01-01T12:20:00Z"
    [export] = lines[1:]
    path = Path(shlex.split(export.removeprefix("export KUBECONFIG="))[0])
    assert path.parent.parent == private_tmp and path.read_text() == "apiVersion: v1\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert credentials.kubeconfig_path == str(path)
    assert "t0ken" not in "\n".join(lines)
    remove_private_kubeconfig(str(path))
    assert not path.parent.exists()


def test_only_private_kubeconfigs_are_ever_removed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "home" / "kubeconfig"
    elsewhere.parent.mkdir()
    elsewhere.write_text("mine")
    remove_private_kubeconfig(str(elsewhere))
    remove_private_kubeconfig(None)
    assert elsewhere.read_text() == "mine"


def test_env_for_cloudflare_exports_every_variable_shell_quoted() -> None:
    data = {
        "CLOUDFLARE_API_TOKEN": "abc'; rm -rf / #",
        "CLOUDFLARE_ACCOUNT_ID": "0123",
        "AWS_ACCESS_KEY_ID": "id",
        "not-a-variable": "x",
    }
    lines = env_lines(view(READY, NOW), Credentials(secret_name="s", data=data))
    script = (
        "\n".join(lines)
        + '\nprintf "%s|%s|%s" "$CLOUDFLARE_API_TOKEN" "$CLOUDFLARE_ACCOUNT_ID" "$AWS_ACCESS_KEY_ID"'
    )
    out = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, check=True, env={"PATH": os.environ["PATH"]}
    )
    assert out.stdout == "abc'; rm -rf / #|0123|id"
    assert not any("not-a-variable" in line for line in lines)


def test_the_json_answer_is_camel_case_with_its_credentials() -> None:
    credentials = Credentials(secret_name="triage-credentials", data={"token": "t"})
    answer = RequestedAccount.model_validate({**view(READY, NOW).model_dump(), "credentials": credentials})
    dumped = answer.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert dumped["expiresAt"] == "2030-01-01T12:20:00Z"
    assert dumped["credentials"] == {"secretName": "triage-credentials", "data": {"token": "t"}}


# -- errors: one exit code per failure ------------------------------------------------------------

WEBHOOK = (
    'admission webhook "check.agentaccounts.dev" denied the request: NotPermitted: rule delegation: '
    "alice may not list configmaps in namespace agents, so no agent may be given it on their behalf"
)


@pytest.mark.parametrize(
    ("status", "detail", "code", "says"),
    [
        (0, "", 3, "cannot reach the API server"),
        (401, "Unauthorized", 3, "does not accept these credentials"),
        (
            403,
            WEBHOOK,
            4,
            "refused by the operator's admission: NotPermitted: rule delegation: alice may not",
        ),
        (403, 'agentaccounts is forbidden: User "bob" cannot create', 4, "refused by RBAC (doing it): "),
        (409, 'agentaccounts "x" already exists', 2, "already exists"),
        (422, "spec.lifetime: Invalid value", 2, "Invalid value"),
        (500, "failed calling webhook", 1, "doing it failed: failed calling webhook"),
    ],
)
def test_api_errors_become_exit_codes(status: int, detail: str, code: int, says: str) -> None:
    error = translated(KubeApiError(f"create AgentAccount: HTTP {status}", status, detail), "doing it")
    assert error.exit_code == code and says in error.message


def test_an_error_is_always_one_line() -> None:
    error = translated(KubeApiError("x", 500, "first\nsecond\n  third"), "doing it")
    assert error.message == "doing it failed: first second third"


def test_exit_codes_are_distinct_and_documented() -> None:
    codes = [code for code, _ in EXIT_CODES]
    assert codes == list(range(9))
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for code, _ in EXIT_CODES[1:]:
        assert f"| {code} |" in readme


# -- revoke: the lifetime that ends an account now ------------------------------------------------


@pytest.mark.parametrize(
    ("now", "lifetime"),
    [
        (datetime(2030, 1, 1, 12, 0, 0, 250000, tzinfo=UTC), "600250ms"),  # lived 10m0.25s
        (datetime(2030, 1, 1, 11, 50, tzinfo=UTC), "1ms"),  # never zero
        (datetime(2030, 1, 1, 11, 49, tzinfo=UTC), "1ms"),  # a client clock behind the issue
        (datetime(2030, 1, 1, 12, 30, tzinfo=UTC), "1799999ms"),  # a client clock past the expiry
    ],
)
def test_revoking_sets_the_lifetime_lived_so_far(now: datetime, lifetime: str) -> None:
    status = {"issuedAt": "2030-01-01T11:50:00Z", "expiresAt": "2030-01-01T12:20:00Z"}
    assert revoking_lifetime(status, now) == lifetime
