"""The operator's audit stream: one JSON line per agent request and per decision the operator made.

This is the full trail (status.activity keeps only a bounded summary): ship it wherever the cluster's
logs go. Two kinds of line, both with `ts` and `kind`:
- `"kind": "request"`: one request an agent made (time, account namespace/name/uid, requester, verb,
  resource, name, namespace, code, auditID, source);
- `"kind": "decision"`: the operator's own outcome for an account (`event`: issued, extended,
  approved, denied, expired, revoked, failed), with the requester, the provider identity, scopes and
  times as the caller passes them.
Never a credential: callers pass identities, names and times only; the credential id (a token's jti)
is the token's name, not the token.

It is a logger ("agentaccounts.audit", not propagated to the operator's own log), so writing a line
costs nothing when the stream is off and nothing here needs wiring into the reconciler; `configure`
points it at stdout, a file, or nowhere.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from agentaccounts.activity.attribution import Identity
from agentaccounts.activity.trail import Entry

AUDIT = logging.getLogger("agentaccounts.audit")
AUDIT.propagate = False  # the stream is not the operator's log; it goes only where `configure` says
DECISIONS = ("issued", "extended", "approved", "denied", "expired", "revoked", "failed")


def configure(destination: str) -> None:
    """Where the stream goes: "-" stdout; "" off; anything else a file appended to."""
    for old in list(AUDIT.handlers):
        AUDIT.removeHandler(old)
        old.close()
    if not destination:
        AUDIT.setLevel(logging.CRITICAL + 1)
        return
    handler: logging.Handler = (
        logging.StreamHandler(sys.stdout) if destination == "-" else logging.FileHandler(destination)
    )
    handler.setFormatter(logging.Formatter("%(message)s"))
    AUDIT.addHandler(handler)
    AUDIT.setLevel(logging.INFO)


def _write(record: dict[str, Any]) -> None:
    if AUDIT.isEnabledFor(logging.INFO):
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        AUDIT.info(json.dumps({"ts": stamp, **record}, separators=(",", ":")))


def request(identity: Identity, entry: Entry, source: str = "kubernetes-audit") -> None:
    _write(
        {
            "kind": "request",
            "time": entry.time,
            "account": {"namespace": identity.namespace, "name": identity.name, "uid": identity.uid},
            "requester": identity.requester,
            "verb": entry.verb,
            "resource": entry.resource,
            "name": entry.name,
            "namespace": entry.namespace,
            "code": entry.code,
            "auditID": entry.audit_id,
            "source": source,
        }
    )


def decision(event: str, namespace: str, name: str, uid: str, status: dict[str, Any], **fields: Any) -> None:
    """One decision about an account; `status` is the account's status (or the patch just written),
    from which the requester, provider identity and times are taken."""
    assert event in DECISIONS, event
    requester = (status.get("requester") or {}).get("username", "")
    _write(
        {
            "kind": "decision",
            "event": event,
            "account": {"namespace": namespace, "name": name, "uid": uid},
            "requester": requester,
            "provider": status.get("provider"),
            "identity": status.get("accountRef"),
            "issuedAt": status.get("issuedAt"),
            "expiresAt": status.get("expiresAt"),
            **{key: value for key, value in fields.items() if value is not None},
        }
    )
