"""Typed views of the three custom resources, parsed once at the edge.

Handlers receive raw dicts from the API server; everything below `reconcile` works on these models.
The CRD schema (crds/) already rejects malformed objects at `kubectl apply`; these models repeat the
checks that matter so that an object written before a schema change, or by a client that skipped
validation, fails with a clear `InvalidSpec` instead of a KeyError deep inside a provider.
Field names follow Python; aliases follow the CRDs (camelCase).
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    model_validator,
)

_DURATION = re.compile(r"^(?:[0-9]+(?:ms|s|m|h|d))+$")
_PART = re.compile(r"([0-9]+)(ms|s|m|h|d)")
_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
# Ten years: far beyond any sane identity lifetime or audit-record retention, and far enough below
# datetime's range that `now + duration` can never overflow. Longer durations count as this much
# (they are not refused): the CRDs accept every value the grammar allows, and the model must accept
# exactly what the CRDs accept, or an edit `kubectl apply` took would fail the account later, at a
# point where it can no longer be refused (a Ready account whose timer could not parse it).
MAX_DURATION = timedelta(days=3650)
MAX_DURATION_TEXT = "3650d"


def parse_duration(text: str) -> timedelta:
    """Go-style duration with days: "45s", "30m", "1h30m", "2d", "0s". No sign, no fractions.
    Anything longer than MAX_DURATION counts as MAX_DURATION."""
    if not isinstance(text, str) or not _DURATION.fullmatch(text):
        raise ValueError(
            f"invalid duration {text!r}: use a number and a unit (ms, s, m, h, d), e.g. 30m or 1h30m"
        )
    seconds = sum(int(n) * _UNIT[u] for n, u in _PART.findall(text))
    return timedelta(seconds=min(seconds, MAX_DURATION.total_seconds()))


def describe_errors(exc: ValidationError) -> str:
    """A pydantic error as one line a user can act on: "spec.lifetime: invalid duration ...; ..."."""
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}{_given(e)}" for e in exc.errors())


def _given(error: Any) -> str:
    """The offending value, when it is a short string (spec fields are never credentials)."""
    value = error.get("input")
    return f" (got {value!r})" if isinstance(value, str) and len(value) <= 64 else ""


def format_duration(value: timedelta) -> str:
    """Inverse of parse_duration for whole seconds: 5400s -> "1h30m"; 0 -> "0s"."""
    seconds = int(value.total_seconds())
    if seconds == 0:
        return "0s"
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            out.append(f"{count}{unit}")
    return "".join(out)


def _to_duration(value: Any) -> Any:
    return parse_duration(value) if isinstance(value, str) else value


Duration = Annotated[timedelta, BeforeValidator(_to_duration), PlainSerializer(format_duration)]


class SpecModel(BaseModel):
    """Frozen, camelCase aliases, unknown fields ignored: the base of every typed spec block."""

    model_config = ConfigDict(populate_by_name=True, frozen=True, extra="ignore")


# An object name (DNS subdomain), as the CRD's pattern says: "." or ".." would otherwise reach the API
# as a path segment (GET .../accountproviders/. lists them all).
OBJECT_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class ProviderRef(SpecModel):
    kind: Literal["AccountProvider", "ClusterAccountProvider"] = "AccountProvider"
    name: str = Field(min_length=1, max_length=253, pattern=OBJECT_NAME)


class Scope(SpecModel):
    """Permissions granted on resources; the grammar of both is the provider's (see the CRD docs).

    `resource_names` (Kubernetes only) narrows every resource of the scope to those object names, as
    an RBAC rule's resourceNames does; `resources` then keeps RBAC's own meaning of a slash
    (`pods/log` is the log subresource of pods, never a pod named "log")."""

    permissions: list[str] = Field(min_length=1)
    resources: list[str] = Field(default_factory=list)
    resource_names: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list, alias="resourceNames"
    )


class AgentAccountSpec(SpecModel):
    provider_ref: ProviderRef = Field(alias="providerRef")
    lifetime: Duration | None = None
    scopes: list[Scope] = Field(min_length=1)
    secret_name: str | None = Field(default=None, alias="secretName")
    keep_expired_for: Duration = Field(default=timedelta(hours=1), alias="keepExpiredFor")
    dry_run: bool = Field(default=False, alias="dryRun")


class AccountRef(SpecModel):
    """The provider-side identity. Never a secret: it is written to status."""

    kind: str
    name: str = ""
    namespace: str = ""
    id: str = ""


Phase = Literal["Pending", "Ready", "Expired", "Failed", "DryRun"]


class AgentAccountStatus(SpecModel):
    phase: Phase | None = None
    provider: str | None = None
    issued_at: datetime | None = Field(default=None, alias="issuedAt")
    expires_at: datetime | None = Field(default=None, alias="expiresAt")
    revoked_at: datetime | None = Field(default=None, alias="revokedAt")
    secret_name: str | None = Field(default=None, alias="secretName")
    account_ref: AccountRef | None = Field(default=None, alias="accountRef")
    observed_generation: int | None = Field(default=None, alias="observedGeneration")


class Requester(SpecModel):
    """Who asked for an AgentAccount, exactly as the API server authenticated them at admission.

    Every permission an account carries is checked against this identity (SubjectAccessReview), so
    it is only ever taken from an admission request, never from anything a user wrote."""

    username: str
    uid: str = ""
    groups: list[str] = Field(default_factory=list)
    extra: dict[str, list[str]] = Field(default_factory=dict)


class AgentAccount(SpecModel):
    """An AgentAccount as the reconciler sees it: identity, spec and status."""

    namespace: str
    name: str
    uid: str
    generation: int = 1
    spec: AgentAccountSpec
    status: AgentAccountStatus = AgentAccountStatus()
    annotations: dict[str, str] = Field(default_factory=dict)
    created_at: datetime | None = None

    @property
    def secret_name(self) -> str:
        if self.spec.secret_name:
            return self.spec.secret_name
        name = f"{self.name}-credentials"
        if len(name) <= 253:
            return name
        digest = hashlib.sha256(self.name.encode()).hexdigest()[:10]  # stable, and still a valid name
        return f"{self.name[:230].rstrip('-.')}-{digest}-credentials"

    @classmethod
    def for_revocation(cls, body: dict[str, Any]) -> AgentAccount:
        """The account as revocation needs it, even when its spec no longer validates (written before
        a schema change, or by a client that skipped validation). Revoking needs who it is, its status
        and its providerRef, never a valid spec: an invalid spec must not keep an identity alive. With
        no valid keepExpiredFor, the record is kept (MAX_DURATION) rather than deleted early."""
        try:
            return cls.from_body(body)
        except ValidationError:
            pass
        meta, raw = body.get("metadata", {}), body.get("spec") or {}
        try:
            ref = ProviderRef.model_validate(raw.get("providerRef") or {})
        except ValidationError:
            ref = ProviderRef.model_construct(kind="AccountProvider", name="")
        try:
            status = AgentAccountStatus.model_validate(body.get("status") or {})
        except ValidationError:
            status = AgentAccountStatus()
        secret = raw.get("secretName")
        spec = AgentAccountSpec.model_construct(
            provider_ref=ref,
            lifetime=None,
            scopes=[],
            secret_name=secret if isinstance(secret, str) and secret else None,
            keep_expired_for=MAX_DURATION,
            dry_run=False,
        )
        return cls.model_construct(
            namespace=str(meta.get("namespace", "")),
            name=str(meta.get("name", "")),
            uid=str(meta.get("uid", "")),
            generation=int(meta.get("generation", 1)),
            spec=spec,
            status=status,
            annotations=dict(meta.get("annotations") or {}),
            created_at=None,
        )

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> AgentAccount:
        meta = body.get("metadata", {})
        return cls.model_validate(
            {
                "namespace": meta.get("namespace", ""),
                "name": meta.get("name", ""),
                "uid": meta.get("uid", ""),
                "generation": meta.get("generation", 1),
                "spec": body.get("spec", {}),
                "status": body.get("status") or {},
                "annotations": meta.get("annotations") or {},
                "created_at": meta.get("creationTimestamp"),
            }
        )


class SecretKeyRef(SpecModel):
    namespace: str | None = None
    name: str
    key: str = "token"


class ScopePattern(SpecModel):
    """One entry of a provider's allowedScopes: shell-style patterns (fnmatch) for permissions and
    resources. An account's scope is allowed when every (permission, resource) pair it asks for
    matches one entry."""

    permissions: list[str] = Field(min_length=1)
    resources: list[str] = Field(default_factory=lambda: ["*"])


class LabelSelector(SpecModel):
    match_labels: dict[str, str] = Field(default_factory=dict, alias="matchLabels")
    match_expressions: list[dict[str, Any]] = Field(default_factory=list, alias="matchExpressions")


class ProviderPolicy(SpecModel):
    """What a provider will issue, whoever asks: the platform team's limits on top of RBAC."""

    max_lifetime: Duration = Field(default=timedelta(hours=24), alias="maxLifetime")
    default_lifetime: Duration = Field(default=timedelta(hours=1), alias="defaultLifetime")
    allowed_namespaces: LabelSelector | None = Field(default=None, alias="allowedNamespaces")
    allowed_scopes: list[ScopePattern] | None = Field(default=None, alias="allowedScopes")
    max_active_accounts: int | None = Field(default=None, alias="maxActiveAccounts", ge=0)
    require_approval: bool = Field(default=False, alias="requireApproval")


class ProviderSpecBase(SpecModel):
    """A (Cluster)AccountProvider spec: its policy plus exactly one provider block.

    The blocks themselves are declared by the provider table (`agentaccounts.providers.ProviderSpec`
    adds one optional field per provider type), so this module never names a provider: the
    exactly-one rule, `type` and `block` are derived from whichever block fields the concrete model has.
    """

    policy: ProviderPolicy = ProviderPolicy()

    @classmethod
    def block_names(cls) -> list[str]:
        return [name for name in cls.model_fields if name != "policy"]

    @model_validator(mode="after")
    def _exactly_one_block(self) -> ProviderSpecBase:
        names = self.block_names()
        if sum(getattr(self, name) is not None for name in names) != 1:
            raise ValueError(f"exactly one provider block must be set ({' or '.join(names)})")
        return self

    @property
    def type(self) -> str:
        """The provider type: the name of the block that is set (also status.type and Provider.type)."""
        return next(name for name in self.block_names() if getattr(self, name) is not None)

    @property
    def block(self) -> SpecModel:
        block: SpecModel = getattr(self, self.type)
        return block

    @property
    def max_lifetime(self) -> timedelta:
        return self.policy.max_lifetime

    @property
    def default_lifetime(self) -> timedelta:
        return self.policy.default_lifetime


class ProviderObject(SpecModel):
    """A resolved (Cluster)AccountProvider: where it lives (namespace "" for cluster-scoped), its spec."""

    kind: str
    namespace: str = ""
    name: str
    spec: ProviderSpecBase
