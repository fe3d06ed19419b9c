"""The Kubernetes-native provider type: ServiceAccount + Role + RoleBinding + a bound, expiring token.

    spec.py      the provider block (`spec.kubernetes`)
    rbac.py      the scope grammar -> RBAC rules, never-grantable permissions, kubeconfigs (pure)
    provider.py  issue / revoke against the API server

Its admission check is delegation: every verb x resource x name the account asks for must be held by
the requester (a SubjectAccessReview each), after the never-grantable rules.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from agentaccounts import ownership
from agentaccounts.errors import NotPermitted
from agentaccounts.kube import Kube
from agentaccounts.models import AgentAccount, ProviderObject, Requester, Scope
from agentaccounts.providers.base import Deps, Provider, ProviderType, Reviewer
from agentaccounts.providers.kubernetes.provider import KubernetesProvider
from agentaccounts.providers.kubernetes.rbac import (
    GRANTS_SECRETS_LABEL,
    Permission,
    check_never_grantable,
    permissions,
    secret_names,
)
from agentaccounts.providers.kubernetes.spec import KubernetesBlock

SAR_CONCURRENCY = 16  # SubjectAccessReviews in flight per account: each is a cheap in-memory RBAC check


async def build(obj: ProviderObject, deps: Deps) -> Provider:
    block = obj.spec.block
    assert isinstance(block, KubernetesBlock)
    cas = deps.shared.setdefault("kubernetes-ca", {})
    return KubernetesProvider(deps.kube, block, deps.settings.kubeconfig_server, deps.now, cas)


def _secret_names(wanted: list[Permission]) -> list[str]:
    return sorted({p.name for p in wanted if (p.ref.group, p.ref.resource) == ("", "secrets") and p.name})


def granted_secrets(scopes: list[Scope]) -> list[str]:
    return _secret_names(list(permissions(scopes)))


async def admit(account: AgentAccount, requester: Requester, reviewer: Reviewer) -> None:
    """Never-grantable first (whoever asks), then the Secret names, then delegation in spec order."""
    settings = reviewer.settings
    leases = frozenset({(settings.leader_election_namespace, settings.leader_election_name)})
    wanted = check_never_grantable(account.spec.scopes, account.namespace, leases)
    await reviewer.check_secret_names(account.namespace, _secret_names(wanted))
    gate = asyncio.Semaphore(SAR_CONCURRENCY)

    async def missing(permission: Permission) -> Permission | None:
        async with gate:
            ok = await reviewer.allowed(requester, permission.attributes(account.namespace))
        return None if ok else permission

    results = await asyncio.gather(*(missing(p) for p in wanted))
    first = next((p for p in results if p is not None), None)  # in spec order
    if first is not None:
        raise NotPermitted(
            f"rule delegation: {requester.username} may not {first} in namespace {account.namespace}, so "
            "no agent may be given it on their behalf"
        )


SWEPT_KINDS = ("ServiceAccount", "RoleBinding", "Role", "Secret")  # revocation's order: access ends first


async def sweep(provider: Provider, live_uids: Callable[[], Awaitable[set[str]]], deps: Deps) -> list[str]:
    """Delete what carries our UID label when its AgentAccount is gone (its finalizer removed by hand,
    or force-deleted while the operator was down). The garbage collector usually gets there first
    (every object has an owner reference); this holds even where the references were stripped.

    Candidates are our Roles (every issued account has one, and the operator may list Roles, never
    Secrets), listed BEFORE the live set is read: a Role exists only after its AgentAccount does, so a
    Role whose UID is not live afterwards belongs to an account that is gone. Each orphan's four kinds
    are then deleted by its UID label, in the namespaces this operator watches."""
    selector = ",".join(f"{k}={v}" for k, v in ownership.MANAGED_BY.items())
    namespaces = deps.settings.namespaces or [""]
    roles = [r for ns in namespaces for r in await deps.kube.list_objects("Role", ns, selector)]
    live = await live_uids()
    orphans = sorted(
        {
            (role["metadata"]["namespace"], uid)
            for role in roles
            if (uid := (role["metadata"].get("labels") or {}).get(ownership.UID_LABEL)) and uid not in live
        }
    )
    for namespace, uid in orphans:
        for kind in SWEPT_KINDS:
            await deps.kube.delete_labelled(kind, namespace, ownership.selector(uid))
    return [f"{namespace}/{ownership.UID_LABEL}={uid}" for namespace, uid in orphans]


async def grants_secret(kube: Kube, namespace: str, secret: str, uid: str) -> str | None:
    """The Role of another agent that grants `secret` by name, if any. Roles that grant Secret names
    carry a label, so this is one small list, not a scan of every Role."""
    for role in await kube.list_objects("Role", namespace, f"{GRANTS_SECRETS_LABEL}=true"):
        if not ownership.owned_by(role, uid) and secret in secret_names(role.get("rules") or []):
            return f"Role {namespace}/{role['metadata']['name']}"
    return None


TYPE = ProviderType(
    name="kubernetes",
    block=KubernetesBlock,
    build=build,
    admit=admit,
    rbac_delegated=True,
    granted_secrets=granted_secrets,
    revocable_without_object=True,  # everything it made carries the account's UID label
    grants_secret=grants_secret,
    sweep=sweep,
)
