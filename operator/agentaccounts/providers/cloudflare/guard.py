"""Two rules no provider object can loosen: where the Cloudflare API is, and what no agent may hold.

Whoever may write an AccountProvider decides which permissions its agents get, but not these:

1. **apiBaseURL allow-list.** The parent token is sent to `spec.cloudflare.apiBaseURL` on every call, so
   a provider pointing it elsewhere would hand the token to that server. The URL must begin with one of
   the operator's own `AGENTACCOUNTS_ALLOWED_API_BASE_URLS` (default `https://api.cloudflare.com/client/v4`):
   scheme, host and port equal, and the entry's path a prefix of the URL's path at a `/` boundary (so
   neither `https://api.cloudflare.com.evil.example` nor `.../client/v4x` matches `.../client/v4`). It
   must be `https`; plain `http` only to a loopback host (127.0.0.0/8, ::1, localhost: the emulator).
   No user-info, query, fragment, backslash, whitespace or dot segment (httpx resolves `..`, which
   would step out of the allowed path). Checked when the provider is built, before the parent token is
   read: `check_api_base_url`.
2. **Never-grantable permission groups.** An agent token never carries a group that manages tokens,
   members, account settings or billing, whatever the provider's policy allows (`NEVER_GRANTABLE`,
   case-insensitive substrings of the group name). Checked first in `validate`, `plan` and `issue`, before
   any request: `check_scopes`. Mode `temporaryAccount` applies no scopes, so it has nothing to check.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import SplitResult, unquote, urlsplit

from agentaccounts.errors import InvalidSpec, NotPermitted
from agentaccounts.models import Scope

ALLOW_LIST_SETTING = "AGENTACCOUNTS_ALLOWED_API_BASE_URLS"
_DEFAULT_PORTS = {"https": 443, "http": 80}
_UNSAFE = re.compile(r"[\s\\]")


@dataclass(frozen=True)
class Forbidden:
    """Permission groups whose name contains `fragment` (case-insensitive) are never granted."""

    fragment: str
    reason: str


NEVER_GRANTABLE: tuple[Forbidden, ...] = (
    Forbidden(
        "API Tokens",
        "it reads or mints API tokens: an agent could mint tokens without expiry that revocation and "
        "the orphan sweep never see",
    ),
    Forbidden(
        "Account Settings",
        "it reads or changes the account's configuration, including the audit log of every other "
        "agent's calls",
    ),
    Forbidden("Member", "it manages account memberships: an agent could add people or roles to the account"),
    Forbidden("Billing", "it reads or changes the account's billing and subscriptions"),
)
# Substrings, not exact names, on purpose: a group Cloudflare adds later (e.g. "... API Tokens Edit")
# is refused without a change here; refusing a harmless group is the cheaper mistake.


def forbidden_permission(name: str) -> str | None:
    """Why the permission group `name` is never grantable (the reason and the rule), or None."""
    folded = name.casefold()
    for rule in NEVER_GRANTABLE:
        if rule.fragment.casefold() in folded:
            return f'{rule.reason} (rule: names containing "{rule.fragment}")'
    return None


def check_scopes(scopes: Iterable[Scope]) -> None:
    """NotPermitted naming the first never-grantable permission group in `scopes`."""
    for scope in scopes:
        for permission in scope.permissions:
            reason = forbidden_permission(permission)
            if reason is not None:
                raise NotPermitted(f'permission "{permission}" is never grantable: {reason}')


@dataclass(frozen=True)
class _Origin:
    scheme: str
    host: str
    port: int
    path: str  # no trailing "/"


def check_api_base_url(url: str, allowed: Iterable[str]) -> None:
    """InvalidSpec unless `url` is https (http only for loopback) and begins with an `allowed` entry.

    `allowed` comes from the operator's settings only, never from a provider object; an entry that is
    not itself a plain http(s) URL matches nothing.
    """
    target = _parse(url)
    if target is None:
        # Not echoed: a URL that fails here may carry user-info, i.e. a credential.
        raise InvalidSpec(
            "apiBaseURL is not a plain http(s) URL: it needs a scheme and a host, and may not carry "
            "user-info, a query, a fragment, a backslash, whitespace or a '.'/'..' path segment"
        )
    if target.scheme != "https" and not (target.scheme == "http" and is_loopback(target.host)):
        raise InvalidSpec(f"apiBaseURL {url!r} must be https (http only for loopback)")
    entries = [entry for entry in (_parse(text) for text in allowed) if entry is not None]
    if not any(_within(target, entry) for entry in entries):
        listed = ", ".join(_show(entry) for entry in entries) or "nothing"
        raise InvalidSpec(
            f"apiBaseURL {url!r} is not in the operator's allow-list {ALLOW_LIST_SETTING} ({listed})"
        )


def is_loopback(host: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1 (an IPv4-mapped address is not loopback here)."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv4Address):
        return address in ipaddress.IPv4Network("127.0.0.0/8")
    return address == ipaddress.IPv6Address("::1")


def _parse(url: str) -> _Origin | None:
    if _UNSAFE.search(url):
        return None
    try:
        parts: SplitResult = urlsplit(url)
        port = parts.port
    except ValueError:  # an unparseable netloc or port
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or parts.username is not None:
        return None
    if parts.query or parts.fragment or "?" in url or "#" in url:
        return None
    if any(unquote(segment) in (".", "..") for segment in parts.path.split("/")):
        return None
    return _Origin(scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme], parts.path.rstrip("/"))


def _within(target: _Origin, entry: _Origin) -> bool:
    if (target.scheme, target.host, target.port) != (entry.scheme, entry.host, entry.port):
        return False
    return target.path == entry.path or target.path.startswith(entry.path + "/")


def _show(entry: _Origin) -> str:
    host = f"[{entry.host}]" if ":" in entry.host else entry.host
    default = _DEFAULT_PORTS[entry.scheme] == entry.port
    return f"{entry.scheme}://{host}{'' if default else f':{entry.port}'}{entry.path}"
