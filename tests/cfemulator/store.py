"""All emulator state behind one lock, shared by the HTTP handlers and the Python control API.

Why a lock: the server runs on its own event loop in a background thread while tests call the
control API from theirs. Handlers take ``store.lock`` only around synchronous sections (never across
an ``await``), so the two sides never deadlock. The wall clock is read through ``now()`` on every
request — expiry is checked against real time, as Cloudflare does (decision from the brief).
"""

from __future__ import annotations

import secrets
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from . import envelope as E
from . import policy as P
from .model import Account, TempCredential, Token, new_token_value, sha256_hex


class Store:
    def __init__(self, token_quota: int = 500, clock: Callable[[], datetime] | None = None) -> None:
        self.lock = threading.RLock()
        self.token_quota = token_quota
        self._clock = clock or (lambda: datetime.now(UTC))
        self.accounts: dict[str, Account] = {}
        self.zones: dict[str, dict[str, Any]] = {}  # zone id -> {id, name, account_id, dns_records}
        self.tokens: dict[str, Token] = {}  # insertion order = creation order (list order)
        self.by_hash: dict[str, str] = {}  # sha256(value) -> token id
        self.temp_creds: dict[str, TempCredential] = {}
        # Audit log v2 entries of every account, oldest first (auditlog.py writes and reads them). Kept
        # when a token or account is deleted: the log outlives what it describes, as Cloudflare's does.
        self.audit: list[Any] = []

    def now(self) -> datetime:
        return self._clock()

    @staticmethod
    def new_id() -> str:
        return uuid.uuid4().hex

    # --- accounts, zones, buckets -----------------------------------------------------------------------
    def add_account(
        self, name: str | None = None, *, preview: bool = False, expires_at: datetime | None = None
    ) -> Account:
        with self.lock:
            acct_id = self.new_id()
            account = Account(acct_id, name or f"Emulated account {acct_id[:8]}", self.now(), preview=preview)
            account.expires_at = expires_at
            if preview:
                account.claim_token = secrets.token_urlsafe(32)
            self.accounts[acct_id] = account
            return account

    def account(self, account_id: str) -> Account | None:
        with self.lock:
            self.purge()
            return self.accounts.get(account_id)

    def add_zone(self, account_id: str, name: str) -> str:
        with self.lock:
            self._require_account(account_id)
            zone_id = self.new_id()
            self.zones[zone_id] = {"id": zone_id, "name": name, "account_id": account_id, "dns_records": []}
            return zone_id

    def zone_account(self, zone_id: str) -> str | None:
        zone = self.zones.get(zone_id)
        return zone["account_id"] if zone else None

    def add_bucket(self, account_id: str, name: str, jurisdiction: str = "default") -> dict[str, Any]:
        with self.lock:
            account = self._require_account(account_id)
            bucket = {
                "name": name,
                "creation_date": self.now().isoformat(),
                "location": "WNAM",
                "jurisdiction": jurisdiction,
            }
            return account.buckets.setdefault((jurisdiction, name), bucket)

    def _require_account(self, account_id: str) -> Account:
        if account_id not in self.accounts:
            raise KeyError(f"unknown account {account_id}")
        return self.accounts[account_id]

    # --- tokens ---------------------------------------------------------------------------------------
    def account_tokens(self, account_id: str) -> list[Token]:
        with self.lock:
            self.purge()
            return [t for t in self.tokens.values() if t.account_id == account_id]

    def create_token(
        self,
        account_id: str,
        name: str,
        policies: list[P.Policy],
        *,
        not_before: datetime | None = None,
        expires_on: datetime | None = None,
        condition: dict[str, Any] | None = None,
        enforce_quota: bool = True,
    ) -> tuple[Token, str]:
        """Create a token and return it with its secret value (which is not stored)."""
        with self.lock:
            self._require_account(account_id)
            if enforce_quota and len(self.account_tokens(account_id)) >= self.token_quota:
                raise E.ApiError(
                    400,
                    E.QUOTA,
                    f"Maximum number of account API tokens ({self.token_quota}) reached for this account",
                )
            now = self.now()
            token = Token(
                self.new_id(), account_id, name, policies, "", now, now, not_before, expires_on, condition
            )
            self.tokens[token.id] = token
            return token, self._new_value(token)

    def _new_value(self, token: Token) -> str:
        self.by_hash.pop(token.value_hash, None)
        value = new_token_value()
        token.value_hash = sha256_hex(value)
        self.by_hash[token.value_hash] = token.id
        return value

    def roll(self, token: Token) -> str:
        with self.lock:
            token.modified_on = self.now()
            return self._new_value(token)

    def delete_token(self, token_id: str) -> None:
        with self.lock:
            token = self.tokens.pop(token_id, None)
            if token is not None:
                self.by_hash.pop(token.value_hash, None)

    def token_by_value(self, value: str) -> Token | None:
        with self.lock:
            self.purge()
            token_id = self.by_hash.get(sha256_hex(value))
            return self.tokens.get(token_id) if token_id else None

    # --- lifecycle --------------------------------------------------------------------------------------
    def purge(self) -> None:
        """Delete preview accounts past their expiry that nobody claimed (60 min by default)."""
        with self.lock:
            now = self.now()
            for account in list(self.accounts.values()):
                if account.expires_at is not None and not account.claimed and now >= account.expires_at:
                    self.delete_account(account.id)

    def delete_account(self, account_id: str) -> None:
        with self.lock:
            self.accounts.pop(account_id, None)
            for token in [t for t in self.tokens.values() if t.account_id == account_id]:
                self.delete_token(token.id)
            for zone_id in [z for z, zone in self.zones.items() if zone["account_id"] == account_id]:
                del self.zones[zone_id]
            for key in [k for k, c in self.temp_creds.items() if c.account_id == account_id]:
                del self.temp_creds[key]
