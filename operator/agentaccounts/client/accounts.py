"""AgentAccounts as a client sees them: create one and wait for it, read, list, extend, revoke, approve.

Shared by the CLI (commands.py) and the MCP server (mcp_server.py), and acting only with the caller's
own Kubernetes credentials (`kube.Kube`): RBAC on AgentAccounts and the operator's admission webhook
decide, exactly as for `kubectl apply`. Nothing here grants or checks anything itself.

Ending an account early (`revoke`) keeps the AgentAccount as the audit record: it sets `spec.lifetime`
to the time the account has lived so far, so `expiresAt` (issuedAt + lifetime) is now and the
operator's timer revokes at once, exactly as at a natural expiry. Admission lets anyone who may
update the account make that edit without holding the account's permissions themselves, because a
lifetime that only ends an issued account sooner cannot widen anything (admission.py).
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from agentaccounts.client.errors import (
    AccountFailed,
    ClientError,
    NotFound,
    Refused,
    TimedOut,
    UnknownProvider,
    UsageError,
    translated,
)
from agentaccounts.client.scopes import PROVIDER_KINDS
from agentaccounts.client.views import Credentials
from agentaccounts.clock import Clock, utcnow
from agentaccounts.kube import Kube, KubeApiError
from agentaccounts.stamps import APPROVAL_REQUEST

Progress = Callable[[str], None]
POLL_SECONDS = 0.25  # status is written within ~100 ms of each step (README "Measured")
Done = Callable[[dict[str, Any]], bool]


def _status(body: dict[str, Any]) -> dict[str, Any]:
    return dict(body.get("status") or {})


def _ready(body: dict[str, Any]) -> dict[str, Any]:
    return next((c for c in _status(body).get("conditions") or [] if c.get("type") == "Ready"), {})


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def revoking_lifetime(status: dict[str, Any], now: datetime) -> str:
    """The lifetime that ends an issued account now: how long it has lived, in whole milliseconds,
    never zero (the operator refuses a zero lifetime) and never as long as the current one (so the
    edit only shortens it, whatever the client's clock says)."""
    issued, expires = _time(status["issuedAt"]), _time(status["expiresAt"])
    longest = (expires - issued) // timedelta(milliseconds=1) - 1
    lived = (now - issued) // timedelta(milliseconds=1)
    return f"{max(1, min(lived, longest))}ms"


class Accounts:
    def __init__(self, kube: Kube, now: Clock = utcnow, poll: float = POLL_SECONDS) -> None:
        self.kube, self.now, self.poll = kube, now, poll

    async def _api(self, doing: str, call: Any) -> Any:
        try:
            return await call
        except KubeApiError as exc:
            raise translated(exc, doing) from None

    async def get(self, namespace: str, name: str) -> dict[str, Any]:
        body = await self._api(
            f"get AgentAccount {name}", self.kube.get_custom("AgentAccount", namespace, name)
        )
        if body is None:
            raise NotFound(f"no AgentAccount {name!r} in namespace {namespace}")
        return dict(body)

    async def list(self, namespace: str) -> list[dict[str, Any]]:
        bodies = await self._api("list AgentAccounts", self.kube.list_custom("AgentAccount", namespace))
        return sorted(bodies, key=lambda b: (b["metadata"].get("namespace", ""), b["metadata"]["name"]))

    async def find_provider(
        self, namespace: str, name: str, kind: str | None
    ) -> tuple[str, dict[str, Any] | None]:
        """(kind, the provider object, or None when the caller may not read it) for provider `name`.
        Without `kind`, a namespaced AccountProvider of that name wins over a ClusterAccountProvider.
        UnknownProvider when it provably does not exist."""
        unreadable: list[str] = []
        for candidate in [kind] if kind else list(PROVIDER_KINDS):
            where = namespace if candidate == "AccountProvider" else ""
            try:
                found = await self.kube.get_custom(candidate, where, name)
                if found is not None:
                    return candidate, found
            except KubeApiError as exc:
                if exc.status != 403:
                    raise translated(exc, f"get {candidate} {name}") from None
                unreadable.append(candidate)
        if not unreadable:
            raise UnknownProvider(
                f"no {kind or 'AccountProvider or ClusterAccountProvider'} named {name!r} (for namespace "
                f"{namespace}); `kubectl get clusteraccountproviders,accountproviders -A` lists them"
            )
        return ("ClusterAccountProvider" if "ClusterAccountProvider" in unreadable else unreadable[0]), None

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        namespace = body["metadata"]["namespace"]
        created = await self._api(
            "create AgentAccount", self.kube.create_custom("AgentAccount", namespace, body)
        )
        if created is None:
            raise UsageError(
                f"namespace {namespace} does not exist (or the AgentAccount CRD is not installed)"
            )
        return dict(created)

    async def wait(
        self,
        start: dict[str, Any],
        done: Done,
        within: float,
        progress: Progress,
        what: str,
        hint: str = "",
    ) -> dict[str, Any]:
        """Poll until `done(body)`; progress on every phase or reason change after `start` (the body
        the caller last saw); TimedOut at the deadline, with `hint` on what to do about it."""
        namespace, name = start["metadata"]["namespace"], start["metadata"]["name"]
        deadline, seen = time.monotonic() + within, (_status(start).get("phase"), _ready(start).get("reason"))
        while True:
            body = await self.get(namespace, name)
            phase, ready = _status(body).get("phase"), _ready(body)
            if (phase, ready.get("reason")) != seen:
                seen = (phase, ready.get("reason"))
                progress(f"{phase}: {ready.get('reason')}: {ready.get('message')}" if ready else "waiting")
            if done(body):
                return body
            generation = body["metadata"].get("generation", 1)
            if phase == "Failed" and ready.get("observedGeneration", generation) >= generation:
                raise AccountFailed(
                    f"AgentAccount {namespace}/{name} Failed: {ready.get('reason')}: {ready.get('message')}"
                )
            if time.monotonic() >= deadline:
                state = f"{phase or 'Pending'}" + (
                    f" ({ready.get('reason')}: {ready.get('message')})" if ready else ""
                )
                raise TimedOut(
                    f"AgentAccount {namespace}/{name} not {what} within {within:g}s: it is {state}{hint}"
                )
            await asyncio.sleep(self.poll)  # the deadline bounds the wait

    async def wait_ready(
        self, body: dict[str, Any], within: float, progress: Progress, provider_confirmed: bool
    ) -> dict[str, Any]:
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        generation = body["metadata"].get("generation", 1)

        def done(current: dict[str, Any]) -> bool:
            if not provider_confirmed and _ready(current).get("reason") == "ProviderNotFound":
                raise UnknownProvider(str(_ready(current).get("message")))
            status = _status(current)
            return status.get("phase") == "Ready" and status.get("observedGeneration", 0) >= generation

        hint = f"; it stays (`agentaccounts revoke {name} -n {namespace}` withdraws it)"
        try:
            return await self.wait(body, done, within, progress, "Ready", hint)
        except UnknownProvider:
            uid = body["metadata"]["uid"]
            await self._api("delete AgentAccount", self.kube.delete_account(namespace, name, uid))
            raise

    async def credentials(self, body: dict[str, Any]) -> Credentials:
        namespace, secret = body["metadata"]["namespace"], _status(body).get("secretName")
        if not secret:
            raise ClientError(f"AgentAccount {namespace}/{body['metadata']['name']} names no Secret yet")
        try:
            found = await self.kube.get("Secret", namespace, secret)
        except KubeApiError as exc:
            if exc.status == 403:
                name = body["metadata"]["name"]
                raise Refused(
                    f"refused by RBAC: you may not read Secret {namespace}/{secret}; AgentAccount {name} is "
                    "Ready: `--output secret` names the Secret for a pod to mount, `agentaccounts revoke "
                    f"{name} -n {namespace}` ends it"
                ) from None
            raise translated(exc, f"get Secret {secret}") from None
        if found is None:
            raise ClientError(f"Secret {namespace}/{secret} is gone (the account expired meanwhile?)")
        data = {k: base64.b64decode(v).decode() for k, v in (found.get("data") or {}).items()}
        return Credentials(secret_name=secret, data=data)

    async def extend(
        self, namespace: str, name: str, lifetime: str, within: float, progress: Progress
    ) -> dict[str, Any]:
        """Set spec.lifetime (counted from issuedAt) and wait until the operator has applied it."""
        body = await self.get(namespace, name)
        if _status(body).get("phase") == "Expired":
            raise UsageError(f"AgentAccount {namespace}/{name} has expired; request a new one")
        patched = await self._patch(namespace, name, {"spec": {"lifetime": lifetime}})
        generation = patched["metadata"].get("generation", 1)

        def done(current: dict[str, Any]) -> bool:
            status = _status(current)
            if status.get("phase") == "Expired":
                return True  # shortened into the past: revoked
            return status.get("phase") == "Ready" and status.get("observedGeneration", 0) >= generation

        if not _status(patched).get("issuedAt"):
            return patched  # nothing issued yet: the lifetime counts from the issue to come
        return await self.wait(patched, done, within, progress, "updated")

    async def revoke(
        self, namespace: str, name: str, within: float, progress: Progress
    ) -> tuple[str, dict[str, Any]]:
        """End the account now; (what happened, the account). The record stays (keepExpiredFor)."""
        body = await self.get(namespace, name)
        status = _status(body)
        if status.get("phase") == "Expired":
            return "already expired", body
        if not status.get("issuedAt"):
            if status.get("phase") in ("Failed", "DryRun"):
                return "nothing was issued", body
            # Pending: nothing issued yet, but it might be (say, once approved); deleting withdraws it.
            await self._api(
                "delete AgentAccount", self.kube.delete_account(namespace, name, body["metadata"]["uid"])
            )
            return "withdrawn (deleted: nothing had been issued)", body
        if _time(status["expiresAt"]) > self.now():
            lifetime = revoking_lifetime(status, self.now())
            body = await self._patch(namespace, name, {"spec": {"lifetime": lifetime}})
        try:
            ended = await self.wait(
                body, lambda b: _status(b).get("phase") == "Expired", within, progress, "revoked"
            )
        except AccountFailed as exc:  # e.g. the requester it was issued on has lost those rights since
            raise AccountFailed(
                f"{exc.message}; not revoked early: the identity still ends at {status['expiresAt']} "
                f"(`kubectl delete agentaccount {name} -n {namespace}` ends it now, without the record)"
            ) from None
        return "revoked", ended

    async def decide(self, namespace: str, name: str, verb: str) -> None:
        """approve|deny: the webhook checks RBAC verb `approve` on the provider and signs who decided."""
        await self.get(namespace, name)
        await self._api(
            f"{verb} AgentAccount {name}",
            self.kube.annotate_account(namespace, name, {APPROVAL_REQUEST: verb}),
        )

    async def _patch(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        patched = await self._api(
            f"patch AgentAccount {name}", self.kube.patch_account(namespace, name, patch)
        )
        if patched is None:
            raise NotFound(f"no AgentAccount {name!r} in namespace {namespace}")
        return dict(patched)
