"""`agentaccounts demo`: one AgentAccount's whole life, narrated, on whatever cluster $KUBECONFIG names.

It runs the operator in-process (watching only the demo namespace), asks for a 20-second identity that
may read ConfigMaps, then acts as the agent with the generated kubeconfig: allowed what was granted,
refused what was not, refused everywhere after expiry — and shows that every object is gone. `make demo`
runs it on the local control plane. Secret values are never printed, only their keys.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from agentaccounts import app, ownership
from agentaccounts.kube import Kube, KubeApiError
from agentaccounts.settings import Settings
from agentaccounts.stamps import REQUESTED_BY

NAMESPACE, PROVIDER = "agentaccounts-demo", "in-cluster"
ACCOUNT = f"demo-agent-{secrets.token_hex(2)}"  # a fresh name per run: earlier runs' records stay as audit
LIFETIME = 20


def say(step: str, text: str = "") -> None:
    """A step heading (when `step` is set) and/or an indented detail line."""
    if step:
        print(f"\n==> {step}", flush=True)
    if text:
        print(f"    {text}", flush=True)


async def until(check: Callable[[], Awaitable[Any]], seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.1)  # poll interval; the deadline bounds the wait
    raise TimeoutError(f"timed out after {seconds:.0f}s waiting for {what}")


async def admission_ready(kube: Kube, spec: dict[str, Any]) -> bool:
    """The webhook answers: a server-side dry-run create comes back stamped with the requester."""
    probe = {
        "apiVersion": "agentaccounts.dev/v1alpha1",
        "kind": "AgentAccount",
        "metadata": {"generateName": "admission-probe-", "namespace": NAMESPACE},
        "spec": spec,
    }
    try:
        created = await kube.create_custom("AgentAccount", NAMESPACE, probe, dry_run=True)
    except KubeApiError:
        return False
    return REQUESTED_BY in (((created or {}).get("metadata") or {}).get("annotations") or {})


async def attempt(agent: Kube, what: str, namespace: str, kind: str) -> int:
    try:
        await agent.list_objects(kind, namespace, "")
        code = 200
    except KubeApiError as exc:
        code = exc.status
    verdict = {200: "allowed", 401: "rejected: token no longer valid", 403: "forbidden"}.get(code, str(code))
    say("", f"agent: {what:<44} -> HTTP {code} ({verdict})")
    return code


async def main(kube: Kube) -> int:
    from agentaccounts import handlers  # kopf, in-process for the demo

    settings = Settings(namespaces=[NAMESPACE], metrics_port=0, audit_log="")  # the walkthrough is the output
    async with app.build(kube, settings) as parts:
        say(f"Starting the operator in-process, watching namespace {NAMESPACE}")
        operator = asyncio.ensure_future(handlers.run_operator(parts))
        try:
            return await _walkthrough(kube)
        finally:
            operator.cancel()
            await asyncio.gather(operator, return_exceptions=True)


async def _walkthrough(kube: Kube) -> int:
    await kube.create_namespace(NAMESPACE)
    if await kube.get_custom("ClusterAccountProvider", "", PROVIDER) is None:
        await kube.create_custom(
            "ClusterAccountProvider",
            "",
            {
                "apiVersion": "agentaccounts.dev/v1alpha1",
                "kind": "ClusterAccountProvider",
                "metadata": {"name": PROVIDER},
                "spec": {"kubernetes": {}, "policy": {"maxLifetime": "24h"}},
            },
        )
    say("Provider", f"ClusterAccountProvider/{PROVIDER}: kubernetes (ServiceAccount + Role + expiring token)")
    spec = {
        "providerRef": {"kind": "ClusterAccountProvider", "name": PROVIDER},
        "lifetime": f"{LIFETIME}s",
        "scopes": [{"permissions": ["get", "list"], "resources": ["configmaps"]}],
        "keepExpiredFor": "1h",
    }
    await until(lambda: admission_ready(kube, spec), 30, "the operator's admission webhook")
    say(f"Requesting AgentAccount {NAMESPACE}/{ACCOUNT}", json.dumps(spec))
    started = time.monotonic()
    body = await kube.create_custom(
        "AgentAccount",
        NAMESPACE,
        {
            "apiVersion": "agentaccounts.dev/v1alpha1",
            "kind": "AgentAccount",
            "metadata": {"name": ACCOUNT, "namespace": NAMESPACE},
            "spec": spec,
        },
    )
    uid = (body or {})["metadata"]["uid"]

    async def status() -> dict[str, Any]:
        return ((await kube.get_custom("AgentAccount", NAMESPACE, ACCOUNT)) or {}).get("status") or {}

    ready = await until(lambda: _phase_is(status, "Ready"), 30, "Ready")
    say(
        f"Ready in {time.monotonic() - started:.2f}s",
        f"phase={ready['phase']} expiresAt={ready['expiresAt']} accountRef={ready['accountRef']}",
    )
    secret = await kube.get("Secret", NAMESPACE, ready["secretName"]) or {}
    say(
        "",
        f"Secret {ready['secretName']} keys: {', '.join(sorted(secret.get('data', {})))} (values not shown)",
    )
    kubeconfig = json.loads(await kube.read_secret_key(NAMESPACE, ready["secretName"], "kubeconfig") or "{}")
    agent = Kube.from_kubeconfig_dict(kubeconfig)
    try:
        say("The agent uses the Secret's kubeconfig")
        ok = await attempt(agent, f"list configmaps in {NAMESPACE} (granted)", NAMESPACE, "ConfigMap") == 200
        ok &= await attempt(agent, f"list secrets in {NAMESPACE} (not granted)", NAMESPACE, "Secret") == 403
        ok &= (
            await attempt(agent, "list configmaps in default (other namespace)", "default", "ConfigMap")
            == 403
        )
        say(f"Waiting for expiry at {ready['expiresAt']}")
        expired = await until(lambda: _phase_is(status, "Expired"), LIFETIME + 30, "Expired")
        say("Expired", f"revokedAt={expired['revokedAt']}: {expired['conditions'][-1]['message']}")
        code = await attempt(agent, f"list configmaps in {NAMESPACE} (after expiry)", NAMESPACE, "ConfigMap")
        ok &= code in (401, 403)
        if code == 403:  # kube-apiserver caches a good token for up to 10 s; the Role is already gone
            code = await until(lambda: _rejected(agent), 15, "the token to be rejected")
            await attempt(agent, f"list configmaps in {NAMESPACE} (10 s later)", NAMESPACE, "ConfigMap")
    finally:
        agent.close()
    say("Everything the operator created is gone")
    for kind in ("ServiceAccount", "Role", "RoleBinding", "Secret"):
        left = await kube.list_objects(kind, NAMESPACE, ownership.selector(uid))
        ok &= not left
        say("", f"{kind:<15} labelled {ownership.UID_LABEL}={uid[:8]}…: {len(left)} left")
    say("Audit trail (Events)")
    for event in await kube.events(NAMESPACE, "AgentAccount", ACCOUNT):
        say("", f"{event['type']:<7} {event['reason']:<8} {event['message']}")
    say(
        "Done" if ok else "Something was not as expected",
        f"the AgentAccount stays as the audit record; clean up with: kubectl delete namespace {NAMESPACE}",
    )
    return 0 if ok else 1


async def _phase_is(status: Callable[[], Awaitable[dict[str, Any]]], phase: str) -> dict[str, Any] | None:
    current = await status()
    return current if current.get("phase") == phase else None


async def _rejected(agent: Kube) -> bool:
    try:
        await agent.list_objects("ConfigMap", NAMESPACE, "")
    except KubeApiError as exc:
        return exc.status == 401
    return False
