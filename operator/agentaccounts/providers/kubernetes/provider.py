"""The Kubernetes-native provider: ServiceAccount + Role + RoleBinding + a bound, expiring token.

Works on any cluster with nothing else installed, which is why it is the default. All three objects
live in the AgentAccount's namespace, carry its UID label and an owner reference (see ownership.py),
and have one deterministic name (`agentaccount-<name>`), so a second `issue` adopts them.

Revocation deletes the ServiceAccount first: the API server then rejects every token bound to it at
once (bound tokens are checked against the live ServiceAccount's UID), which is what makes revocation
immediate even though the TokenRequest API will not mint tokens shorter than 10 minutes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from agentaccounts import ownership
from agentaccounts.errors import ObjectConflict, ProviderRejected, ProviderUnavailable
from agentaccounts.kube import AlreadyExists, Kube, KubeApiError
from agentaccounts.models import AccountRef
from agentaccounts.providers.base import Issued, IssueRequest, Recorder
from agentaccounts.providers.kubernetes.rbac import (
    GRANTS_SECRETS_LABEL,
    kubeconfig,
    object_name,
    rules_for,
    secret_names,
)
from agentaccounts.providers.kubernetes.spec import KubernetesBlock

MIN_TOKEN_SECONDS = 600  # the TokenRequest API's minimum expirationSeconds


IDENTITY_KINDS = ("RoleBinding", "Role", "ServiceAccount")
CA_TTL = 300.0  # seconds a namespace's kube-root-ca.crt is reused
CA_CACHE_SIZE = 1024


class KubernetesProvider:
    type = "kubernetes"

    def __init__(
        self,
        kube: Kube,
        block: KubernetesBlock,
        server: str | None,
        now: Callable[[], datetime],
        cas: dict[str, tuple[float, str]] | None = None,
    ) -> None:
        self.kube = kube
        self.server = block.server or server or kube.server
        self.now = now
        self._cas = {} if cas is None else cas  # namespace -> (when read, CA); shared per process

    async def validate(self, request: IssueRequest) -> None:
        rules_for(request.scopes, await self.kube.served_resources())

    async def plan(self, request: IssueRequest) -> dict[str, Any]:
        name = object_name(request.name)
        rules = rules_for(request.scopes, await self.kube.served_resources())
        return {"serviceAccount": name, "role": {"name": name, "rules": rules}}

    async def issue(self, request: IssueRequest, record: Recorder) -> Issued:
        name = object_name(request.name)
        rules = rules_for(request.scopes, await self.kube.served_resources())
        meta = ownership.metadata(name, request.namespace, request.name, request.uid)
        try:
            sa_uid = await self._ensure(
                request, "ServiceAccount", {"metadata": meta, "automountServiceAccountToken": False}
            )
            # The ServiceAccount's uid lets revocation delete it with one call, no read first.
            ref = AccountRef(kind="ServiceAccount", name=name, namespace=request.namespace, id=sa_uid)
            await record(ref)
            role_meta = meta
            if secret_names(rules):
                role_meta = {**meta, "labels": {**meta["labels"], GRANTS_SECRETS_LABEL: "true"}}
            await self._ensure(request, "Role", {"metadata": role_meta, "rules": rules})
            await self._ensure(
                request,
                "RoleBinding",
                {
                    "metadata": meta,
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                    "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": request.namespace}],
                },
            )
            seconds = max(MIN_TOKEN_SECONDS, math.ceil((request.expires_at - self.now()).total_seconds()))
            token, _ = await self.kube.request_token(request.namespace, name, seconds)
            ca = await self._ca(request.namespace)
        except KubeApiError as exc:
            raise _translate(exc) from exc
        return Issued(
            account_ref=ref,
            secret_data={
                "kubeconfig": kubeconfig(self.server, ca, request.namespace, token, name),
                "token": token,
                "ca.crt": ca,
                "server": self.server,
                "namespace": request.namespace,
                "expires-at": request.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
            credential_id=credential_id(token),
        )

    async def revoke(self, request: IssueRequest, ref: AccountRef | None) -> None:
        # Only objects carrying this account's UID label: status.accountRef is not trusted for
        # deletion (a forged name or uid there must not delete someone else's ServiceAccount).
        # Each object is found by the name this provider gives it and deleted if (and only if) it
        # carries the label, with its uid as a precondition: one object per call, whatever else the
        # namespace holds. (A delete by label selector lists the whole namespace's objects of that
        # kind: with 1,000 accounts expiring together in one namespace that is O(n) per call, O(n^2)
        # in all.) What is not found by name (an object made under another name) goes by label.
        name = object_name(request.name)
        try:
            # All kinds at once: deleting the RoleBinding and Role ends the token's access at once (the
            # API server may still authenticate it from its 10 s cache, but it may do nothing);
            # deleting the ServiceAccount makes the token itself invalid.
            found = await asyncio.gather(
                *(
                    self.kube.delete_owned(kind, request.namespace, name, request.uid)
                    for kind in IDENTITY_KINDS
                )
            )
            selector = ownership.selector(request.uid)
            await asyncio.gather(
                *(
                    self.kube.delete_labelled(kind, request.namespace, selector)
                    for kind, deleted in zip(IDENTITY_KINDS, found, strict=True)
                    if not deleted
                )
            )
        except KubeApiError as exc:
            raise _translate(exc) from exc

    async def _ensure(self, request: IssueRequest, kind: str, body: dict[str, Any]) -> str:
        """Create, or adopt-and-update an object carrying our UID label; never touch a foreign one.
        Returns the object's uid. Create first: on the common path (a new account) that is one call."""
        body = {"apiVersion": _API_VERSION[kind], "kind": kind, **body}
        name = body["metadata"]["name"]
        try:
            created = await self.kube.create(kind, request.namespace, body)
            if created is not None:
                return str(created["metadata"]["uid"])
        except AlreadyExists:
            pass  # ours from an earlier attempt (adopt below), or someone else's (refuse below)
        existing = await self.kube.get(kind, request.namespace, name)
        if existing is None or not ownership.owned_by(existing, request.uid):
            raise ObjectConflict(
                f"{kind} {request.namespace}/{name} exists and does not belong to this "
                f"AgentAccount (no {ownership.UID_LABEL}={request.uid} label); it was left untouched"
            )
        if kind == "RoleBinding" and existing.get("roleRef") != body["roleRef"]:
            await self.kube.delete(kind, request.namespace, name)  # roleRef is immutable
            recreated = await self.kube.create(kind, request.namespace, body)
            return str((recreated or existing)["metadata"]["uid"])
        if any(existing.get(k) != v for k, v in body.items() if k not in ("metadata", "apiVersion", "kind")):
            body["metadata"] = {
                **body["metadata"],
                "resourceVersion": existing["metadata"]["resourceVersion"],
            }
            await self.kube.replace(kind, request.namespace, body)
        return str(existing["metadata"]["uid"])

    async def _ca(self, namespace: str) -> str:
        # The root-ca publisher puts the cluster CA in every namespace; fall back to our own trust.
        # Kept for CA_TTL: the CA changes only when the cluster's CA is rotated, and a burst of 1,000
        # issues in one namespace then reads it once instead of 1,000 times.
        cached = self._cas.get(namespace)
        if cached is not None and time.monotonic() - cached[0] < CA_TTL:
            return cached[1]
        configmap = await self.kube.get("ConfigMap", namespace, "kube-root-ca.crt")
        ca = str(((configmap or {}).get("data") or {}).get("ca.crt") or self.kube.ca_pem())
        if len(self._cas) >= CA_CACHE_SIZE:
            self._cas.clear()  # bounded by namespaces anyway; never grows without bound
        self._cas[namespace] = (time.monotonic(), ca)
        return ca


def credential_id(token: str) -> str:
    """The credential id audit events carry for requests made with this token: "JTI=<jti>" (Kubernetes
    1.32+ puts it in user.extra["authentication.kubernetes.io/credential-id"]). The jti is the token's
    id, not a secret; the token is. The claim is read without verifying the signature: the token came
    from the API server a moment ago. "" when the token carries no jti (an older API server)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error):
        return ""
    jti = claims.get("jti") if isinstance(claims, dict) else None
    return f"JTI={jti}" if isinstance(jti, str) and jti else ""


_API_VERSION = {
    "ServiceAccount": "v1",
    "Role": "rbac.authorization.k8s.io/v1",
    "RoleBinding": "rbac.authorization.k8s.io/v1",
}


def _translate(exc: KubeApiError) -> Exception:
    if exc.status == 403:
        return ProviderRejected(f"the operator is not allowed to do this: {exc} (check its RBAC)")
    return ProviderUnavailable(str(exc), delay=5.0)
