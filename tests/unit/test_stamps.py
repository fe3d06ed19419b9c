"""Operator-signed stamps (stamps.py): what the requester and approval signatures cover, and what not.

A stamp is trusted only when it verifies with the operator's key for this very namespace and spec, so
every table below changes one thing and expects "rule requester-recorded" (or no approval).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agentaccounts import stamps
from agentaccounts.errors import NotPermitted
from agentaccounts.models import Requester
from agentaccounts.stamps import Signer, requester_from_userinfo, spec_digest

KEY = b"k" * 32
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
NAMESPACE = "agents"
UID = "5c1b2f3e-9a8d-4c7b-b6a5-0f1e2d3c4b5a"
ALICE = Requester(
    username="alice", uid="u-1", groups=["devs", "system:authenticated"], extra={"scopes": ["view"]}
)
SPEC: dict[str, Any] = {
    "providerRef": {"kind": "ClusterAccountProvider", "name": "in-cluster"},
    "lifetime": "30m",
    "scopes": [
        {"permissions": ["get", "list"], "resources": ["configmaps"]},
        {"permissions": ["get"], "resources": ["secrets"], "resourceNames": ["app-config"]},
    ],
    "keepExpiredFor": "1h",
}
RULE = "rule requester-recorded"


@pytest.fixture
def signer() -> Signer:
    return Signer(KEY)


def stamped(signer: Signer, spec: dict[str, Any] | None = None, at: datetime = NOW) -> dict[str, str]:
    return signer.requester_stamp(NAMESPACE, copy.deepcopy(spec or SPEC), ALICE, at)


def edited(change: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    spec = copy.deepcopy(SPEC)
    change(spec)
    return spec


def rewrite_payload(annotations: dict[str, str], **changes: Any) -> dict[str, str]:
    payload = json.loads(annotations[stamps.REQUESTER])
    payload.update(changes)
    return {**annotations, stamps.REQUESTER: json.dumps(payload, sort_keys=True)}


# -- the requester stamp --------------------------------------------------------------------------


def test_a_stamp_names_the_requester_and_verifies(signer: Signer) -> None:
    annotations = stamped(signer)

    assert set(annotations) == {stamps.REQUESTED_BY, stamps.REQUESTER, stamps.REQUESTER_SIGNATURE}
    assert annotations[stamps.REQUESTED_BY] == "alice"
    assert json.loads(annotations[stamps.REQUESTER])["at"] == "2030-01-01T12:00:00+00:00"
    assert annotations[stamps.REQUESTER_SIGNATURE].startswith("v1:")
    assert signer.verified_requester(NAMESPACE, SPEC, annotations, NOW) == ALICE


def test_the_stamp_carries_no_key_material(signer: Signer) -> None:
    assert KEY.decode() not in json.dumps(stamped(signer))


def test_the_same_inputs_give_the_same_stamp(signer: Signer) -> None:
    assert stamped(signer) == stamped(Signer(KEY))


@pytest.mark.parametrize(
    "spec",
    [
        edited(lambda s: s.update(lifetime="31m")),
        edited(lambda s: s.pop("lifetime")),  # the provider default may be longer
        edited(lambda s: s["providerRef"].update(name="other")),
        edited(lambda s: s["providerRef"].update(kind="AccountProvider")),
        edited(lambda s: s["scopes"][0]["permissions"].append("watch")),
        edited(lambda s: s["scopes"][0]["resources"].append("pods/log")),
        edited(lambda s: s["scopes"][1].update(resourceNames=["app-config", "db-password"])),
        edited(lambda s: s["scopes"][1].pop("resourceNames")),
        edited(lambda s: s["scopes"].append({"permissions": ["delete"], "resources": ["pods"]})),
        edited(lambda s: s["scopes"].pop()),
        edited(lambda s: s.update(secretName="someone-elses-secret")),
        edited(lambda s: s.update(dryRun=True)),
    ],
    ids=[
        "lifetime",
        "lifetime-removed",
        "provider-name",
        "provider-kind",
        "permission-added",
        "resource-added",
        "resource-name-added",
        "resource-names-removed",
        "scope-added",
        "scope-removed",
        "secret-name",
        "dry-run",
    ],
)
def test_any_spec_change_invalidates_the_stamp(signer: Signer, spec: dict[str, Any]) -> None:
    with pytest.raises(NotPermitted) as caught:
        signer.verified_requester(NAMESPACE, spec, stamped(signer), NOW)
    assert caught.value.message.startswith(f"{RULE}: the requester stamp does not match")


def test_another_namespace_invalidates_the_stamp(signer: Signer) -> None:
    with pytest.raises(NotPermitted, match=RULE):
        signer.verified_requester("other", SPEC, stamped(signer), NOW)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda a: rewrite_payload(a, username="admin"),
        lambda a: rewrite_payload(a, groups=["system:masters"]),
        lambda a: rewrite_payload(a, groups=[*ALICE.groups, "system:masters"]),
        lambda a: rewrite_payload(a, uid="u-2"),
        lambda a: rewrite_payload(a, extra={}),
        lambda a: rewrite_payload(a, at="2031-01-01T00:00:00+00:00"),
        lambda a: {
            **a,
            stamps.REQUESTER: a[stamps.REQUESTER].replace('"at"', '"at" '),
        },  # same JSON, other text
        lambda a: {**a, stamps.REQUESTER_SIGNATURE: a[stamps.REQUESTER_SIGNATURE][:-1] + "0"},
        lambda a: {**a, stamps.REQUESTER_SIGNATURE: a[stamps.REQUESTER_SIGNATURE].upper()},
        lambda a: {**a, stamps.REQUESTER_SIGNATURE: a[stamps.REQUESTER_SIGNATURE].removeprefix("v1:")},
        lambda a: {**a, stamps.REQUESTER_SIGNATURE: ""},
        lambda a: {k: v for k, v in a.items() if k != stamps.REQUESTER_SIGNATURE},
        lambda a: Signer(b"x" * 32).requester_stamp(NAMESPACE, SPEC, ALICE, NOW),  # another operator's key
    ],
    ids=[
        "username",
        "groups-replaced",
        "group-added",
        "uid",
        "extra",
        "at",
        "payload-reformatted",
        "signature-digit",
        "signature-case",
        "signature-without-version",
        "signature-empty",
        "signature-missing",
        "other-key",
    ],
)
def test_any_change_of_payload_or_signature_invalidates_the_stamp(
    signer: Signer, tamper: Callable[[dict[str, str]], dict[str, str]]
) -> None:
    with pytest.raises(NotPermitted) as caught:
        signer.verified_requester(NAMESPACE, SPEC, tamper(stamped(signer)), NOW)
    assert caught.value.message.startswith(f"{RULE}: ")


@pytest.mark.parametrize(
    "annotations",
    [{}, {stamps.REQUESTED_BY: "admin"}, {stamps.REQUESTER: "", stamps.REQUESTER_SIGNATURE: "v1:00"}],
    ids=["none", "display-name-only", "empty-payload"],
)
def test_no_recorded_requester_is_refused(signer: Signer, annotations: dict[str, str]) -> None:
    with pytest.raises(NotPermitted) as caught:
        signer.verified_requester(NAMESPACE, SPEC, annotations, NOW)
    assert caught.value.message.startswith(f"{RULE}: no requester was recorded at admission")


def test_requested_by_is_display_only(signer: Signer) -> None:
    # The column users see; the signed payload is what is checked.
    annotations = {**stamped(signer), stamps.REQUESTED_BY: "someone-else"}
    assert signer.verified_requester(NAMESPACE, SPEC, annotations, NOW).username == "alice"


@pytest.mark.parametrize("keep", ["0s", "5m", "30d", None])
def test_keep_expired_for_edits_keep_the_stamp_valid(signer: Signer, keep: str | None) -> None:
    spec = edited(lambda s: s.pop("keepExpiredFor") if keep is None else s.update(keepExpiredFor=keep))
    assert signer.verified_requester(NAMESPACE, spec, stamped(signer), NOW) == ALICE


@pytest.mark.parametrize(
    "stamp_at",
    [NOW, NOW - timedelta(seconds=59), NOW - stamps.MAX_SKEW, NOW + timedelta(hours=1)],
    ids=["at-creation", "within-skew", "at-skew", "later-edit"],
)
def test_a_stamp_from_the_objects_lifetime_verifies(signer: Signer, stamp_at: datetime) -> None:
    assert signer.verified_requester(NAMESPACE, SPEC, stamped(signer, at=stamp_at), NOW) == ALICE


@pytest.mark.parametrize(
    "stamp_at",
    [NOW - stamps.MAX_SKEW - timedelta(seconds=1), NOW - timedelta(days=1)],
    ids=["just-past-skew", "a-day-older"],
)
def test_a_stamp_older_than_the_object_is_refused(signer: Signer, stamp_at: datetime) -> None:
    # e.g. copied from a deleted AgentAccount with the same namespace and spec
    with pytest.raises(NotPermitted) as caught:
        signer.verified_requester(NAMESPACE, SPEC, stamped(signer, at=stamp_at), NOW)
    assert caught.value.message.startswith(f"{RULE}: the requester stamp predates this AgentAccount")


def test_without_a_creation_time_the_age_is_not_judged(signer: Signer) -> None:
    # admission (validate) has no trustworthy creationTimestamp to compare with; reconcile does
    old = stamped(signer, at=NOW - timedelta(days=365))
    assert signer.verified_requester(NAMESPACE, SPEC, old, None) == ALICE


# -- spec_digest ----------------------------------------------------------------------------------

MINIMAL: dict[str, Any] = {
    "providerRef": {"name": "p"},
    "scopes": [{"permissions": ["get"], "resources": ["pods"]}],
}


@pytest.mark.parametrize(
    "spec",
    [
        # what CRD defaulting (kind, keepExpiredFor) or an explicit default adds
        {**MINIMAL, "providerRef": {"kind": "AccountProvider", "name": "p"}},
        {**MINIMAL, "keepExpiredFor": "1h"},
        {**MINIMAL, "keepExpiredFor": "3d"},  # not covered at all
        {**MINIMAL, "dryRun": False},
        {**MINIMAL, "scopes": [{"permissions": ["get"], "resources": ["pods"], "resourceNames": []}]},
        # other key order
        {"scopes": [{"resources": ["pods"], "permissions": ["get"]}], "providerRef": {"name": "p"}},
        # unknown fields the API server would prune anyway
        {**MINIMAL, "futureField": 1},
    ],
)
def test_equivalent_specs_have_the_same_digest(spec: dict[str, Any]) -> None:
    assert spec_digest(spec) == spec_digest(MINIMAL)


def test_equivalent_durations_have_the_same_digest() -> None:
    assert spec_digest({**MINIMAL, "lifetime": "90m"}) == spec_digest({**MINIMAL, "lifetime": "1h30m"})


@pytest.mark.parametrize(
    "spec",
    [
        {**MINIMAL, "lifetime": "1h"},
        {**MINIMAL, "dryRun": True},
        {**MINIMAL, "secretName": "x"},
        {**MINIMAL, "providerRef": {"kind": "ClusterAccountProvider", "name": "p"}},
        {**MINIMAL, "scopes": [{"permissions": ["get"], "resources": ["pods/log"]}]},
        {**MINIMAL, "scopes": [{"permissions": ["get"], "resources": ["pods"], "resourceNames": ["a"]}]},
    ],
)
def test_different_requests_have_different_digests(spec: dict[str, Any]) -> None:
    assert spec_digest(spec) != spec_digest(MINIMAL)


def test_a_crd_defaulted_spec_verifies_the_stamp_of_the_spec_as_written(signer: Signer) -> None:
    annotations = signer.requester_stamp(NAMESPACE, MINIMAL, ALICE, NOW)
    defaulted = {**MINIMAL, "providerRef": {"kind": "AccountProvider", "name": "p"}, "keepExpiredFor": "1h"}
    assert signer.verified_requester(NAMESPACE, defaulted, annotations, NOW) == ALICE


# -- the approval stamp ---------------------------------------------------------------------------


def approval(
    signer: Signer, decision: str = "Approved", uid: str = UID, spec: dict[str, Any] | None = None
) -> dict[str, str]:
    return signer.approval_stamp(uid, copy.deepcopy(spec or SPEC), decision, "bob", NOW)


@pytest.mark.parametrize("decision", ["Approved", "Denied"])
def test_an_approval_verifies_for_the_same_uid_and_spec(signer: Signer, decision: str) -> None:
    annotations = approval(signer, decision)
    assert set(annotations) == {stamps.APPROVED_BY, stamps.APPROVAL_SIGNATURE}
    assert signer.verified_approval(UID, SPEC, annotations) == {
        "decision": decision,
        "by": "bob",
        "at": "2030-01-01T12:00:00+00:00",
    }


def test_an_approval_survives_a_keep_expired_for_edit(signer: Signer) -> None:
    spec = edited(lambda s: s.update(keepExpiredFor="7d"))
    assert signer.verified_approval(UID, spec, approval(signer)) is not None


@pytest.mark.parametrize(
    ("uid", "spec", "tamper"),
    [
        ("another-uid", SPEC, None),  # copied to another account
        ("", SPEC, None),
        (UID, edited(lambda s: s.update(lifetime="24h")), None),  # approved, then asked for more
        (UID, edited(lambda s: s["scopes"][0]["permissions"].append("delete")), None),
        (UID, SPEC, lambda a: {**a, stamps.APPROVED_BY: a[stamps.APPROVED_BY].replace("Denied", "Approved")}),
        (UID, SPEC, lambda a: {**a, stamps.APPROVED_BY: a[stamps.APPROVED_BY].replace("bob", "root")}),
        (UID, SPEC, lambda a: {**a, stamps.APPROVAL_SIGNATURE: "v1:" + "0" * 64}),
        (UID, SPEC, lambda a: {stamps.APPROVED_BY: a[stamps.APPROVED_BY]}),
        (UID, SPEC, lambda a: {}),
    ],
    ids=[
        "other-uid",
        "no-uid",
        "spec-lifetime",
        "spec-permission",
        "decision-flipped",
        "approver-renamed",
        "signature-forged",
        "signature-missing",
        "nothing",
    ],
)
def test_an_approval_does_not_verify_elsewhere(
    signer: Signer,
    uid: str,
    spec: dict[str, Any],
    tamper: Callable[[dict[str, str]], dict[str, str]] | None,
) -> None:
    annotations = approval(signer, "Denied")
    if tamper is not None:
        annotations = tamper(annotations)
    assert signer.verified_approval(uid, spec, annotations) is None


def test_an_approval_signature_is_no_requester_signature(signer: Signer) -> None:
    # Both are HMACs with one key over (kind, uid-or-namespace, payload, spec digest). With the uid set to
    # the namespace only the kind tells them apart, and it must: neither may stand in for the other.
    approved = signer.approval_stamp(NAMESPACE, SPEC, "Approved", "bob", NOW)
    as_requester = {
        stamps.REQUESTER: approved[stamps.APPROVED_BY],
        stamps.REQUESTER_SIGNATURE: approved[stamps.APPROVAL_SIGNATURE],
    }
    with pytest.raises(NotPermitted, match=RULE):
        signer.verified_requester(NAMESPACE, SPEC, as_requester, NOW)
    requester = stamped(signer)
    as_approval = {
        stamps.APPROVED_BY: requester[stamps.REQUESTER],
        stamps.APPROVAL_SIGNATURE: requester[stamps.REQUESTER_SIGNATURE],
    }
    assert signer.verified_approval(NAMESPACE, SPEC, as_approval) is None


# -- the key and the requester --------------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 1, 16, 31])
def test_a_short_key_is_refused(length: int) -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        Signer(b"k" * length)


@pytest.mark.parametrize("length", [32, 64])
def test_a_long_enough_key_is_accepted(length: int) -> None:
    Signer(b"k" * length)


@pytest.mark.parametrize(
    ("userinfo", "expected"),
    [
        (
            {"username": "alice", "uid": "u-1", "groups": ["devs"], "extra": {"scopes": ["view", "edit"]}},
            Requester(username="alice", uid="u-1", groups=["devs"], extra={"scopes": ["view", "edit"]}),
        ),
        (
            {"username": "system:serviceaccount:ci:runner"},
            Requester(username="system:serviceaccount:ci:runner"),
        ),
        ({}, Requester(username="")),
        ({"username": None, "groups": None, "extra": None}, Requester(username="")),
    ],
    ids=["full", "username-only", "empty", "nulls"],
)
def test_requester_from_userinfo(userinfo: dict[str, Any], expected: Requester) -> None:
    assert requester_from_userinfo(userinfo) == expected
