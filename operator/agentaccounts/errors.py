"""The exception tree, and the one place where "what went wrong" becomes "what to do about it".

    AgentAccountsError                 base of everything the operator raises on purpose
    ├── PermanentError                 retrying cannot help: the spec or the provider said no
    │   ├── InvalidSpec                a spec the CRD schema let through but the operator cannot use
    │   ├── LifetimeExceeded           lifetime over the provider's maxLifetime (or a vendor's hard cap)
    │   ├── UnknownResource            a Kubernetes scope names a resource the API server does not serve
    │   ├── UnknownPermission          a Cloudflare scope names a permission group that does not exist
    │   ├── SecretConflict             the target Secret exists and belongs to someone else
    │   ├── ObjectConflict             a provider-side object with our name exists and is not ours
    │   ├── ProviderRejected           the provider refused the request (4xx that is not throttling)
    │   ├── NotPermitted               a rule refuses it: RBAC delegation, provider policy, never-grantable
    │   └── Denied                     an approver denied it
    └── TemporaryError(delay)          try again after `delay` seconds; the account stays Pending
        ├── ProviderNotFound           the referenced provider does not exist (yet)
        ├── RateLimited                the provider throttled us; every call waits
        ├── QuotaExceeded              a quota is full (maxActiveAccounts, or e.g. 500 account tokens)
        ├── AwaitingApproval           the provider's policy requires approval, none given yet
        └── ProviderUnavailable        5xx, timeouts, dropped connections

Every error carries `reason` (a CamelCase word used as condition reason, Event reason and metric label,
so the set is bounded) and a message that is safe to show: it must never contain a credential.
Providers translate vendor errors into this tree at their boundary (`raise ... from exc`); handlers.py
translates this tree into kopf's permanent/temporary errors. Anything else is a bug and is retried.
"""

from __future__ import annotations


class AgentAccountsError(Exception):
    """Base class; `reason` is the condition/Event reason for this error."""

    reason = "Error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PermanentError(AgentAccountsError):
    """The account goes `Failed`; only a spec change (or a provider change) can fix it."""

    reason = "Failed"


class InvalidSpec(PermanentError):
    reason = "InvalidSpec"


class LifetimeExceeded(PermanentError):
    reason = "LifetimeExceeded"


class UnknownResource(PermanentError):
    reason = "UnknownResource"


class UnknownPermission(PermanentError):
    reason = "UnknownPermission"


class SecretConflict(PermanentError):
    reason = "SecretConflict"


class ObjectConflict(PermanentError):
    reason = "ObjectConflict"


class ProviderRejected(PermanentError):
    reason = "ProviderRejected"


class NotPermitted(PermanentError):
    """Refused by a rule; the message names the rule and the offending value (never a credential)."""

    reason = "NotPermitted"


class Denied(PermanentError):
    reason = "Denied"


class TemporaryError(AgentAccountsError):
    """The account stays `Pending` with this reason and is retried after `delay` seconds."""

    reason = "Retrying"

    def __init__(self, message: str, delay: float = 10.0) -> None:
        super().__init__(message)
        self.delay = delay


class ProviderNotFound(TemporaryError):
    reason = "ProviderNotFound"


class RateLimited(TemporaryError):
    reason = "RateLimited"


class QuotaExceeded(TemporaryError):
    reason = "QuotaExceeded"


class AwaitingApproval(TemporaryError):
    reason = "AwaitingApproval"


class ProviderUnavailable(TemporaryError):
    reason = "ProviderUnavailable"
