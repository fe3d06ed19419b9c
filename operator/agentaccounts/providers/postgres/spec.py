"""The `spec.postgres` block of a (Cluster)AccountProvider (crds/: the same fields).

`host` and `adminSecretRef` are required by the CRDs; here they are optional so that the model still
parses a block written past the schema, and building the provider says what is missing (InvalidSpec)
instead of every AgentAccount failing on a validation error.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from agentaccounts.models import SpecModel

SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
# A host name or an IP address: no "/" (libpq would read a Unix-socket directory), no "," (a host list).
HOST_PATTERN = r"^[A-Za-z0-9:]([A-Za-z0-9.:-]*[A-Za-z0-9])?$"


class AdminSecretRef(SpecModel):
    namespace: str | None = None
    name: str
    key: str = "uri"


class PostgresBlock(SpecModel):
    host: str | None = Field(default=None, pattern=HOST_PATTERN, max_length=253)
    port: int = Field(default=5432, ge=1, le=65535)
    database: str = Field(default="postgres", min_length=1, max_length=63)
    ssl_mode: SslMode = Field(default="verify-full", alias="sslMode")
    ca_bundle: str | None = Field(default=None, alias="caBundle")
    admin_secret_ref: AdminSecretRef | None = Field(default=None, alias="adminSecretRef")
    connection_limit: int = Field(default=5, ge=1, le=1000, alias="connectionLimit")
    # Objects an agent role created: reassigned to this role at revocation; None: dropped with it.
    reassign_owned_to: str | None = Field(default=None, alias="reassignOwnedTo", min_length=1, max_length=63)
