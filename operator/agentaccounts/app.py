"""The operator's one wiring: from a Kubernetes adapter and the settings to everything handlers use.

`cli run` and `demo` both start the operator through `build`, so there is one place that decides what
is made once per process: the signing key (read or made on first start), the HTTP client (opened
here, closed when the operator stops), the provider dependencies, the reconciler, admission, and the
timers' wake-ups. kopf hands the result to every handler as `memo.app`.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx

from agentaccounts.admission import Admission
from agentaccounts.kube import Kube
from agentaccounts.providers.base import Deps
from agentaccounts.reconcile import Reconciler
from agentaccounts.settings import Settings
from agentaccounts.stamps import Signer
from agentaccounts.timer import Wakeups

# pool=None: waiting for a free connection is our own queue, not a provider failure. With a pool
# timeout, a burst of ~1000 Cloudflare issues on a busy event loop timed out in the queue (PoolTimeout
# -> ProviderUnavailable), each having already spent a request-budget slot, and their retries came back
# together and did it again (measured: 595 of 1000 accounts stalled for over 10 minutes).
HTTP_TIMEOUT = httpx.Timeout(30.0, connect=10.0, pool=None)


@dataclass
class App:
    """Everything the handlers use, made once per operator process."""

    settings: Settings
    deps: Deps
    reconciler: Reconciler
    admission: Admission
    wakeups: Wakeups


@asynccontextmanager
async def build(kube: Kube, settings: Settings) -> AsyncIterator[App]:
    """The operator's parts; the HTTP client they share is closed on exit."""
    key = await kube.ensure_secret_key(
        settings.operator_namespace, settings.signing_key_secret, "key", lambda: secrets.token_bytes(32)
    )
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
        deps = Deps(kube=kube, settings=settings, http=http)
        reconciler = Reconciler(deps, Signer(key))
        admission = Admission(reconciler.access, reconciler.resolver, reconciler.signer, deps.now)
        yield App(settings, deps, reconciler, admission, Wakeups())
