"""The operator's one wiring: from a Kubernetes adapter and the settings to everything handlers use.

`cli run` and `demo` both start the operator through `build`, so there is one place that decides what
is made once per process: the signing key (read or made on first start), the HTTP client (opened
here, closed when the operator stops), the provider dependencies, the reconciler and admission. kopf
hands the result to every handler as `memo.app`.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx

from agentaccounts.activity import stream
from agentaccounts.activity.collector import Collector
from agentaccounts.activity.receiver import Receiver, tls_context
from agentaccounts.admission import Admission
from agentaccounts.kube import Kube
from agentaccounts.providers.base import Deps
from agentaccounts.reconcile import Reconciler
from agentaccounts.settings import Settings
from agentaccounts.stamps import Signer

# pool=None: waiting for a free connection is our own queue, not a provider failure. With a pool
# timeout, a burst of ~1000 Cloudflare issues on a busy event loop timed out in the queue (PoolTimeout
# -> ProviderUnavailable), each having already spent a request-budget slot, and their retries came back
# together and did it again (measured: 595 of 1000 accounts stalled for over 10 minutes).
HTTP_TIMEOUT = httpx.Timeout(30.0, connect=10.0, pool=None)


@dataclass
class Leadership:
    """Whether this replica leads (cli.py sets it once the Lease is won); the activity writer asks."""

    leading: bool = True


@dataclass
class App:
    """Everything the handlers use, made once per operator process."""

    settings: Settings
    deps: Deps
    reconciler: Reconciler
    admission: Admission
    leadership: Leadership = field(default_factory=Leadership)
    activity: Collector | None = None  # set when the audit-webhook endpoint is on


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
        parts = App(settings, deps, reconciler, admission, Leadership(not settings.leader_elect))
        stream.configure(settings.audit_log)
        async with _activity(parts):
            yield parts


@asynccontextmanager
async def _activity(parts: App) -> AsyncIterator[None]:
    """The audit-webhook endpoint and its batching writer (activity/), when configured."""
    settings = parts.settings
    if not settings.audit_webhook_port:
        yield
        return

    def leading() -> bool:
        return parts.leadership.leading  # read at each call: cli.py sets it once the Lease is won

    collector = Collector(
        parts.deps.kube,
        parts.deps.now,
        settings.namespaces,
        leading,
        settings.activity_flush_seconds,
        settings.activity_writes_per_second,
    )
    parts.activity = collector
    parts.reconciler.status.on_issued = collector.learn  # a new token's id is known before its first use
    context = tls_context(
        settings.audit_webhook_cert_file,
        settings.audit_webhook_key_file,
        settings.audit_webhook_client_ca_file,
    )
    receiver = Receiver(
        collector,
        context,
        settings.audit_webhook_listen,
        settings.audit_webhook_port,
        settings.audit_webhook_client_cn,
        settings.audit_webhook_client_org,
        leading,
    )
    await receiver.start()
    stopped = asyncio.Event()
    writer = asyncio.ensure_future(collector.run(stopped))
    try:
        yield
    finally:
        await receiver.stop()
        stopped.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer, timeout=10)
