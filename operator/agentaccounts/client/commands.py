"""The client subcommands of `agentaccounts` (also `kubectl agentaccounts`): request, list, status,
extend, revoke, approve, deny, and `mcp`, which serves the same as MCP tools.

stdout carries only what was asked for (credentials for `request --output env|json|kubeconfig`, a
Secret name, a table); progress and errors go to stderr, each error one line, and the exit code says
which failure it was (errors.py), so a launcher can `eval "$(agentaccounts request ...)"` safely.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from typing import Any

from agentaccounts.client import activity, scopes
from agentaccounts.client.accounts import Accounts, Progress
from agentaccounts.client.errors import EXIT_CODES, ClientError, NoClusterAccess, UsageError
from agentaccounts.client.views import (
    AccountView,
    RequestedAccount,
    countdown,
    env_lines,
    status_text,
    table,
    view,
)
from agentaccounts.kube import Kube, KubeConfigError, context_namespace
from agentaccounts.models import AgentAccount

COMMANDS = ("request", "list", "status", "extend", "revoke", "approve", "deny", "mcp", "activity")
EXAMPLES = """examples:
  eval "$(agentaccounts request --provider in-cluster --scope get,list:configmaps --lifetime 30m -o env)"
  agentaccounts request --provider cloudflare --scope 'Workers Scripts Read:account' -o json
  agentaccounts request --provider in-cluster --scope get:secrets:app-config -o secret   # for a pod spec
  agentaccounts list;  agentaccounts status NAME;  agentaccounts extend NAME --lifetime 2h
  agentaccounts revoke NAME            # ends it now; the AgentAccount stays as the audit record
"""
EPILOG = (
    EXAMPLES
    + "\nexit codes:\n"
    + "\n".join(f"  {code}  {meaning}" for code, meaning in EXIT_CODES)
    + "\n\nscopes: "
    + scopes.SYNTAX_HELP
)


def add_parsers(sub: Any) -> None:
    """Add the client subcommands to the `agentaccounts` parser's subparsers."""
    raw = argparse.RawDescriptionHelpFormatter

    def command(name: str, help: str, **kwargs: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(name, help=help, description=help, **kwargs)
        parser.add_argument("--kubeconfig", default=argparse.SUPPRESS, help="kubeconfig file")
        return parser

    def namespaced(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("-n", "--namespace", help="default: the kubeconfig context's namespace")

    def waiting(parser: argparse.ArgumentParser, default: str) -> None:
        parser.add_argument("--timeout", default=default, help=f"give up after this long (default {default})")

    request = command(
        "request",
        "ask for an identity: create an AgentAccount, wait until Ready, print what the agent needs",
        epilog=EPILOG,
        formatter_class=raw,
    )
    request.add_argument("--provider", required=True, help="the (Cluster)AccountProvider's name")
    request.add_argument("--kind", choices=scopes.PROVIDER_KINDS, help="default: whichever exists")
    request.add_argument(
        "--scope",
        action="append",
        required=True,
        metavar="PERMISSIONS:RESOURCES[:NAMES]",
        help="e.g. get,list:configmaps,deployments.apps (repeatable; see below)",
    )
    request.add_argument("--lifetime", help="e.g. 30m, 1h30m (default: the provider's defaultLifetime)")
    request.add_argument("--name", help=f"default: generated ({scopes.GENERATED_PREFIX}xxxxx)")
    namespaced(request)
    request.add_argument("--wait", action=argparse.BooleanOptionalAction, default=True, help="until Ready")
    waiting(request, "60s")
    request.add_argument(
        "-o",
        "--output",
        choices=["env", "json", "kubeconfig", "secret"],
        default="secret",
        help="env: export lines for eval; json: the account and its credentials; kubeconfig: the file; "
        "secret: the Secret's name only (default)",
    )

    listing = command("list", "list AgentAccounts")
    namespaced(listing)
    listing.add_argument("-A", "--all-namespaces", action="store_true")
    listing.add_argument("-o", "--output", choices=["text", "json"], default="text")

    status = command("status", "phase, expiry, scopes, requester and provider identity of one account")
    status.add_argument("name")
    namespaced(status)
    status.add_argument("-o", "--output", choices=["text", "json"], default="text")

    extend = command("extend", "set an account's lifetime (counted from when it was issued)")
    extend.add_argument("name")
    extend.add_argument("--lifetime", required=True, help="the whole lifetime, e.g. 2h (not an addition)")
    namespaced(extend)
    waiting(extend, "60s")

    revoke = command("revoke", "end an account now; the AgentAccount stays as the audit record")
    revoke.add_argument("name")
    namespaced(revoke)
    waiting(revoke, "30s")

    for verb in ("approve", "deny"):
        decide = command(
            verb, f"{verb} an AgentAccount whose provider requires approval (RBAC verb 'approve' on it)"
        )
        decide.add_argument("name")
        namespaced(decide)

    mcp = command(
        "mcp", "serve request/get/list/extend/revoke as MCP tools, with this process's Kubernetes identity"
    )
    mcp.add_argument("--transport", choices=["stdio", "streamable-http"], default="stdio")
    mcp.add_argument("--host", default="127.0.0.1", help="streamable-http: listen here (default loopback)")
    mcp.add_argument("--port", type=int, default=8000, help="streamable-http: port (default 8000)")
    mcp.add_argument(
        "--allowed-providers",
        action="append",
        metavar="NAME[,NAME]",
        help="only these providers may be requested (default: any the identity may use)",
    )
    mcp.add_argument("--max-lifetime", help="refuse lifetimes above this, e.g. 1h (default: the provider's)")
    mcp.add_argument("-n", "--namespace", help="work only in this namespace (default: any, per call)")

    activity.add_parser(command)


def run(args: argparse.Namespace) -> int:
    """Run one client subcommand; the exit code (errors.py)."""
    logging.getLogger("urllib3").setLevel(logging.ERROR)  # its retry warnings: the error line says it
    try:
        try:
            kube = Kube.connect(args.kubeconfig)
        except KubeConfigError as exc:
            raise NoClusterAccess(str(exc)) from None
        try:
            namespace = args.namespace or context_namespace(args.kubeconfig) or "default"
            if args.command == "mcp":
                from agentaccounts.client.mcp_server import serve

                return serve(kube, args, namespace)
            if args.command == "activity":
                return asyncio.run(activity.run(kube, args, namespace))
            return asyncio.run(_COMMANDS[args.command](Accounts(kube), args, namespace))
        finally:
            kube.close()
    except ClientError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code


def _progress(namespace: str, name: str) -> Progress:
    return lambda line: print(f"agentaccount {namespace}/{name}: {line}", file=sys.stderr, flush=True)


def _json(model: AccountView | list[AccountView]) -> str:
    if isinstance(model, list):
        return json.dumps({"items": [m.model_dump(mode="json", by_alias=True) for m in model]}, indent=2)
    return json.dumps(model.model_dump(mode="json", by_alias=True, exclude_none=True), indent=2)


async def _request(accounts: Accounts, args: argparse.Namespace, namespace: str) -> int:
    wanted = [scopes.parse_scope(s) for s in args.scope]
    lifetime = scopes.lifetime(args.lifetime) if args.lifetime else None
    within = scopes.seconds(args.timeout)
    if not args.wait and args.output in ("env", "kubeconfig"):
        raise UsageError(f"--output {args.output} needs the credentials: drop --no-wait")
    kind, provider = await accounts.find_provider(namespace, args.provider, args.kind)
    if (
        args.output == "kubeconfig"
        and provider is not None
        and "kubernetes" not in (provider.get("spec") or {})
    ):
        raise UsageError(f"{kind} {args.provider} does not issue kubeconfigs: use --output env or json")
    body = scopes.manifest(namespace, args.provider, kind, wanted, lifetime, args.name)
    created = await accounts.create(body)
    name = created["metadata"]["name"]
    progress = _progress(namespace, name)
    progress(f"created (provider {kind}/{args.provider})")
    if not args.wait:
        result = RequestedAccount.model_validate(view(created).model_dump())
        print(AgentAccount.from_body(created).secret_name if args.output == "secret" else _json(result))
        return 0
    ready = await accounts.wait_ready(created, within, progress, provider_confirmed=provider is not None)
    summary = view(ready)
    progress(f"Ready: expires at {summary.expires_at} ({countdown(summary.expires_in_seconds)})")
    if args.output == "secret":
        print(summary.secret_name)
        return 0
    credentials = await accounts.credentials(ready)
    if args.output == "kubeconfig":
        if "kubeconfig" not in credentials.data:
            raise UsageError(f"a {summary.provider.type} account has no kubeconfig: use --output env or json")
        sys.stdout.write(credentials.data["kubeconfig"])
    elif args.output == "env":
        print("\n".join(env_lines(summary, credentials)))
    else:
        print(_json(RequestedAccount.model_validate({**summary.model_dump(), "credentials": credentials})))
    return 0


async def _list(accounts: Accounts, args: argparse.Namespace, namespace: str) -> int:
    views = [view(b) for b in await accounts.list("" if args.all_namespaces else namespace)]
    print(_json(views) if args.output == "json" else table(views, args.all_namespaces))
    return 0


async def _status(accounts: Accounts, args: argparse.Namespace, namespace: str) -> int:
    summary = view(await accounts.get(namespace, args.name))
    print(_json(summary) if args.output == "json" else status_text(summary))
    return 0


async def _extend(accounts: Accounts, args: argparse.Namespace, namespace: str) -> int:
    lifetime, within = scopes.lifetime(args.lifetime), scopes.seconds(args.timeout)
    summary = view(
        await accounts.extend(namespace, args.name, lifetime, within, _progress(namespace, args.name))
    )
    print(summary.expires_at or f"lifetime {lifetime}, counted from when it is issued")
    return 0


async def _revoke(accounts: Accounts, args: argparse.Namespace, namespace: str) -> int:
    progress = _progress(namespace, args.name)
    outcome, body = await accounts.revoke(namespace, args.name, scopes.seconds(args.timeout), progress)
    revoked_at = (body.get("status") or {}).get("revokedAt")
    progress(
        f"{outcome}" + (f" at {revoked_at}; the AgentAccount stays as the audit record" if revoked_at else "")
    )
    return 0


async def _decide(accounts: Accounts, args: argparse.Namespace, namespace: str) -> int:
    await accounts.decide(namespace, args.name, args.command)
    print(
        f"agentaccount.agentaccounts.dev/{args.name} {'approved' if args.command == 'approve' else 'denied'}",
        file=sys.stderr,
    )
    return 0


_COMMANDS = {
    "request": _request,
    "list": _list,
    "status": _status,
    "extend": _extend,
    "revoke": _revoke,
    "approve": _decide,
    "deny": _decide,
}
