"""status.activity: an account's request summary and bounded recent trail. Pure; the clock is passed in.

Status is where the trail lives, so it survives an operator restart (a restarted operator continues
from what status says) and goes with the AgentAccount record (deleting the record deletes its trail).
Everything is bounded, because status is an etcd object (1.5 MiB at most, read on every list):
- `recent`: the last MAX_RECENT requests, and at most MAX_RECENT_BYTES of JSON (~64 KiB);
- `busiest`: counts of at most MAX_PAIRS verb/resource pairs, kept with the Space-Saving algorithm
  (a new pair, once the table is full, replaces the smallest count and inherits it, so the heavy hitters
  are always in the table and no count is ever under-reported);
- `requests`, `denied`, `firstAt`, `lastAt`: exact counters over the whole life of the account.
The full trail is the audit stream (stream.py); this is the summary people read with
`agentaccounts activity NAME`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

MAX_RECENT = 300
MAX_RECENT_BYTES = 64 * 1024
MAX_PAIRS = 32
DENIED_CODES = (401, 403)  # refused: not authenticated (a revoked token) or not authorized


@dataclass(frozen=True)
class Entry:
    """One request, as status and the CLI show it. Same fields as providers.base.ActivityEntry."""

    time: str  # RFC 3339, UTC
    verb: str
    resource: str
    name: str = ""
    namespace: str = ""
    code: int = 0  # 0: the source does not say
    audit_id: str = ""

    def to_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"time": self.time, "verb": self.verb, "resource": self.resource}
        for key, value in (("name", self.name), ("namespace", self.namespace), ("auditID", self.audit_id)):
            if value:
                out[key] = value
        if self.code:
            out["code"] = self.code
        return out

    @classmethod
    def from_status(cls, data: dict[str, Any]) -> Entry:
        return cls(
            time=str(data.get("time") or ""),
            verb=str(data.get("verb") or ""),
            resource=str(data.get("resource") or ""),
            name=str(data.get("name") or ""),
            namespace=str(data.get("namespace") or ""),
            code=int(data.get("code") or 0),
            audit_id=str(data.get("auditID") or ""),
        )

    @property
    def denied(self) -> bool:
        return self.code in DENIED_CODES


class Trail:
    """An account's activity, built from status.activity, with entries added; `status()` writes it back."""

    def __init__(self, activity: dict[str, Any] | None = None) -> None:
        activity = activity or {}
        self.requests = int(activity.get("requests") or 0)
        self.denied = int(activity.get("denied") or 0)
        self.first_at = str(activity.get("firstAt") or "")
        self.last_at = str(activity.get("lastAt") or "")
        self.pairs: dict[tuple[str, str], int] = {
            (str(p.get("verb", "")), str(p.get("resource", ""))): int(p.get("count") or 0)
            for p in activity.get("busiest") or []
        }
        self.recent = [Entry.from_status(e) for e in activity.get("recent") or []]
        self.notes: list[str] = [str(n) for n in activity.get("notes") or []]
        self.complete = bool(activity.get("complete", True))

    def add(self, entries: Iterable[Entry]) -> int:
        """Add requests not seen before (an audit id already in the recent trail is a resent batch);
        returns how many were new."""
        seen = {e.audit_id for e in self.recent if e.audit_id}
        added = 0
        for entry in entries:
            if entry.audit_id and entry.audit_id in seen:
                continue
            seen.add(entry.audit_id)
            added += 1
            self.requests += 1
            self.denied += entry.denied
            if entry.time and (not self.first_at or entry.time < self.first_at):
                self.first_at = entry.time
            if entry.time and entry.time > self.last_at:
                self.last_at = entry.time
            self._count((entry.verb, entry.resource))
            self.recent.append(entry)
        if added:
            self.recent.sort(key=lambda e: e.time)  # stable: same-time entries keep arrival order
            self._bound()
        return added

    def note(self, note: str, complete: bool) -> None:
        """What a source could not show (e.g. Cloudflare records no reads); kept, deduplicated."""
        if note and note not in self.notes:
            self.notes = [*self.notes, note][-8:]
        self.complete = self.complete and complete

    def _count(self, pair: tuple[str, str]) -> None:
        if pair in self.pairs or len(self.pairs) < MAX_PAIRS:
            self.pairs[pair] = self.pairs.get(pair, 0) + 1
            return
        smallest = min(self.pairs, key=lambda p: self.pairs[p])
        self.pairs[pair] = self.pairs.pop(smallest) + 1  # Space-Saving: inherit the evicted count

    def _bound(self) -> None:
        del self.recent[:-MAX_RECENT]
        sizes = [len(json.dumps(e.to_status())) + 1 for e in self.recent]
        total, start = sum(sizes), 0
        while total > MAX_RECENT_BYTES:
            total -= sizes[start]
            start += 1
        del self.recent[:start]

    def busiest(self, top: int = MAX_PAIRS) -> list[dict[str, Any]]:
        ranked = sorted(self.pairs.items(), key=lambda item: (-item[1], item[0]))[:top]
        return [{"verb": verb, "resource": resource, "count": count} for (verb, resource), count in ranked]

    def status(self, now: datetime) -> dict[str, Any]:
        """The whole status.activity object (a merge patch replaces its lists as a whole)."""
        return {
            "requests": self.requests,
            "denied": self.denied,
            "firstAt": self.first_at or None,
            "lastAt": self.last_at or None,
            "busiest": self.busiest(),
            "recent": [e.to_status() for e in self.recent],
            "notes": self.notes or None,
            "complete": self.complete,
            "updatedAt": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
