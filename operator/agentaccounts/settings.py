"""The operator's configuration: one typed object, read from the environment once, in main.

Every knob has the prefix AGENTACCOUNTS_ (e.g. AGENTACCOUNTS_METRICS_PORT=9090) and CLI flags override
the environment. Nothing else in the package reads os.environ. Secrets (none today) would come from
`secrets_dir`, never from plain environment variables.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    leader_elect: bool = False
    leader_election_namespace: str = "default"
    leader_election_name: str = "agentaccounts-operator"
    pod_name: str | None = Field(default=None, validation_alias="POD_NAME")
