"""Pure translation of AgentAccount scopes into RBAC rules for the Kubernetes provider.

Grammar (kubectl style): `resource[.group][/name]` — `configmaps`, `deployments.apps`,
`secrets/app-config`, `leases.coordination.k8s.io/my-lock`. The first dot splits resource from group,
the first slash adds a resourceName. Verbs are the standard Kubernetes verbs; wildcards are refused,
because an identity for one agent run should say exactly what it may do.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from agentaccounts.errors import InvalidSpec, UnknownResource
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
MAX_NAME = 253


@dataclass(frozen=True, order=True)
class ResourceRef:
    group: str
    resource: str
    name: str = ""

    def __str__(self) -> str:
        text = self.resource + (f".{self.group}" if self.group else "")
        return text + (f"/{self.name}" if self.name else "")


def parse_resource(text: str) -> ResourceRef:
    if not text or "*" in text or text != text.strip():
        raise InvalidSpec(f"resource {text!r}: use resource[.group][/name] without wildcards")
    kind, _, name = text.partition("/")
    resource, _, group = kind.partition(".")
    if not resource or (name == "" and text.endswith("/")) or "/" in name:
        raise InvalidSpec(f"resource {text!r}: use resource[.group][/name], e.g. deployments.apps/web")
    return ResourceRef(group, resource.lower(), name)


def rules_for(scopes: list[Scope], served: dict[str, set[str]]) -> list[dict[str, Any]]:
    """RBAC PolicyRules for `scopes`, checked against what the API server serves, in a stable order."""
    grants: dict[tuple[str, str, tuple[str, ...]], set[str]] = {}
    for scope in scopes:
        verbs = {v.lower() for v in scope.permissions}
        unknown = sorted(verbs - set(VERBS))
        if unknown:
            raise InvalidSpec(f"unknown verb(s) {', '.join(unknown)}; allowed: {', '.join(VERBS)}")
        if not scope.resources:
            raise InvalidSpec("the kubernetes provider needs resources in every scope (e.g. configmaps)")
        for ref in map(parse_resource, scope.resources):
            if (ref.group, ref.resource) in ESCALATING and verbs - READ_VERBS:
                raise InvalidSpec(
                    f"resource {str(ref)!r}: agents may only get, list or watch it (writing "
                    f"{ref.resource} would let an agent escalate its own privileges)"
                )
            if ref.resource not in served.get(ref.group, set()):
                where = f"API group {ref.group!r}" if ref.group else "the core API group"
                raise UnknownResource(f"resource {str(ref)!r}: {ref.resource!r} is not served in {where}")
            key = (ref.group, ref.resource, (ref.name,) if ref.name else ())
            grants.setdefault(key, set()).update(verbs)
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
