"""Helpers for integration tests: poll with a deadline, run the operator, act as an agent.

Nothing here sleeps to synchronise: `wait_for` polls a predicate until a deadline and fails with a
description of what never happened.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from cluster.launcher import free_port

T = TypeVar("T")
GROUP, VERSION = "agentaccounts.dev", "v1alpha1"


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except ApiException as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)  # poll interval; the deadline bounds the wait
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


class OperatorProcess:
    """`agentaccounts run` in a child process, watching the given namespaces; ready once its admission
    webhook answers (a server-side dry-run create comes back stamped with the requester)."""

    def __init__(self, kubeconfig: Path, namespaces: list[str], env: dict[str, str] | None = None) -> None:
        self.health_port, self.metrics_port, self.webhook_port = free_port(), free_port(), free_port()
        self.kubeconfig = kubeconfig
        self.log = Path(tempfile.mkstemp(prefix="operator-", suffix=".log")[1])
        args = [
            sys.executable,
            "-m",
            "agentaccounts",
            "run",
            "--metrics-port",
            str(self.metrics_port),
            "--liveness",
            f"http://127.0.0.1:{self.health_port}/healthz",
        ]
        for ns in namespaces:
            args += ["--namespace", ns]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={
                    **os.environ,
                    "KUBECONFIG": str(kubeconfig),
                    "AGENTACCOUNTS_WEBHOOK_PORT": str(self.webhook_port),
                    **(env or {}),
                },
            )
        try:
            wait_for(self._healthy, 30, "the operator's liveness endpoint")
            if (env or {}).get("AGENTACCOUNTS_WEBHOOK_PORT") != "0":
                probe = namespaces[0] if namespaces else "default"
                wait_for(
                    lambda: self._alive() and admission_ready(kubeconfig, probe),
                    60,
                    "the operator's admission webhook",
                )
        except AssertionError as exc:
            # Never leak a half-started operator into later tests; say what it printed.
            self.stop()
            raise AssertionError(f"{exc}\n--- operator log ---\n{self.output()[-6000:]}") from None

    def _alive(self) -> bool:
        assert self.proc.poll() is None, f"operator exited early (code {self.proc.returncode})"
        return True

    def _healthy(self) -> bool:
        self._alive()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=1) as resp:
                return resp.status == 200
        except OSError:
            return False

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as resp:
            return str(resp.read().decode())

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no cleanup, no finalizers — a crash."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


def admission_ready(kubeconfig: Path, namespace: str) -> bool:
    """True once a dry-run AgentAccount create in `namespace` comes back stamped by the webhook."""
    api = config.new_client_from_config(config_file=str(kubeconfig))
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AgentAccount",
        "metadata": {"generateName": "admission-probe-", "namespace": namespace},
        "spec": {
            "providerRef": {"kind": "ClusterAccountProvider", "name": "admission-probe-absent"},
            "scopes": [{"permissions": ["get"], "resources": ["configmaps"]}],
        },
    }
    try:
        # An ApiException (e.g. a stale registration pointing at an operator that is gone, failurePolicy
        # Fail) propagates to wait_for, which keeps polling and reports the last one if time runs out.
        created = custom(api).create_namespaced_custom_object(
            GROUP, VERSION, namespace, "agentaccounts", body, dry_run="All"
        )
    finally:
        api.close()
    return REQUESTED_BY in (created.get("metadata", {}).get("annotations") or {})


REQUESTED_BY = "agentaccounts.dev/requested-by"


def custom(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


def create_account(api: client.ApiClient, namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AgentAccount",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }
    return custom(api).create_namespaced_custom_object(GROUP, VERSION, namespace, "agentaccounts", body)  # type: ignore[no-any-return]


def get_account(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return custom(api).get_namespaced_custom_object(GROUP, VERSION, namespace, "agentaccounts", name)  # type: ignore[no-any-return]
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def phase(api: client.ApiClient, namespace: str, name: str) -> str | None:
    body = get_account(api, namespace, name) or {}
    return (body.get("status") or {}).get("phase")


def condition(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    body = get_account(api, namespace, name) or {}
    return next((c for c in (body.get("status") or {}).get("conditions", []) if c["type"] == "Ready"), {})


def secret_data(api: client.ApiClient, namespace: str, name: str) -> dict[str, str]:
    secret = client.CoreV1Api(api).read_namespaced_secret(name, namespace)
    return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}


def agent_api(kubeconfig_text: str) -> client.ApiClient:
    """A client that authenticates exactly as the agent would, from the Secret's kubeconfig."""
    import yaml

    return config.new_client_from_config_dict(yaml.safe_load(kubeconfig_text))


def status_of(call: Callable[[], Any]) -> int:
    try:
        call()
    except ApiException as exc:
        return int(exc.status)
    return 200


def events_for(api: client.ApiClient, namespace: str, name: str) -> list[tuple[str, str]]:
    events = client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.kind=AgentAccount,involvedObject.name={name}"
    )
    return [(e.type, e.reason) for e in events.items]


def wait_event(api: client.ApiClient, namespace: str, name: str, event: tuple[str, str]) -> None:
    """Events are posted asynchronously after the status they describe: poll for one."""
    wait_for(lambda: event in events_for(api, namespace, name), 10, f"Event {event} on {name}")


def labelled(api: client.ApiClient, namespace: str, uid: str) -> dict[str, list[str]]:
    """Names of every ServiceAccount, Role, RoleBinding and Secret carrying the account's UID label."""
    selector = f"agentaccounts.dev/account-uid={uid}"
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    return {
        "ServiceAccount": [
            o.metadata.name
            for o in core.list_namespaced_service_account(namespace, label_selector=selector).items
        ],
        "Role": [
            o.metadata.name for o in rbac.list_namespaced_role(namespace, label_selector=selector).items
        ],
        "RoleBinding": [
            o.metadata.name
            for o in rbac.list_namespaced_role_binding(namespace, label_selector=selector).items
        ],
        "Secret": [
            o.metadata.name for o in core.list_namespaced_secret(namespace, label_selector=selector).items
        ],
    }
