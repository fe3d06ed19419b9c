"""The `spec.kubernetes` block of a (Cluster)AccountProvider (crds/: the same fields)."""

from __future__ import annotations

from agentaccounts.models import SpecModel


class KubernetesBlock(SpecModel):
    # Server URL written into generated kubeconfigs; default: the operator's kubeconfig_server setting,
    # then the URL the operator itself uses.
    server: str | None = None
