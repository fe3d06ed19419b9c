"""An in-memory stand-in for kube.Kube: just the calls access.Access, admission.Admission and
providers.resolve.ProviderResolver make, with RBAC reduced to a list of grants per user.

Every call is recorded in `calls` (method name first), so a test can say "no API call at all".
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

CLUSTER_KINDS = {"ClusterAccountProvider"}


@dataclass(frozen=True)
class Grant:
    """One allowed verb on one resource: "*" matches anything, name "*" every object."""

    verb: str
    resource: str  # plural, e.g. "configmaps"
    group: str = ""
    subresource: str = ""
    name: str = "*"
    namespace: str = "*"

    def allows(self, attributes: dict[str, str]) -> bool:
        def ok(mine: str, theirs: str) -> bool:
            return mine in ("*", theirs)

        return (
            ok(self.verb, attributes.get("verb", ""))
            and ok(self.group, attributes.get("group", ""))
            and ok(self.resource, attributes.get("resource", ""))
            and ok(self.subresource, attributes.get("subresource", ""))
            and ok(self.name, attributes.get("name", ""))
            and ok(self.namespace, attributes.get("namespace", ""))
        )


ALL = Grant("*", "*", group="*", subresource="*")  # cluster-admin


class FakeKube:
    def __init__(self) -> None:
        self.custom: dict[tuple[str, str, str], dict[str, Any]] = {}  # (kind, namespace, name) -> body
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}  # (namespace, name) -> body
        self.namespaces: dict[str, dict[str, str]] = {}  # name -> labels
        self.grants: dict[str, list[Grant]] = {}  # username -> grants (groups are not consulted)
        self.calls: list[tuple[Any, ...]] = []
        self.sar_delay: dict[str, float] = {}  # resource -> seconds the answer takes (for ordering tests)

    # -- setup ------------------------------------------------------------------------------------

    def add(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        meta = body.setdefault("metadata", {})
        namespace = "" if kind in CLUSTER_KINDS else meta.setdefault("namespace", "agents")
        meta.setdefault("uid", f"uid-{kind}-{namespace}-{meta['name']}")
        self.custom[(kind, namespace, meta["name"])] = body
        return body

    def add_secret(self, namespace: str, name: str, labels: dict[str, str] | None = None) -> None:
        self.secrets[(namespace, name)] = {
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {}}
        }

    def allow(self, username: str, *grants: Grant) -> None:
        self.grants.setdefault(username, []).extend(grants)

    @property
    def sar_calls(self) -> list[tuple[dict[str, Any], dict[str, str]]]:
        return [(c[1], c[2]) for c in self.calls if c[0] == "subject_access_review"]

    # -- the Kube surface -------------------------------------------------------------------------

    async def get_custom(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(("get_custom", kind, namespace, name))
        return self.custom.get((kind, namespace, name))

    async def list_custom(self, kind: str, namespace: str = "") -> list[dict[str, Any]]:
        self.calls.append(("list_custom", kind, namespace))
        return [
            body
            for (k, ns, _), body in sorted(self.custom.items())
            if k == kind and (not namespace or ns == namespace)
        ]

    async def list_objects(self, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        self.calls.append(("list_objects", kind, namespace, selector))
        assert kind == "Secret", kind
        wanted = dict(pair.split("=", 1) for pair in selector.split(",") if pair)
        return [
            body
            for (ns, _), body in sorted(self.secrets.items())
            if ns == namespace and all(body["metadata"]["labels"].get(k) == v for k, v in wanted.items())
        ]

    async def subject_access_review(
        self, user: dict[str, Any], attributes: dict[str, str]
    ) -> tuple[bool, str]:
        self.calls.append(("subject_access_review", user, attributes))
        delay = self.sar_delay.get(attributes.get("resource", ""), 0.0)
        if delay:
            await asyncio.sleep(delay)
        allowed = any(g.allows(attributes) for g in self.grants.get(user.get("username", ""), []))
        return allowed, "fake RBAC"

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(("get", kind, namespace, name))
        assert kind == "Secret", kind
        return self.secrets.get((namespace, name))

    async def namespace_labels(self, name: str) -> dict[str, str] | None:
        self.calls.append(("namespace_labels", name))
        return self.namespaces.get(name)
