"""Every Prometheus metric the operator exports, defined once, with bounded labels.

Counters and histograms carry only a `reason`/`provider` label drawn from fixed sets (error-tree
reasons, provider types), never a namespace or name: those would grow without bound. The one
per-account series — when each live identity expires — comes from a custom collector over an
in-memory index, so it disappears with the account instead of living forever in a labelled gauge.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from threading import Lock

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)

ISSUED = Counter("agentaccounts_issued_total", "Identities issued.", ["provider"], registry=REGISTRY)
REVOKED = Counter(
    "agentaccounts_revoked_total",
    "Identities revoked, by why (expired, deleted).",
    ["provider", "reason"],
    registry=REGISTRY,
)
FAILED = Counter(
    "agentaccounts_failures_total",
    "Issue or revoke attempts that failed, by reason.",
    ["reason"],
    registry=REGISTRY,
)
ISSUE_SECONDS = Histogram(
    "agentaccounts_issue_duration_seconds",
    "Time from starting an issue to the Secret being written.",
    ["provider"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
REVOCATION_LAG = Histogram(
    "agentaccounts_revocation_lag_seconds",
    "Time from expiresAt to the identity being revoked.",
    ["provider"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 15, 60, 300),
    registry=REGISTRY,
)


class ExpiryIndex(Collector):
    """uid -> (namespace, name, provider, expiresAt) of every live (Ready) identity."""

    def __init__(self) -> None:
        self._lock = Lock()  # the exporter scrapes from its own thread
        self._entries: dict[str, tuple[str, str, str, float]] = {}

    def set(self, uid: str, namespace: str, name: str, provider: str, expires_at: datetime) -> None:
        with self._lock:
            self._entries[uid] = (namespace, name, provider, expires_at.timestamp())

    def discard(self, uid: str) -> None:
        with self._lock:
            self._entries.pop(uid, None)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            entries = list(self._entries.values())
        expiry = GaugeMetricFamily(
            "agentaccounts_account_expiry_timestamp_seconds",
            "When each live identity expires (Unix time).",
            labels=["namespace", "name", "provider"],
        )
        active = GaugeMetricFamily(
            "agentaccounts_active_accounts", "Live identities, by provider.", labels=["provider"]
        )
        counts: dict[str, int] = {}
        for namespace, name, provider, at in entries:
            expiry.add_metric([namespace, name, provider], at)
            counts[provider] = counts.get(provider, 0) + 1
        for provider, count in sorted(counts.items()):
            active.add_metric([provider], count)
        yield expiry
        yield active


EXPIRY = ExpiryIndex()
REGISTRY.register(EXPIRY)


def serve(port: int) -> None:
    """Expose /metrics on `port` (a daemon thread; 0 means do not serve)."""
    if port:
        start_http_server(port, registry=REGISTRY)
