"""The operator's configuration: one typed object, read from the environment once, in main.

Every knob has the prefix AGENTACCOUNTS_ (e.g. AGENTACCOUNTS_METRICS_PORT=9090) and CLI flags override
the environment. Nothing else in the package reads os.environ. Secrets (none today) would come from
`secrets_dir`, never from plain environment variables.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

CLOUDFLARE_API = "https://api.cloudflare.com/client/v4"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AGENTACCOUNTS_", secrets_dir=None, frozen=True)

    namespaces: list[str] = Field(default_factory=list, description="watch only these; empty = all")
    metrics_port: int = Field(default=8080, ge=0, le=65535, description="0 disables /metrics")
    liveness: str | None = Field(
        default=None, description="kopf liveness endpoint, e.g. http://0.0.0.0:8081/healthz"
    )
    # Server URL written into generated kubeconfigs. In a pod, the operator's own client talks to the
    # service IP, which agents in other pods can reach as kubernetes.default.svc too; outside a cluster
    # (tests, demo) the operator's own URL is the right default.
    kubeconfig_server: str | None = None
    # Watches are restarted at least this often, so a silently dead connection is noticed (kopf's
    # default is to wait forever). The server-side timeout makes the API server end idle watches.
    watch_server_timeout: int = Field(default=300, ge=10)
    watch_client_timeout: int = Field(default=330, ge=10)
    provider_retry_seconds: float = Field(
        default=5.0, gt=0, description="retry delay while a provider is missing"
    )
    orphan_sweep_seconds: float = Field(
        default=300.0, gt=0, description="Cloudflare orphan-token sweep period"
    )
    cloudflare_budget: int = Field(default=1100, gt=0, description="requests per window per parent token")
    cloudflare_window_seconds: float = Field(default=300.0, gt=0)
    # A throttled call waits up to this long; beyond it the account goes Pending/RateLimited and retries.
    cloudflare_max_wait_seconds: float = Field(default=10.0, ge=0)
    # Tokens younger than this are never swept: their AgentAccount may not have recorded them yet.
    cloudflare_orphan_min_age_seconds: float = Field(default=600.0, ge=0)
    api_threads: int = Field(default=64, ge=1, description="worker threads for Kubernetes API calls")
    expiry_workers: int = Field(default=32, ge=1, description="accounts revoked at once when many are due")
    memory_trim_seconds: float = Field(default=30.0, ge=0, description="freed heap back to the OS; 0: never")
    leader_elect: bool = False
    leader_election_namespace: str = "default"
    leader_election_name: str = "agentaccounts-operator"
    pod_name: str | None = Field(default=None, validation_alias="POD_NAME")
    # Where the operator keeps what it owns outside the watched namespaces: the Secret with the key
    # that signs requester stamps (admission.py). The chart sets it to the release namespace.
    operator_namespace: str = "default"
    signing_key_secret: str = "agentaccounts-signing-key"
    # Admission webhook (mutating: stamps the requester; validating: every policy and RBAC check).
    # Served by default: out of a cluster (tests, demo) at https://webhook_host:webhook_port, registered
    # by URL; in a cluster through the Service named by webhook_service ("namespace/name").
    webhook_port: int = Field(default=9443, ge=0, le=65535, description="0 disables admission")
    webhook_listen: str = "127.0.0.1"
    webhook_host: str = "127.0.0.1"
    webhook_service: str | None = None
    # The Validating/MutatingWebhookConfiguration kopf keeps. Shards (several operators, each on its
    # own --namespace set) each need their own, or they take turns rewriting one.
    webhook_configuration: str = Field(default="agentaccounts.dev", min_length=1, max_length=253)
    # Cloudflare API base URLs a provider's apiBaseURL may start with. A provider object can never
    # widen this: it is the operator's own setting. Plain http is accepted only for loopback.
    allowed_api_base_urls: Annotated[list[str], NoDecode] = Field(default_factory=lambda: [CLOUDFLARE_API])
    # The operator's audit stream (activity/stream.py): "-" stdout, "" off, else a file appended to.
    audit_log: str = "-"
    # The audit-webhook endpoint the API server's webhook backend posts to (activity/receiver.py). Off
    # (0) unless configured. Mutual TLS: our serving certificate and key, the CA that signed the API
    # server's client certificate, and the subject that certificate must have (CN, and O if set).
    audit_webhook_port: int = Field(default=0, ge=0, le=65535, description="0 disables the endpoint")
    audit_webhook_listen: str = "127.0.0.1"
    audit_webhook_cert_file: str = ""
    audit_webhook_key_file: str = ""
    audit_webhook_client_ca_file: str = ""
    audit_webhook_client_cn: str = "kube-apiserver-audit"
    audit_webhook_client_org: str = ""
    activity_flush_seconds: float = Field(default=2.0, gt=0, description="status.activity write batching")
    # At most this many status.activity writes a second on average, over all accounts (collector.py).
    activity_writes_per_second: float = Field(default=2.0, gt=0)

    @field_validator("allowed_api_base_urls", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value
