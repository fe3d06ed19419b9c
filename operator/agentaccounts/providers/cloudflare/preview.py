"""Mode `temporaryAccount`: a whole temporary Cloudflare account per AgentAccount, paid for with work.

Cloudflare hands an agent without credentials a fresh account (no auth header needed) after it solves
a proof of work, and deletes that account 60 minutes after creation unless a human claims it through
the claim URL. There is no endpoint to delete such an account early or to ask whether it was claimed,
so the operator can only (1) refuse lifetimes over 60 minutes, (2) put the credentials and the claim
URL in the Secret and (3) delete the Secret on expiry. `Issued.note` says exactly that.

The claim URL is a secret (whoever opens it owns the account): it goes into the Secret and nowhere
else -- not into status, Events, logs or exception messages.

Proof of work (as Wrangler does it): h0 = SHA-256(seed bytes); then k segments of g chained SHA-256
hashes each, keeping each segment's last hash; checkpoints = standard base64 of h0 || end1 || ... ||
endk. Solving is CPU-bound (up to 64 million hashes, about half a minute), so it runs in a thread to
keep the event loop -- and every other AgentAccount -- responsive.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime, timedelta
from typing import Any

from agentaccounts.errors import LifetimeExceeded, ProviderUnavailable
from agentaccounts.models import AccountRef
from agentaccounts.providers.base import Issued, IssueRequest, Recorder
from agentaccounts.providers.cloudflare.api import CloudflareAPI, pick

log = logging.getLogger(__name__)

KIND = "CloudflareTemporaryAccount"
MAX_LIFETIME = timedelta(minutes=60)  # Cloudflare deletes unclaimed temporary accounts after 60 minutes
MAX_WORK = 64_000_000  # k * g; Wrangler refuses challenges above this
TERMS = {
    "termsOfService": "https://www.cloudflare.com/terms/",
    "privacyPolicy": "https://www.cloudflare.com/privacypolicy/",
    "acceptTermsOfService": "yes",
}
NOTE = (
    "Temporary Cloudflare account: Cloudflare deletes it 60 minutes after creation{until} unless someone "
    "claims it with CLAIM_URL from the Secret (a claimed account is no longer temporary and is not "
    "deleted). The operator cannot delete it: on expiry it deletes only the Secret. Scopes do not "
    "apply: the credentials control the whole temporary account."
)


def solve(seed: str, k: int, g: int) -> str:
    """Checkpoints for a challenge; ValueError for a malformed or too expensive one."""
    if k < 1 or g < 1:
        raise ValueError(f"challenge has k={k}, g={g}; both must be at least 1")
    if k * g > MAX_WORK:
        raise ValueError(f"challenge asks for {k * g} hashes, more than the {MAX_WORK} Wrangler accepts")
    raw = base64.urlsafe_b64decode(seed + "=" * (-len(seed) % 4))  # the seed may come without padding
    if len(raw) != 32:
        raise ValueError(f"challenge seed decodes to {len(raw)} bytes, not 32")
    digest = hashlib.sha256(raw).digest()
    checkpoints = [digest]
    for _ in range(k):
        for _ in range(g):
            digest = hashlib.sha256(digest).digest()
        checkpoints.append(digest)
    return base64.b64encode(b"".join(checkpoints)).decode("ascii")


# Proof of work in another process. Hashing 32-byte digests in a Python loop holds the GIL (hashlib
# releases it only for large inputs), so in a thread it stalls the event loop and every Kubernetes
# call (each runs in a worker thread) for as long as it runs: a burst of temporary-account requests
# starved expiries for minutes. One worker process, made on first use ("spawn": never fork a process
# that runs threads): a burst queues here and takes one core, never both.
_POW_POOL: ProcessPoolExecutor | None = None


def _pow_pool() -> ProcessPoolExecutor:
    global _POW_POOL
    if _POW_POOL is None:
        _POW_POOL = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    return _POW_POOL


async def solve_elsewhere(seed: str, k: int, g: int) -> str:
    """`solve` in the proof-of-work process; its ValueError comes back as itself."""
    global _POW_POOL
    try:
        return await asyncio.get_running_loop().run_in_executor(_pow_pool(), solve, seed, k, g)
    except BrokenProcessPool as exc:  # the worker died (killed, out of memory): a fresh one next time
        _POW_POOL = None
        raise ProviderUnavailable("the proof-of-work process died; retrying", delay=5.0) from exc


class PreviewFlow:
    """Create temporary accounts; revoking is a no-op because Cloudflare offers nothing to call."""

    def __init__(self, api: CloudflareAPI, now: Callable[[], datetime]) -> None:
        self._api = api
        self._now = now

    async def validate(self, request: IssueRequest) -> None:
        lifetime = request.expires_at - self._now()
        if lifetime > MAX_LIFETIME:
            raise LifetimeExceeded(
                f"temporary Cloudflare accounts live at most 60 minutes (Cloudflare deletes them unless "
                f"claimed), but this account would expire at {request.expires_at.isoformat()}, "
                f"{int(lifetime.total_seconds() // 60)} minutes from now: set spec.lifetime to 60m or less"
            )

    async def plan(self, request: IssueRequest) -> dict[str, Any]:
        """What `issue` would create; no request (the challenge is only fetched to create)."""
        await self.validate(request)
        return {"kind": KIND, "note": NOTE.format(until="")}

    async def issue(self, request: IssueRequest, record: Recorder) -> Issued:
        existing = request.existing
        if existing is not None and existing.kind == KIND and existing.id:
            # The token and claim URL cannot be fetched again; the Secret keeps what it has.
            return Issued(existing, secret_data=None, note=NOTE.format(until=""))
        challenge = await self._api.call("POST", "/provisioning/previews/challenge", json={}, retry_safe=True)
        what = "the preview challenge"
        seed, k, g = (pick(challenge, what, key) for key in ("seed", "k", "g"))
        try:
            checkpoints = await solve_elsewhere(str(seed), int(k), int(g))
        except (ValueError, TypeError) as exc:  # binascii.Error is a ValueError
            raise ProviderUnavailable(f"cannot solve Cloudflare's challenge: {exc}", delay=60.0) from exc
        body = {**TERMS, "challengeToken": pick(challenge, what, "challengeToken")}
        body["solution"] = {"checkpoints": checkpoints}
        result = await self._api.call("POST", "/provisioning/previews", json=body)
        what = "preview create"
        account_id = str(pick(result, what, "account", "id"))
        # Read every field before recording: a recorded account is never re-created (its values are lost).
        data = {
            "CLOUDFLARE_ACCOUNT_ID": account_id,
            "CLOUDFLARE_API_TOKEN": str(pick(result, what, "account", "apiToken")),
            "CLAIM_URL": str(pick(result, what, "claim", "url")),
        }
        account = result["account"]
        ref = AccountRef(kind=KIND, id=account_id, name=str(account.get("name") or ""))
        await record(ref)
        expires = account.get("expiresAt")
        log.info("Created temporary Cloudflare account %s (expires %s unless claimed)", account_id, expires)
        return Issued(ref, secret_data=data, note=NOTE.format(until=f" (at {expires})" if expires else ""))

    async def revoke(self, request: IssueRequest, ref: AccountRef | None) -> None:
        # No delete endpoint exists: Cloudflare removes the account itself; the reconciler deletes the Secret.
        if ref is not None and ref.id:
            log.info("Temporary Cloudflare account %s is left to Cloudflare's 60-minute deletion", ref.id)
