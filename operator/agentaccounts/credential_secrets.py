"""The Secret each AgentAccount's credentials live in: checked, written, deleted — and never foreign.

The Secret is the one object an agent's pod mounts, so the rules around it are the product's: a Secret
the operator did not make (no UID label of this account) is never overwritten or deleted; no other
agent's identity may be granted it by name (asked of every provider type, `ProviderType.grants_secret`);
and a provider that updated an identity in place (`Issued.secret_data` None) keeps the current data.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from agentaccounts import ownership
from agentaccounts.access import secret_refs
from agentaccounts.clock import rfc3339
from agentaccounts.errors import ProviderUnavailable, SecretConflict
from agentaccounts.kube import AlreadyExists, Kube
from agentaccounts.models import AgentAccount
from agentaccounts.providers import TYPES
from agentaccounts.providers.base import Issued

EXPIRES_AT = "agentaccounts.dev/expires-at"


class CredentialSecrets:
    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    async def check(self, account: AgentAccount) -> dict[str, Any] | None:
        """The account's Secret if it exists and is ours; SecretConflict (untouched) if it is not, or if
        a provider reads its own credential from that name (a Secret that does not exist yet must not
        become the place a provider later takes the agent's token from as its parent token)."""
        secret = await self.kube.get("Secret", account.namespace, account.secret_name)
        if secret is not None and not ownership.owned_by(secret, account.uid):
            raise SecretConflict(
                f"Secret {account.namespace}/{account.secret_name} already exists and is not "
                "managed by this AgentAccount; it was left untouched. Delete it or set spec.secretName"
            )
        for kind, where in (("ClusterAccountProvider", ""), ("AccountProvider", account.namespace)):
            for body in await self.kube.list_custom(kind, where):
                if (account.namespace, account.secret_name) in secret_refs(body.get("spec") or {}, where):
                    raise SecretConflict(
                        f"Secret name {account.secret_name!r} is where {kind} {body['metadata']['name']} "
                        "reads its own credential from; set spec.secretName to another name"
                    )
        return secret

    async def check_not_granted(self, account: AgentAccount) -> None:
        """No other agent's identity may be granted this account's Secret by name (its own grants were
        checked when it was issued, but this Secret's name may be new)."""
        for entry in TYPES.values():
            if entry.grants_secret is None:
                continue
            holder = await entry.grants_secret(self.kube, account.namespace, account.secret_name, account.uid)
            if holder:
                raise SecretConflict(
                    f"Secret name {account.secret_name!r} is granted to another agent by {holder}; "
                    "set spec.secretName to another name"
                )

    async def write(self, account: AgentAccount, issued: Issued, expires_at: datetime) -> None:
        meta = ownership.metadata(account.secret_name, account.namespace, account.name, account.uid)
        meta["annotations"] = {EXPIRES_AT: rfc3339(expires_at)}
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": meta}
        if issued.secret_data is not None:
            body["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in issued.secret_data.items()}
            try:  # the common case, a new account: one call
                await self.kube.create("Secret", account.namespace, body)
                return
            except AlreadyExists:
                pass
        existing = await self.check(account)  # refuses a foreign Secret, untouched
        if existing is None:
            raise ProviderUnavailable(f"Secret {account.namespace}/{account.secret_name} vanished; retrying")
        if issued.secret_data is None:
            body["data"] = existing.get("data") or {}
        meta["resourceVersion"] = existing["metadata"]["resourceVersion"]
        await self.kube.replace("Secret", account.namespace, body)

    async def delete(self, account: AgentAccount) -> None:
        """Only Secrets carrying this account's UID label: a foreign Secret is never touched. By name
        first (one object, whatever else the namespace holds); by label if it was not there."""
        if not await self.kube.delete_owned("Secret", account.namespace, account.secret_name, account.uid):
            await self.kube.delete_labelled("Secret", account.namespace, ownership.selector(account.uid))
