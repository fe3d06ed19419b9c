"""Protected resource endpoints — one per permission family — so a simulated agent can prove scoping.

Why it exists: a token that *looks* right is not enough; tests must show the agent can do exactly what
it was granted and nothing else. Each endpoint demands one permission family on one resource, and a
denied call answers 403/10000 "Authentication error" as Cloudflare does. Write groups include read
(Cloudflare's "Edit" implies "Read"). Bodies are minimal but shaped like the real ones.

| endpoint                                   | needs (read / write)                         | resource |
|--------------------------------------------|----------------------------------------------|----------|
| GET  /accounts/{a}                         | Account Settings Read/Write                  | account  |
| GET  /accounts/{a}/workers/scripts         | Workers Scripts Read/Write                   | account  |
| GET/POST /accounts/{a}/storage/kv/namespaces | Workers KV Storage Read / Write            | account  |
| GET/POST /accounts/{a}/r2/buckets          | Workers R2 Storage Read / Write              | account  |
| GET/POST /accounts/{a}/d1/database         | D1 Read / Write                              | account  |
| GET  /zones/{z}                            | Zone Read/Write                              | zone     |
| GET/POST /zones/{z}/dns_records            | DNS Read / Write                             | zone     |
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from . import envelope as E
from .auth import account_caller, authenticate, require
from .catalogue import atom
from .context import API_PREFIX, ctx_of, read_json
from .model import Account, ts
from .policy import BUCKET_NAME, JURISDICTIONS, Resource
from .store import Store


def _family(name: str) -> tuple[str, str]:
    return atom(name, "read"), atom(name, "write")


FAMILIES = {
    "account": _family("Account Settings"),
    "workers_scripts": _family("Workers Scripts"),
    "kv": _family("Workers KV Storage"),
    "r2": ("r2.bucket.read", "r2.bucket.write"),  # R2 admin groups; bucket-item groups cannot list
    "d1": _family("D1"),
    "zone": _family("Zone"),
    "dns": _family("DNS"),
}


def _account(request: web.Request, family: str, write: bool) -> tuple[Store, Account]:
    store, _, account_id = account_caller(request, FAMILIES[family][write])
    return store, store.accounts[account_id]


def _listing(items: list[dict[str, Any]]) -> web.Response:
    info = {"page": 1, "per_page": max(20, len(items)), "count": len(items), "total_count": len(items)}
    return E.ok(items, result_info=info)


async def get_account(request: web.Request) -> web.Response:
    _, account = _account(request, "account", write=False)
    return E.ok(account.api_view())


def _collection(family: str, make: Any = None) -> tuple[Any, Any]:
    async def list_items(request: web.Request) -> web.Response:
        _, account = _account(request, family, write=False)
        return _listing(list(account.collections.get(family, [])))

    async def create_item(request: web.Request) -> web.Response:
        store, account = _account(request, family, write=True)
        body = await read_json(request)
        if not isinstance(body, dict):
            raise E.invalid("request body must be a JSON object")
        with store.lock:
            item = make(body, store)
            account.collections.setdefault(family, []).append(item)
        return E.ok(item)

    return list_items, create_item


def _kv(body: dict[str, Any], store: Store) -> dict[str, Any]:
    if not isinstance(body.get("title"), str):
        raise E.invalid("title is required")
    return {"id": store.new_id(), "title": body["title"], "supports_url_encoding": True}


def _d1(body: dict[str, Any], store: Store) -> dict[str, Any]:
    if not isinstance(body.get("name"), str):
        raise E.invalid("name is required")
    created = ts(store.now())
    return {"uuid": store.new_id(), "name": body["name"], "created_at": created, "version": "production"}


async def list_buckets(request: web.Request) -> web.Response:
    _, account = _account(request, "r2", write=False)
    return E.ok({"buckets": list(account.buckets.values())})


async def create_bucket(request: web.Request) -> web.Response:
    store, account = _account(request, "r2", write=True)
    body = await read_json(request)
    name = body.get("name") if isinstance(body, dict) else None
    jurisdiction = request.headers.get("cf-r2-jurisdiction", "default")
    if not isinstance(name, str) or not BUCKET_NAME.match(name) or jurisdiction not in JURISDICTIONS:
        raise E.invalid("invalid bucket name or jurisdiction")
    if (jurisdiction, name) in account.buckets:  # 10004 is a pick (UNCONFIRMED)
        raise E.ApiError(409, 10004, "The bucket you tried to create already exists, and you own it.")
    return E.ok(store.add_bucket(account.id, name, jurisdiction))


def _zone(request: web.Request, family: str, write: bool) -> tuple[Store, dict[str, Any]]:
    store = ctx_of(request).store
    token = authenticate(request)
    zone = store.zones.get(request.match_info["zone_id"])
    if zone is None:  # same answer as a zone of another account: existence is not leaked
        raise E.ApiError(403, E.UNAUTHORIZED, "Unauthorized to access requested resource")
    target = Resource("zone", account=zone["account_id"], zone=zone["id"])
    require(store, token, [FAMILIES[family][write]], target)
    return store, zone


async def get_zone(request: web.Request) -> web.Response:
    store, zone = _zone(request, "zone", write=False)
    owner = store.accounts[zone["account_id"]]
    return E.ok(
        {
            "id": zone["id"],
            "name": zone["name"],
            "status": "active",
            "account": {"id": owner.id, "name": owner.name},
        }
    )


async def list_dns(request: web.Request) -> web.Response:
    _, zone = _zone(request, "dns", write=False)
    return _listing(list(zone["dns_records"]))


async def create_dns(request: web.Request) -> web.Response:
    store, zone = _zone(request, "dns", write=True)
    body = await read_json(request)
    if not isinstance(body, dict) or not all(
        isinstance(body.get(k), str) for k in ("type", "name", "content")
    ):
        raise E.invalid("type, name and content are required")
    record = {k: body[k] for k in ("type", "name", "content")} | {
        "id": store.new_id(),
        "ttl": body.get("ttl", 1),
    }
    with store.lock:
        zone["dns_records"].append(record)
    return E.ok(record)


def add_routes(router: web.UrlDispatcher) -> None:
    acct = API_PREFIX + "/accounts/{account_id}"
    router.add_get(acct, get_account)
    router.add_get(acct + "/workers/scripts", _collection("workers_scripts")[0])
    for path, family, make in (("/storage/kv/namespaces", "kv", _kv), ("/d1/database", "d1", _d1)):
        list_items, create_item = _collection(family, make)
        router.add_get(acct + path, list_items)
        router.add_post(acct + path, create_item)
    router.add_get(acct + "/r2/buckets", list_buckets)
    router.add_post(acct + "/r2/buckets", create_bucket)
    zone = API_PREFIX + "/zones/{zone_id}"
    router.add_get(zone, get_zone)
    router.add_get(zone + "/dns_records", list_dns)
    router.add_post(zone + "/dns_records", create_dns)
