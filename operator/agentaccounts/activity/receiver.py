"""The audit-webhook endpoint: the API server's webhook backend posts batches of audit events here.

Only the API server may post: an event posted by anyone else could put requests an agent never made
into its trail. So the endpoint is HTTPS with mutual TLS. The TLS layer refuses a client without a
certificate signed by `client_ca` (the CA the operator is configured with, which signed the client
certificate in the API server's --audit-webhook-config-file kubeconfig); a valid certificate whose
subject is not the expected one (CN, and O when configured) gets 403. A replica that does not lead
answers 503 with Retry-After, so the API server's backend retries the batch (five times, with backoff
from --audit-webhook-initial-backoff) instead of losing it here.

Served with aiohttp (kopf's own HTTP stack, so nothing new to install), on its own port, off unless
configured (settings.audit_webhook_port). `POST /` and `POST /audit` take an `audit.k8s.io/v1`
EventList (batch mode) or a single Event.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Callable
from typing import Any

from aiohttp import web

from agentaccounts.activity.collector import Collector

log = logging.getLogger(__name__)
RETRY = {"Retry-After": "1"}
MAX_BATCH_BYTES = 64 * 1024 * 1024  # the API server's default batch is 400 events; a Metadata event < 4 KiB


def tls_context(cert_file: str, key_file: str, client_ca_file: str) -> ssl.SSLContext:
    """Server TLS that requires a client certificate signed by `client_ca_file`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=client_ca_file)
    context.load_cert_chain(cert_file, key_file)
    context.verify_mode = ssl.CERT_REQUIRED
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def subject_of(peercert: dict[str, Any] | None) -> dict[str, list[str]]:
    """{"commonName": [...], "organizationName": [...]} of a peer certificate as ssl reports it."""
    out: dict[str, list[str]] = {}
    for rdn in (peercert or {}).get("subject", ()):
        for key, value in rdn:
            out.setdefault(key, []).append(value)
    return out


def sender_allowed(peercert: dict[str, Any] | None, common_name: str, organization: str) -> bool:
    subject = subject_of(peercert)
    if common_name not in subject.get("commonName", []):
        return False
    return not organization or organization in subject.get("organizationName", [])


class Receiver:
    """The endpoint; `start`/`stop` around the operator's life."""

    def __init__(
        self,
        collector: Collector,
        context: ssl.SSLContext,
        listen: str,
        port: int,
        common_name: str,
        organization: str = "",
        is_leader: Callable[[], bool] = lambda: True,
    ) -> None:
        self.collector, self.context, self.listen, self.port = collector, context, listen, port
        self.common_name, self.organization, self.is_leader = common_name, organization, is_leader
        self.refused = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application(client_max_size=MAX_BATCH_BYTES)
        app.router.add_post("/", self._post)
        app.router.add_post("/audit", self._post)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.listen, self.port, ssl_context=self.context).start()
        log.info("Audit webhook endpoint on https://%s:%d (mutual TLS)", self.listen, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _post(self, request: web.Request) -> web.Response:
        peercert = request.transport.get_extra_info("peercert") if request.transport else None
        if not sender_allowed(peercert, self.common_name, self.organization):
            self.refused += 1
            who = subject_of(peercert).get("commonName", ["(none)"])
            log.warning("Audit webhook: refused a batch from %s (not the API server's certificate)", who)
            return web.json_response(
                {"error": "refused: not the API server's client certificate"}, status=403
            )
        if not self.is_leader():
            # Retry-After: the API server's webhook client retries a 503 only when told to (its
            # DefaultShouldRetry: connection resets, 500, 504, 429, or a Retry-After), with backoff.
            return web.json_response({"error": "not the leader; retry"}, status=503, headers=RETRY)
        try:
            body = json.loads(await request.read())
        except ValueError:
            return web.json_response({"error": "not JSON"}, status=400)
        events = body.get("items") if isinstance(body, dict) and "items" in body else [body]
        self.collector.accept(events if isinstance(events, list) else [])
        return web.json_response({})
