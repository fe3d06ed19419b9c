"""Small builders for tests that talk to the emulator: headers, resource keys, policies, polling.

Why it exists: every test (the emulator's own and the provider's) writes the same policy dicts and
"poll until" loops; getting a resource key subtly wrong in a test would test nothing. Polling always
has a deadline — house style forbids fixed sleeps as synchronisation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from . import catalogue
from .policy import ACCOUNT_PREFIX, ALL_ZONES_KEY, BUCKET_PREFIX, ZONE_PREFIX

T = TypeVar("T")


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def account_key(account_id: str) -> dict[str, Any]:
    return {ACCOUNT_PREFIX + account_id: "*"}


def all_zones_key(account_id: str) -> dict[str, Any]:
    return {ACCOUNT_PREFIX + account_id: {ALL_ZONES_KEY: "*"}}


def zone_key(zone_id: str) -> dict[str, Any]:
    return {ZONE_PREFIX + zone_id: "*"}


def bucket_key(account_id: str, bucket: str, jurisdiction: str = "default") -> dict[str, Any]:
    return {f"{BUCKET_PREFIX}{account_id}_{jurisdiction}_{bucket}": "*"}


def policy(effect: str, resources: dict[str, Any], *names: str, scope: str | None = None) -> dict[str, Any]:
    """One API-format policy granting (or denying) the named groups on ``resources``."""
    groups = [{"id": catalogue.named(n, scope).id} for n in names]
    return {"effect": effect, "resources": resources, "permission_groups": groups}


def allow(resources: dict[str, Any], *names: str, scope: str | None = None) -> dict[str, Any]:
    return policy("allow", resources, *names, scope=scope)


def deny(resources: dict[str, Any], *names: str, scope: str | None = None) -> dict[str, Any]:
    return policy("deny", resources, *names, scope=scope)


def wait_until(
    probe: Callable[[], T], *, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"
) -> T:
    """Call ``probe`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
