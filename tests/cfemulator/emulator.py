"""``Emulator``: start/stop the server on a background thread, and the Python control API for tests.

Why a thread with its own event loop: the same object must serve sync tests, async tests (whose loop
must not be blocked or shared) and ``python -m cfemulator``. Setup runs *inside* the thread because a
second loop cannot be driven from a thread whose loop is already running (an async test).
Clean shutdown matters (warnings are errors): stop() cleans up the runner, drains the default executor
used for proof-of-work checks, and closes the loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from aiohttp import web

from . import catalogue, r2
from . import policy as P
from .app import build_app
from .context import API_PREFIX, Context, Exchange, PreviewSettings
from .faults import Faults
from .ratelimit import RateLimiter
from .store import Store


class Emulator:
    def __init__(
        self,
        *,
        limit: int = 1200,
        window: float = 300.0,
        block: float = 300.0,
        token_quota: int = 500,
        previews: PreviewSettings | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.store = Store(token_quota)
        self.limiter = RateLimiter(limit, window, block)
        self.faults = Faults()
        self.previews = previews or PreviewSettings()
        self._ctx = Context(self.store, self.limiter, self.faults, self.previews)
        self._host, self._port = host, port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.origin = ""  # "http://127.0.0.1:PORT" once started
        self.base_url = ""  # origin + "/client/v4"

    # --- lifecycle --------------------------------------------------------------------------------------
    def start(self) -> str:
        """Bind (port 0 = a free port), serve in a background thread, return the API base URL."""
        if self._thread is not None:
            raise RuntimeError("emulator already started")
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._run, args=(ready, failure), name="cfemulator", daemon=True
        )
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = self._loop = self._runner = None
            raise failure[0]
        return self.base_url

    def _run(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            self._runner = web.AppRunner(build_app(self._ctx, self), access_log=None, shutdown_timeout=1.0)
            loop.run_until_complete(self._runner.setup())
            loop.run_until_complete(web.TCPSite(self._runner, self._host, self._port).start())
            port = self._runner.addresses[0][1]
            self.origin = self._ctx.origin = f"http://{self._host}:{port}"
            self.base_url = self.origin + API_PREFIX
        except BaseException as exc:  # reported to start(), which re-raises it in the caller's thread
            failure.append(exc)
            if self._runner is not None:
                loop.run_until_complete(self._runner.cleanup())
            loop.close()
            ready.set()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    def stop(self) -> None:
        """Close every connection and the loop; idempotent."""
        loop, thread, runner = self._loop, self._thread, self._runner
        if loop is None or thread is None or runner is None:
            return
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        self._loop = self._thread = self._runner = None

    def __enter__(self) -> Emulator:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- seeding ----------------------------------------------------------------------------------------
    def add_account(self, name: str | None = None) -> str:
        return self.store.add_account(name).id

    def add_zone(self, account_id: str, name: str = "example.com") -> str:
        return self.store.add_zone(account_id, name)

    def add_bucket(self, account_id: str, name: str, jurisdiction: str = "default") -> None:
        self.store.add_bucket(account_id, name, jurisdiction)

    def mint_token(
        self,
        account_id: str,
        permissions: Sequence[str] = (),
        resources: Mapping[str, Any] | None = None,
        *,
        name: str = "emulator-minted",
        policies: list[dict[str, Any]] | None = None,
        not_before: datetime | None = None,
        expires_on: datetime | None = None,
        condition: dict[str, Any] | None = None,
    ) -> str:
        """Create a token out of band (no auth, no quota check) and return its secret value.

        ``permissions`` are group names. Without ``resources`` each group gets the whole account in its
        own scope: the account key for account groups, all zones (nested form) for zone groups; R2
        bucket groups need explicit ``resources``. ``policies`` (API format) overrides both.
        """
        raw = (
            list(policies) if policies is not None else self._policies_for(account_id, permissions, resources)
        )
        parsed = P.parse_policies(raw, self.store.new_id)
        _, value = self.store.create_token(
            account_id,
            name,
            parsed,
            not_before=not_before,
            expires_on=expires_on,
            condition=P.parse_condition(condition),
            enforce_quota=False,
        )
        return value

    @staticmethod
    def _policies_for(
        account_id: str, names: Sequence[str], resources: Mapping[str, Any] | None
    ) -> list[dict[str, Any]]:
        if resources is not None:
            groups = [{"id": catalogue.named(n).id} for n in names]
            return [{"effect": "allow", "permission_groups": groups, "resources": dict(resources)}]
        by_scope: dict[str, list[dict[str, str]]] = {}
        for n in names:
            group = catalogue.named(n)
            if group.scope == catalogue.BUCKET:
                raise ValueError(f"{n!r} is bucket-scoped: pass resources naming the bucket(s)")
            by_scope.setdefault(group.scope, []).append({"id": group.id})
        key = f"{P.ACCOUNT_PREFIX}{account_id}"
        scoped_resources = {catalogue.ACCOUNT: {key: "*"}, catalogue.ZONE: {key: {P.ALL_ZONES_KEY: "*"}}}
        return [
            {"effect": "allow", "permission_groups": g, "resources": scoped_resources[s]}
            for s, g in by_scope.items()
        ]

    # --- inspection -------------------------------------------------------------------------------------
    def token_id(self, value: str) -> str | None:
        token = self.store.token_by_value(value)
        return token.id if token else None

    def token_info(self, token_id: str) -> dict[str, Any] | None:
        with self.store.lock:
            token = self.store.tokens.get(token_id)
            if token is None:
                return None
            view = token.api_view(self.store.now())
        return view | {
            "account_id": token.account_id,
            "request_count": self.request_count(token_id),
            "blocked_for": self.blocked_for(token_id),
        }

    def list_tokens(self, account_id: str) -> list[dict[str, Any]]:
        """Every token of the account, values never included (as the API would list them)."""
        return [info for t in self.store.account_tokens(account_id) if (info := self.token_info(t.id))]

    def request_count(self, token_id: str) -> int:
        """API requests presented with this token, refused ones (429, 403) included."""
        return self.limiter.count(token_id)

    def blocked_for(self, token_id: str) -> float:
        return self.limiter.blocked_for(token_id)

    def is_blocked(self, token_id: str) -> bool:
        return self.blocked_for(token_id) > 0

    def check_r2_keys(self, access_key_id: str, secret: str, **options: Any) -> bool:
        """See ``r2.check_r2_keys``: session_token, bucket, jurisdiction, write, key."""
        return r2.check_r2_keys(self.store, access_key_id, secret, **options)

    def audit_log(self, account_id: str) -> list[dict[str, Any]]:
        """The account's audit-log v2 entries, oldest first, as GET .../logs/audit serves them."""
        with self.store.lock:
            return [e.entry for e in self.store.audit if e.entry["account"]["id"] == account_id]

    def account_info(self, account_id: str) -> dict[str, Any] | None:
        account = self.store.account(account_id)
        if account is None:
            return None
        expires = account.expires_at.isoformat() if account.expires_at else None
        return account.api_view() | {
            "preview": account.preview,
            "claimed": account.claimed,
            "expires_at": expires,
        }

    def claim(self, account_id: str) -> None:
        with self.store.lock:
            account = self.store.accounts[account_id]
            account.claimed, account.expires_at = True, None

    @property
    def context(self) -> Context:
        """The live state shared with the handlers (white-box tests only; hold ``store.lock``)."""
        return self._ctx

    @property
    def requests(self) -> list[Exchange]:
        return list(self._ctx.exchanges)

    def clear_requests(self) -> None:
        self._ctx.exchanges.clear()
