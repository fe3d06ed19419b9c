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

Each provider type declares itself once, as a `ProviderType` in its package's `__init__.py`; the table
in `providers/__init__.py` lists them, and everything else (the spec model's blocks and exactly-one
rule, `type`, building, admission checks, the orphan sweep) is derived from that table.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import httpx

from agentaccounts.clock import Clock, utcnow
from agentaccounts.kube import Kube
from agentaccounts.models import AccountRef, AgentAccount, ProviderObject, Requester, Scope, SpecModel
from agentaccounts.settings import Settings


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
    # The id the provider's own audit records name this credential by (Kubernetes: "JTI=<the token's
    # jti>", as audit events carry it in user.extra["authentication.kubernetes.io/credential-id"]).
    # Not a secret. "" when the provider has none or minted no new credential.
    credential_id: str = ""


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


@dataclass(frozen=True)
class ActivityEntry:
    """One request an agent identity made, as the provider's own records show it. Never a credential."""

    time: str  # RFC 3339, UTC
    verb: str  # Kubernetes: the audit verb ("get", "list", ...); Cloudflare: the audit action ("create", ...)
    resource: str  # "configmaps", "dns_records", ...
    name: str = ""
    namespace: str = ""  # the Kubernetes namespace the request was for, or ""
    code: int = 0  # the HTTP response code; 0 when the source does not say
    audit_id: str = ""  # the source's own id of this record


@dataclass(frozen=True)
class ProviderActivity:
    """What a provider's own records say an identity did between two moments."""

    entries: list[ActivityEntry]
    complete: bool  # False when the source could not be read in full (or at all)
    note: str = ""  # what this trail cannot show, and why (for people: status and the CLI show it)


class ReportsActivity(Protocol):
    """A provider that can read back what an identity did (Cloudflare's account audit log). Optional:
    the reconciler asks `isinstance(provider, ReportsActivity)`-style (hasattr) before calling."""

    async def activity(self, ref: AccountRef, since: datetime, before: datetime) -> ProviderActivity:
        """The identity's recorded activity in [since, before); never raises for a missing permission
        (that is an empty, incomplete trail whose note says why)."""


@dataclass
class Deps:
    """What building a provider may use, made once per operator process (`app.build`): the Kubernetes
    adapter, the operator's settings, the one HTTP client (owned and closed by whoever made it), the
    clock, and per-process state a provider type keeps across builds (`shared`, keyed by type name,
    e.g. Cloudflare's request budgets)."""

    kube: Kube
    settings: Settings
    http: httpx.AsyncClient
    now: Clock = utcnow
    shared: dict[str, Any] = field(default_factory=dict)


class Reviewer(Protocol):
    """What admission lends a provider type's own checks (`access.Access` implements it)."""

    settings: Settings

    async def allowed(self, requester: Requester, attributes: dict[str, str]) -> bool:
        """A SubjectAccessReview for the requester."""

    async def check_secret_names(self, namespace: str, names: list[str]) -> None:
        """Refuse (rule never-grantable) if any of these Secrets is one no agent may be granted."""


Builder = Callable[[ProviderObject, Deps], Awaitable[Provider]]
Admit = Callable[[AgentAccount, Requester, Reviewer], Awaitable[None]]
# (provider, live AgentAccount UIDs — call it AFTER listing candidates, so that anything listed was
# made before the live set was read —, deps) -> what was deleted
Sweep = Callable[[Provider, Callable[[], Awaitable[set[str]]], Deps], Awaitable[list[str]]]
GrantsSecret = Callable[[Kube, str, str, str], Awaitable[str | None]]  # (kube, namespace, secret, uid)


@dataclass(frozen=True)
class ProviderType:
    """One kind of provider, declared once: the operator derives everything about it from this."""

    name: str  # the spec block's key in a (Cluster)AccountProvider, status.type, Provider.type
    block: type[SpecModel]  # the block's model; the CRDs carry the same block (a unit test checks)
    build: Builder  # a configured provider from its object; cheap, per use
    # Provider-specific refusals at admission and again before issue (never-grantable, delegation).
    admit: Admit
    # True when every permission is checked against the requester's own RBAC (delegation), so a
    # provider without policy.allowedScopes needs no allow-list; False: no allowedScopes, no issue.
    rbac_delegated: bool = False
    # Names of the Secrets (in the account's namespace) these scopes would let the agent read.
    granted_secrets: Callable[[list[Scope]], list[str]] = lambda _: []
    # True when revoking needs nothing from the provider object, so an identity is still revoked
    # after its provider object was deleted (built from a default block).
    revocable_without_object: bool = False
    # Which identity of this type, other than the given account's, is granted the named Secret in a
    # namespace (a description such as "Role ns/name"), or None. Asked before any account's Secret is
    # written, so no agent can read another agent's credentials.
    grants_secret: GrantsSecret | None = None
    # Deletes provider-side identities no live AgentAccount records (crash leftovers); None: none.
    sweep: Sweep | None = None
