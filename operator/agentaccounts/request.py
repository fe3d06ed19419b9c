"""`agentaccounts request`: how an agent (or its launcher) asks for an identity from the command line.

It creates an AgentAccount from flags — `--scope get,list:configmaps,deployments.apps` means the verbs
before the colon on the resources after it — and with `--wait` blocks until it is Ready (or Failed)
and prints the Secret's name, which is all a pod needs to mount. It needs RBAC to create
AgentAccounts in the namespace: the operator, not the requester, holds the power to grant.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from agentaccounts.kube import Kube, KubeApiError
from agentaccounts.stamps import APPROVAL_REQUEST


def parse_scope(text: str) -> dict[str, list[str]]:
    verbs, sep, resources = text.partition(":")
    if not sep or not verbs or not resources:
        raise ValueError(f"scope {text!r}: use VERBS:RESOURCES, e.g. get,list:configmaps")
    return {"permissions": verbs.split(","), "resources": resources.split(",")}


def manifest(args: argparse.Namespace) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "providerRef": {"kind": args.provider_kind, "name": args.provider},
        "scopes": [parse_scope(s) for s in args.scope],
    }
    if args.lifetime:
        spec["lifetime"] = args.lifetime
    return {
        "apiVersion": "agentaccounts.dev/v1alpha1",
        "kind": "AgentAccount",
        "metadata": {"name": args.name, "namespace": args.namespace},
        "spec": spec,
    }


async def main(kube: Kube, args: argparse.Namespace) -> int:
    try:
        body = manifest(args)
        await kube.create_custom("AgentAccount", args.namespace, body)
    except (ValueError, KubeApiError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"agentaccount.agentaccounts.dev/{args.name} created", file=sys.stderr)
    if not args.wait:
        return 0
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        current = await kube.get_custom("AgentAccount", args.namespace, args.name) or {}
        status = current.get("status") or {}
        if status.get("phase") == "Ready":
            print(status["secretName"])
            return 0
        if status.get("phase") == "Failed":
            ready: dict[str, Any] = next(
                (c for c in status.get("conditions", []) if c["type"] == "Ready"), {}
            )
            print(f"error: {ready.get('reason')}: {ready.get('message')}", file=sys.stderr)
            return 1
        await asyncio.sleep(0.2)  # poll interval; the deadline bounds the wait
    print(f"error: not Ready within {args.timeout:.0f}s", file=sys.stderr)
    return 1


async def decide(kube: Kube, namespace: str, name: str, verb: str) -> int:
    """`agentaccounts approve|deny NAME`: ask for the decision; the admission webhook checks that the
    caller holds RBAC verb `approve` on the provider and records who decided, signed."""
    try:
        await kube.annotate_account(namespace, name, {APPROVAL_REQUEST: verb})
    except KubeApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"agentaccount.agentaccounts.dev/{name} {'approved' if verb == 'approve' else 'denied'}",
        file=sys.stderr,
    )
    return 0
