"""How every Kubernetes object we create is tied to its AgentAccount — and how we recognise our own.

Each object carries the AgentAccount's UID as a label and an owner reference to it. The label is what
makes issue idempotent (after a crash, an object with our UID label is adopted; one without is someone
else's and is never touched) and what lets `kubectl get sa,role,secret -l agentaccounts.dev/account-uid=…`
show an agent's whole footprint. The owner reference is the safety net: if the operator is gone when
an AgentAccount is deleted, the garbage collector still removes everything.
"""

from __future__ import annotations

from typing import Any

UID_LABEL = "agentaccounts.dev/account-uid"
NAME_LABEL = "agentaccounts.dev/account-name"
MANAGED_BY = {"app.kubernetes.io/managed-by": "agentaccounts"}
API_VERSION, KIND = "agentaccounts.dev/v1alpha1", "AgentAccount"


def labels(name: str, uid: str) -> dict[str, str]:
    # Label values are at most 63 characters; names longer than that are cut (the UID is what counts).
    return {UID_LABEL: uid, NAME_LABEL: name[:63].rstrip("-."), **MANAGED_BY}


def owner_reference(name: str, uid: str) -> dict[str, Any]:
    # blockOwnerDeletion stays false: setting it needs `update` on agentaccounts/finalizers, and our
    # finalizer already orders revocation before the AgentAccount goes.
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": False,
    }


def metadata(name: str, namespace: str, owner_name: str, owner_uid: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace,
        "labels": labels(owner_name, owner_uid),
        "ownerReferences": [owner_reference(owner_name, owner_uid)],
    }


def owned_by(obj: dict[str, Any] | None, uid: str) -> bool:
    return bool(obj) and ((obj or {}).get("metadata", {}).get("labels") or {}).get(UID_LABEL) == uid


def selector(uid: str) -> str:
    return f"{UID_LABEL}={uid}"
