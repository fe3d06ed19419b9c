"""Who may get what: the checks an AgentAccount passes at admission, and again right before issue.

Delegation, never escalation. An AgentAccount carries only what its requester could do themselves,
whatever the operator's own (necessarily larger) rights:

1. `use` on the provider (RBAC verb `use` on the (Cluster)AccountProviderObject, by name), as
   PodSecurityPolicy and cert-manager's approver-policy did;
2. the provider's policy: allowedNamespaces, maxLifetime, allowedScopes;
3. the provider type's own checks (`ProviderType.admit`): never-grantable permissions, whoever asks
   (cluster admins too: providers/kubernetes/rbac.py `never_grantable`, the Secret names below,
   providers/cloudflare/guard.py's permission groups); for the Kubernetes provider, delegation: every
   verb x resource x name as a SubjectAccessReview for the requester (username, uid, groups, extra as
   recorded at admission);
5. maxActiveAccounts at admission (reconcile enforces it again under a lock: reconcile.py).

The same `check` serves the validating webhook (refusal at `kubectl apply`) and reconcile (defence in
depth: with admission bypassed nothing beyond the requester's rights is issued). Every refusal is a
NotPermitted (or LifetimeExceeded) whose message starts with the rule's name.
"""

from __future__ import annotations

from typing import Any

from agentaccounts import ownership, policies
from agentaccounts.errors import InvalidSpec, LifetimeExceeded, NotPermitted
from agentaccounts.kube import Kube
from agentaccounts.models import AgentAccount, ProviderObject, Requester
from agentaccounts.providers import type_of
from agentaccounts.settings import Settings

GROUP = "agentaccounts.dev"
PROVIDER_PLURAL = {"AccountProvider": "accountproviders", "ClusterAccountProvider": "clusteraccountproviders"}


def _denied(rule: str, message: str) -> NotPermitted:
    return NotPermitted(f"rule {rule}: {message}")


class Access:
    """The access decision for one AgentAccount (see the module docstring); implements the provider
    types' `Reviewer`."""

    def __init__(self, kube: Kube, settings: Settings) -> None:
        self.kube = kube
        self.settings = settings

    async def allowed(self, requester: Requester, attributes: dict[str, str]) -> bool:
        allowed, _ = await self.kube.subject_access_review(requester.model_dump(), attributes)
        return allowed

    async def check_provider_verb(
        self, requester: Requester, provider: ProviderObject, verb: str, namespace: str
    ) -> None:
        """RBAC verb `use` (or `approve`) on this very provider object, asked in the AgentAccount's
        namespace, as PodSecurityPolicy's `use` was: a RoleBinding there grants it for that namespace
        only, a ClusterRoleBinding everywhere, even for a cluster-scoped ClusterAccountProvider."""
        attributes = {
            "namespace": namespace,
            "verb": verb,
            "group": GROUP,
            "resource": PROVIDER_PLURAL[provider.kind],
            "name": provider.name,
        }
        if not await self.allowed(requester, attributes):
            where = f" in namespace {namespace}"
            raise _denied(
                f"provider-{verb}",
                f"{requester.username} may not {verb} {provider.kind} {provider.name!r}{where} (needs RBAC "
                f"verb {verb!r} on {GROUP} {attributes['resource']}, resourceNames [{provider.name}])",
            )

    async def check(self, account: AgentAccount, provider: ProviderObject, requester: Requester) -> None:
        """Everything but the quota; raises on the first rule that refuses."""
        await self.check_provider_verb(requester, provider, "use", account.namespace)
        policy = provider.spec.policy
        if provider.kind == "ClusterAccountProvider" and policy.allowed_namespaces is not None:
            labels = await self.kube.namespace_labels(account.namespace) or {}
            if not policies.selector_matches(policy.allowed_namespaces, labels):
                raise _denied(
                    "allowed-namespaces",
                    f"namespace {account.namespace} is not selected by ClusterAccountProvider "
                    f"{provider.name!r} (policy.allowedNamespaces)",
                )
        failure = policies.check_lifetime(account, provider.spec)
        if failure:
            raise (LifetimeExceeded if failure.reason == "LifetimeExceeded" else InvalidSpec)(failure.message)
        entry = type_of(provider.spec)
        refusal = policies.check_allowed_scopes(
            account.spec.scopes, policy.allowed_scopes, entry.name, entry.rbac_delegated
        )
        if refusal:
            raise NotPermitted(refusal.message)
        await entry.admit(account, requester, self)

    async def check_secret_names(self, namespace: str, names: list[str]) -> None:
        """None of the Secret names an account would be granted is a protected one. Reconcile runs it
        again under its namespace lock, right before the Role exists (reconcile._issue)."""
        if not names:
            return
        protected = await self.protected_secrets(namespace, names)
        for name in names:
            if name in protected:
                raise _denied("never-grantable", f"Secret {namespace}/{name}: {protected[name]}")

    async def protected_secrets(self, namespace: str, names: list[str]) -> dict[str, str]:
        """Which of `names` (Secrets in `namespace`) no agent may ever be granted, with the reason: the
        operator's own (our label; every AgentAccount's Secret name, issued or not), every Secret a
        provider references (parent tokens), and the signing key. Each named Secret is read, never
        listed: the operator holds no `list` on Secrets (a list returns every Secret's data)."""
        protected: dict[str, str] = {}
        for body in await self.kube.list_custom("AgentAccount", namespace):
            try:
                name = AgentAccount.from_body(body).secret_name
            except ValueError:
                name = (body.get("spec") or {}).get("secretName") or f"{body['metadata']['name']}-credentials"
            protected[name] = f"the credentials Secret of AgentAccount {body['metadata']['name']}"
        for kind, where in (("ClusterAccountProvider", ""), ("AccountProvider", namespace)):
            for body in await self.kube.list_custom(kind, where):
                for ref_ns, ref_name in secret_refs(body.get("spec") or {}, where):
                    if ref_ns == namespace:
                        protected[ref_name] = f"referenced by {kind} {body['metadata']['name']}"
        if namespace == self.settings.operator_namespace:
            protected[self.settings.signing_key_secret] = "the operator's signing key"
        for name in names:
            labels = ((await self.kube.get("Secret", namespace, name) or {}).get("metadata") or {}).get(
                "labels"
            )
            if any((labels or {}).get(k) == v for k, v in ownership.MANAGED_BY.items()):
                protected.setdefault(name, "managed by the operator")
        return {name: why for name, why in protected.items() if name in names}

    async def check_quota(
        self, account: AgentAccount, provider: ProviderObject, issued_only: bool
    ) -> str | None:
        """A message when maxActiveAccounts is reached in the account's namespace, else None."""
        limit = provider.spec.policy.max_active_accounts
        if limit is None or account.spec.dry_run:
            return None
        bodies = await self.kube.list_custom("AgentAccount", account.namespace)
        active = policies.active_accounts(bodies, provider.kind, provider.name, account.uid, issued_only)
        if active < limit:
            return None
        return (
            f"rule max-active-accounts: {active} live AgentAccounts in namespace {account.namespace} already "
            f"use {provider.kind} {provider.name!r} (policy.maxActiveAccounts {limit})"
        )


def secret_refs(spec: dict[str, Any], default_namespace: str) -> list[tuple[str, str]]:
    """Every (namespace, name) a provider spec references through a `...SecretRef` field, at any
    depth: today Cloudflare's apiTokenSecretRef, tomorrow any provider's admin credentials."""
    found: list[tuple[str, str]] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key.endswith("SecretRef") and isinstance(item, dict) and item.get("name"):
                    found.append((str(item.get("namespace") or default_namespace), str(item["name"])))
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(spec)
    return found
