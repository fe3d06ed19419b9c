"""Every branch of the pure decisions, clock injected: tables of (account, provider, now) -> decision."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pydantic
import pytest

from agentaccounts import policies
from agentaccounts.models import AgentAccount, LabelSelector, ProviderSpecBase, Scope, ScopePattern
from agentaccounts.policies import Decision
from agentaccounts.providers import ProviderSpec

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
MIN, HOUR = timedelta(minutes=1), timedelta(hours=1)


def rfc(moment: datetime | None) -> str | None:
    """RFC 3339 as the API server stores it (sub-second digits kept, so lags can be exact)."""
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def account(
    *,
    lifetime: str | None = None,
    keep: str | None = None,
    generation: int = 1,
    phase: str | None = None,
    issued_at: datetime | None = None,
    expires_at: datetime | None = None,
    revoked_at: datetime | None = None,
    observed: int | None = None,
    recorded: bool = False,
) -> AgentAccount:
    spec: dict[str, Any] = {"providerRef": {"name": "in-cluster"}, "scopes": [{"permissions": ["get"]}]}
    if lifetime is not None:
        spec["lifetime"] = lifetime
    if keep is not None:
        spec["keepExpiredFor"] = keep
    status = {
        "phase": phase,
        "issuedAt": rfc(issued_at),
        "expiresAt": rfc(expires_at),
        "revokedAt": rfc(revoked_at),
        "observedGeneration": observed,
    }
    if recorded:  # what an issue writes: the identity and the Secret it lives in
        status |= {
            "accountRef": {"kind": "ServiceAccount", "name": "agentaccount-bot"},
            "secretName": "bot-c",
        }
    return AgentAccount.from_body(
        {
            "metadata": {"name": "bot", "namespace": "agents", "uid": "uid-1", "generation": generation},
            "spec": spec,
            "status": {k: v for k, v in status.items() if v is not None},
        }
    )


def provider(max_lifetime: str = "24h", default_lifetime: str = "1h") -> ProviderSpecBase:
    return ProviderSpec.model_validate(
        {"kubernetes": {}, "policy": {"maxLifetime": max_lifetime, "defaultLifetime": default_lifetime}}
    )


# -- check_lifetime -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lifetime", "default", "maximum"),
    [
        (None, "1h", "24h"),  # the provider's default
        ("30m", "1h", "24h"),
        ("24h", "1h", "24h"),  # exactly the maximum is allowed
        ("1ms", "1h", "24h"),
        ("2h", "48h", "24h"),  # an over-long default does not matter when spec.lifetime is set
    ],
)
def test_lifetimes_within_the_maximum_pass(lifetime: str | None, default: str, maximum: str) -> None:
    assert policies.check_lifetime(account(lifetime=lifetime), provider(maximum, default)) is None


@pytest.mark.parametrize(
    ("lifetime", "default", "maximum", "reason", "fragments"),
    [
        (
            "2h",
            "1h",
            "1h30m",
            "LifetimeExceeded",
            ["rule max-lifetime:", "lifetime 2h", "policy.maxLifetime 1h30m"],
        ),
        (
            "24h1s",
            "1h",
            "24h",
            "LifetimeExceeded",
            ["rule max-lifetime:", "lifetime 1d1s", "policy.maxLifetime 1d"],
        ),
        (
            None,
            "48h",
            "24h",
            "LifetimeExceeded",
            ["rule max-lifetime:", "lifetime 2d", "policy.maxLifetime 1d"],
        ),
        ("0s", "1h", "24h", "InvalidSpec", ["greater than zero"]),
        ("0m0s", "1h", "24h", "InvalidSpec", ["greater than zero"]),
        (None, "0s", "24h", "InvalidSpec", ["greater than zero"]),
    ],
)
def test_lifetimes_that_fail(
    lifetime: str | None, default: str, maximum: str, reason: str, fragments: list[str]
) -> None:
    decision = policies.check_lifetime(account(lifetime=lifetime), provider(maximum, default))

    assert decision is not None
    assert (decision.action, decision.reason) == ("fail", reason)
    for fragment in fragments:
        assert fragment in decision.message


def test_lifetime_of_prefers_the_spec_over_the_provider_default() -> None:
    assert policies.lifetime_of(account(lifetime="5m"), provider(default_lifetime="2h")) == 5 * MIN
    assert policies.lifetime_of(account(), provider(default_lifetime="2h")) == 2 * HOUR


# -- expiry ---------------------------------------------------------------------------------------


def test_first_issue_counts_from_now() -> None:
    assert policies.expiry(account(lifetime="30m"), provider(), NOW) == (NOW, NOW + 30 * MIN)


def test_first_issue_uses_the_provider_default_lifetime() -> None:
    assert policies.expiry(account(), provider(default_lifetime="2h"), NOW) == (NOW, NOW + 2 * HOUR)


@pytest.mark.parametrize("later", [timedelta(0), 5 * MIN, 29 * MIN, 2 * HOUR])
def test_lifetime_counts_from_issued_at_in_status(later: timedelta) -> None:
    # An operator restart or a re-issue (new generation) at any later time never extends the identity.
    issued = NOW - 10 * MIN
    acct = account(lifetime="30m", phase="Ready", issued_at=issued, expires_at=issued + 30 * MIN)
    assert policies.expiry(acct, provider(), NOW + later) == (issued, issued + 30 * MIN)


@pytest.mark.parametrize(("new_lifetime", "delta"), [("2h", 2 * HOUR), ("15m", 15 * MIN), ("5m", 5 * MIN)])
def test_lifetime_edit_moves_expires_at_from_issued_at(new_lifetime: str, delta: timedelta) -> None:
    issued = NOW - 10 * MIN
    edited = account(
        lifetime=new_lifetime,
        generation=2,
        phase="Ready",
        issued_at=issued,
        expires_at=issued + 30 * MIN,
        observed=1,
    )
    assert policies.expiry(edited, provider(), NOW) == (issued, issued + delta)


# -- on_change ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("acct", "action", "reason"),
    [
        (account(), "issue", "Issuing"),  # brand new: no status at all
        (account(phase="Pending"), "issue", "Issuing"),
        (account(phase="Failed", generation=2, observed=1), "issue", "Issuing"),
        (account(phase="Failed", expires_at=NOW + HOUR, observed=1), "issue", "Issuing"),
        (account(phase="Pending", expires_at=NOW + MIN), "issue", "Issuing"),
        (account(phase="Ready", generation=2, observed=1, expires_at=NOW + HOUR), "issue", "Issuing"),
        (account(phase="Ready", expires_at=NOW + HOUR), "issue", "Issuing"),  # no observedGeneration yet
        (
            account(
                phase="Ready", generation=3, observed=3, issued_at=NOW, expires_at=NOW + HOUR, recorded=True
            ),
            "skip",
            "UpToDate",
        ),
        # A hand-written phase Ready without the recorded identity is not believed (bad-input corpus).
        (account(phase="Ready", generation=3, observed=3, expires_at=NOW + HOUR), "issue", "Issuing"),
        (account(phase="Ready", observed=1, expires_at=NOW), "skip", "Expiring"),  # exactly at expiresAt
        (account(phase="Ready", generation=2, observed=1, expires_at=NOW - MIN), "skip", "Expiring"),
        (account(phase="Pending", expires_at=NOW - MIN), "skip", "Expiring"),
        (account(phase="Failed", expires_at=NOW - MIN), "skip", "Expiring"),
        (account(phase="Expired", expires_at=NOW - HOUR, revoked_at=NOW - HOUR), "skip", "Expired"),
        (account(phase="Expired", generation=5, observed=1), "skip", "Expired"),  # edits never re-issue
        (account(phase="Expired", expires_at=NOW + HOUR), "skip", "Expired"),
    ],
    ids=[
        "new",
        "pending",
        "failed-newer-generation",
        "failed-same-generation",
        "pending-not-yet-expired",
        "ready-newer-generation",
        "ready-no-observed-generation",
        "ready-same-generation",
        "ready-same-generation-nothing-recorded",
        "at-expires-at",
        "past-expires-at-newer-generation",
        "pending-past-expires-at",
        "failed-past-expires-at",
        "expired",
        "expired-newer-generation",
        "expired-before-expires-at",
    ],
)
def test_on_change(acct: AgentAccount, action: str, reason: str) -> None:
    decision = policies.on_change(acct, NOW)
    assert (decision.action, decision.reason) == (action, reason)
    assert decision.message


# -- on_timer -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("acct", "expected"),
    [
        (account(), Decision("wait", "NotIssued", "nothing issued yet", at=None)),
        (account(phase="Pending"), Decision("wait", "NotIssued", "nothing issued yet", at=None)),
        (account(phase="Failed"), Decision("wait", "NotIssued", "nothing issued yet", at=None)),
        (
            account(phase="Ready", expires_at=NOW + 30 * MIN),
            Decision("wait", "Active", "identity active", at=NOW + 30 * MIN),
        ),
        (
            account(phase="Pending", expires_at=NOW + MIN),
            Decision("wait", "Active", "identity active", at=NOW + MIN),
        ),
    ],
    ids=["new", "pending", "failed", "ready", "pending-with-expiry"],
)
def test_on_timer_waits(acct: AgentAccount, expected: Decision) -> None:
    assert policies.on_timer(acct, NOW) == expected


@pytest.mark.parametrize(
    ("phase", "expires_at", "lag"),
    [
        ("Ready", NOW, "0.0s ago"),
        ("Ready", NOW - timedelta(seconds=30), "30.0s ago"),
        ("Ready", NOW - timedelta(milliseconds=1500), "1.5s ago"),
        ("Pending", NOW - HOUR, "3600.0s ago"),
        ("Failed", NOW - MIN, "60.0s ago"),
    ],
)
def test_on_timer_revokes_at_and_after_expires_at(phase: str, expires_at: datetime, lag: str) -> None:
    decision = policies.on_timer(account(phase=phase, expires_at=expires_at), NOW)

    assert (decision.action, decision.reason) == ("revoke", "Expired")
    assert expires_at.isoformat() in decision.message
    assert f"({lag})" in decision.message


def test_on_timer_revoke_is_not_due_a_microsecond_early() -> None:
    acct = account(phase="Ready", expires_at=NOW)
    assert policies.on_timer(acct, NOW - timedelta(microseconds=1)).action == "wait"
    assert policies.on_timer(acct, NOW).action == "revoke"


@pytest.mark.parametrize(
    ("keep", "revoked", "expires", "now", "expected"),
    [
        # kept for keepExpiredFor after revokedAt, then deleted
        ("1h", NOW, NOW - MIN, NOW, Decision("wait", "Expired", "keeping the audit record", at=NOW + HOUR)),
        (
            "1h",
            NOW,
            NOW - MIN,
            NOW + 59 * MIN,
            Decision("wait", "Expired", "keeping the audit record", at=NOW + HOUR),
        ),
        ("1h", NOW, NOW - MIN, NOW + HOUR, Decision("delete", "RecordExpired", "", at=None)),
        ("1h", NOW, NOW - MIN, NOW + 2 * HOUR, Decision("delete", "RecordExpired", "", at=None)),
        # counted from revokedAt, not expiresAt: revocation came ten minutes late
        (
            "1h",
            NOW,
            NOW - 10 * MIN,
            NOW + 55 * MIN,
            Decision("wait", "Expired", "keeping the audit record", at=NOW + HOUR),
        ),
        # default keepExpiredFor is 1h
        (
            None,
            NOW,
            NOW,
            NOW + 30 * MIN,
            Decision("wait", "Expired", "keeping the audit record", at=NOW + HOUR),
        ),
        # 0s deletes at once
        ("0s", NOW, NOW, NOW, Decision("delete", "RecordExpired", "", at=None)),
        ("0s", NOW - HOUR, NOW - HOUR, NOW, Decision("delete", "RecordExpired", "", at=None)),
        # no revokedAt recorded: fall back to expiresAt
        (
            "30m",
            None,
            NOW - 10 * MIN,
            NOW,
            Decision("wait", "Expired", "keeping the audit record", at=NOW + 20 * MIN),
        ),
        ("30m", None, NOW - 30 * MIN, NOW, Decision("delete", "RecordExpired", "", at=None)),
    ],
    ids=[
        "just-revoked",
        "almost-due",
        "due",
        "overdue",
        "from-revokedAt",
        "default-1h",
        "zero-at-once",
        "zero-later",
        "from-expiresAt-wait",
        "from-expiresAt-due",
    ],
)
def test_on_timer_for_expired_records(
    keep: str | None, revoked: datetime | None, expires: datetime, now: datetime, expected: Decision
) -> None:
    acct = account(keep=keep, phase="Expired", expires_at=expires, revoked_at=revoked)
    decision = policies.on_timer(acct, now)

    assert (decision.action, decision.reason, decision.at) == (expected.action, expected.reason, expected.at)
    if expected.action == "delete":
        assert "keepExpiredFor" in decision.message


def test_expired_record_with_a_very_long_keep_expired_for_waits_instead_of_crashing() -> None:
    # "3650d" (models.MAX_DURATION, "keep forever" in practice) must wait, not overflow or crash.
    acct = account(keep="3650d", phase="Expired", expires_at=NOW, revoked_at=NOW)
    decision = policies.on_timer(acct, NOW + HOUR)
    assert decision.action == "wait"
    assert decision.at is None or decision.at > NOW + HOUR


# -- selector_matches -----------------------------------------------------------------------------

TEAM_A_DEV = {"team": "a", "env": "dev", "kubernetes.io/metadata.name": "agents"}


def selector(labels: dict[str, str] | None = None, *expressions: dict[str, Any]) -> LabelSelector:
    return LabelSelector.model_validate({"matchLabels": labels or {}, "matchExpressions": list(expressions)})


def expr(key: str, operator: str, *values: str) -> dict[str, Any]:
    return {"key": key, "operator": operator, "values": list(values)}


@pytest.mark.parametrize(
    ("sel", "labels", "matches"),
    [
        (selector(), {}, True),  # the empty selector selects everything
        (selector(), TEAM_A_DEV, True),
        (selector({"team": "a"}), TEAM_A_DEV, True),
        (selector({"team": "a", "env": "dev"}), TEAM_A_DEV, True),
        (selector({"team": "b"}), TEAM_A_DEV, False),
        (selector({"team": "a", "env": "prod"}), TEAM_A_DEV, False),  # every pair must hold
        (selector({"owner": "x"}), TEAM_A_DEV, False),
        (selector({"team": "a"}), {}, False),
        (selector({"team": ""}), {}, False),  # an empty value is not an absent label
        (selector({"team": ""}), {"team": ""}, True),
        (selector({"kubernetes.io/metadata.name": "agents"}), TEAM_A_DEV, True),
        (selector(None, expr("env", "In", "dev", "test")), TEAM_A_DEV, True),
        (selector(None, expr("env", "In", "prod")), TEAM_A_DEV, False),
        (selector(None, expr("owner", "In", "x")), TEAM_A_DEV, False),  # In needs the label
        (selector(None, expr("env", "NotIn", "prod")), TEAM_A_DEV, True),
        (selector(None, expr("env", "NotIn", "dev")), TEAM_A_DEV, False),
        (selector(None, expr("owner", "NotIn", "x")), TEAM_A_DEV, True),  # NotIn holds for an absent label
        (selector(None, {"key": "team", "operator": "Exists"}), TEAM_A_DEV, True),
        (selector(None, {"key": "owner", "operator": "Exists"}), TEAM_A_DEV, False),
        (selector(None, {"key": "owner", "operator": "DoesNotExist"}), TEAM_A_DEV, True),
        (selector(None, {"key": "team", "operator": "DoesNotExist"}), TEAM_A_DEV, False),
        (
            selector(None, expr("team", "In", "a"), expr("env", "In", "prod")),
            TEAM_A_DEV,
            False,
        ),  # all must hold
        (selector({"team": "a"}, expr("env", "NotIn", "dev")), TEAM_A_DEV, False),  # labels AND expressions
        (selector({"team": "a"}, expr("env", "In", "dev")), TEAM_A_DEV, True),
        (selector(None, {"key": "env", "operator": "In"}), TEAM_A_DEV, False),  # In with no values: nothing
    ],
)
def test_selector_matches(sel: LabelSelector, labels: dict[str, str], matches: bool) -> None:
    assert policies.selector_matches(sel, labels) is matches


@pytest.mark.parametrize("operator", ["in", "Equals", "", "Gt"])
def test_an_unknown_selector_operator_never_selects_everything(operator: str) -> None:
    # Kubernetes refuses a selector with an unknown operator; allowedNamespaces must fail closed, not
    # open: either the model refuses it, or it matches nothing. (The CRD enum stops it at apply, but the
    # models repeat the checks that matter for objects written past the schema.)
    try:
        sel = LabelSelector.model_validate({"matchExpressions": [expr("team", operator, "a")]})
    except pydantic.ValidationError:
        return
    assert not policies.selector_matches(sel, {"team": "b"})


# -- scope_pairs and check_allowed_scopes ---------------------------------------------------------


def scopes(*items: tuple[list[str], list[str]]) -> list[Scope]:
    return [Scope(permissions=p, resources=r) for p, r in items]


def patterns(*items: tuple[list[str], list[str]]) -> list[ScopePattern]:
    return [ScopePattern(permissions=p, resources=r) for p, r in items]


def test_scope_pairs_are_every_permission_times_resource_and_a_whole_account_is_star() -> None:
    assert policies.scope_pairs(
        scopes((["get", "list"], ["configmaps", "pods/log"]), (["Zone Read"], []))
    ) == [
        ("get", "configmaps"),
        ("get", "pods/log"),
        ("list", "configmaps"),
        ("list", "pods/log"),
        ("Zone Read", "*"),
    ]


def test_scope_pairs_ignore_resource_names() -> None:
    named = [Scope(permissions=["get"], resources=["secrets"], resourceNames=["a", "b"])]
    assert policies.scope_pairs(named) == [("get", "secrets")]


def test_no_allowed_scopes_on_a_kubernetes_provider_leaves_it_to_rbac() -> None:
    asked = scopes((["delete", "create"], ["deployments.apps", "pods"]))
    assert policies.check_allowed_scopes(asked, None, "kubernetes", True) is None


@pytest.mark.parametrize("provider_type", ["cloudflare", "someday-another"])
def test_no_allowed_scopes_on_any_other_provider_issues_nothing(provider_type: str) -> None:
    decision = policies.check_allowed_scopes(
        scopes((["Workers Scripts Read"], ["account"])), None, provider_type, False
    )
    assert decision is not None
    assert (decision.action, decision.reason) == ("fail", "NotPermitted")
    assert decision.message.startswith("rule allowed-scopes: ")
    assert f"this {provider_type} provider lists no spec.policy.allowedScopes" in decision.message
    assert "policy.allowedScopes: [{permissions:" in decision.message  # the hint: how to allow something


ALLOWED = patterns(
    (["get", "list", "watch"], ["*"]),
    (["create", "delete"], ["jobs.batch", "pods/*"]),
    (["Workers * Read"], ["account", "zone/*"]),
    (["Zone Read"], ["*"]),
)


@pytest.mark.parametrize(
    "asked",
    [
        scopes((["get", "list"], ["configmaps", "deployments.apps", "pods/log"])),
        scopes((["create"], ["jobs.batch"]), (["delete"], ["pods/log", "pods/exec"])),
        scopes((["Workers Scripts Read", "Workers KV Storage Read"], ["account", "zone/0123abcd"])),
        scopes((["Zone Read"], [])),  # the whole account: only a "*" resource pattern allows it
        scopes((["watch"], [])),
    ],
)
def test_scopes_inside_the_allowed_patterns_pass(asked: list[Scope]) -> None:
    assert policies.check_allowed_scopes(asked, ALLOWED, "cloudflare", False) is None
    assert policies.check_allowed_scopes(asked, ALLOWED, "kubernetes", True) is None


@pytest.mark.parametrize(
    ("asked", "pair"),
    [
        (scopes((["get", "update"], ["configmaps"])), ("update", "configmaps")),
        (scopes((["create"], ["jobs.batch", "cronjobs.batch"])), ("create", "cronjobs.batch")),
        (scopes((["create"], ["pods"])), ("create", "pods")),  # "pods/*" is pods' subresources only
        (scopes((["Workers Scripts Write"], ["account"])), ("Workers Scripts Write", "account")),
        (scopes((["Workers Scripts Read"], ["zones"])), ("Workers Scripts Read", "zones")),
        (scopes((["Workers Scripts Read"], [])), ("Workers Scripts Read", "*")),  # whole account vs "account"
        (scopes((["GET"], ["configmaps"])), ("GET", "configmaps")),  # patterns are case-sensitive
        (scopes((["get"], ["configmaps"]), (["Zone Edit"], ["zone/1"])), ("Zone Edit", "zone/1")),
    ],
)
def test_a_pair_outside_every_pattern_is_refused_and_named(asked: list[Scope], pair: tuple[str, str]) -> None:
    decision = policies.check_allowed_scopes(asked, ALLOWED, "cloudflare", False)
    assert decision is not None
    assert (decision.action, decision.reason) == ("fail", "NotPermitted")
    assert decision.message == (
        f"rule allowed-scopes: permission {pair[0]!r} on {pair[1]!r} is outside the provider's "
        "policy.allowedScopes"
    )


def test_a_pair_must_match_one_entry_not_a_permission_from_one_and_a_resource_from_another() -> None:
    allowed = patterns((["get"], ["configmaps"]), (["delete"], ["pods"]))
    assert (
        policies.check_allowed_scopes(scopes((["delete"], ["configmaps"])), allowed, "kubernetes", True)
        is not None
    )
    assert policies.check_allowed_scopes(scopes((["get"], ["pods"])), allowed, "kubernetes", True) is not None
    assert (
        policies.check_allowed_scopes(scopes((["get"], ["configmaps"])), allowed, "kubernetes", True) is None
    )


def test_an_empty_allowed_scopes_list_allows_nothing() -> None:
    assert (
        policies.check_allowed_scopes(scopes((["get"], ["configmaps"])), [], "kubernetes", True) is not None
    )


# -- active_accounts ------------------------------------------------------------------------------


def live(
    uid: str,
    *,
    kind: str | None = "AccountProvider",
    name: str = "p",
    phase: str | None = "Ready",
    issued: bool = True,
    dry_run: bool | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": name}
    if kind is not None:
        ref["kind"] = kind
    spec: dict[str, Any] = {"providerRef": ref, "scopes": [{"permissions": ["get"]}]}
    if dry_run is not None:
        spec["dryRun"] = dry_run
    meta: dict[str, Any] = {"name": uid, "namespace": "agents", "uid": uid}
    if deleting:
        meta["deletionTimestamp"] = "2030-01-01T12:00:00Z"
    status: dict[str, Any] = {}
    if phase is not None:
        status["phase"] = phase
    if issued:
        status["issuedAt"] = "2030-01-01T11:00:00Z"
    return {"metadata": meta, "spec": spec, "status": status}


@pytest.mark.parametrize(
    ("body", "counted", "counted_if_issued_only"),
    [
        (live("a"), True, True),
        (live("a", kind=None), True, True),  # providerRef.kind defaults to AccountProvider
        (live("a", phase="Pending", issued=False), True, False),  # waiting: counts at admission only
        (live("a", phase=None, issued=False), True, False),  # brand new, no status yet
        (live("a", phase="Pending", issued=True), True, True),  # re-issuing after an issue
        (live("a", phase="Expired"), False, False),
        (live("a", phase="Failed"), False, False),
        (live("a", phase="DryRun", issued=False), False, False),
        (
            live("a", phase="Pending", issued=False, dry_run=True),
            False,
            False,
        ),  # dry run before its first pass
        (live("a", dry_run=False), True, True),
        (live("a", deleting=True), False, False),
        (live("self"), False, False),  # the account being judged
        (live("a", name="other"), False, False),
        (live("a", kind="ClusterAccountProvider"), False, False),  # same name, other kind
    ],
    ids=[
        "ready",
        "default-kind",
        "pending-not-issued",
        "new",
        "pending-issued",
        "expired",
        "failed",
        "dry-run-phase",
        "dry-run-spec",
        "dry-run-false",
        "deleting",
        "self",
        "other-provider",
        "other-kind",
    ],
)
def test_active_accounts(body: dict[str, Any], counted: bool, counted_if_issued_only: bool) -> None:
    assert policies.active_accounts([body], "AccountProvider", "p", "self", issued_only=False) == int(counted)
    assert policies.active_accounts([body], "AccountProvider", "p", "self", issued_only=True) == int(
        counted_if_issued_only
    )


def test_active_accounts_counts_every_live_account() -> None:
    bodies = [
        live("a"),
        live("b", phase="Pending", issued=False),
        live("c", phase="Expired"),
        live("d"),
        live("self"),
    ]
    assert policies.active_accounts(bodies, "AccountProvider", "p", "self", issued_only=False) == 3
    assert policies.active_accounts(bodies, "AccountProvider", "p", "self", issued_only=True) == 2
    assert policies.active_accounts([], "AccountProvider", "p", "self", issued_only=False) == 0


def test_active_accounts_survive_sparse_bodies() -> None:
    # objects as a list returns them can lack status, and (written past the schema) even spec
    sparse: list[dict[str, Any]] = [
        {"metadata": {"uid": "a"}},
        {"metadata": {"uid": "b"}, "spec": None, "status": None},
    ]
    assert policies.active_accounts(sparse, "AccountProvider", "p", "self", issued_only=False) == 0


# -- status can only shorten a lifetime ---------------------------------------------------------------
def _with_status(issued_at: str, created: str = "2030-01-01T00:00:00Z") -> AgentAccount:
    body = {
        "metadata": {"name": "bot", "namespace": "ns", "uid": "u", "creationTimestamp": created},
        "spec": {
            "providerRef": {"name": "p"},
            "lifetime": "30m",
            "scopes": [{"permissions": ["get"], "resources": ["configmaps"]}],
        },
        "status": {"issuedAt": issued_at},
    }
    return AgentAccount.from_body(body)


def test_a_hand_written_future_issued_at_never_extends_the_lifetime() -> None:
    # Before: status.issuedAt 2099 gave an identity until 2099-01-01T00:30Z through a 1h-max provider.
    now = datetime(2030, 1, 1, 0, 5, tzinfo=UTC)
    issued, expires = policies.expiry(_with_status("2099-01-01T00:00:00Z"), provider(), now)
    assert issued == now and expires == now + timedelta(minutes=30)


def test_an_issued_at_before_the_account_existed_counts_from_its_creation() -> None:
    now = datetime(2030, 1, 1, 0, 5, tzinfo=UTC)
    issued, _ = policies.expiry(_with_status("2000-01-01T00:00:00Z"), provider(), now)
    assert issued == datetime(2030, 1, 1, tzinfo=UTC)


def test_a_failed_account_whose_identity_still_lives_counts_against_the_quota() -> None:
    # Before: a Ready account turned Failed by a refused edit kept its live identity but stopped
    # counting, so maxActiveAccounts: 1 admitted a second live identity.
    def body(uid: str, status: dict[str, Any]) -> dict[str, Any]:
        return {"metadata": {"uid": uid}, "spec": {"providerRef": {"name": "p"}}, "status": status}

    bodies = [
        body("a", {"phase": "Failed", "issuedAt": "x", "accountRef": {"kind": "ServiceAccount"}}),
        body("b", {"phase": "Failed"}),
        body("c", {"phase": "Failed", "accountRef": {"kind": "ServiceAccount"}, "revokedAt": "y"}),
    ]
    assert policies.active_accounts(bodies, "AccountProvider", "p", "new", issued_only=True) == 1
