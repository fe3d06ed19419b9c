"""`agentaccounts activity NAME [-o json]` and `agentaccounts activity ingest [FILE]`.

`activity NAME` prints what an agent did, as the operator recorded it in status.activity: the summary
(requests, denied, first and last, the busiest verb/resource pairs, what the trail cannot show) and the
recent trail (time, verb, resource, outcome), oldest first. The full trail is the operator's audit
stream; this is what goes with the AgentAccount record.

`activity ingest` is for clusters whose API-server audit backend cannot be pointed at the operator
(managed clusters): it reads audit events as JSON lines (the log backend's format: one Event, or one
EventList, per line) from a file or stdin, attributes them exactly as the operator's endpoint does (by
credential id, checked against the ServiceAccount), writes each account's status.activity and prints
one audit-stream line per attributed request. It acts with the caller's identity, which needs `get`,
`list` on agentaccounts and `patch` on agentaccounts/status.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from typing import IO, Any

from agentaccounts.activity import stream
from agentaccounts.activity.collector import Collector
from agentaccounts.activity.trail import Trail
from agentaccounts.client.accounts import Accounts
from agentaccounts.client.errors import UsageError
from agentaccounts.clock import utcnow
from agentaccounts.kube import Kube

INGEST = "ingest"  # `activity ingest` (an account named "ingest": `agentaccounts status ingest`)


def add_parser(command: Callable[..., argparse.ArgumentParser]) -> None:
    parser = command("activity", "what an agent did (its recent requests and their summary); or ingest")
    parser.add_argument("name", help=f"the AgentAccount; or `{INGEST}` to read audit JSON lines")
    parser.add_argument("file", nargs="?", default="-", help=f"{INGEST}: audit log file (default: stdin)")
    parser.add_argument("-n", "--namespace", help="default: the kubeconfig context's namespace")
    parser.add_argument("-A", "--all-namespaces", action="store_true", help=f"{INGEST}: every namespace")
    parser.add_argument("-o", "--output", choices=["text", "json"], default="text")


async def run(kube: Kube, args: argparse.Namespace, namespace: str) -> int:
    if args.name == INGEST:
        namespaces = [] if args.all_namespaces else [namespace]
        with sys.stdin if args.file == "-" else open(args.file, encoding="utf-8") as source:  # noqa: ASYNC230
            return await ingest(kube, namespaces, source)
    if args.file != "-":
        raise UsageError(f"unexpected argument {args.file!r}: only `activity {INGEST}` reads a file")
    body = await Accounts(kube).get(namespace, args.name)
    print(render(body, args.output))
    return 0


def render(body: dict[str, Any], output: str) -> str:
    meta, status = body.get("metadata") or {}, body.get("status") or {}
    activity = status.get("activity") or {}
    if output == "json":
        account = {k: meta.get(k) for k in ("namespace", "name", "uid")}
        return json.dumps({"account": account, "phase": status.get("phase"), "activity": activity}, indent=2)
    trail = Trail(activity)
    lines = [
        f"AgentAccount {meta.get('namespace')}/{meta.get('name')} ({status.get('phase') or 'no phase'})",
        f"requests {trail.requests}, denied {trail.denied}"
        + (f"; first {trail.first_at}, last {trail.last_at}" if trail.requests else ""),
    ]
    busiest = trail.busiest(5)
    if busiest:
        lines.append("busiest: " + ", ".join(f"{p['verb']} {p['resource']} ({p['count']})" for p in busiest))
    lines += [f"note: {note}" for note in trail.notes]
    if not trail.complete:
        lines.append("(incomplete: a source could not be read in full)")
    if not trail.recent:
        lines.append("no requests recorded")
        return "\n".join(lines)
    shown = "" if len(trail.recent) == trail.requests else f" (the last {len(trail.recent)})"
    lines += ["", f"recent requests{shown}:"]
    rows = [("TIME", "VERB", "RESOURCE", "NAMESPACE/NAME", "CODE")]
    for e in trail.recent:
        target = "/".join(p for p in (e.namespace, e.name) if p) or "-"
        rows.append((e.time, e.verb, e.resource, target, outcome(e.code)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


def outcome(code: int) -> str:
    if not code:
        return "-"
    return f"{code} {'denied' if code in (401, 403) else 'ok' if code < 400 else 'error'}"


def events_in(source: IO[str]) -> Iterator[Any]:
    """Audit events from JSON lines: one Event or one EventList per line; blank lines skipped."""
    for number, line in enumerate(source, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError:
            raise UsageError(f"line {number} is not JSON (expected one audit Event per line)") from None
        if isinstance(data, dict) and isinstance(data.get("items"), list):
            yield from data["items"]
        else:
            yield data


async def ingest(kube: Kube, namespaces: list[str], source: IO[str]) -> int:
    stream.configure("-")  # the audit-stream lines are this command's output
    collector = Collector(kube, utcnow, namespaces)
    await collector.load()
    batch: list[Any] = []
    for event in events_in(source):
        batch.append(event)
        if len(batch) >= 1000:
            collector.accept(batch)
            batch = []
    collector.accept(batch)
    accounts = len(collector.pending)
    written = await collector.flush()
    print(
        f"ingest: {collector.received} agent requests read, {collector.attributed} attributed to "
        f"{accounts} AgentAccounts ({written} written); {len(collector.held)} not attributed",
        file=sys.stderr,
    )
    return 0
