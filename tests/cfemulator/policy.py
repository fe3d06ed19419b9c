"""Token policies: parsing resource keys, deciding a request, and "no more rights than the parent".

Why it exists: least privilege is the whole point of the operator, so the emulator must evaluate
policies the way Cloudflare does, or scoping bugs in the provider would pass the tests:

* resource keys exactly as documented — one account ``com.cloudflare.api.account.<A>``, one zone
  ``com.cloudflare.api.account.zone.<Z>``, all zones of an account (nested)
  ``{com.cloudflare.api.account.<A>: {com.cloudflare.api.account.zone.*: "*"}}``, one R2 bucket
  ``com.cloudflare.edge.r2.bucket.<A>_<JURISDICTION>_<BUCKET>``;
* a permission group applies only to resources of its own scope (a mismatched pair is accepted but
  grants nothing — decision: inert rather than rejected, the live behaviour is UNCONFIRMED);
* explicit deny beats allow, else allow, else implicit deny;
* decisions are made per permission ("atom", see ``catalogue``): a request needs an atom on a
  resource, so Write groups satisfy Read needs and R2 admin groups on an account cover its buckets.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from . import catalogue
from .catalogue import ACCOUNT, BUCKET, ZONE

ZONE_PREFIX = ZONE + "."
ACCOUNT_PREFIX = ACCOUNT + "."
BUCKET_PREFIX = BUCKET + "."
ALL_ZONES_KEY = ZONE_PREFIX + "*"
JURISDICTIONS = frozenset({"default", "eu", "fedramp"})
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")

ZoneAccount = Callable[[str], "str | None"]  # zone id -> owning account id (None if unknown)


@dataclass(frozen=True)
class Resource:
    kind: str  # "account" | "all_zones" | "zone" | "bucket"
    account: str = ""  # for a zone: the account named in the nested form, if any (a hint only)
    zone: str = ""
    jurisdiction: str = ""
    bucket: str = ""

    @property
    def scope(self) -> str:
        return {"account": ACCOUNT, "bucket": BUCKET}.get(self.kind, ZONE)

    @property
    def key(self) -> str:
        if self.kind == "account":
            return ACCOUNT_PREFIX + self.account
        if self.kind == "all_zones":
            return f"{ACCOUNT_PREFIX}{self.account} > {ALL_ZONES_KEY}"
        if self.kind == "zone":
            return ZONE_PREFIX + self.zone
        return f"{BUCKET_PREFIX}{self.account}_{self.jurisdiction}_{self.bucket}"


@dataclass(frozen=True)
class Policy:
    id: str
    effect: str  # "allow" | "deny"
    groups: tuple[str, ...]
    resources: tuple[Resource, ...]
    raw_resources: dict[str, Any] = field(compare=False, hash=False)

    def api_view(self) -> dict[str, Any]:
        groups = [{"id": g, "name": catalogue.by_id(g).name} for g in self.groups]  # type: ignore[union-attr]
        return {
            "id": self.id,
            "effect": self.effect,
            "resources": self.raw_resources,
            "permission_groups": groups,
        }


def _star(value: Any, key: str) -> None:
    if value != "*":
        raise ValueError(f'resource {key} must map to "*"')


def _hex32(value: str, what: str) -> str:
    if not _HEX32.match(value):
        raise ValueError(f"invalid {what} identifier {value!r} in resource key")
    return value


def parse_resources(raw: Any) -> tuple[Resource, ...]:
    if not isinstance(raw, dict) or not raw:
        raise ValueError("policy resources must be a non-empty object")
    out: list[Resource] = []
    for key, value in raw.items():
        if key.startswith(ZONE_PREFIX):
            _star(value, key)
            if key == ALL_ZONES_KEY:  # all zones of every account: user tokens only
                raise ValueError("account-owned tokens must use the nested form for all zones")
            out.append(Resource("zone", zone=_hex32(key[len(ZONE_PREFIX) :], "zone")))
        elif key.startswith(ACCOUNT_PREFIX):
            acct = _hex32(key[len(ACCOUNT_PREFIX) :], "account")
            if value == "*":
                out.append(Resource("account", account=acct))
                continue
            if not isinstance(value, dict) or not value:
                raise ValueError(f'resource {key} must map to "*" or a nested object')
            for inner, inner_value in value.items():
                _star(inner_value, inner)
                if inner == ALL_ZONES_KEY:
                    out.append(Resource("all_zones", account=acct))
                elif inner.startswith(ZONE_PREFIX):
                    out.append(Resource("zone", account=acct, zone=_hex32(inner[len(ZONE_PREFIX) :], "zone")))
                else:
                    raise ValueError(f"unsupported nested resource {inner!r}")
        elif key.startswith(BUCKET_PREFIX):
            _star(value, key)
            parts = key[len(BUCKET_PREFIX) :].split("_", 2)
            if len(parts) != 3 or parts[1] not in JURISDICTIONS or not BUCKET_NAME.match(parts[2]):
                raise ValueError(f"invalid R2 bucket resource {key!r}")
            out.append(
                Resource(
                    "bucket", account=_hex32(parts[0], "account"), jurisdiction=parts[1], bucket=parts[2]
                )
            )
        else:
            raise ValueError(f"unknown resource {key!r}")
    return tuple(out)


def parse_policies(raw: Any, new_id: Callable[[], str]) -> list[Policy]:
    if not isinstance(raw, list) or not raw:
        raise ValueError("policies must be a non-empty list")
    policies = []
    for item in raw:
        if not isinstance(item, dict):
            raise ValueError("each policy must be an object")
        if item.get("effect") not in ("allow", "deny"):
            raise ValueError('policy effect must be "allow" or "deny"')
        groups = item.get("permission_groups")
        if not isinstance(groups, list) or not groups:
            raise ValueError("policy permission_groups must be a non-empty list")
        ids = []
        for group in groups:
            gid = group.get("id") if isinstance(group, dict) else None
            if not isinstance(gid, str) or catalogue.by_id(gid) is None:
                raise ValueError(f"permission group {gid!r} does not exist")
            ids.append(gid)
        resources = parse_resources(item.get("resources"))
        policies.append(
            Policy(new_id(), item["effect"], tuple(dict.fromkeys(ids)), resources, item["resources"])
        )
    return policies


def covers(outer: Resource, inner: Resource, zone_account: ZoneAccount) -> bool:
    """Whether every object ``inner`` names is also named by ``outer``."""
    if outer.kind == "all_zones" and inner.kind == "zone":
        return (zone_account(inner.zone) or inner.account) == outer.account
    if outer.kind == "account" and inner.kind == "bucket":  # an account holds its buckets
        return outer.account == inner.account
    if outer.kind != inner.kind:
        return False
    if outer.kind == "zone":
        return outer.zone == inner.zone  # the nested account hint does not narrow a zone
    return (outer.account, outer.jurisdiction, outer.bucket) == (
        inner.account,
        inner.jurisdiction,
        inner.bucket,
    )


def _pairs(policy: Policy, atom: str) -> Iterator[tuple[str, Resource]]:
    """(group, resource) pairs of ``policy`` that carry ``atom`` — mismatched scopes carry nothing."""
    for gid in policy.groups:
        group = catalogue.by_id(gid)
        if group is not None and atom in group.atoms:
            yield from ((gid, r) for r in policy.resources if r.scope == group.scope)


def _matches(policy: Policy, atom: str, target: Resource, zone_account: ZoneAccount) -> bool:
    return any(covers(r, target, zone_account) for _, r in _pairs(policy, atom))


def decide(policies: Iterable[Policy], atom: str, target: Resource, zone_account: ZoneAccount) -> bool:
    """Explicit deny, then allow, then implicit deny — for one permission on one concrete resource."""
    hits = [p.effect for p in policies if _matches(p, atom, target, zone_account)]
    return "deny" not in hits and "allow" in hits


def allowed(
    policies: list[Policy], atoms: Iterable[str], target: Resource, zone_account: ZoneAccount
) -> bool:
    """Every one of ``atoms`` is allowed on ``target``."""
    return all(decide(policies, a, target, zone_account) for a in atoms)


def excess(parent: list[Policy], child: list[Policy], zone_account: ZoneAccount) -> list[str]:
    """Every "group on resource" the child would allow beyond the parent's rights; empty means OK.

    Decided per permission and symbolically, so it holds for zones and buckets created later: for each
    permission the child allows on a resource, the parent must allow it on a covering resource, and
    every parent deny of it overlapping that resource must be repeated by a child deny.
    """
    problems: dict[str, None] = {}
    for policy in (p for p in child if p.effect == "allow"):
        for gid in policy.groups:
            group = catalogue.by_id(gid)
            for res in (r for r in policy.resources if group and r.scope == group.scope):
                if not all(_parent_grants(parent, child, a, res, zone_account) for a in group.atoms):  # type: ignore[union-attr]
                    problems[f"{group.name} on {res.key}"] = None  # type: ignore[union-attr]
    return list(problems)


def _parent_grants(
    parent: list[Policy], child: list[Policy], atom: str, res: Resource, za: ZoneAccount
) -> bool:
    if not any(p.effect == "allow" and _matches(p, atom, res, za) for p in parent):
        return False
    for deny in (p for p in parent if p.effect == "deny"):
        for _, denied in _pairs(deny, atom):
            overlap = res if covers(denied, res, za) else denied if covers(res, denied, za) else None
            if overlap and not any(c.effect == "deny" and _matches(c, atom, overlap, za) for c in child):
                return False
    return True


def parse_condition(raw: Any) -> dict[str, Any] | None:
    """``condition.request_ip`` (or the older ``request.ip`` spelling — both accepted, UNCONFIRMED)."""
    if raw is None or raw == {}:
        return None
    if not isinstance(raw, dict) or set(raw) - {"request_ip", "request.ip"}:
        raise ValueError("condition supports only request_ip")
    rule = raw.get("request_ip", raw.get("request.ip"))
    if not isinstance(rule, dict) or set(rule) - {"in", "not_in"}:
        raise ValueError("condition.request_ip must be an object with in / not_in")
    for cidrs in rule.values():
        if not isinstance(cidrs, list):
            raise ValueError("condition.request_ip lists must be lists of CIDRs")
        for cidr in cidrs:
            ipaddress.ip_network(cidr, strict=False)  # ValueError on a bad CIDR
    return raw


def ip_allowed(condition: dict[str, Any] | None, ip: str) -> bool:
    if not condition:
        return True
    rule = condition.get("request_ip", condition.get("request.ip")) or {}
    addr = ipaddress.ip_address(ip)

    def inside(cidrs: list[str]) -> bool:
        return any(addr in ipaddress.ip_network(c, strict=False) for c in cidrs)

    if "in" in rule and not inside(rule["in"]):
        return False
    return not inside(rule.get("not_in", []))
