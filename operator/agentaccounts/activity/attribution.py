"""Which AgentAccount made a request: audit event -> account, by credential id. Pure, no I/O.

Since Kubernetes 1.32 every ServiceAccount token carries a credential id, and each audit event of a
request made with it names it: `user.extra["authentication.kubernetes.io/credential-id"] = ["JTI=<jti>"]`.
The operator records the credential id of every token it mints (status.credentialIds), so an event is
tied to one AgentAccount and one issue of it. Never by name alone: a ServiceAccount of the same name
(recreated after the account was deleted, or someone else's in another cluster posting to the same
endpoint) makes requests with other tokens, and those are not this account's. The event's username
must match the account's ServiceAccount too, so a recorded id cannot be borrowed by another identity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agentaccounts.activity.trail import Entry

CREDENTIAL_ID_KEY = "authentication.kubernetes.io/credential-id"
SA_PREFIX = "system:serviceaccount:"
# Stages that end a request. RequestReceived is omitted by the policy; ResponseStarted precedes the
# ResponseComplete of a long-running request (a watch) and would count it twice.
FINAL_STAGES = ("ResponseComplete", "Panic")
MAX_CREDENTIAL_IDS = 16  # per account in status: re-issues and extensions each mint one token


@dataclass(frozen=True)
class Identity:
    """One AgentAccount as attribution knows it."""

    namespace: str
    name: str
    uid: str
    username: str  # system:serviceaccount:<ns>:<sa>
    requester: str = ""  # who asked for the account (status.requester.username)


@dataclass(frozen=True)
class Request:
    """One agent request from an audit event: who made it (credential id + username) and what it was."""

    credential_id: str
    username: str
    entry: Entry


def parse_event(event: dict[str, Any]) -> Request | None:
    """The request an audit event records, or None when it is not a finished ServiceAccount request
    with a credential id (nothing else can be attributed)."""
    if not isinstance(event, dict) or event.get("stage") not in FINAL_STAGES:
        return None
    user = event.get("user") or {}
    username = str(user.get("username") or "")
    ids = (user.get("extra") or {}).get(CREDENTIAL_ID_KEY) or []
    if not username.startswith(SA_PREFIX) or not ids or not isinstance(ids, list):
        return None
    ref = event.get("objectRef") or {}
    resource = str(ref.get("resource") or "")
    if ref.get("subresource"):
        resource = f"{resource}/{ref['subresource']}"
    if not resource:  # a non-resource URL (/api, /version, /apis/...): its path is what was asked
        resource = str(event.get("requestURI") or "").split("?")[0]
    status = event.get("responseStatus") or {}
    entry = Entry(
        time=str(event.get("requestReceivedTimestamp") or event.get("stageTimestamp") or ""),
        verb=str(event.get("verb") or ""),
        resource=resource,
        name=str(ref.get("name") or ""),
        namespace=str(ref.get("namespace") or ""),
        code=int(status.get("code") or 0),
        audit_id=str(event.get("auditID") or ""),
    )
    return Request(credential_id=str(ids[0]), username=username, entry=entry)


def identity_of(body: dict[str, Any]) -> tuple[Identity, list[str]] | None:
    """An AgentAccount's identity and recorded credential ids, from its object; None when it has no
    ServiceAccount identity (another provider, or not issued yet)."""
    meta, status = body.get("metadata") or {}, body.get("status") or {}
    ref = status.get("accountRef") or {}
    ids = [str(i) for i in status.get("credentialIds") or [] if i]
    if ref.get("kind") != "ServiceAccount" or not ref.get("name") or not ids:
        return None
    namespace = str(ref.get("namespace") or meta.get("namespace") or "")
    identity = Identity(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        uid=str(meta.get("uid") or ""),
        username=f"{SA_PREFIX}{namespace}:{ref['name']}",
        requester=str((status.get("requester") or {}).get("username") or ""),
    )
    return identity, ids


def remember_id(ids: list[str], credential_id: str) -> list[str]:
    """status.credentialIds after one more token: newest last, bounded (the oldest tokens have long
    expired: a token lives at most the account's lifetime, and each issue mints one)."""
    if not credential_id or credential_id in ids:
        return list(ids)
    return [*ids, credential_id][-MAX_CREDENTIAL_IDS:]


class Index:
    """credential id -> Identity, for every account the operator knows of."""

    def __init__(self) -> None:
        self._by_id: dict[str, Identity] = {}
        self._ids: dict[str, set[str]] = {}  # uid -> its credential ids

    def __len__(self) -> int:
        return len(self._ids)

    def learn(self, identity: Identity, credential_ids: list[str]) -> None:
        self.forget(identity.uid)
        self._ids[identity.uid] = set(credential_ids)
        for credential_id in credential_ids:
            self._by_id[credential_id] = identity

    def forget(self, uid: str) -> None:
        for credential_id in self._ids.pop(uid, set()):
            if self._by_id.get(credential_id, None) is not None and self._by_id[credential_id].uid == uid:
                del self._by_id[credential_id]

    def attribute(self, request: Request) -> Identity | None:
        identity = self._by_id.get(request.credential_id)
        if identity is None or identity.username != request.username:
            return None
        return identity
