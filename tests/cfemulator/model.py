"""Records the emulator keeps (accounts, tokens, temporary R2 credentials) and their wire formats.

Why it exists: the shapes Cloudflare returns — timestamps, token values, which fields appear when —
are part of the contract the provider parses, so they are produced in exactly one place.

Token value format (decision): ``cfat_`` + 40 base62 characters + 8 lowercase hex digits of CRC32
over the first 45 characters (53 characters in all; the schema allows 40 to 80). Cloudflare documents the
prefix and "40 chars + checksum" but not the checksum algorithm, so CRC32 is the emulator's choice.
Only ``sha256(value)`` is stored: it is both the lookup key and, as for real R2, the S3 secret key.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import string
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .policy import Policy

_B62 = string.ascii_letters + string.digits
_VALUE = re.compile(r"^cfat_[A-Za-z0-9]{40}[0-9a-f]{8}$")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def new_token_value() -> str:
    head = "cfat_" + "".join(secrets.choice(_B62) for _ in range(40))
    return f"{head}{zlib.crc32(head.encode()):08x}"


def well_formed_value(value: str) -> bool:
    return bool(_VALUE.match(value)) and f"{zlib.crc32(value[:45].encode()):08x}" == value[45:]


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def ts(moment: datetime) -> str:
    """Cloudflare's timestamp style: UTC, whole seconds, ``Z`` suffix."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any, name: str) -> datetime:
    """RFC 3339 with an explicit offset (naive times are rejected); kept to whole seconds."""
    if not isinstance(value, str) or not _RFC3339.match(value):
        raise ValueError(f"{name} must be an RFC 3339 timestamp such as 2030-01-01T00:00:00Z")
    head, _, frac_and_tz = value.partition(".")
    if frac_and_tz:  # fromisoformat accepts at most 6 fractional digits; whole seconds are kept anyway
        tz = frac_and_tz.lstrip("0123456789")
        value = head + tz
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


@dataclass
class Token:
    id: str
    account_id: str
    name: str
    policies: list[Policy]
    value_hash: str
    issued_on: datetime
    modified_on: datetime
    not_before: datetime | None = None
    expires_on: datetime | None = None
    condition: dict[str, Any] | None = None
    disabled: bool = False
    last_used_on: datetime | None = None

    def status(self, now: datetime) -> str:
        if self.disabled:
            return "disabled"
        if self.expires_on is not None and now >= self.expires_on:
            return "expired"
        return "active"

    def unusable_reason(self, now: datetime) -> str | None:
        status = self.status(now)
        if status != "active":
            return f"token is {status}"
        if self.not_before is not None and now < self.not_before:
            return "token is not valid yet (not_before)"
        return None

    def api_view(self, now: datetime) -> dict[str, Any]:
        view: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "status": self.status(now),
            "issued_on": ts(self.issued_on),
            "modified_on": ts(self.modified_on),
            "policies": [p.api_view() for p in self.policies],
            "condition": self.condition or {},
        }
        # Optional timestamps are omitted, not null: the schema types them as non-nullable strings.
        for key in ("not_before", "expires_on", "last_used_on"):
            moment = getattr(self, key)
            if moment is not None:
                view[key] = ts(moment)
        return view


@dataclass
class Account:
    id: str
    name: str
    created_on: datetime
    type: str = "standard"
    preview: bool = False
    expires_at: datetime | None = None  # preview accounts only, until claimed
    claim_token: str | None = None
    claimed: bool = False
    collections: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    buckets: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (jurisdiction, name)

    def api_view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "type": self.type,
            "created_on": ts(self.created_on),
            "settings": {"enforce_twofactor": False},
        }


@dataclass
class TempCredential:
    access_key_id: str
    secret_access_key: str
    session_token: str
    parent_token_id: str
    account_id: str
    bucket: str
    jurisdiction: str
    permission: str
    prefixes: list[str]
    objects: list[str]
    expires_at: datetime
