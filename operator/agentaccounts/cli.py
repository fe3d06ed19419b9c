"""The `agentaccounts` command line: run the operator, walk through the demo, request an identity.

    agentaccounts run [--namespace NS ... | --all-namespaces] [--metrics-port N] [--liveness URL]
    agentaccounts demo                  # needs a cluster with the CRDs installed ($KUBECONFIG)
    agentaccounts request --provider P --scope get,list:configmaps --lifetime 30m --output env
    agentaccounts list | status NAME | extend NAME --lifetime 2h | revoke NAME | approve/deny NAME
    agentaccounts mcp                   # the same as MCP tools, over stdio

The client commands (request ... mcp) live in client/ and act with the caller's own identity; they are
also installed as `kubectl-agentaccounts`, so `kubectl agentaccounts list` works. Flags override
AGENTACCOUNTS_* environment variables (see settings.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import tracemalloc
import urllib.parse
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from agentaccounts import __version__, app, leader, memory, metrics
from agentaccounts.client import commands
from agentaccounts.kube import Kube, KubeConfigError, LeaseStore
from agentaccounts.settings import Settings

log = logging.getLogger("agentaccounts")


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log pipelines. kopf attaches the object it logs about as
    `k8s_ref`; it becomes `object` here. Messages never contain credentials (see errors.py)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        ref = getattr(record, "k8s_ref", None)
        if isinstance(ref, dict):
            entry["object"] = {k: ref.get(k) for k in ("kind", "namespace", "name")}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class QuietKopf(logging.Filter):
    """kopf logs every handler run at INFO ("Timer 'sweep_provider' succeeded", "Handler 'issue' ...");
    those become DEBUG (shown with -v). Our own INFO lines say what happened; kopf's warnings and
    errors pass unchanged."""

    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("kopf") and record.levelno == logging.INFO:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return self.verbose
        return True


def _parser() -> argparse.ArgumentParser:
    plugin = os.path.basename(sys.argv[0]).startswith("kubectl-")  # run by kubectl's plugin lookup
    parser = argparse.ArgumentParser(
        prog="kubectl agentaccounts" if plugin else "agentaccounts",
        description=__doc__.splitlines()[0],
        epilog=commands.EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=__version__)
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, then in-cluster)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        default="text",
        help="json: one object per line (ts, level, logger, message, object)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the operator")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        dest="namespaces",
        metavar="NS",
        help="watch this namespace (repeatable)",
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace (default)")
    run.add_argument(
        "--metrics-port", type=int, help="serve Prometheus /metrics here (0 = off; default 8080)"
    )
    run.add_argument("--liveness", help="liveness endpoint URL, e.g. http://0.0.0.0:8081/healthz")
    run.add_argument(
        "--leader-elect",
        action="store_true",
        default=None,
        help="hold a Lease before working, so only one replica acts",
    )
    run.add_argument("--leader-election-namespace")
    run.add_argument("--leader-election-name")

    sub.add_parser("demo", help="walk through an AgentAccount's life on the current cluster")

    commands.add_parsers(sub)  # request, list, status, extend, revoke, approve, deny, mcp, activity
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if args.namespaces:
        overrides["namespaces"] = args.namespaces
    if args.all_namespaces:
        overrides["namespaces"] = []
    for flag in (
        "metrics_port",
        "liveness",
        "leader_elect",
        "leader_election_namespace",
        "leader_election_name",
    ):
        if getattr(args, flag) is not None:
            overrides[flag] = getattr(args, flag)
    return Settings(**overrides)


async def _run(settings: Settings, kube: Kube) -> int:
    # Every API call runs in a worker thread (kube.py). asyncio's default pool has cpu+4 threads,
    # which serialises bursts (50 accounts expiring in the same second); calls mostly wait on I/O.
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=settings.api_threads))
    async with app.build(kube, settings) as parts:
        metrics.serve(settings.metrics_port)
        trimming = asyncio.ensure_future(memory.trim_periodically(settings.memory_trim_seconds))
        try:
            return await _lead_and_run(parts, kube)
        finally:
            trimming.cancel()


async def _lead_and_run(parts: app.App, kube: Kube) -> int:
    from agentaccounts import handlers  # imports kopf; only `run` and `demo` need it

    settings = parts.settings
    if not settings.leader_elect:
        await handlers.run_operator(parts)
        return 0
    store, identity = LeaseStore(kube), settings.pod_name or f"{socket.gethostname()}-{os.getpid()}"
    where = (settings.leader_election_namespace, settings.leader_election_name)
    async with _standby_health(settings.liveness):
        await leader.acquire(store, identity, *where)
    parts.leadership.leading = True  # the audit-webhook endpoint accepts and writes from now on
    work = asyncio.ensure_future(handlers.run_operator(parts))
    keep = asyncio.ensure_future(leader.hold(store, identity, *where))
    try:
        done, _ = await asyncio.wait({work, keep}, return_when=asyncio.FIRST_COMPLETED)
        if keep in done and isinstance(keep.exception(), leader.LeadershipLost):
            log.error("Leadership lost (%s); exiting so a standby takes over", keep.exception())
            return 1
        return 0
    finally:
        for task in (work, keep):
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(work, keep, return_exceptions=True)
        await leader.release(store, identity, *where)


@contextlib.asynccontextmanager
async def _standby_health(url: str | None) -> AsyncIterator[None]:
    """Answer the liveness probe while waiting for the Lease: a standby is healthy, not dead. kopf
    serves the same URL once we lead, so this server closes before kopf starts."""
    if not url:
        yield
        return
    from aiohttp import web  # kopf's own HTTP stack; nothing new to install

    parts = urllib.parse.urlsplit(url)

    async def healthy(_: web.Request) -> web.Response:
        return web.json_response({"leader": False})

    app = web.Application()
    app.router.add_get(parts.path or "/", healthy)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, parts.hostname, parts.port).start()
    try:
        yield
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter()
        if args.log_format == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    handler.addFilter(QuietKopf(args.verbose))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, handlers=[handler])
    for noisy in ("kubernetes", "urllib3", "httpx", "aiohttp"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.command in commands.COMMANDS:
        try:
            return commands.run(args)
        except KeyboardInterrupt:
            return 130
    try:
        kube = Kube.connect(args.kubeconfig)
    except KubeConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "run":
            return asyncio.run(_run_until_signal(_settings(args), kube))
        from agentaccounts import demo  # the only other command

        return asyncio.run(demo.main(kube))
    except KeyboardInterrupt:
        return 130
    finally:
        kube.close()


async def _run_until_signal(settings: Settings, kube: Kube) -> int:
    task = asyncio.ensure_future(_run(settings, kube))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    # For the benchmarks (and anyone chasing memory): SIGUSR1 starts tracing allocations from now on,
    # SIGUSR2 logs where the memory allocated since then is held. Off until asked: tracing costs CPU.
    loop.add_signal_handler(signal.SIGUSR1, tracemalloc.start, 8)
    loop.add_signal_handler(signal.SIGUSR2, _log_memory)
    try:
        return await task
    except asyncio.CancelledError:
        return 0


def _log_memory() -> None:
    """The 25 source lines holding the most memory still allocated, and the total (tracemalloc)."""
    if not tracemalloc.is_tracing():
        log.warning("Memory held: not tracing (send SIGUSR1 first)")
        return
    stats = tracemalloc.take_snapshot().statistics("lineno")
    total = sum(stat.size for stat in stats)
    lines = [f"{stat.size / 1024:9.0f} KiB {stat.count:8d} {stat.traceback}" for stat in stats[:25]]
    for stat in tracemalloc.take_snapshot().statistics("traceback")[:8]:  # and whose they are
        lines.append(f"{stat.size / 1024:9.0f} KiB {stat.count:8d} via:")
        lines += [f"      {frame}" for frame in stat.traceback.format()[-16:]]
    log.warning("Memory held (tracemalloc): %.1f MiB\n%s", total / 2**20, "\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
