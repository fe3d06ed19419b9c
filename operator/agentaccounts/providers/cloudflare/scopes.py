"""Cloudflare scope grammar: AgentAccount scopes -> API token policies, and the R2 credentials they imply.

Pure functions, no I/O: the provider fetches the account's permission groups and passes them in.

A scope is `{permissions: [...], resources: [...]}`. `permissions` are permission-group names exactly
as Cloudflare lists them (`GET /accounts/{id}/tokens/permission_groups`), e.g. "Workers Scripts Read";
the API calls the dashboard's "Edit" "Write". `resources` use this grammar:

| resource                      | resource key in the token policy (A = accountId)                 |
|-------------------------------|------------------------------------------------------------------|
| `account`                     | `com.cloudflare.api.account.A: "*"`                              |
| `zones` (all zones of A)      | `com.cloudflare.api.account.A: {com.cloudflare.api.account.zone.*: "*"}` |
| `zone/<zoneId>` (32 hex)      | `com.cloudflare.api.account.zone.<zoneId>: "*"`                  |
| `r2-bucket/<name>`            | `com.cloudflare.edge.r2.bucket.A_default_<name>: "*"`            |
| `r2-bucket/<jurisdiction>/<name>` | `com.cloudflare.edge.r2.bucket.A_<jurisdiction>_<name>: "*"` |

Without `resources` a scope covers the whole account: account-level groups get `account`, zone-level
groups get `zones`; bucket-level groups have no account-wide form and must name `r2-bucket/...`.
A permission group applies only to resources of its own scope (account, zone or R2 bucket), so a
scope that pairs e.g. "Zone Read" with `account` fails with InvalidSpec rather than minting a token
that cannot do what was asked. Some names exist in more than one scope (e.g. "Access: Apps and
Policies Read" at account and zone level, with different IDs): the group is chosen by the scope of
the resource it is paired with, and account-wide defaults prefer the account-level group.
Each scope becomes one `allow` policy per kind of resource it names. Jurisdictions are those R2
knows (`default`, `eu`, `fedramp`); extend `JURISDICTIONS` when Cloudflare adds one.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agentaccounts.errors import InvalidSpec, UnknownPermission
from agentaccounts.models import Scope

ACCOUNT = "com.cloudflare.api.account"
ZONE = "com.cloudflare.api.account.zone"
BUCKET = "com.cloudflare.edge.r2.bucket"
_KIND = {ACCOUNT: "account", ZONE: "zone", BUCKET: "R2 bucket"}
JURISDICTIONS = frozenset({"default", "eu", "fedramp"})

_ZONE_ID = re.compile(r"^[0-9a-f]{32}$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
GRAMMAR = "account, zones, zone/<zoneId>, r2-bucket/<name> or r2-bucket/<jurisdiction>/<name>"


@dataclass(frozen=True)
class PermissionGroup:
    id: str
    name: str
    scopes: frozenset[str]

    @classmethod
    def from_api(cls, item: Mapping[str, Any]) -> PermissionGroup:
        return cls(id=str(item["id"]), name=str(item["name"]), scopes=frozenset(item.get("scopes") or ()))

    @property
    def is_r2(self) -> bool:
        return BUCKET in self.scopes or "R2" in self.name.split()


# Permission groups by name; a name maps to one group per scope it exists in.
Catalog = Mapping[str, Sequence[PermissionGroup]]


def catalog_from_api(items: Iterable[Mapping[str, Any]]) -> dict[str, list[PermissionGroup]]:
    catalog: dict[str, list[PermissionGroup]] = {}
    for item in items:
        if item.get("id") and item.get("name"):
            group = PermissionGroup.from_api(item)
            catalog.setdefault(group.name, []).append(group)
    return catalog


@dataclass(frozen=True)
class Resource:
    scope: str  # the permission-group scope this resource belongs to
    key: str
    value: str | dict[str, str]
    jurisdiction: str | None = None  # R2 buckets only


def parse_resource(text: str, account_id: str) -> Resource:
    """One resource string -> its Cloudflare key; InvalidSpec (naming the grammar) if it does not parse."""
    parts = text.split("/")
    if parts == ["account"]:
        return Resource(ACCOUNT, f"{ACCOUNT}.{account_id}", "*")
    if parts == ["zones"]:
        return Resource(ZONE, f"{ACCOUNT}.{account_id}", {f"{ZONE}.*": "*"})
    if len(parts) == 2 and parts[0] == "zone" and _ZONE_ID.match(parts[1]):
        return Resource(ZONE, f"{ZONE}.{parts[1]}", "*")
    if parts[0] == "r2-bucket" and len(parts) in (2, 3):
        jurisdiction, bucket = ("default", parts[1]) if len(parts) == 2 else (parts[1], parts[2])
        if jurisdiction in JURISDICTIONS and _BUCKET.match(bucket):
            return Resource(BUCKET, f"{BUCKET}.{account_id}_{jurisdiction}_{bucket}", "*", jurisdiction)
    raise InvalidSpec(
        f"invalid Cloudflare resource {text!r}: use {GRAMMAR} (zone ids are 32 hex characters, "
        f"jurisdictions {', '.join(sorted(JURISDICTIONS))})"
    )


def resolve(names: Iterable[str], catalog: Catalog) -> list[str]:
    """The distinct names, in order; UnknownPermission naming every unknown one (with near misses)."""
    names = list(dict.fromkeys(names))
    unknown = [name for name in names if not catalog.get(name)]
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, list(catalog), n=2)
            hints.append(f"{name!r}" + (f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""))
        raise UnknownPermission(f"unknown Cloudflare permission group(s): {', '.join(hints)}")
    return names


def build_policies(scopes: Iterable[Scope], catalog: Catalog, account_id: str) -> list[dict[str, Any]]:
    """The `policies` of a token granting exactly `scopes` on `account_id`."""
    policies = []
    for scope in scopes:
        for resources, groups in _pairs(scope, catalog, account_id):
            ids = dict.fromkeys(group.id for group in groups)
            policies.append(
                {
                    "effect": "allow",
                    "permission_groups": [{"id": group_id} for group_id in ids],
                    "resources": {resource.key: resource.value for resource in resources},
                }
            )
    return policies


def _pairs(
    scope: Scope, catalog: Catalog, account_id: str
) -> list[tuple[list[Resource], list[PermissionGroup]]]:
    """(resources, groups) per policy: by kind of resource named, or by each group's account-wide form."""
    names = resolve(scope.permissions, catalog)
    if not scope.resources:
        by_form: dict[str, list[PermissionGroup]] = {}
        for name in names:
            for form, kind in (("account", ACCOUNT), ("zones", ZONE)):
                group = _in_scope(catalog[name], kind)
                if group is not None:
                    by_form.setdefault(form, []).append(group)
                    break
            else:
                raise InvalidSpec(
                    f"permission group {name!r} applies to {_kinds(catalog[name])}, which have no "
                    "account-wide form: name them in resources (e.g. r2-bucket/<name>)"
                )
        return [([parse_resource(form, account_id)], groups) for form, groups in by_form.items()]
    by_kind: dict[str, tuple[list[Resource], list[PermissionGroup]]] = {}
    for text in dict.fromkeys(scope.resources):
        resource = parse_resource(text, account_id)
        groups = [_in_scope(catalog[name], resource.scope) for name in names]
        for name, group in zip(names, groups, strict=True):
            if group is None:
                raise InvalidSpec(
                    f"permission group {name!r} applies to {_kinds(catalog[name])}, not to "
                    f"{_KIND[resource.scope]} resource {text!r}: put them in separate scopes"
                )
        resources, _ = by_kind.setdefault(resource.scope, ([], [g for g in groups if g is not None]))
        resources.append(resource)
    return list(by_kind.values())


def _in_scope(groups: Sequence[PermissionGroup], scope: str) -> PermissionGroup | None:
    return next((group for group in groups if scope in group.scopes), None)


def _kinds(groups: Sequence[PermissionGroup]) -> str:
    kinds = sorted({_KIND.get(scope, scope) for group in groups for scope in group.scopes})
    return " and ".join(f"{kind} resources" for kind in kinds) or "no resources"


def r2_jurisdictions(scopes: Iterable[Scope], catalog: Catalog, account_id: str) -> set[str] | None:
    """None if no scope touches R2; else the jurisdictions of named buckets ({"default"} if none named)."""
    found: set[str] = set()
    touches = False
    for scope in scopes:
        touches |= any(group.is_r2 for name in scope.permissions for group in catalog.get(name, ()))
        for text in scope.resources:
            resource = parse_resource(text, account_id)
            if resource.jurisdiction is not None:
                touches = True
                found.add(resource.jurisdiction)
    return (found or {"default"}) if touches else None


def r2_jurisdictions_granted(policies: Any, catalog: Catalog, account_id: str) -> set[str] | None:
    """Like r2_jurisdictions, for the policies of an existing token (as Cloudflare returns them)."""
    r2_ids = {group.id for groups in catalog.values() for group in groups if group.is_r2}
    prefix = f"{BUCKET}.{account_id}_"
    found: set[str] = set()
    touches = False
    for policy in policies if isinstance(policies, list) else []:
        touches |= any(group.get("id") in r2_ids for group in policy.get("permission_groups") or [])
        for key in policy.get("resources") or {}:
            if key.startswith(prefix):
                touches = True
                found.add(key[len(prefix) :].split("_", 1)[0])
    return (found or {"default"}) if touches else None


def r2_endpoint(account_id: str, jurisdiction: str = "default") -> str:
    infix = "" if jurisdiction == "default" else f".{jurisdiction}"
    return f"https://{account_id}{infix}.r2.cloudflarestorage.com"


def r2_credentials(
    account_id: str, token_id: str, token_value: str, jurisdictions: set[str]
) -> dict[str, str]:
    """S3 keys derived from an API token: id = access key, SHA-256(value) hex = secret key.

    The endpoint is the buckets' jurisdiction when they share one; with several, the default endpoint
    plus R2_ENDPOINT_<JURISDICTION> for each other one.
    """
    main = next(iter(jurisdictions)) if len(jurisdictions) == 1 else "default"
    data = {
        "AWS_ACCESS_KEY_ID": token_id,
        "AWS_SECRET_ACCESS_KEY": hashlib.sha256(token_value.encode()).hexdigest(),
        "AWS_ENDPOINT_URL_S3": r2_endpoint(account_id, main),
        "R2_ENDPOINT": r2_endpoint(account_id, main),
    }
    for jurisdiction in sorted(jurisdictions - {main}):
        data[f"R2_ENDPOINT_{jurisdiction.upper()}"] = r2_endpoint(account_id, jurisdiction)
    return data
