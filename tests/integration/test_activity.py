"""What did the agent do: the API server's audit webhook backend -> the operator's endpoint -> the trail.

Real control plane, started with the audit policy and webhook backend (cluster/launcher.py); the
operator serves the endpoint the cluster posts to. One agent makes 3 allowed and 2 denied calls,
another agent makes its own; each trail holds exactly its own agent's requests, in order, and survives
an operator restart; nobody but the API server may post; no token value appears anywhere.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import ssl
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes import client

from cluster import pki
from integration.support import (
    OperatorProcess,
    agent_api,
    create_account,
    get_account,
    phase,
    secret_data,
    status_of,
    wait_for,
)

pytestmark = pytest.mark.cluster
CREDENTIAL_ID = "authentication.kubernetes.io/credential-id"


@pytest.fixture
def audit_log() -> Iterator[Path]:
    path = Path(tempfile.mkstemp(prefix="audit-stream-", suffix=".jsonl")[1])
    yield path
    path.unlink(missing_ok=True)


def activity_env(cluster: Any, audit_log: Path) -> dict[str, str]:
    """An operator that serves this cluster's audit-webhook endpoint, flushing twice a second."""
    return {
        **cluster.handle.audit_operator_env(),
        "AGENTACCOUNTS_AUDIT_LOG": str(audit_log),
        "AGENTACCOUNTS_ACTIVITY_FLUSH_SECONDS": "0.5",
    }


def activity(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return dict(((get_account(api, namespace, name) or {}).get("status") or {}).get("activity") or {})


def issue(api: client.ApiClient, namespace: str, name: str, provider: str) -> str:
    """Create an account that may read ConfigMaps; its kubeconfig once Ready."""
    create_account(
        api,
        namespace,
        name,
        providerRef={"kind": "ClusterAccountProvider", "name": provider},
        lifetime="30m",
        scopes=[{"permissions": ["get", "list"], "resources": ["configmaps"]}],
    )
    wait_for(lambda: phase(api, namespace, name) == "Ready", 60, f"{name} Ready")
    return secret_data(api, namespace, f"{name}-credentials")["kubeconfig"]


def cli(cluster: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentaccounts", "--kubeconfig", str(cluster.kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)},
    )


def post(port: int, body: dict[str, Any], cert: tuple[Path, Path] | None, ca: Path) -> str:
    """POST a batch to the endpoint as someone with this client certificate: the HTTP status, or
    "tls" when the TLS layer refused the connection."""
    context = ssl.create_default_context(cafile=str(ca))
    if cert:
        context.load_cert_chain(str(cert[0]), str(cert[1]))
    request = urllib.request.Request(
        f"https://127.0.0.1:{port}/audit",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, context=context, timeout=5) as response:
            return str(response.status)
    except urllib.error.HTTPError as exc:
        return str(exc.code)
    except (ssl.SSLError, ConnectionError, urllib.error.URLError):
        return "tls"


def foreign_cert(directory: Path, common_name: str) -> tuple[Path, Path]:
    """A client certificate with the expected subject, signed by a CA the operator does not trust."""
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "some-other-ca")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = directory / "foreign.crt", directory / "foreign.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def test_an_agents_requests_are_its_trail_and_nobody_elses(
    cluster: Any,
    api: client.ApiClient,
    namespace: str,
    in_cluster_provider: str,
    start_operator: Callable[..., OperatorProcess],
    audit_log: Path,
    tmp_path: Path,
) -> None:
    operator = start_operator(namespace, env=activity_env(cluster, audit_log))
    bot_kubeconfig = issue(api, namespace, "bot", in_cluster_provider)
    other_kubeconfig = issue(api, namespace, "other", in_cluster_provider)
    tokens = [secret_data(api, namespace, f"{n}-credentials")["token"] for n in ("bot", "other")]
    client.CoreV1Api(api).create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="app-config"))
    )

    # The credential id in status is the token's own (as `kubectl auth whoami` shows it).
    other = agent_api(other_kubeconfig)
    review = client.AuthenticationV1Api(other).create_self_subject_review(
        client.V1SelfSubjectReview(metadata=client.V1ObjectMeta())
    )
    other_status = (get_account(api, namespace, "other") or {})["status"]
    assert other_status["credentialIds"] == review.status.user_info.extra[CREDENTIAL_ID]

    bot = agent_api(bot_kubeconfig)
    core = client.CoreV1Api(bot)
    calls = [
        lambda: core.list_namespaced_config_map(namespace),
        lambda: core.read_namespaced_config_map("app-config", namespace),
        lambda: core.list_namespaced_config_map(namespace),
        lambda: core.list_namespaced_secret(namespace),
        lambda: core.delete_namespaced_config_map("app-config", namespace),
    ]
    assert [status_of(call) for call in calls] == [200, 200, 200, 403, 403]
    bot.close()
    client.CoreV1Api(other).list_namespaced_config_map(namespace)
    other.close()

    summary = wait_for(
        lambda: (a := activity(api, namespace, "bot")).get("requests") == 5 and a,
        30,
        "5 requests in bot's status.activity",
    )
    assert summary["denied"] == 2
    trail = [(e["verb"], e["resource"], e.get("name", ""), e["code"]) for e in summary["recent"]]
    assert trail == [
        ("list", "configmaps", "", 200),
        ("get", "configmaps", "app-config", 200),
        ("list", "configmaps", "", 200),
        ("list", "secrets", "", 403),
        ("delete", "configmaps", "app-config", 403),
    ]
    # The other agent's requests (its self-review and its list) are its own, never bot's.
    theirs = wait_for(
        lambda: (a := activity(api, namespace, "other")).get("requests") == 2 and a, 30, "other's 2 requests"
    )
    assert [(e["verb"], e["resource"]) for e in theirs["recent"]] == [
        ("create", "selfsubjectreviews"),
        ("list", "configmaps"),
    ]

    # `agentaccounts activity NAME` lists them in order, with the summary.
    shown = cli(cluster, "activity", "bot", "-n", namespace)
    assert shown.returncode == 0, shown.stderr
    assert "requests 5, denied 2" in shown.stdout
    rows = [line.split() for line in shown.stdout.splitlines() if line.startswith("20")]
    assert [(r[1], r[2], r[-2]) for r in rows] == [
        ("list", "configmaps", "200"),
        ("get", "configmaps", "200"),
        ("list", "configmaps", "200"),
        ("list", "secrets", "403"),
        ("delete", "configmaps", "403"),
    ]
    as_json = json.loads(cli(cluster, "activity", "bot", "-n", namespace, "-o", "json").stdout)
    assert as_json["activity"]["requests"] == 5 and as_json["account"]["name"] == "bot"

    # Nobody but the API server may post: a forged batch claiming bot's token is refused at the TLS
    # layer (no certificate; a certificate from another CA) or with 403 (the right CA, another subject).
    bot_status = (get_account(api, namespace, "bot") or {})["status"]
    forged = {
        "kind": "EventList",
        "apiVersion": "audit.k8s.io/v1",
        "items": [
            {
                "auditID": "forged-1",
                "stage": "ResponseComplete",
                "verb": "delete",
                "user": {
                    "username": f"system:serviceaccount:{namespace}:agentaccount-bot",
                    "extra": {CREDENTIAL_ID: bot_status["credentialIds"][-1:]},
                },
                "objectRef": {"resource": "secrets", "namespace": namespace},
                "responseStatus": {"code": 200},
                "requestReceivedTimestamp": "2099-01-01T00:00:00.000000Z",
            }
        ],
    }
    certs, port = pki.Pki(cluster.handle.dir / "pki"), cluster.handle.audit_port
    assert post(port, forged, None, certs.ca) == "tls"
    assert post(port, forged, foreign_cert(tmp_path, pki.AUDIT_CLIENT_CN), certs.ca) == "tls"
    assert post(port, forged, (certs.audit_other_cert, certs.audit_other_key), certs.ca) == "403"
    assert "refused a batch" in operator.output()

    # After a restart the summary and trail are intact, and the count continues from status.
    before = activity(api, namespace, "bot")
    operator.stop()
    start_operator(namespace, env=activity_env(cluster, audit_log))
    assert {k: v for k, v in activity(api, namespace, "bot").items() if k != "updatedAt"} == {
        k: v for k, v in before.items() if k != "updatedAt"
    }
    bot = agent_api(bot_kubeconfig)
    client.CoreV1Api(bot).read_namespaced_config_map("app-config", namespace)
    bot.close()
    after = wait_for(
        lambda: (a := activity(api, namespace, "bot")).get("requests") == 6 and a, 30, "a 6th request"
    )
    assert after["denied"] == 2 and after["recent"][:5] == before["recent"]
    assert all(e.get("auditID") != "forged-1" for e in after["recent"])

    # The audit stream: one line per request with the account, and the operator's decisions.
    lines = [json.loads(line) for line in audit_log.read_text().splitlines()]
    requests = [
        (line["verb"], line["resource"], line["code"])
        for line in lines
        if line["kind"] == "request" and line["account"]["name"] == "bot"
    ]
    assert requests[:5] == [(v, r, c) for v, r, _, c in trail]
    issued = [line for line in lines if line["kind"] == "decision" and line["event"] == "issued"]
    assert {line["account"]["name"] for line in issued} == {"bot", "other"}
    assert all(line["requester"] for line in issued)

    # Deleting the record removes its trail (it lives in status), and the operator writes no more.
    client.CustomObjectsApi(api).delete_namespaced_custom_object(
        "agentaccounts.dev", "v1alpha1", namespace, "agentaccounts", "bot"
    )
    wait_for(lambda: get_account(api, namespace, "bot") is None, 30, "bot deleted")
    revoked = wait_for(
        lambda: [
            json.loads(line)
            for line in audit_log.read_text().splitlines()
            if '"event":"revoked"' in line and '"name":"bot"' in line
        ],
        10,
        "a revoked decision for bot",
    )
    assert revoked[0]["identity"]["kind"] == "ServiceAccount"

    # No token value anywhere: the audit stream, the operator's log, the remaining status.
    remaining = json.dumps((get_account(api, namespace, "other") or {}).get("status"))
    for token in tokens:
        assert token not in audit_log.read_text()
        assert token not in operator.output()
        assert token not in remaining


def test_ingest_attributes_audit_json_lines_where_no_webhook_can_be_configured(
    cluster: Any,
    api: client.ApiClient,
    namespace: str,
    in_cluster_provider: str,
    start_operator: Callable[..., OperatorProcess],
) -> None:
    start_operator(namespace)  # no audit-webhook endpoint: as on a managed cluster
    kubeconfig = issue(api, namespace, "reader", in_cluster_provider)
    token = secret_data(api, namespace, "reader-credentials")["token"]
    agent = agent_api(kubeconfig)
    core = client.CoreV1Api(agent)
    assert status_of(lambda: core.list_namespaced_config_map(namespace)) == 200
    assert status_of(lambda: core.list_namespaced_secret(namespace)) == 403
    agent.close()
    log = cluster.handle.audit_log  # the API server's log backend: the same events, as JSON lines

    def ingested() -> bool:
        done = cli(cluster, "activity", "ingest", str(log), "-n", namespace)
        assert done.returncode == 0, done.stderr
        return activity(api, namespace, "reader").get("requests") == 2

    wait_for(ingested, 30, "both requests ingested", interval=0.5)
    again = cli(cluster, "activity", "ingest", str(log), "-n", namespace)  # the same lines once more
    assert again.returncode == 0, again.stderr
    summary = activity(api, namespace, "reader")
    assert (summary["requests"], summary["denied"]) == (2, 1)  # a resent event is not counted twice
    lines = [json.loads(line) for line in again.stdout.splitlines()]
    assert {(line["verb"], line["resource"], line["code"]) for line in lines} == {
        ("list", "configmaps", 200),
        ("list", "secrets", 403),
    }
    assert token not in again.stdout and token not in log.read_text()
