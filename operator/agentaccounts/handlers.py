"""The only module that imports kopf: thin handlers that call down into reconcile and timer.

kopf decides *when* (events, resumes, retries, daemons, finalizers); reconcile decides *what*. The
translation between the two is here and nowhere else: our PermanentError becomes kopf.PermanentError
(stop retrying this change), our TemporaryError becomes kopf.TemporaryError with its delay, anything
else is left to kopf's backoff.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import kopf

from agentaccounts import kube as kube_module
from agentaccounts import provider_objects, timer, webhook_tls
from agentaccounts.admission import Admission, refusal_message
from agentaccounts.errors import AgentAccountsError, PermanentError, TemporaryError
from agentaccounts.reconcile import Emit, Reconciler
from agentaccounts.settings import Settings

GROUP, VERSION = "agentaccounts.dev", "v1alpha1"
WEBHOOK_CONFIGURATION = "agentaccounts.dev"  # the Validating/MutatingWebhookConfiguration kopf manages
STATE: dict[str, Any] = {}  # reconciler, wakeups, settings: set once by `configure` before kopf starts


def configure(reconciler: Reconciler, settings: Settings) -> None:
    STATE.update(
        reconciler=reconciler,
        admission=Admission(reconciler.access, reconciler.resolver, reconciler.signer, reconciler.now),
        wakeups=timer.Wakeups(),
        settings=settings,
        sweeps=provider_objects.SweepSchedule(settings.orphan_sweep_seconds),
    )


class ServiceWebhookServer(kopf.WebhookServer):
    """kopf's server, registered through a Service (in a cluster) instead of by URL: the API server
    then reaches whichever pod the Service selects, by the Service's DNS name."""

    def __init__(self, service: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.service_namespace, _, self.service_name = service.partition("/")

    async def __call__(self, fn: Any) -> Any:
        async for config in super().__call__(fn):
            yield {
                "service": {
                    "namespace": self.service_namespace,
                    "name": self.service_name,
                    "port": 443,
                    "path": "",
                },
                "caBundle": config.get("caBundle"),
            }


async def _no_admission(_: Any) -> Any:
    """kopf insists on a server when admission handlers exist; this one never serves."""
    await asyncio.Event().wait()
    yield {}  # pragma: no cover - never reached


def _webhook_server(ours: Settings) -> kopf.WebhookServer:
    """Self-signed, in memory (webhook_tls.py). failurePolicy is Fail while the webhooks are
    registered; kopf removes them on a clean shutdown, and then reconcile's own checks (with no
    requester stamp, nothing is issued) are what stands: fail-closed either way."""
    if ours.webhook_service:
        namespace, _, name = ours.webhook_service.partition("/")
        hosts = [f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local", ours.webhook_host]
    else:
        hosts = [ours.webhook_host, "localhost"]
    cert = webhook_tls.make(hosts)
    tls: dict[str, Any] = {
        "certfile": str(cert.certfile),
        "pkeyfile": str(cert.keyfile),
        "cadata": cert.ca_pem,
    }
    if ours.webhook_service:
        return ServiceWebhookServer(
            ours.webhook_service, addr=ours.webhook_listen, port=ours.webhook_port, **tls
        )
    return kopf.WebhookServer(addr=ours.webhook_listen, port=ours.webhook_port, host=ours.webhook_host, **tls)


def _emitter(body: kopf.Body) -> Emit:
    def emit(kind: str, reason: str, message: str) -> None:
        kopf.event(body, type=kind, reason=reason, message=message)

    return emit


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except PermanentError as exc:
        raise kopf.PermanentError(f"{exc.reason}: {exc.message}") from None
    except TemporaryError as exc:
        raise kopf.TemporaryError(f"{exc.reason}: {exc.message}", delay=exc.delay) from None


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    ours: Settings = STATE["settings"]
    settings.persistence.finalizer = "agentaccounts.dev/revoke"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="agentaccounts.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="agentaccounts.dev", key="last-handled-configuration"
    )
    settings.watching.server_timeout = ours.watch_server_timeout
    settings.watching.client_timeout = ours.watch_client_timeout
    settings.posting.level = logging.WARNING  # our own Events say what happened; skip kopf's chatter
    settings.peering.standalone = True  # replicas coordinate through a Lease (leader.py), not peering
    if ours.webhook_port:
        settings.admission.server = _webhook_server(ours)
        settings.admission.managed = WEBHOOK_CONFIGURATION
    else:  # admission off (webhook_port 0): nothing served, nothing registered
        settings.admission.server = _no_admission


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    return kopf.ConnectionInfo(**kube_module.connection_info(STATE["reconciler"].kube))


@kopf.on.resume(GROUP, "agentaccounts")
@kopf.on.create(GROUP, "agentaccounts")
@kopf.on.update(GROUP, "agentaccounts", field="spec")
async def issue(body: kopf.Body, uid: str, **_: Any) -> None:
    try:
        with _translated():
            await STATE["reconciler"].ensure_issued(dict(body), _emitter(body))
    finally:
        STATE["wakeups"].wake(uid)  # a new or edited expiry: the timer must look again now


@kopf.on.mutate(GROUP, "agentaccounts", id="stamp", operations=["CREATE", "UPDATE"])
def stamp(body: kopf.Body, userinfo: kopf.UserInfo, patch: kopf.Patch, **kwargs: Any) -> None:
    old, operation = kwargs.get("old"), str(kwargs.get("operation"))
    changes = STATE["admission"].mutate(operation, dict(body), dict(old) if old else None, dict(userinfo))
    for key, value in changes.items():
        patch.metadata.setdefault("annotations", {})[key] = value


@kopf.on.validate(GROUP, "agentaccounts", id="check", operations=["CREATE", "UPDATE"])
async def check(body: kopf.Body, userinfo: kopf.UserInfo, **kwargs: Any) -> None:
    old, operation = kwargs.get("old"), str(kwargs.get("operation"))
    try:
        await STATE["admission"].validate(operation, dict(body), dict(old) if old else None, dict(userinfo))
    except AgentAccountsError as exc:
        raise kopf.AdmissionError(refusal_message(exc), code=403) from None


@kopf.daemon(GROUP, "agentaccounts", cancellation_timeout=5.0)
async def expiry(
    body: kopf.Body, name: str, namespace: str | None, uid: str, stopped: kopf.DaemonStopped, **_: Any
) -> None:
    await timer.run(
        STATE["reconciler"], namespace or "", name, uid, stopped, STATE["wakeups"], _emitter(body)
    )


@kopf.on.delete(GROUP, "agentaccounts")
async def remove(body: kopf.Body, **_: Any) -> None:
    with _translated():
        await STATE["reconciler"].revoke(dict(body), "deleted", _emitter(body))


@kopf.on.resume(GROUP, "accountproviders")
@kopf.on.create(GROUP, "accountproviders")
@kopf.on.update(GROUP, "accountproviders", field="spec")
@kopf.on.resume(GROUP, "clusteraccountproviders")
@kopf.on.create(GROUP, "clusteraccountproviders")
@kopf.on.update(GROUP, "clusteraccountproviders", field="spec")
async def report_provider(body: kopf.Body, name: str, namespace: str | None, **_: Any) -> None:
    reconciler = STATE["reconciler"]
    status = await provider_objects.report(reconciler.deps, body["kind"], dict(body))
    await reconciler.kube.patch_status(body["kind"], namespace or "", name, status)


# kopf fixes timer intervals at import time, before settings exist: the timer ticks often and
# provider_objects.SweepSchedule decides when a sweep is due (settings.orphan_sweep_seconds).
SWEEP_TICK = 2.0


@kopf.timer(GROUP, "accountproviders", interval=SWEEP_TICK)
@kopf.timer(GROUP, "clusteraccountproviders", interval=SWEEP_TICK)
async def sweep_provider(body: kopf.Body, uid: str, **_: Any) -> None:
    if STATE["sweeps"].due(uid):
        with _translated():
            await provider_objects.sweep(STATE["reconciler"].deps, body["kind"], dict(body), _emitter(body))


async def run_operator(settings: Settings) -> None:
    """Run the embedded kopf operator until cancelled."""
    await kopf.operator(
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=settings.liveness,
        standalone=True,
    )
