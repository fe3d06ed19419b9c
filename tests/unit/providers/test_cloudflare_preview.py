"""Temporary accounts: the proof-of-work solver, the lifetime cap, and the flow (MockTransport)."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import logging
import os
import traceback
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from agentaccounts.errors import LifetimeExceeded, ProviderRejected, ProviderUnavailable
from agentaccounts.models import AccountRef, Scope
from agentaccounts.providers.base import IssueRequest
from agentaccounts.providers.cloudflare import preview as cloudflare_preview
from agentaccounts.providers.cloudflare.api import RetryPolicy
from agentaccounts.providers.cloudflare.budget import RequestBudget
from agentaccounts.providers.cloudflare.preview import solve
from agentaccounts.providers.cloudflare.provider import CloudflareProvider
from agentaccounts.providers.cloudflare.spec import CloudflareBlock

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
CLAIM_URL = "https://dash.cloudflare.com/claim/CLAIMsecretCLAIMsecret"
API_TOKEN = "cfat_TEMPORARYaccountTOKENvalue0000000000deadbeef"
ACCOUNT_ID = "a1b2c3d4e5f60718293a4b5c6d7e8f90"


def verify(seed: str, k: int, g: int, checkpoints: str) -> bool:
    """An independent verifier: every segment checked on its own, as Cloudflare can."""
    seed_bytes = base64.urlsafe_b64decode(seed + "==="[: (4 - len(seed) % 4) % 4])
    blob = base64.standard_b64decode(checkpoints)
    if len(blob) != 32 * (k + 1):
        return False
    points = [blob[i : i + 32] for i in range(0, len(blob), 32)]
    if points[0] != hashlib.new("sha256", seed_bytes).digest():
        return False
    for start, end in itertools.pairwise(points):
        h = start
        for _ in range(g):
            h = hashlib.new("sha256", h).digest()
        if h != end:
            return False
    return True


def new_seed(padded: bool = False) -> str:
    seed = base64.urlsafe_b64encode(os.urandom(32)).decode()
    return seed if padded else seed.rstrip("=")


@pytest.mark.parametrize(
    ("k", "g", "padded"), [(1, 1, False), (4, 250, False), (16, 64, True), (3, 1000, False)]
)
def test_solver_passes_an_independent_verifier(k: int, g: int, padded: bool) -> None:
    seed = new_seed(padded)
    checkpoints = solve(seed, k, g)
    assert verify(seed, k, g, checkpoints)
    tampered = bytearray(base64.b64decode(checkpoints))
    tampered[-1] ^= 1
    assert not verify(seed, k, g, base64.b64encode(bytes(tampered)).decode())


def test_solver_known_answer_for_one_step() -> None:
    raw = bytes(range(32))
    seed = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    h0 = hashlib.sha256(raw).digest()
    assert solve(seed, 1, 1) == base64.b64encode(h0 + hashlib.sha256(h0).digest()).decode()


@pytest.mark.parametrize(
    ("seed", "k", "g", "why"),
    [
        (new_seed(), 64_001, 1000, "more than the 64000000"),
        (new_seed(), 0, 10, "at least 1"),
        (base64.urlsafe_b64encode(b"short").decode(), 1, 1, "not 32"),
    ],
)
def test_solver_refuses_bad_challenges(seed: str, k: int, g: int, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        solve(seed, k, g)


class FakePreviews:
    """Cloudflare's provisioning endpoints, checking terms and the proof of work."""

    def __init__(self, k: int = 4, g: int = 100) -> None:
        self.k, self.g, self.seed = k, g, new_seed()
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        assert "authorization" not in request.headers
        if request.url.path.endswith("/previews/challenge"):
            return self.ok({"challengeToken": "ch-1", "seed": self.seed, "k": self.k, "g": self.g})
        body = json.loads(request.content)
        assert body["termsOfService"] == "https://www.cloudflare.com/terms/"
        assert body["privacyPolicy"] == "https://www.cloudflare.com/privacypolicy/"
        assert body["acceptTermsOfService"] == "yes" and body["challengeToken"] == "ch-1"
        if not verify(self.seed, self.k, self.g, body["solution"]["checkpoints"]):
            return httpx.Response(
                400, json={"success": False, "errors": [{"code": 1033, "message": "wrong"}]}
            )
        account = {
            "id": ACCOUNT_ID,
            "name": "agent-preview",
            "type": "standard",
            "apiToken": API_TOKEN,
            "tokenId": "tok-1",
            "expiresAt": "2030-01-01T13:00:00Z",
        }
        claim = {"token": "claim-token", "url": CLAIM_URL, "expiresAt": "2030-01-01T13:00:00Z"}
        return self.ok({"account": account, "claim": claim, "eventCodeAccepted": False})

    @staticmethod
    def ok(result: Any) -> httpx.Response:
        return httpx.Response(200, json={"success": True, "errors": [], "messages": [], "result": result})


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakePreviews, CloudflareProvider]]:
    previews = FakePreviews()
    async with httpx.AsyncClient(transport=httpx.MockTransport(previews)) as client:
        block = CloudflareBlock.model_validate(
            {"mode": "temporaryAccount", "apiBaseURL": "https://cf.test/v4"}
        )
        provider = CloudflareProvider.create(
            block, None, client, RequestBudget(), now=lambda: NOW, retry=RetryPolicy(attempts=1)
        )
        yield previews, provider


def request(minutes: int = 30, existing: AccountRef | None = None) -> IssueRequest:
    return IssueRequest(
        namespace="team-a",
        name="agent",
        uid="5c1b2f3e-9a8d-4c7b-b6a5-0f1e2d3c4b5a",
        scopes=[Scope(permissions=["Workers Scripts Write"])],
        expires_at=NOW + timedelta(minutes=minutes),
        secret_name="agent-credentials",
        existing=existing,
    )


async def test_issue_creates_a_temporary_account(
    fake: tuple[FakePreviews, CloudflareProvider],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    previews, provider = fake
    solved: list[tuple[int, int]] = []
    real_solve = cloudflare_preview.solve_elsewhere

    async def spy(seed: str, k: int, g: int) -> str:
        solved.append((k, g))
        return await real_solve(seed, k, g)

    monkeypatch.setattr(cloudflare_preview, "solve_elsewhere", spy)
    recorded: list[AccountRef] = []

    async def record(ref: AccountRef) -> None:
        recorded.append(ref)

    await provider.validate(request())
    issued = await provider.issue(request(), record)
    assert len(solved) == 1  # in the proof-of-work process, never on a thread of this one
    assert issued.secret_data == {
        "CLOUDFLARE_ACCOUNT_ID": ACCOUNT_ID,
        "CLOUDFLARE_API_TOKEN": API_TOKEN,
        "CLAIM_URL": CLAIM_URL,
    }
    ref = AccountRef(kind="CloudflareTemporaryAccount", id=ACCOUNT_ID, name="agent-preview")
    assert recorded == [ref] and issued.account_ref == ref
    assert "60 minutes after creation" in issued.note and "deletes only the Secret" in issued.note
    assert "unless someone claims it" in issued.note and "2030-01-01T13:00:00Z" in issued.note
    assert CLAIM_URL not in issued.note + repr(issued.account_ref)
    assert CLAIM_URL not in caplog.text and API_TOKEN not in caplog.text
    assert [r.url.path for r in previews.requests] == [
        "/v4/provisioning/previews/challenge",
        "/v4/provisioning/previews",
    ]


async def test_existing_account_is_not_recreated(fake: tuple[FakePreviews, CloudflareProvider]) -> None:
    previews, provider = fake
    existing = AccountRef(kind="CloudflareTemporaryAccount", id=ACCOUNT_ID)

    async def record(ref: AccountRef) -> None:
        raise AssertionError("nothing new to record")

    issued = await provider.issue(request(existing=existing), record)
    assert issued.secret_data is None and issued.account_ref == existing
    assert previews.requests == []


async def test_revoke_calls_nothing(fake: tuple[FakePreviews, CloudflareProvider]) -> None:
    previews, provider = fake
    await provider.revoke(request(), AccountRef(kind="CloudflareTemporaryAccount", id=ACCOUNT_ID))
    await provider.revoke(request(), None)
    assert previews.requests == []
    assert await provider.sweep_orphans(set()) == []


async def test_lifetime_over_sixty_minutes_is_refused(fake: tuple[FakePreviews, CloudflareProvider]) -> None:
    _, provider = fake
    await provider.validate(request(minutes=60))
    with pytest.raises(LifetimeExceeded, match="at most 60 minutes") as caught:
        await provider.validate(request(minutes=90))
    assert "90 minutes from now" in str(caught.value) and "2030-01-01T13:30:00+00:00" in str(caught.value)


async def test_plan_checks_the_lifetime_and_calls_nothing(
    fake: tuple[FakePreviews, CloudflareProvider],
) -> None:
    previews, provider = fake
    plan = await provider.plan(request(minutes=60))
    assert plan["kind"] == "CloudflareTemporaryAccount" and "60 minutes" in plan["note"]
    with pytest.raises(LifetimeExceeded):
        await provider.plan(request(minutes=90))
    assert previews.requests == []


async def test_oversized_challenge_is_refused_before_creating(
    fake: tuple[FakePreviews, CloudflareProvider],
) -> None:
    previews, provider = fake
    previews.k, previews.g = 100_000, 1_000

    async def record(ref: AccountRef) -> None:
        raise AssertionError("nothing created")

    with pytest.raises(ProviderUnavailable, match="64000000") as caught:
        await provider.issue(request(), record)
    assert isinstance(caught.value.__cause__, ValueError)
    assert len(previews.requests) == 1


async def test_rejected_solution_and_no_claim_url_in_errors(
    fake: tuple[FakePreviews, CloudflareProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, provider = fake

    async def wrong(seed: str, k: int, g: int) -> str:
        return base64.b64encode(b"0" * 32).decode()

    monkeypatch.setattr(cloudflare_preview, "solve_elsewhere", wrong)

    async def record(ref: AccountRef) -> None:
        raise AssertionError("nothing created")

    with pytest.raises(ProviderRejected, match="code 1033") as caught:
        await provider.issue(request(), record)
    assert CLAIM_URL not in "".join(traceback.format_exception(caught.value))


async def test_incomplete_answer_records_nothing() -> None:
    previews = FakePreviews()

    def no_claim(request: httpx.Request) -> httpx.Response:
        body = json.loads(previews(request).content)
        if isinstance(body["result"], dict):
            body["result"].pop("claim", None)
        return httpx.Response(200, json=body)

    recorded: list[AccountRef] = []

    async def record(ref: AccountRef) -> None:
        recorded.append(ref)

    block = CloudflareBlock.model_validate({"mode": "temporaryAccount"})
    async with httpx.AsyncClient(transport=httpx.MockTransport(no_claim)) as client:
        provider = CloudflareProvider.create(block, None, client, RequestBudget(), now=lambda: NOW)
        with pytest.raises(ProviderUnavailable, match=r"without claim$") as caught:
            await provider.issue(request(), record)
    assert recorded == []  # the account is left to Cloudflare's 60-minute deletion; a retry makes a new one
    assert API_TOKEN not in str(caught.value)


# -- where the proof of work runs ---------------------------------------------------------------------
async def test_the_proof_of_work_runs_in_its_own_process_and_gives_the_same_answer() -> None:
    # Before: asyncio.to_thread(solve, ...) — the hashing loop holds the GIL, so a burst of
    # temporary-account requests stalled the event loop and every Kubernetes call for minutes.
    seed = base64.urlsafe_b64encode(b"s" * 32).decode()
    assert await cloudflare_preview.solve_elsewhere(seed, 3, 50) == cloudflare_preview.solve(seed, 3, 50)
    worker = cloudflare_preview._pow_pool().submit(os.getpid).result(timeout=30)
    assert worker != os.getpid()


async def test_a_bad_challenge_fails_in_the_worker_as_a_value_error() -> None:
    with pytest.raises(ValueError, match="both must be at least 1"):
        await cloudflare_preview.solve_elsewhere("AAAA", 0, 1)
