"""What the emulator writes into an account's audit log (v2), and when: the writes tokens make.

Why it exists: the operator reads back what an agent token did from Cloudflare's account audit log
(`GET /accounts/{a}/logs/audit`, served by auditlog.py). That is only testable if the emulator logs
the same things Cloudflare does, in the schema's entry shape (`aaa_audit-logs-v2`):

- **Writes only.** Cloudflare's v2 log records create, update and delete; `view` is in the enum but GETs
  are not captured (docs and GA changelog). So only the write routes in `WRITES` are logged.
- **Successes only, by default.** At GA 4xx answers were not logged, so a token's refused attempts
  probably do not show (UNCONFIRMED today): `Context.audit_failures = True` logs 4xx writes as
  `action.result = "failure"` too, for tests of a Cloudflare that does. 429s and injected 5xx never are.
- **Who.** Every emulated token is account-owned: `actor.type = "account"` ("performed using an
  account API token"), `context = "api_token"`, `token_id`/`token_name` of the presenting token, `id` the
  account's id (pick: the docs say it "can be either the Account ID or User ID"). No `email`.
- **No before/after values** (`resource.request`/`response` are not in v2 yet): never copied from the
  request or answer, which is also what keeps a created token's value out of the log.

`product`/`type` names are the emulator's picks (Cloudflare documents no list): `type` reads like an API
collection ("dns_records"), which is what the operator shows as the resource.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web

from .context import API_PREFIX, Context
from .model import Token, ts


@dataclass(frozen=True)
class Write:
    action: str  # create | update | delete
    product: str
    type: str
    description: str
    id_from: str  # "token_id" (path), or the result field naming the new object ("id", "uuid", "name")


_A = API_PREFIX + "/accounts/{account_id}"
_Z = API_PREFIX + "/zones/{zone_id}"
WRITES: dict[tuple[str, str], Write] = {
    ("POST", _A + "/tokens"): Write("create", "API Tokens", "api_tokens", "Create API token", "id"),
    ("PUT", _A + "/tokens/{token_id}"): Write(
        "update", "API Tokens", "api_tokens", "Update API token", "token_id"
    ),
    ("DELETE", _A + "/tokens/{token_id}"): Write(
        "delete", "API Tokens", "api_tokens", "Delete API token", "token_id"
    ),
    ("PUT", _A + "/tokens/{token_id}/value"): Write(
        "update", "API Tokens", "api_tokens", "Roll API token", "token_id"
    ),
    ("POST", _A + "/r2/temp-access-credentials"): Write(
        "create", "R2", "r2_temp_access_credentials", "Create temporary R2 credentials", "accessKeyId"
    ),
    ("POST", _A + "/storage/kv/namespaces"): Write(
        "create", "Workers KV", "kv_namespaces", "Create KV namespace", "id"
    ),
    ("POST", _A + "/d1/database"): Write("create", "D1", "d1_databases", "Create D1 database", "uuid"),
    ("POST", _A + "/r2/buckets"): Write("create", "R2", "r2_buckets", "Create R2 bucket", "name"),
    ("POST", _Z + "/dns_records"): Write("create", "DNS", "dns_records", "Create DNS record", "id"),
}


@dataclass(frozen=True)
class Logged:
    """One stored entry: the wire form plus what filtering needs and the wire form does not carry."""

    seq: int  # arrival order; the cursor's position
    when: datetime
    scope: str  # "accounts" | "zones" (the resource_scope filter)
    entry: dict[str, Any]


def template(request: web.Request) -> str | None:
    """The route template that serves this request (None: no route matched)."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else None


def record(ctx: Context, request: web.Request, actor: Token | None, status: int, answer: Any) -> None:
    """Log the write `request` made with `actor`, if Cloudflare would (see the module docstring)."""
    route = template(request)
    write = WRITES.get((request.method, route or ""))
    if write is None or actor is None:
        return
    failed = 400 <= status < 500 and status != 429
    if not (200 <= status < 300 or (failed and ctx.audit_failures)):
        return
    store = ctx.store
    with store.lock:
        zone = store.zones.get(request.match_info.get("zone_id", ""))
        account = store.accounts.get(zone["account_id"] if zone else request.match_info.get("account_id", ""))
        if account is None or account.id != actor.account_id:
            return  # refused before it reached the account: nothing of the account's was touched
        result = answer.get("result") if isinstance(answer, dict) else None
        if write.id_from == "token_id":
            resource_id = request.match_info["token_id"]
        else:
            resource_id = str(result.get(write.id_from, "")) if isinstance(result, dict) else ""
        now = store.now()
        entry: dict[str, Any] = {
            "id": uuid.uuid4().hex,  # the schema caps ids at 32 characters
            "account": {"id": account.id, "name": account.name},
            "action": {
                "type": write.action,
                "description": write.description,
                "result": "failure" if failed else "success",
                "time": ts(now),
            },
            "actor": {
                "id": account.id,
                "type": "account",
                "context": "api_token",
                "ip_address": request.remote or "",
                "token_id": actor.id,
                "token_name": actor.name,
            },
            "raw": {
                "cf_ray_id": secrets.token_hex(8),
                "method": request.method,
                "status_code": status,
                "uri": request.path[len(API_PREFIX) :],
                "user_agent": request.headers.get("User-Agent", ""),
            },
            "resource": {"id": resource_id, "product": write.product, "type": write.type, "scope": {}},
        }
        if zone is not None:
            entry["zone"] = {"id": zone["id"], "name": zone["name"]}
        scope = "zones" if zone is not None else "accounts"
        store.audit.append(Logged(len(store.audit), now, scope, entry))
