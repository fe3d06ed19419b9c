"""Operator-signed stamps on AgentAccounts: who asked (the requester) and who approved.

Every permission an account carries is checked as its requester, so the requester must be a fact the
API server established, never something a user wrote. The mutating admission webhook takes it from
the admission request's userInfo and writes three annotations:

    agentaccounts.dev/requested-by          the username (what `kubectl get aga` shows)
    agentaccounts.dev/requester             {"username", "uid", "groups", "extra", "at"} as JSON
    agentaccounts.dev/requester-signature   HMAC-SHA256 over namespace, requester and spec

Annotations are writable by anyone who may update the object, so reconcile trusts them only when the
signature verifies with the operator's key (a Secret only the operator reads). That is what makes the
reconcile-time re-check meaningful with admission bypassed: an account created without the webhook
has no valid stamp and is never issued, and a hand-written stamp naming an admin does not verify.

What the signature covers, and why:
- the namespace and the whole spec except keepExpiredFor (normalised through the model, so CRD
  defaulting cannot break it): a spec edit made without the webhook invalidates the stamp, and one
  made through it re-stamps the editor, whose rights are then the ones checked. Nobody can edit
  someone else's account into asking for more in their name (a confused deputy).
- `at`, the stamp time: a stamp older than the object itself (creationTimestamp minus MAX_SKEW) is
  refused, so a stamp copied from a deleted account cannot be replayed onto a new one. The object's
  name and uid are not covered because a mutating webhook does not see them for generateName creates.
Approval stamps (`approved-by`) carry the object's uid, which exists by the time anyone approves.

One edit keeps the stamps instead of re-stamping the editor: a lifetime that only ends an issued
account sooner (admission.py decides that). `shortened_stamp` re-signs the same requester and
approval over the shortened spec and records the editor in the signed payload (`shortenedBy`), so
reconcile still checks everything as the requester whose rights the account was issued on.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime, timedelta
from typing import Any

from agentaccounts.errors import NotPermitted
from agentaccounts.models import AgentAccountSpec, Requester

PREFIX = "agentaccounts.dev/"
REQUESTED_BY = PREFIX + "requested-by"
REQUESTER = PREFIX + "requester"
REQUESTER_SIGNATURE = PREFIX + "requester-signature"
APPROVAL_REQUEST = PREFIX + "approval"  # what an approver writes: "approve" or "deny" (agentaccounts approve)
APPROVED_BY = PREFIX + "approved-by"  # {"decision", "by", "at"}: written by the webhook only
APPROVAL_SIGNATURE = PREFIX + "approval-signature"
SHORTENED_BY = "shortenedBy"  # in the requester payload: {"username", "at"} of the last shortening
STAMPS = (REQUESTED_BY, REQUESTER, REQUESTER_SIGNATURE, APPROVED_BY, APPROVAL_SIGNATURE)
MAX_SKEW = timedelta(seconds=60)  # clock difference tolerated between the operator and the API server


def spec_digest(spec: dict[str, Any]) -> str:
    """A digest of what the account asks for, stable across CRD defaulting and key order."""
    model = AgentAccountSpec.model_validate(spec)
    canonical = model.model_dump(mode="json", by_alias=True, exclude={"keep_expired_for"})
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


def requester_from_userinfo(userinfo: dict[str, Any]) -> Requester:
    return Requester(
        username=str(userinfo.get("username") or ""),
        uid=str(userinfo.get("uid") or ""),
        groups=[str(g) for g in userinfo.get("groups") or []],
        extra={str(k): [str(x) for x in v] for k, v in (userinfo.get("extra") or {}).items()},
    )


class Signer:
    """HMAC-SHA256 with the operator's key. The key never leaves the operator process."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the signing key must be at least 32 bytes")
        self._key = key

    def _mac(self, *parts: str) -> str:
        return "v1:" + hmac.new(self._key, "\x00".join(parts).encode(), hashlib.sha256).hexdigest()

    def requester_stamp(
        self, namespace: str, spec: dict[str, Any], requester: Requester, now: datetime
    ) -> dict[str, str]:
        """The annotations the mutating webhook writes on CREATE and on every spec change."""
        payload = json.dumps(
            {**requester.model_dump(), "at": now.isoformat(timespec="seconds")}, sort_keys=True
        )
        return {
            REQUESTED_BY: requester.username,
            REQUESTER: payload,
            REQUESTER_SIGNATURE: self._mac("requester", namespace, payload, spec_digest(spec)),
        }

    def verified_requester(
        self,
        namespace: str,
        spec: dict[str, Any],
        annotations: dict[str, str],
        created_at: datetime | None,
    ) -> Requester:
        """The requester, if the stamp is genuine and fits this object; NotPermitted otherwise."""
        payload, signature = annotations.get(REQUESTER), annotations.get(REQUESTER_SIGNATURE, "")
        if not payload:
            raise NotPermitted(
                "rule requester-recorded: no requester was recorded at admission (was the account "
                "created while the operator's admission webhook was not registered?); nothing is "
                "issued without one. Delete and re-create the AgentAccount"
            )
        expected = self._mac("requester", namespace, payload, spec_digest(spec))
        if not hmac.compare_digest(expected, signature):
            raise NotPermitted(
                "rule requester-recorded: the requester stamp does not match this account's namespace "
                "and spec (written or edited without admission); nothing is issued. Re-apply the spec "
                "through the API server with the operator running"
            )
        data = json.loads(payload)
        at = datetime.fromisoformat(str(data.pop("at")))
        if created_at is not None and at < created_at - MAX_SKEW:
            raise NotPermitted(
                "rule requester-recorded: the requester stamp predates this AgentAccount (copied from "
                "another object); nothing is issued"
            )
        return Requester.model_validate(data)

    def shortened_stamp(
        self,
        namespace: str,
        uid: str,
        old_spec: dict[str, Any],
        annotations: dict[str, str],
        created_at: datetime | None,
        new_spec: dict[str, Any],
        editor: str,
        now: datetime,
    ) -> dict[str, str | None] | None:
        """The stamps of an account whose lifetime `editor` only shortened (admission checks that): the
        genuine requester and approval of `old_spec`, re-signed over `new_spec`, with who shortened it
        and when. None when the current requester stamp is not genuine: then the editor is stamped."""
        try:
            self.verified_requester(namespace, old_spec, annotations, created_at)
        except NotPermitted:
            return None
        data = json.loads(annotations[REQUESTER])
        data[SHORTENED_BY] = {"username": editor, "at": now.isoformat(timespec="seconds")}
        payload = json.dumps(data, sort_keys=True)
        digest = spec_digest(new_spec)
        stamps: dict[str, str | None] = {
            REQUESTED_BY: str(data["username"]),
            REQUESTER: payload,
            REQUESTER_SIGNATURE: self._mac("requester", namespace, payload, digest),
            APPROVED_BY: None,
            APPROVAL_SIGNATURE: None,
        }
        if self.verified_approval(uid, old_spec, annotations) is not None:
            approval = annotations[APPROVED_BY]
            stamps[APPROVED_BY] = approval
            stamps[APPROVAL_SIGNATURE] = self._mac("approval", uid, approval, digest)
        return stamps

    def approval_stamp(
        self, uid: str, spec: dict[str, Any], decision: str, by: str, now: datetime
    ) -> dict[str, str]:
        payload = json.dumps(
            {"decision": decision, "by": by, "at": now.isoformat(timespec="seconds")}, sort_keys=True
        )
        return {
            APPROVED_BY: payload,
            APPROVAL_SIGNATURE: self._mac("approval", uid, payload, spec_digest(spec)),
        }

    def verified_approval(
        self, uid: str, spec: dict[str, Any], annotations: dict[str, str]
    ) -> dict[str, str] | None:
        """{"decision": "Approved"|"Denied", "by", "at"} for a genuine approval of this very spec;
        None when there is none (or it does not verify: then it is as if nobody had approved)."""
        payload, signature = annotations.get(APPROVED_BY), annotations.get(APPROVAL_SIGNATURE, "")
        if not payload:
            return None
        if not hmac.compare_digest(self._mac("approval", uid, payload, spec_digest(spec)), signature):
            return None
        return {str(k): str(v) for k, v in json.loads(payload).items()}
