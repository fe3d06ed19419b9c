"""cloudflare_guard: the apiBaseURL allow-list and the never-grantable permission groups (pure), and the
builder refusing a URL before the parent token is read or any request is sent."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, cast

import httpx
import pytest

from agentaccounts.errors import InvalidSpec, NotPermitted
from agentaccounts.kube import Kube
from agentaccounts.models import ProviderObject, Scope
from agentaccounts.providers import provider_for
from agentaccounts.providers.base import Deps
from agentaccounts.providers.cloudflare.guard import (
    NEVER_GRANTABLE,
    check_api_base_url,
    check_scopes,
    forbidden_permission,
    is_loopback,
)
from agentaccounts.providers.cloudflare.provider import CloudflareProvider
from agentaccounts.providers.resolve import parse_provider
from agentaccounts.settings import CLOUDFLARE_API, Settings

A = "0123456789abcdef0123456789abcdef"
PARENT = "cfat_PARENTparentPARENTparentPARENTparent0badc0de"
EMULATOR = "http://127.0.0.1:8787/client/v4"

ALLOW_LIST = "is not in the operator's allow-list AGENTACCOUNTS_ALLOWED_API_BASE_URLS"
HTTPS = "must be https (http only for loopback)"
PLAIN = "is not a plain http"


# -- apiBaseURL ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "refused"),
    [
        (CLOUDFLARE_API, None),
        ("https://api.cloudflare.com/client/v4/", None),
        ("HTTPS://API.Cloudflare.COM/client/v4", None),  # scheme and host are case-insensitive
        ("https://api.cloudflare.com:443/client/v4", None),  # the default port, spelled out
        ("https://api.cloudflare.com/client/v4/accounts", None),  # a prefix at a "/" boundary
        ("https://api.cloudflare.com.evil.example/client/v4", ALLOW_LIST),  # host is compared whole
        ("https://api.cloudflare.com/client/v4x", ALLOW_LIST),  # path prefix only at a "/" boundary
        ("https://api.cloudflare.com/client/v4.evil", ALLOW_LIST),
        ("https://api.cloudflare.com/client", ALLOW_LIST),  # shorter than the entry
        ("https://api.cloudflare.com/Client/v4", ALLOW_LIST),  # paths are case-sensitive
        ("https://api.cloudflare.com/client/%76%34", ALLOW_LIST),  # no decoding games
        ("https://api.cloudflare.com:8443/client/v4", ALLOW_LIST),
        ("https://api.cloudflare.com./client/v4", ALLOW_LIST),
        ("https://evil.example/client/v4", ALLOW_LIST),
        ("http://api.cloudflare.com/client/v4", HTTPS),
        ("https://api.cloudflare.com@evil.example/client/v4", PLAIN),  # user-info: really evil.example
        ("https://user:secret@api.cloudflare.com/client/v4", PLAIN),
        ("https://api.cloudflare.com/client/v4/../../evil", PLAIN),  # httpx would resolve ".."
        ("https://api.cloudflare.com/client/v4/%2e%2E/evil", PLAIN),
        ("https://api.cloudflare.com/client/v4/./x", PLAIN),
        ("https://api.cloudflare.com/client/v4?x=1", PLAIN),
        ("https://api.cloudflare.com/client/v4?", PLAIN),
        ("https://api.cloudflare.com/client/v4#frag", PLAIN),
        ("https://api.cloudflare.com\\@evil.example/client/v4", PLAIN),
        ("https://api.cloudflare.com/client/v4 ", PLAIN),
        ("https://api.cloudflare.com:99999/client/v4", PLAIN),
        ("ftp://api.cloudflare.com/client/v4", PLAIN),
        ("api.cloudflare.com/client/v4", PLAIN),
        ("https:///client/v4", PLAIN),
        ("", PLAIN),
    ],
)
def test_default_allow_list(url: str, refused: str | None) -> None:
    if refused is None:
        check_api_base_url(url, [CLOUDFLARE_API])
    else:
        with pytest.raises(InvalidSpec, match=refused.replace("(", r"\(").replace(")", r"\)")):
            check_api_base_url(url, [CLOUDFLARE_API])


LOOPBACK_LIST = [
    EMULATOR,
    "http://[::1]:8787/client/v4",
    "http://localhost:9000",
    "http://10.0.0.5/client/v4",  # listed, but plain http to a non-loopback host is refused anyway
    "https://cf.internal:8443/api/",  # a trailing "/" on an entry changes nothing
    "cf.internal/other",  # not a URL: matches nothing
]


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        (EMULATOR, None),
        ("http://[::1]:8787/client/v4/", None),
        ("http://localhost:9000/anything", None),
        ("http://LOCALHOST:9000", None),
        ("https://cf.internal:8443/api", None),
        ("https://cf.internal:8443/api/v4", None),
        ("https://cf.internal:8443/apiv4", ALLOW_LIST),
        ("http://127.0.0.1:8788/client/v4", ALLOW_LIST),  # another port
        ("http://127.9.9.9:8787/client/v4", ALLOW_LIST),  # loopback, but not the listed host
        ("https://127.0.0.1:8787/client/v4", ALLOW_LIST),  # scheme is part of the match
        ("http://10.0.0.5/client/v4", HTTPS),
        ("http://[::ffff:127.0.0.1]:8787/client/v4", HTTPS),
        ("http://localhost.evil.example:9000", HTTPS),
        ("https://cf.internal/other", ALLOW_LIST),
    ],
)
def test_loopback_and_custom_allow_list(url: str, refused: str | None) -> None:
    if refused is None:
        check_api_base_url(url, LOOPBACK_LIST)
    else:
        with pytest.raises(InvalidSpec) as caught:
            check_api_base_url(url, LOOPBACK_LIST)
        assert refused in caught.value.message


def test_refusal_lists_the_allow_list_and_never_echoes_user_info() -> None:
    with pytest.raises(InvalidSpec) as caught:
        check_api_base_url("https://evil.example/client/v4", [CLOUDFLARE_API, EMULATOR])
    assert f"({CLOUDFLARE_API}, {EMULATOR})" in caught.value.message
    with pytest.raises(InvalidSpec, match=r"\(nothing\)"):
        check_api_base_url(CLOUDFLARE_API, [])
    with pytest.raises(InvalidSpec) as caught:
        check_api_base_url("https://user:hunter2@api.cloudflare.com/client/v4", [CLOUDFLARE_API])
    assert "hunter2" not in caught.value.message


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("127.0.0.1", True),
        ("127.255.0.9", True),
        ("::1", True),
        ("128.0.0.1", False),
        ("0.0.0.0", False),
        ("::", False),
        ("::ffff:127.0.0.1", False),
        ("localhost.example", False),
        ("127.1", False),
        ("api.cloudflare.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


# -- never-grantable permission groups --------------------------------------------------------------
@pytest.mark.parametrize(
    ("permission", "rule"),
    [
        ("Account API Tokens Write", "API Tokens"),
        ("Account API Tokens Read", "API Tokens"),
        ("API Tokens Write", "API Tokens"),
        ("account api tokens write", "API Tokens"),  # case-insensitive
        ("ACCOUNT API TOKENS READ", "API Tokens"),
        ("Account Settings Write", "Account Settings"),
        ("Account Settings Read", "Account Settings"),
        ("account SETTINGS read", "Account Settings"),
        ("Memberships Write", "Member"),
        ("Account Members Read", "Member"),
        ("memberships read", "Member"),
        ("Billing Read", "Billing"),
        ("Billing Write", "Billing"),
        ("BILLING write", "Billing"),
        ("Workers Scripts Write", None),
        ("Workers R2 Storage Bucket Item Read", None),
        ("Workers KV Storage Write", None),
        ("Zone Read", None),
        ("DNS Write", None),
        ("Account Analytics Read", None),
        ("Access: Apps and Policies Read", None),
        ("API Gateway Write", None),  # "API" alone is not a rule
    ],
)
def test_forbidden_permission(permission: str, rule: str | None) -> None:
    reason = forbidden_permission(permission)
    if rule is None:
        assert reason is None
    else:
        assert reason is not None and f'names containing "{rule}"' in reason
        assert next(r.reason for r in NEVER_GRANTABLE if r.fragment == rule) in reason


def test_every_rule_has_a_reason() -> None:
    assert {rule.fragment for rule in NEVER_GRANTABLE} == {
        "API Tokens",
        "Account Settings",
        "Member",
        "Billing",
    }
    assert all(len(rule.reason) > 20 for rule in NEVER_GRANTABLE)


def test_check_scopes_names_the_first_forbidden_permission() -> None:
    check_scopes([Scope(permissions=["Workers Scripts Write", "Zone Read"])])
    scopes = [
        Scope(permissions=["Workers Scripts Write"]),
        Scope(permissions=["Zone Read", "Account API Tokens Write", "Billing Read"], resources=["account"]),
    ]
    with pytest.raises(NotPermitted) as caught:
        check_scopes(scopes)
    assert caught.value.reason == "NotPermitted"
    assert caught.value.message.startswith('permission "Account API Tokens Write" is never grantable: ')
    assert "without expiry" in caught.value.message


# -- the builder -----------------------------------------------------------------------------------------
class FakeKube:
    def __init__(self) -> None:
        self.reads: list[tuple[str, str, str]] = []

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        assert kind == "Secret"
        self.reads.append((namespace, name, "token"))
        return {"metadata": {"name": name}, "data": {"token": base64.b64encode(PARENT.encode()).decode()}}


class Rig:
    def __init__(self, client: httpx.AsyncClient, sent: list[httpx.Request]) -> None:
        self.client, self.sent, self.kube = client, sent, FakeKube()

    def deps(self, settings: Settings) -> Deps:
        return Deps(
            kube=cast(Kube, self.kube),
            now=lambda: datetime(2030, 1, 1, tzinfo=UTC),
            http=self.client,
            settings=settings,
        )


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(500)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        yield Rig(client, sent)


def provider_object(url: str, mode: str = "token") -> ProviderObject:
    cloudflare: dict[str, Any] = {"mode": mode, "apiBaseURL": url}
    if mode == "token":
        cloudflare |= {"accountId": A, "apiTokenSecretRef": {"name": "cloudflare-parent"}}
    return parse_provider(
        "AccountProvider",
        {"metadata": {"namespace": "agents", "name": "cf"}, "spec": {"cloudflare": cloudflare}},
    )


@pytest.mark.parametrize("mode", ["token", "temporaryAccount"])
async def test_builder_refuses_a_url_outside_the_allow_list_before_reading_the_token(
    rig: Rig, mode: str
) -> None:
    settings = Settings(allowed_api_base_urls=[CLOUDFLARE_API])
    with pytest.raises(InvalidSpec, match="AGENTACCOUNTS_ALLOWED_API_BASE_URLS"):
        await provider_for(
            provider_object("https://collector.evil.example/client/v4", mode), rig.deps(settings)
        )
    with pytest.raises(InvalidSpec, match=r"must be https \(http only for loopback\)"):
        await provider_for(provider_object("http://api.cloudflare.com/client/v4", mode), rig.deps(settings))
    assert rig.kube.reads == [] and rig.sent == []


async def test_builder_accepts_what_the_settings_allow(rig: Rig) -> None:
    settings = Settings(allowed_api_base_urls=[CLOUDFLARE_API, EMULATOR])
    provider = await provider_for(provider_object(EMULATOR + "/"), rig.deps(settings))
    assert isinstance(provider, CloudflareProvider)
    assert rig.kube.reads == [("agents", "cloudflare-parent", "token")] and rig.sent == []


async def test_default_settings_allow_only_cloudflare(rig: Rig) -> None:
    default = Settings()
    assert isinstance(
        await provider_for(provider_object(CLOUDFLARE_API), rig.deps(default)), CloudflareProvider
    )
    with pytest.raises(InvalidSpec, match="allow-list"):
        await provider_for(provider_object(EMULATOR), rig.deps(default))
    assert len(rig.kube.reads) == 1 and rig.sent == []
