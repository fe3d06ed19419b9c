"""The `spec.cloudflare` block of a (Cluster)AccountProvider (crds/: the same fields)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from agentaccounts.models import SecretKeyRef, SpecModel
from agentaccounts.settings import CLOUDFLARE_API


class CloudflareBlock(SpecModel):
    account_id: str | None = Field(default=None, alias="accountId")
    mode: Literal["token", "temporaryAccount"] = "token"
    api_token_secret_ref: SecretKeyRef | None = Field(default=None, alias="apiTokenSecretRef")
    api_base_url: str = Field(default=CLOUDFLARE_API, alias="apiBaseURL")
