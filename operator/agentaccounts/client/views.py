"""What a caller is shown about an account, in one shape for the CLI's `json` and the MCP tools.

`AccountView` is everything status and metadata say, never a credential: the Secret's name, not its
content. `Credentials` are the Secret's content, shown only by `request` (CLI `--output env|json|
kubeconfig`, the MCP `request_account` result) to the caller who just created the account.

`--output env` must not put a Kubernetes token in the shell's environment or history, so it writes
the kubeconfig into a fresh directory only the caller can read (0700, the file 0600) and exports
KUBECONFIG pointing at it. Cloudflare's keys are environment variables already (wrangler and the AWS
SDKs read them), so they are exported as they are. Every value is shell-quoted (shlex.quote).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import tempfile
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from agentaccounts import stamps
from agentaccounts.client.scopes import format_scope
from agentaccounts.models import format_duration, parse_duration

_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
PRIVATE_PREFIX = "agentaccount-"  # the private directories write_private_kubeconfig makes


class View(BaseModel):
    """camelCase on the wire, like the Kubernetes objects it describes (dump with by_alias=True)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class ProviderView(View):
    kind: str = Field(description="AccountProvider (namespaced) or ClusterAccountProvider")
    name: str
    type: str | None = Field(None, description="kubernetes or cloudflare, once issued")


class AccountView(View):
    """An AgentAccount as its requester sees it: never a credential."""

    name: str
    namespace: str
    phase: str | None = Field(
        None,
        description="Pending, Ready (credentials valid), Expired (revoked; kept as the audit record), "
        "Failed, DryRun",
    )
    reason: str | None = Field(
        None, description="the Ready condition's reason, e.g. Issued, AwaitingApproval"
    )
    message: str | None = None
    provider: ProviderView
    lifetime: str | None = Field(None, description="as asked; counted from issuedAt")
    issued_at: str | None = None
    expires_at: str | None = Field(None, description="when the credentials stop working (RFC 3339, UTC)")
    expires_in_seconds: int | None = Field(None, description="from now; negative once past")
    revoked_at: str | None = None
    secret_name: str | None = Field(None, description="the Secret holding the credentials while Ready")
    scopes: list[str] = Field(default_factory=list, description="PERMISSIONS:RESOURCES[:NAMES] each")
    requester: str | None = Field(None, description="who the operator checked the permissions against")
    account_ref: dict[str, str] | None = Field(None, description="the provider-side identity; not a secret")
    shortened_by: str | None = Field(None, description="who last ended it early (revoke), and when")


class Credentials(View):
    """The Secret's content: the identity itself. Only in the answer to the request that created it."""

    secret_name: str
    data: dict[str, str] = Field(description="every key of the Secret, e.g. kubeconfig, token, ca.crt")
    kubeconfig_path: str | None = Field(None, description="a private copy of data.kubeconfig (mode 0600)")


class RequestedAccount(AccountView):
    """The answer to a request: the account, and (once Ready) its credentials."""

    credentials: Credentials | None = Field(None, description="absent when not waited for")


def view(body: dict[str, Any], now: datetime | None = None) -> AccountView:
    meta, spec, status = body.get("metadata") or {}, body.get("spec") or {}, body.get("status") or {}
    ready: dict[str, Any] = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
    ref = spec.get("providerRef") or {}
    expires_at = status.get("expiresAt")
    remaining = None
    if expires_at:
        moment = datetime.fromisoformat(str(expires_at).replace("Z", "+00:00"))
        remaining = int((moment - (now or datetime.now(UTC))).total_seconds())
    requester = (status.get("requester") or {}).get("username") or (meta.get("annotations") or {}).get(
        stamps.REQUESTED_BY
    )
    return AccountView(
        shortened_by=_shortened_by(meta.get("annotations") or {}),
        name=meta.get("name", ""),
        namespace=meta.get("namespace", ""),
        phase=status.get("phase"),
        reason=ready.get("reason"),
        message=ready.get("message"),
        provider=ProviderView(
            kind=ref.get("kind", "AccountProvider"), name=ref.get("name", ""), type=status.get("provider")
        ),
        lifetime=spec.get("lifetime"),
        issued_at=status.get("issuedAt"),
        expires_at=expires_at,
        expires_in_seconds=remaining,
        revoked_at=status.get("revokedAt"),
        secret_name=status.get("secretName"),
        scopes=[format_scope(s) for s in spec.get("scopes") or []],
        requester=requester,
        account_ref={str(k): str(v) for k, v in (status.get("accountRef") or {}).items()} or None,
    )


def _shortened_by(annotations: dict[str, str]) -> str | None:
    """From the operator-signed requester stamp (stamps.SHORTENED_BY): "bob at 2030-01-01T12:00:00+00:00"."""
    try:
        shortened = json.loads(annotations.get(stamps.REQUESTER) or "{}").get(stamps.SHORTENED_BY) or {}
    except (ValueError, AttributeError):
        return None
    return (
        f"{shortened.get('username')} at {shortened.get('at')}"
        if isinstance(shortened, dict) and shortened
        else None
    )


def countdown(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    text = format_duration(parse_duration(f"{abs(seconds)}s"))
    return f"in {text}" if seconds >= 0 else f"{text} ago"


def write_private_kubeconfig(text: str) -> str:
    """The kubeconfig in a fresh directory only this user may enter; returns the file's path."""
    directory = tempfile.mkdtemp(prefix=PRIVATE_PREFIX)  # mode 0700
    path = os.path.join(directory, "kubeconfig")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


def remove_private_kubeconfig(path: str | None) -> None:
    """Remove a file write_private_kubeconfig made, and its directory (once the account is revoked)."""
    if path and os.path.basename(os.path.dirname(path)).startswith(PRIVATE_PREFIX):
        with contextlib.suppress(OSError):
            os.unlink(path)
            os.rmdir(os.path.dirname(path))


def env_lines(account: AccountView, credentials: Credentials) -> list[str]:
    """`export` lines for `eval`: KUBECONFIG for Kubernetes, the Secret's variables for Cloudflare."""
    lines = [f"# AgentAccount {account.namespace}/{account.name}: expires {account.expires_at}"]
    if "kubeconfig" in credentials.data:
        path = credentials.kubeconfig_path or write_private_kubeconfig(credentials.data["kubeconfig"])
        credentials.kubeconfig_path = path
        return [*lines, f"export KUBECONFIG={shlex.quote(path)}"]
    names = sorted(k for k in credentials.data if _ENV_NAME.match(k))
    return [*lines, *(f"export {k}={shlex.quote(credentials.data[k])}" for k in names)]


def status_text(account: AccountView) -> str:
    """`agentaccounts status NAME`: one `key: value` line each, for people."""
    phase = account.phase or "(not handled yet)"
    provider = f"{account.provider.kind}/{account.provider.name}"
    expires = account.expires_at and f"{account.expires_at} ({countdown(account.expires_in_seconds)})"
    ref = account.account_ref or {}
    where = "/".join(x for x in (ref.get("namespace"), ref.get("name")) if x)
    identity = " ".join(x for x in (ref.get("kind"), where, ref.get("id") and f"(id {ref['id']})") if x)
    rows = [
        ("Name", f"{account.namespace}/{account.name}"),
        ("Phase", f"{phase} ({account.reason})" if account.reason else phase),
        ("Message", account.message or ""),
        ("Provider", f"{provider} ({account.provider.type})" if account.provider.type else provider),
        ("Lifetime", account.lifetime or "(the provider's default)"),
        ("Issued", account.issued_at or "-"),
        ("Expires", expires or "-"),
        ("Revoked", account.revoked_at or "-"),
        ("Shortened", f"by {account.shortened_by}" if account.shortened_by else ""),
        ("Requester", account.requester or "-"),
        ("Identity", identity or "-"),
        ("Secret", account.secret_name or "-"),
    ]
    rows += [("Scope", scope) for scope in account.scopes]
    return "\n".join(f"{key + ':':<11}{value}" for key, value in rows if value != "")


def table(accounts: list[AccountView], all_namespaces: bool) -> str:
    """`agentaccounts list`: kubectl-style columns."""
    header = (["NAMESPACE"] if all_namespaces else []) + ["NAME", "PHASE", "PROVIDER", "EXPIRES", "REQUESTER"]
    rows = [header] + [
        ([a.namespace] if all_namespaces else [])
        + [a.name, a.phase or "-", a.provider.name, countdown(a.expires_in_seconds), a.requester or "-"]
        for a in accounts
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )
