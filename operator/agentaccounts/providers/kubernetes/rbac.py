"""Pure translation of AgentAccount scopes into RBAC rules for the Kubernetes provider, and the rules
about what may never be granted.

Grammar, exactly RBAC's: `resources` are `resource[.group][/subresource]` — `configmaps`,
`deployments.apps`, `pods/log`, `leases.coordination.k8s.io`; `resourceNames` narrows a scope to
named objects (`resources: [secrets], resourceNames: [app-config]`). Before v1alpha1's least-privilege
change a slash meant a name, which read `pods/log` as "the pod named log"; a subresource is now always
a subresource. Verbs are the standard Kubernetes verbs; wildcards are refused, because an identity
for one agent run should say exactly what it may do.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from agentaccounts.errors import InvalidSpec, NotPermitted, UnknownResource
from agentaccounts.models import Scope

VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
READ_VERBS = {"get", "list", "watch"}
# Writing these lets an agent mint itself more power than its scopes say: a service-account-token
# Secret or a new ServiceAccount yields other credentials, a Role or RoleBinding grants anything the
# operator holds. Agents may read them, never write them.
ESCALATING = {
    ("", "secrets"),
    ("", "serviceaccounts"),
    ("rbac.authorization.k8s.io", "roles"),
    ("rbac.authorization.k8s.io", "rolebindings"),
}
GROUP = "agentaccounts.dev"
# On every agent Role that grants Secrets by name, so the reconciler can find them with one small
# list before it writes any credentials Secret (reconcile._check_secret_not_granted).
GRANTS_SECRETS_LABEL = "agentaccounts.dev/grants-secrets"
MAX_NAME = 253
MAX_CHECKS = 512  # permission x resource x name pairs per account: each is one SubjectAccessReview


@dataclass(frozen=True, order=True)
class ResourceRef:
    group: str
    resource: str
    subresource: str = ""

    @property
    def rbac_resource(self) -> str:
        return self.resource + (f"/{self.subresource}" if self.subresource else "")

    def __str__(self) -> str:
        text = self.resource + (f".{self.group}" if self.group else "")
        return text + (f"/{self.subresource}" if self.subresource else "")


@dataclass(frozen=True)
class Permission:
    """One verb on one resource (and object name, "" for all): one SubjectAccessReview."""

    verb: str
    ref: ResourceRef
    name: str = ""

    def __str__(self) -> str:
        return f"{self.verb} {self.ref}" + (f" named {self.name!r}" if self.name else "")

    def attributes(self, namespace: str) -> dict[str, str]:
        return {
            "namespace": namespace,
            "verb": self.verb,
            "group": self.ref.group,
            "resource": self.ref.resource,
            "subresource": self.ref.subresource,
            "name": self.name,
        }


def parse_resource(text: str) -> ResourceRef:
    if not text or "*" in text or text != text.strip():
        raise InvalidSpec(f"resource {text!r}: use resource[.group][/subresource] without wildcards")
    kind, _, sub = text.partition("/")
    resource, _, group = kind.partition(".")
    if not resource or (sub == "" and text.endswith("/")) or "/" in sub:
        raise InvalidSpec(
            f"resource {text!r}: use resource[.group][/subresource], e.g. deployments.apps or pods/log "
            "(object names go in resourceNames)"
        )
    return ResourceRef(group.lower(), resource.lower(), sub.lower())


def permissions(scopes: list[Scope]) -> Iterator[Permission]:
    """Every verb x resource x name the scopes ask for, validated, in spec order."""
    count = 0
    for scope in scopes:
        verbs = [v.lower() for v in scope.permissions]
        unknown = sorted(set(verbs) - set(VERBS))
        if unknown:
            raise InvalidSpec(f"unknown verb(s) {', '.join(unknown)}; allowed: {', '.join(VERBS)}")
        if not scope.resources:
            raise InvalidSpec("the kubernetes provider needs resources in every scope (e.g. configmaps)")
        for ref in map(parse_resource, scope.resources):
            for verb in verbs:
                for name in scope.resource_names or [""]:
                    count += 1
                    if count > MAX_CHECKS:
                        raise InvalidSpec(
                            f"the scopes ask for more than {MAX_CHECKS} verb x resource x name "
                            "permissions; split the work across AgentAccounts"
                        )
                    yield Permission(verb, ref, name)


def never_grantable(
    permission: Permission, namespace: str, protected_leases: frozenset[tuple[str, str]]
) -> str | None:
    """Why `permission` may never be granted, whoever asks (cluster admins too), or None.

    Secret names that the operator manages or providers reference are judged separately (they need
    a look at the cluster); here an unnamed Secret grant is refused because it would include them."""
    ref, verb = permission.ref, permission.verb
    if ref.group == GROUP:
        return f"{ref}: nothing in {GROUP} is grantable (it would let an agent change its own limits)"
    if (ref.group, ref.resource) == ("", "serviceaccounts") and ref.subresource == "token":
        return "serviceaccounts/token: minting tokens would outlive the account's expiry"
    if (ref.group, ref.resource) in ESCALATING and verb not in READ_VERBS:
        return f"{verb} {ref}: writing {ref.resource} would let an agent escalate its own privileges"
    if (ref.group, ref.resource) == ("", "secrets") and not permission.name:
        return (
            f"{verb} {ref} without resourceNames: it would include other agents' credentials and "
            "provider tokens; name the Secrets in resourceNames"
        )
    if (ref.group, ref.resource) == ("coordination.k8s.io", "leases") and any(
        ns == namespace and (not permission.name or permission.name == name) for ns, name in protected_leases
    ):
        return f"{verb} {ref}: the operator's leader Lease (taking it stops all revocation)"
    return None


def check_never_grantable(
    scopes: list[Scope], namespace: str, protected_leases: frozenset[tuple[str, str]] = frozenset()
) -> list[Permission]:
    """All permissions the scopes ask for; NotPermitted on the first never-grantable one."""
    wanted = list(permissions(scopes))
    for permission in wanted:
        why = never_grantable(permission, namespace, protected_leases)
        if why:
            raise NotPermitted(f"rule never-grantable: {why}")
    return wanted


def rules_for(scopes: list[Scope], served: dict[str, set[str]]) -> list[dict[str, Any]]:
    """RBAC PolicyRules for `scopes`, checked against what the API server serves, in a stable order."""
    grants: dict[tuple[str, str, tuple[str, ...]], set[str]] = {}
    for permission in check_never_grantable(scopes, ""):
        ref = permission.ref
        if ref.rbac_resource not in served.get(ref.group, set()):
            where = f"API group {ref.group!r}" if ref.group else "the core API group"
            raise UnknownResource(f"resource {str(ref)!r}: {ref.rbac_resource!r} is not served in {where}")
        key = (ref.group, ref.rbac_resource, (permission.name,) if permission.name else ())
        grants.setdefault(key, set()).add(permission.verb)
    rules = []
    for (group, resource, names), verbs in sorted(grants.items()):
        rule: dict[str, Any] = {
            "apiGroups": [group],
            "resources": [resource],
            "verbs": [v for v in VERBS if v in verbs],
        }
        if names:
            rule["resourceNames"] = list(names)
        rules.append(rule)
    return rules


def secret_names(rules: list[dict[str, Any]]) -> set[str]:
    """The Secret names a Role's rules grant (by resourceNames)."""
    return {
        name
        for rule in rules
        if "" in rule.get("apiGroups", [])
        and any(r.split("/")[0] == "secrets" for r in rule.get("resources", []))
        for name in rule.get("resourceNames") or []
    }


def object_name(account_name: str) -> str:
    """Deterministic name for the ServiceAccount, Role and RoleBinding of one AgentAccount."""
    name = f"agentaccount-{account_name}"
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(account_name.encode()).hexdigest()[:10]
    return f"{name[: MAX_NAME - 11].rstrip('-.')}-{digest}"


def kubeconfig(server: str, ca_pem: str, namespace: str, token: str, user: str) -> str:
    """A self-contained kubeconfig (YAML is a superset of JSON) scoped to one namespace."""
    import base64
    import json

    cluster: dict[str, Any] = {"server": server}
    if ca_pem:
        cluster["certificate-authority-data"] = base64.b64encode(ca_pem.encode()).decode()
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "agent",
            "clusters": [{"name": "cluster", "cluster": cluster}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [
                {"name": "agent", "context": {"cluster": "cluster", "user": user, "namespace": namespace}}
            ],
        },
        indent=2,
    )
