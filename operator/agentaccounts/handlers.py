"""The only module that imports kopf: thin handlers that call down into reconcile and the scheduler.

kopf decides *when* (events, resumes, retries, daemons, finalizers); reconcile decides *what*. The
translation between the two is here and nowhere else: our PermanentError becomes kopf.PermanentError
(stop retrying this change), our TemporaryError becomes kopf.TemporaryError with its delay, anything
else is left to kopf's backoff.

Handlers are registered per run (`registry`), not by import-time decorators, so that what depends on
the settings (the orphan sweep's interval, admission on or off) is registered with its real values;
the parts they use (app.App, the scheduler) reach them through kopf's `memo`, not a module global.

Expiry is not a kopf daemon per account (see scheduler.py for why): every watch event of an
AgentAccount is handed to the one scheduler (`observe`), which runs beside kopf for as long as the
operator does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import kopf

from agentaccounts import kube as kube_module
from agentaccounts import provider_upkeep, webhook_tls
from agentaccounts.admission import refusal_message
from agentaccounts.app import App
from agentaccounts.conditions import Emit
from agentaccounts.errors import AgentAccountsError, PermanentError, TemporaryError
from agentaccounts.kube import KubeApiError
from agentaccounts.scheduler import Scheduler
from agentaccounts.settings import Settings

GROUP, VERSION = "agentaccounts.dev", "v1alpha1"
PROVIDER_PLURALS = ("accountproviders", "clusteraccountproviders")
log = logging.getLogger(__name__)


def _app(memo: Any) -> App:
    app: App = memo["app"]
    return app


def _scheduler(memo: Any) -> Scheduler:
    scheduler: Scheduler = memo["scheduler"]
    return scheduler


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


def _emitter(body: Any) -> Emit:
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


async def startup(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    ours = _app(memo).settings
    settings.persistence.finalizer = "agentaccounts.dev/revoke"
    # kopf's bookkeeping lives in status (status.kopf), never in annotations: anyone who may patch an
    # AgentAccount may write its annotations, and a forged "the delete handler succeeded" there made
    # kopf drop the finalizer without revoking. Status is written through its subresource, which only
    # the operator (and cluster admins, who can remove a finalizer anyway) may patch.
    settings.persistence.progress_storage = kopf.StatusProgressStorage(field="status.kopf.progress")
    settings.persistence.diffbase_storage = kopf.StatusDiffBaseStorage(
        field="status.kopf.lastHandledConfiguration"
    )
    settings.watching.server_timeout = ours.watch_server_timeout
    settings.watching.client_timeout = ours.watch_client_timeout
    settings.posting.level = logging.WARNING  # our own Events say what happened; skip kopf's chatter
    settings.peering.standalone = True  # replicas coordinate through a Lease (leader.py), not peering
    if ours.webhook_port:
        settings.admission.server = _webhook_server(ours)
        settings.admission.managed = ours.webhook_configuration
    else:  # admission off (webhook_port 0): nothing served, nothing registered
        settings.admission.server = _no_admission
    log.info(
        "Operator starting: watching %s; admission webhook %s; orphan sweep every %.0fs",
        ", ".join(ours.namespaces) or "all namespaces",
        f"on port {ours.webhook_port}" if ours.webhook_port else "off",
        ours.orphan_sweep_seconds,
    )


def login(memo: Any, **_: Any) -> kopf.ConnectionInfo:
    return kopf.ConnectionInfo(**kube_module.connection_info(_app(memo).deps.kube))


async def issue(body: kopf.Body, memo: Any, **_: Any) -> None:
    with _translated():
        written = await _app(memo).reconciler.ensure_issued(dict(body), _emitter(body))
    if written:  # a new or edited expiry is due now, not when the watch brings our own write back
        _scheduler(memo).observe({**body, "status": {**(body.get("status") or {}), **written}}, trusted=True)


async def observe(body: kopf.Body, type: str | None, memo: Any, **_: Any) -> None:  # kopf names it `type`
    scheduler = _scheduler(memo)
    # Started from here, not beside kopf.operator: kopf.event() posts through context variables
    # (the operator's settings and its one event queue) that kopf sets only while it processes an
    # object, and a task inherits the context it was created in.
    scheduler.ensure_running()
    scheduler.observe(dict(body), deleted=type == "DELETED")


def stamp(body: kopf.Body, userinfo: kopf.UserInfo, patch: kopf.Patch, memo: Any, **kwargs: Any) -> None:
    old, operation = kwargs.get("old"), str(kwargs.get("operation"))
    try:
        changes = _app(memo).admission.mutate(
            operation, dict(body), dict(old) if old else None, dict(userinfo)
        )
    except AgentAccountsError as exc:  # a refusal, said in one line; never a traceback per request
        raise kopf.AdmissionError(refusal_message(exc), code=400) from None
    for key, value in changes.items():
        patch.metadata.setdefault("annotations", {})[key] = value


async def check(body: kopf.Body, userinfo: kopf.UserInfo, memo: Any, **kwargs: Any) -> None:
    old, operation = kwargs.get("old"), str(kwargs.get("operation"))
    try:
        await _app(memo).admission.validate(operation, dict(body), dict(old) if old else None, dict(userinfo))
    except AgentAccountsError as exc:
        raise kopf.AdmissionError(refusal_message(exc), code=403) from None


async def remove(body: kopf.Body, memo: Any, **_: Any) -> None:
    with _translated():
        await _app(memo).reconciler.revoke(dict(body), "deleted", _emitter(body))


async def report_provider(body: kopf.Body, name: str, namespace: str | None, memo: Any, **_: Any) -> None:
    deps = _app(memo).deps
    status = await provider_upkeep.report(deps, body["kind"], dict(body))
    await deps.kube.patch_status(body["kind"], namespace or "", name, status)


async def sweep_provider(body: kopf.Body, memo: Any, **_: Any) -> None:
    with _translated():
        await provider_upkeep.sweep(_app(memo).deps, body["kind"], dict(body), _emitter(body))


# Liveness: kopf's endpoint runs the probes below on each request (cached 10 s). An API server that
# has not answered anything for this long, and does not answer a GET /version now (within the
# client's deadline), makes the endpoint fail, so Kubernetes restarts the pod with fresh connections.
# Watches that die silently are kopf's to restart (settings.watching timeouts); this catches the rest.
LIVENESS_STALE_SECONDS = 60.0


async def api_server_answers(memo: Any, **_: Any) -> dict[str, float]:
    kube = _app(memo).deps.kube
    if kube.seconds_since_answer() > LIVENESS_STALE_SECONDS:
        try:
            await kube.ping()
        except KubeApiError as exc:
            raise kopf.PermanentError(f"the API server does not answer: {exc}") from None
    return {"apiServerAnsweredSecondsAgo": round(kube.seconds_since_answer(), 1)}


def registry(settings: Settings) -> kopf.OperatorRegistry:
    """Every handler, registered with this run's settings."""
    reg = kopf.OperatorRegistry()
    kopf.on.startup(registry=reg)(startup)
    kopf.on.login(registry=reg)(login)
    kopf.on.probe(id="api-server", errors=kopf.ErrorsMode.PERMANENT, registry=reg)(api_server_answers)
    accounts = (GROUP, "agentaccounts")
    kopf.on.resume(*accounts, registry=reg)(issue)
    kopf.on.create(*accounts, registry=reg)(issue)
    kopf.on.update(*accounts, field="spec", registry=reg)(issue)
    kopf.on.delete(*accounts, registry=reg)(remove)
    kopf.on.event(*accounts, registry=reg)(observe)  # every version, the listing at start included
    kopf.on.mutate(*accounts, id="stamp", operations=["CREATE", "UPDATE"], registry=reg)(stamp)
    kopf.on.validate(*accounts, id="check", operations=["CREATE", "UPDATE"], registry=reg)(check)
    for plural in PROVIDER_PLURALS:
        kopf.on.resume(GROUP, plural, registry=reg)(report_provider)
        kopf.on.create(GROUP, plural, registry=reg)(report_provider)
        kopf.on.update(GROUP, plural, field="spec", registry=reg)(report_provider)
        # The first sweep comes one period after start: accounts being issued right now are spared.
        kopf.timer(
            GROUP,
            plural,
            interval=settings.orphan_sweep_seconds,
            initial_delay=settings.orphan_sweep_seconds,
            registry=reg,
        )(sweep_provider)
    _no_finalizer_for_timers(reg)
    return reg


def _no_finalizer_for_timers(reg: kopf.OperatorRegistry) -> None:
    """kopf puts its finalizer on every object a timer runs for, so that it can stop the timer before
    the object goes. A sweep needs no such goodbye, and the finalizer made every provider outlive the
    operator that would remove it: `helm uninstall` deletes the chart's provider after the operator's
    Deployment, and it stayed Terminating forever. (kopf has no public switch for timers; the handler
    is a frozen dataclass, replaced by a copy that requires none. A unit test holds this.)"""
    spawning = reg._spawning
    spawning._handlers = [
        dataclasses.replace(h, requires_finalizer=False) if type(h).__name__ == "TimerHandler" else h
        for h in spawning._handlers
    ]


async def run_operator(app: App) -> None:
    """Run the embedded kopf operator, and the scheduler with it, until cancelled."""
    settings = app.settings
    scheduler = Scheduler(app.reconciler, _emitter, workers=settings.expiry_workers)
    try:
        await kopf.operator(
            registry=registry(settings),
            memo=kopf.Memo(app=app, scheduler=scheduler),
            clusterwide=not settings.namespaces,
            namespaces=settings.namespaces,
            liveness_endpoint=settings.liveness,
            standalone=True,
        )
    finally:
        await scheduler.stop()
