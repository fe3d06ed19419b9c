"""The scope syntax of `--scope`, and the AgentAccount a request becomes. Pure: no I/O.

The syntax is SYNTAX_HELP below (also in `--help`). The colon is required, so a forgotten one
("configmaps") is an error rather than a scope that asks for a permission called "configmaps"; a
colon followed by a space belongs to a Cloudflare permission name. The operator, not this module,
judges what the words mean.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from agentaccounts.client.errors import UsageError
from agentaccounts.models import parse_duration

PROVIDER_KINDS = ("AccountProvider", "ClusterAccountProvider")
GENERATED_PREFIX = "agent-"  # generateName when no --name is given: agent-x7k2q
_SEPARATOR = re.compile(r":(?! )")  # "Access: Apps ..." keeps its colon
SYNTAX_HELP = """PERMISSIONS:RESOURCES[:NAMES], each a comma-separated list:
  get,list:configmaps,deployments.apps     Kubernetes verbs on resource[.group][/subresource]
  get:secrets:app-config,app-flags         ... narrowed to these object names (resourceNames)
  'Workers Scripts Read:account'           Cloudflare permission groups on a resource
  'Workers KV Storage Read:'               ... nothing after the colon: the whole account
  'Access: Apps and Policies Read:zones'   a colon followed by a space belongs to the name"""
SYNTAX = "PERMISSIONS:RESOURCES[:NAMES], e.g. get,list:configmaps or 'Workers Scripts Read:account'"


def _items(text: str, what: str, scope: str) -> list[str]:
    items = [item.strip() for item in text.split(",")]
    if any(not item for item in items):
        raise UsageError(f"scope {scope!r}: an empty entry in its {what}; use {SYNTAX}")
    return items


def parse_scope(text: str) -> dict[str, list[str]]:
    """One `--scope` value as an AgentAccount scope ({permissions, resources[, resourceNames]})."""
    parts = _SEPARATOR.split(text)
    if len(parts) not in (2, 3) or not parts[0].strip():
        raise UsageError(f"scope {text!r}: use {SYNTAX}")
    scope = {"permissions": _items(parts[0], "permissions", text)}
    if parts[1].strip():
        scope["resources"] = _items(parts[1], "resources", text)
    if len(parts) == 3:
        if "resources" not in scope:
            raise UsageError(f"scope {text!r}: names narrow resources, so name the resources too")
        scope["resourceNames"] = _items(parts[2], "names", text)
    return scope


def format_scope(scope: dict[str, Any]) -> str:
    """The inverse of parse_scope, for showing an account's scopes in the same syntax."""
    text = ",".join(scope.get("permissions") or []) + ":" + ",".join(scope.get("resources") or [])
    names = scope.get("resourceNames") or []
    return text + (":" + ",".join(names) if names else "")


def lifetime(text: str) -> str:
    """A lifetime as the CRD takes it (Go-style with days), checked here so a typo is a usage error."""
    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if value <= timedelta(0):
        raise UsageError(f"lifetime {text!r} must be greater than zero (to end an account, revoke it)")
    return text


def seconds(text: str) -> float:
    """A timeout: a duration (60s, 2m) or plain seconds (60)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return parse_duration(text).total_seconds()
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def manifest(
    namespace: str,
    provider: str,
    provider_kind: str,
    scopes: list[dict[str, Any]],
    lifetime: str | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """The AgentAccount to create; generateName when no name is given."""
    if not scopes:
        raise UsageError(f"at least one scope is needed: {SYNTAX}")
    if provider_kind not in PROVIDER_KINDS:
        raise UsageError(f"provider kind {provider_kind!r}: use AccountProvider or ClusterAccountProvider")
    spec: dict[str, Any] = {"providerRef": {"kind": provider_kind, "name": provider}, "scopes": scopes}
    if lifetime is not None:
        spec["lifetime"] = lifetime
    metadata: dict[str, Any] = {"namespace": namespace}
    metadata.update({"name": name} if name else {"generateName": GENERATED_PREFIX})
    return {
        "apiVersion": "agentaccounts.dev/v1alpha1",
        "kind": "AgentAccount",
        "metadata": metadata,
        "spec": spec,
    }
