"""The permission-group catalogue served by ``GET /accounts/{id}/tokens/permission_groups``.

Why it exists: the provider resolves permission-group *names* to IDs at runtime, so the emulator must
serve a realistic list — real IDs, real scopes, a few look-alikes (the same name in two scopes) and
unrelated groups, so that a provider which picks "the first match" or ignores ``scope`` gets caught.
IDs and scopes were taken from Cloudflare's published permission list and the README; categories
follow the enum in the OpenAPI schema. Only a slice of the ~400 real groups is listed.
"""

from __future__ import annotations

from dataclasses import dataclass

ACCOUNT = "com.cloudflare.api.account"
ZONE = "com.cloudflare.api.account.zone"
BUCKET = "com.cloudflare.edge.r2.bucket"


# What a group *contains*. Cloudflare groups bundle fine-grained permissions, and both "may this
# request proceed" and "may this token mint that one" are decided on those, not on group names.
# Modelled coarsely: "<X> Read" holds "<scope>:<X>.read", "<X> Write" holds read and write ("Edit"
# implies "Read"); the R2 groups share atoms across scopes so an account-wide R2 admin group covers
# the bucket-item groups on that account's buckets. Any other group is a single atom of its own.
R2_ATOMS = {
    "Workers R2 Storage Read": frozenset({"r2.bucket.read", "r2.object.read"}),
    "Workers R2 Storage Write": frozenset(
        {"r2.bucket.read", "r2.bucket.write", "r2.object.read", "r2.object.write"}
    ),
    "Workers R2 Storage Bucket Item Read": frozenset({"r2.object.read"}),
    "Workers R2 Storage Bucket Item Write": frozenset({"r2.object.read", "r2.object.write"}),
}


@dataclass(frozen=True)
class PermissionGroup:
    id: str
    name: str
    scope: str  # every group listed here has exactly one scope, as nearly all real ones do
    category: str

    @property
    def atoms(self) -> frozenset[str]:
        if self.name in R2_ATOMS:
            return R2_ATOMS[self.name]
        for suffix, levels in ((" Read", ("read",)), (" Write", ("read", "write"))):
            if self.name.endswith(suffix):
                return frozenset(f"{self.scope}:{self.name[: -len(suffix)]}.{level}" for level in levels)
        return frozenset({f"{self.scope}:{self.name}"})

    def api_view(self) -> dict[str, object]:
        return {"id": self.id, "name": self.name, "scopes": [self.scope], "category": self.category}


_DEV = "developer_platform"
_ACC = "account_and_billing"
_DNS = "dns_and_zones"
_ZT = "cloudflare_one_and_zero_trust"

CATALOGUE: tuple[PermissionGroup, ...] = (
    PermissionGroup("eb56a6953c034b9d97dd838155666f06", "Account API Tokens Read", ACCOUNT, _ACC),
    PermissionGroup("5bc3f8b21c554832afc660159ab75fa4", "Account API Tokens Write", ACCOUNT, _ACC),
    PermissionGroup("c1fde68c7bcc44588cbb6ddbc16d6480", "Account Settings Read", ACCOUNT, _ACC),
    PermissionGroup("1af1fa2adc104452b74a9a3364202f20", "Account Settings Write", ACCOUNT, _ACC),
    PermissionGroup(
        "b89a480218d04ceb98b4fe57ca29dc1f", "Account Analytics Read", ACCOUNT, "analytics_and_logs"
    ),
    PermissionGroup("7cf72faf220841aabcfdfab81c43c4f6", "Billing Read", ACCOUNT, _ACC),
    PermissionGroup("6c80e02421494afc9ae14414ed442632", "Billing Write", ACCOUNT, _ACC),
    PermissionGroup("1a71c399035b4950a1bd1466bbe4f420", "Workers Scripts Read", ACCOUNT, _DEV),
    PermissionGroup("e086da7e2179491d91ee5f35b3ca210a", "Workers Scripts Write", ACCOUNT, _DEV),
    PermissionGroup("05880cd1bdc24d8bae0be2136972816b", "Workers Tail Read", ACCOUNT, _DEV),
    PermissionGroup("8b47d2786a534c08a1f94ee8f9f599ef", "Workers KV Storage Read", ACCOUNT, _DEV),
    PermissionGroup("f7f0eda5697f475c90846e879bab8666", "Workers KV Storage Write", ACCOUNT, _DEV),
    PermissionGroup("b4992e1108244f5d8bfbd5744320c2e1", "Workers R2 Storage Read", ACCOUNT, _DEV),
    PermissionGroup("bf7481a1826f439697cb59a20b22293e", "Workers R2 Storage Write", ACCOUNT, _DEV),
    PermissionGroup("6a018a9f2fc74eb6b293b0c548f38b39", "Workers R2 Storage Bucket Item Read", BUCKET, _DEV),
    PermissionGroup("2efd5506f9c8494dacb1fa10a3e7d5b6", "Workers R2 Storage Bucket Item Write", BUCKET, _DEV),
    PermissionGroup("192192df92ee43ac90f2aeeffce67e35", "D1 Read", ACCOUNT, _DEV),
    PermissionGroup("09b2857d1c31407795e75e3fed8617a1", "D1 Write", ACCOUNT, _DEV),
    PermissionGroup("e247aedd66bd41cc9193af0213416666", "Pages Read", ACCOUNT, _DEV),
    PermissionGroup("8d28297797f24fb8a0c332fe0866ec89", "Pages Write", ACCOUNT, _DEV),
    PermissionGroup("ad99c5ae555e45c4bef5bdf2678388ba", "Workers CI Read", ACCOUNT, _DEV),
    PermissionGroup("2e095cf436e2455fa62c9a9c2e18c478", "Workers CI Write", ACCOUNT, _DEV),
    PermissionGroup(
        "4dc8917b4b40457d88d3035d5dadb054", "AI Gateway Read", ACCOUNT, "ai_and_machine_learning"
    ),
    PermissionGroup(
        "9d24387c6e8544e2bc4024a03991339f",
        "Load Balancing: Monitors and Pools Read",
        ACCOUNT,
        "network_services",
    ),
    PermissionGroup(
        "d2a1802cc9a34e30852f8b33869b2f3c",
        "Load Balancing: Monitors and Pools Write",
        ACCOUNT,
        "network_services",
    ),
    PermissionGroup("c07321b023e944ff818fec44d8203567", "Cloudflare Tunnel Write", ACCOUNT, _ZT),
    # The same name in two scopes, as in the real catalogue: resolving by name alone is ambiguous.
    PermissionGroup("7ea222f6d5064cfa89ea366d7c1fee89", "Access: Apps and Policies Read", ACCOUNT, _ZT),
    PermissionGroup("eb258a38ea634c86a0c89da6b27cb6b6", "Access: Apps and Policies Read", ZONE, _ZT),
    PermissionGroup("c8fed203ed3043cba015a93ad1616f1f", "Zone Read", ZONE, _DNS),
    PermissionGroup("e6d2666161e84845a636613608cee8d5", "Zone Write", ZONE, _DNS),
    PermissionGroup("82e64a83756745bbbb1c9c2701bf816b", "DNS Read", ZONE, _DNS),
    PermissionGroup("4755a26eedb94da69e1066d98aa820be", "DNS Write", ZONE, _DNS),
    PermissionGroup("517b21aee92c4d89936c976ba6e4be55", "Zone Settings Read", ZONE, _DNS),
    PermissionGroup("e17beae8b8cb423a99b1730f21238bed", "Cache Purge", ZONE, "cache_and_performance"),
    PermissionGroup("2072033d694d415a936eaeb94e6405b8", "Workers Routes Read", ZONE, _DEV),
    PermissionGroup("28f4b596e7d643029c524985477ae49a", "Workers Routes Write", ZONE, _DEV),
    PermissionGroup("7b7216b327b04b8fbc8f524e1f9b7531", "SSL and Certificates Read", ZONE, "app_security"),
)

_BY_ID = {g.id: g for g in CATALOGUE}


def by_id(group_id: str) -> PermissionGroup | None:
    return _BY_ID.get(group_id)


def named(name: str, scope: str | None = None) -> PermissionGroup:
    """The group called ``name``; ``scope`` disambiguates look-alikes (else the account one wins)."""
    matches = [g for g in CATALOGUE if g.name == name and (scope is None or g.scope == scope)]
    if not matches:
        raise KeyError(f"no permission group named {name!r}" + (f" in scope {scope}" if scope else ""))
    matches.sort(key=lambda g: g.scope != ACCOUNT)
    return matches[0]


def atom(family: str, level: str) -> str:
    """The permission a request needs, e.g. ``atom("DNS", "read")`` (held by DNS Read and DNS Write)."""
    return f"{named(f'{family} Read').scope}:{family}.{level}"
