"""Every Kubernetes call has a deadline: an API server that accepts and never answers (a half-open
pooled connection, a hung apiserver) fails the call with a retryable KubeApiError instead of holding
a revocation, a Lease renewal or the discovery lock until the process restarts.

A loopback socket that accepts connections and never writes a byte stands in for the hung server.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from kubernetes import client

from agentaccounts.kube import Kube, KubeApiError


@pytest.fixture
def silent_server() -> Iterator[str]:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    listener.settimeout(0.05)
    stop = False

    def accept() -> None:
        while not stop:
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            accepted.append(conn)  # held open, never answered

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop = True
    thread.join(2)
    for conn in accepted:
        conn.close()
    listener.close()


def _kube(host: str) -> Kube:
    configuration = client.Configuration()
    configuration.host = host
    configuration.retries = 0  # one attempt: the deadline under test is the read timeout itself
    return Kube(client.ApiClient(configuration), request_timeout=(0.5, 0.5))


@pytest.mark.parametrize(
    "call",
    [
        lambda kube: kube.get("Secret", "ns", "name"),
        lambda kube: kube.get_custom("AgentAccount", "ns", "name"),
        lambda kube: kube.delete_labelled("ServiceAccount", "ns", "a=b"),
        lambda kube: kube.served_resources(),
        lambda kube: kube.ping(),
    ],
    ids=["get", "get_custom", "delete_labelled", "discovery", "ping"],
)
async def test_a_call_to_a_server_that_never_answers_fails_within_its_deadline(
    silent_server: str, call
) -> None:  # type: ignore[no-untyped-def]
    kube = _kube(silent_server)
    started = time.monotonic()
    try:
        with pytest.raises(KubeApiError) as caught:
            await asyncio.wait_for(call(kube), 15)
    finally:
        kube.close()
    assert caught.value.status == 0 and "no answer from the API server" in str(caught.value)
    assert time.monotonic() - started < 5


async def test_silence_is_measured_from_the_last_answer(silent_server: str) -> None:
    kube = _kube(silent_server)
    try:
        before = kube.seconds_since_answer()
        with pytest.raises(KubeApiError):
            await kube.ping()
        assert kube.seconds_since_answer() > before + 0.4  # no answer: the silence only grew
    finally:
        kube.close()
