"""The provider contract: what every way of minting an agent identity must do, and nothing more.

A provider turns an `IssueRequest` into a real identity at its service and returns an `Issued` record;
`revoke` undoes it. The reconciler owns everything around that: computing the expiry, the Secret
(conflict checks, labels, owner reference), status, Events, metrics and timing. Providers own only
their service.

Rules every provider follows:
- **Idempotent issue.** `issue` may run again after a crash at any point. It must find what an earlier
  attempt created (by deterministic name or tag derived from the account UID, or by `request.existing`)
  and adopt it, never create a duplicate.
- **Record early.** As soon as a provider-side object exists, call `record(ref)` so its identity is in
  status before anything else can fail; a crash after that leaves nothing untraceable.
- **Revoking what is gone is success.** `revoke` after a previous `revoke`, or for a half-issued
  account, returns normally.
- **Errors from `agentaccounts.errors` only**, translated at the provider's boundary with
  `raise ... from exc`, and never containing a credential.
- **No provider imports another.** Shared helpers live outside `providers/`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from agentaccounts.models import AccountRef, Scope


@dataclass(frozen=True)
class IssueRequest:
    """Everything a provider may know about the account it issues for."""

    namespace: str
    name: str
    uid: str
    scopes: list[Scope]
    expires_at: datetime
    secret_name: str
    existing: AccountRef | None = None  # from status: what an earlier attempt recorded


@dataclass(frozen=True)
class Issued:
    """The result of a successful issue.

    `secret_data` is what goes into the Secret (string values; the reconciler encodes them). `None`
    means "keep the Secret's current data": a provider that updated an identity in place (e.g. a new
    expiry on an existing token whose value cannot be read back) returns None.
    """

    account_ref: AccountRef
    secret_data: dict[str, str] | None
    note: str = ""  # what the provider does on its own (goes to status.providerNote)
    extra_labels: dict[str, str] = field(default_factory=dict)


Recorder = Callable[[AccountRef], Awaitable[None]]


class Provider(Protocol):
    """One configured provider (an AccountProvider or ClusterAccountProvider, resolved)."""

    type: str  # "kubernetes", "cloudflare"

    async def validate(self, request: IssueRequest) -> None:
        """Raise a PermanentError if the scopes cannot be granted; called before anything is created."""

    async def plan(self, request: IssueRequest) -> dict[str, Any]:
        """What `issue` would create for this request (for dry runs and status.plan); no side effects.
        Never contains a credential."""

    async def issue(self, request: IssueRequest, record: Recorder) -> Issued:
        """Create (or adopt) the identity and return its credentials."""

    async def revoke(self, request: IssueRequest, ref: AccountRef | None) -> None:
        """Destroy the identity; what is already gone is success."""
