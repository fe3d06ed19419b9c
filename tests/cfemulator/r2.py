"""R2: temporary bucket-bound credentials, and the S3-key check tests use instead of a real S3 call.

Why it exists: the provider hands agents R2 access either as an API token (Access Key ID = token id,
Secret = sha256 hex of the token value) or as temporary credentials derived from a parent token. The
emulator cannot serve S3, so ``check_r2_keys`` answers "would R2 accept this key for this bucket?".

Decisions (UNCONFIRMED where Cloudflare is silent):
* calling the endpoint needs ``Workers R2 Storage Write`` on the account;
* ``parentAccessKeyId`` must be an active token of the same account (else 400/1002), and the parent
  must itself hold the requested permission on the bucket (else 403/10000) — temporary credentials
  never exceed their parent, like child tokens;
* the bucket must exist (404/10006, R2's real "NoSuchBucket" code); ``cf-r2-jurisdiction`` header picks
  the jurisdiction as on the real bucket API; ``ttlSeconds`` defaults to 900 and is capped at 604800;
* revoking (deleting, disabling, expiring) the parent kills its temporary credentials.
"""

from __future__ import annotations

import base64
import secrets
from datetime import timedelta
from hmac import compare_digest

from aiohttp import web

from . import envelope as E
from .auth import account_caller
from .context import API_PREFIX, read_json
from .model import TempCredential, Token
from .policy import Resource, allowed
from .store import Store

TTL_MAX = 604_800


# What each temporary-credential permission needs from the parent, on the bucket.
NEEDS = {
    "object-read-only": ("r2.object.read",),
    "object-read-write": ("r2.object.read", "r2.object.write"),
    "admin-read-only": ("r2.bucket.read", "r2.object.read"),
    "admin-read-write": ("r2.bucket.read", "r2.bucket.write", "r2.object.read", "r2.object.write"),
}


def grants_bucket(store: Store, token: Token, jurisdiction: str, bucket: str, permission: str) -> bool:
    """Whether ``token`` holds ``permission`` (a key of NEEDS) on ``bucket``."""
    target = Resource("bucket", account=token.account_id, jurisdiction=jurisdiction, bucket=bucket)
    return allowed(token.policies, NEEDS[permission], target, store.zone_account)


async def temp_credentials(request: web.Request) -> web.Response:
    store, _, account_id = account_caller(request, "r2.bucket.write")
    body = await read_json(request)
    if not isinstance(body, dict):
        raise E.invalid("request body must be a JSON object")
    bucket, parent_id, permission = body.get("bucket"), body.get("parentAccessKeyId"), body.get("permission")
    ttl = body.get("ttlSeconds", 900)
    if not isinstance(bucket, str) or not isinstance(parent_id, str) or permission not in NEEDS:
        raise E.invalid("bucket, parentAccessKeyId and a valid permission are required")
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= TTL_MAX:
        raise E.invalid(f"ttlSeconds must be between 1 and {TTL_MAX}")
    scoped = {k: body.get(k) or [] for k in ("prefixes", "objects")}
    if not all(isinstance(v, list) and all(isinstance(s, str) for s in v) for v in scoped.values()):
        raise E.invalid("prefixes and objects must be lists of strings")
    jurisdiction = request.headers.get("cf-r2-jurisdiction", "default")
    with store.lock:
        now = store.now()
        if (jurisdiction, bucket) not in store.accounts[account_id].buckets:
            raise E.ApiError(404, E.R2_NO_SUCH_BUCKET, "The specified bucket does not exist.")
        parent = store.tokens.get(parent_id)
        if parent is None or parent.account_id != account_id or parent.unusable_reason(now):
            raise E.invalid("parentAccessKeyId does not name an active API token of this account")
        if not grants_bucket(store, parent, jurisdiction, bucket, permission):
            raise E.ApiError(403, E.AUTH_ERROR, "Authentication error")
        cred = TempCredential(
            access_key_id=store.new_id(),
            secret_access_key=secrets.token_hex(32),
            session_token=base64.b64encode(secrets.token_bytes(96)).decode(),
            parent_token_id=parent.id,
            account_id=account_id,
            bucket=bucket,
            jurisdiction=jurisdiction,
            permission=permission,
            prefixes=scoped["prefixes"],
            objects=scoped["objects"],
            expires_at=now + timedelta(seconds=ttl),
        )
        store.temp_creds[cred.access_key_id] = cred
    result = {
        "accessKeyId": cred.access_key_id,
        "secretAccessKey": cred.secret_access_key,
        "sessionToken": cred.session_token,
    }
    return E.ok(result)


def check_r2_keys(
    store: Store,
    access_key_id: str,
    secret: str,
    *,
    session_token: str | None = None,
    bucket: str | None = None,
    jurisdiction: str = "default",
    write: bool = False,
    key: str | None = None,
) -> bool:
    """Would R2 accept this key pair (and, if given, for ``bucket`` / object ``key`` / writing)?"""
    with store.lock:
        store.purge()
        now = store.now()
        if session_token is not None:
            cred = store.temp_creds.get(access_key_id)
            if cred is None or now >= cred.expires_at:
                return False
            if not (
                compare_digest(cred.secret_access_key, secret)
                and compare_digest(cred.session_token, session_token)
            ):
                return False
            parent = store.tokens.get(cred.parent_token_id)
            if parent is None or parent.unusable_reason(now):
                return False
            if bucket is not None and (bucket, jurisdiction) != (cred.bucket, cred.jurisdiction):
                return False
            in_scope = key is None or key in cred.objects or any(key.startswith(p) for p in cred.prefixes)
            if (cred.prefixes or cred.objects) and not in_scope:
                return False
            return not write or cred.permission.endswith("read-write")
        token = store.tokens.get(access_key_id)
        if token is None or not compare_digest(token.value_hash, secret) or token.unusable_reason(now):
            return False
        wanted = "object-read-write" if write else "object-read-only"
        return bucket is None or grants_bucket(store, token, jurisdiction, bucket, wanted)


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_post(API_PREFIX + "/accounts/{account_id}/r2/temp-access-credentials", temp_credentials)
