"""admission.Admission: the stamps the mutating webhook writes, and what the validating webhook refuses.

`mutate` is pure given the signer and the clock, so its tests apply the returned annotation changes
the way the API server applies the webhook's patch and look at the object that would be stored.
`validate` runs over the in-memory Kube of tests/unit/fakes.py.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from agentaccounts import stamps
from agentaccounts.access import Access
from agentaccounts.admission import Admission, refusal_message
from agentaccounts.errors import InvalidSpec, NotPermitted, QuotaExceeded
from agentaccounts.providers.resolve import ProviderResolver
from agentaccounts.settings import Settings
from agentaccounts.stamps import Signer
from unit.fakes import ALL, FakeKube, Grant

KEY = b"s" * 32
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
NS = "agents"
UID = "5c1b2f3e-9a8d-4c7b-b6a5-0f1e2d3c4b5a"
SETTINGS = Settings(operator_namespace="ops", leader_election_namespace="ops")
SPEC: dict[str, Any] = {
    "providerRef": {"kind": "AccountProvider", "name": "p"},
    "lifetime": "30m",
    "scopes": [{"permissions": ["get", "list"], "resources": ["configmaps"]}],
    "keepExpiredFor": "1h",
}
ALICE = {"username": "alice", "uid": "u-a", "groups": ["devs", "system:authenticated"], "extra": {"x": ["1"]}}
BOB = {"username": "bob", "uid": "u-b", "groups": ["approvers", "system:authenticated"]}
OPERATOR = {"username": "system:serviceaccount:ops:agentaccounts", "groups": ["system:serviceaccounts"]}
REQUESTER_KEYS = (stamps.REQUESTED_BY, stamps.REQUESTER, stamps.REQUESTER_SIGNATURE)
APPROVAL_KEYS = (stamps.APPROVED_BY, stamps.APPROVAL_SIGNATURE)


@pytest.fixture
def signer() -> Signer:
    return Signer(KEY)


@pytest.fixture
def kube() -> FakeKube:
    kube = FakeKube()
    kube.add("AccountProvider", {"metadata": {"name": "p", "namespace": NS}, "spec": {"kubernetes": {}}})
    return kube


@pytest.fixture
def admission(kube: FakeKube, signer: Signer) -> Admission:
    return Admission(
        Access(kube, SETTINGS), ProviderResolver(kube, SETTINGS.provider_retry_seconds), signer, lambda: NOW
    )  # type: ignore[arg-type]


def body(
    spec: dict[str, Any] | None = None, annotations: dict[str, str] | None = None, **meta: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "agentaccounts.dev/v1alpha1",
        "kind": "AgentAccount",
        "metadata": {
            "name": "bot",
            "namespace": NS,
            "uid": UID,
            "annotations": dict(annotations or {}),
            **meta,
        },
        "spec": copy.deepcopy(spec or SPEC),
    }


def apply(obj: dict[str, Any], changes: dict[str, str | None]) -> dict[str, Any]:
    """The object as stored after the webhook's patch."""
    out = copy.deepcopy(obj)
    annotations = out["metadata"].setdefault("annotations", {})
    for key, value in changes.items():
        if value is None:
            annotations.pop(key, None)
        else:
            annotations[key] = value
    return out


def with_spec(obj: dict[str, Any], **spec: Any) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    out["spec"].update(spec)
    return out


def annotations_of(obj: dict[str, Any]) -> dict[str, str]:
    return dict(obj["metadata"].get("annotations") or {})


def created(
    admission: Admission, obj: dict[str, Any] | None = None, userinfo: dict[str, Any] = ALICE
) -> dict[str, Any]:
    obj = obj or body()
    return apply(obj, admission.mutate("CREATE", obj, None, userinfo))


def approved(admission: Admission, stored: dict[str, Any], value: str = "approve") -> dict[str, Any]:
    request = apply(stored, {stamps.APPROVAL_REQUEST: value})
    return apply(request, admission.mutate("UPDATE", request, stored, BOB))


# -- mutate: CREATE -------------------------------------------------------------------------------


def test_create_stamps_the_requester_from_userinfo(admission: Admission, signer: Signer) -> None:
    obj = body(annotations={"team": "a"})
    changes = admission.mutate("CREATE", obj, None, ALICE)

    assert set(changes) == set(REQUESTER_KEYS)  # nothing to remove, nothing else touched
    stored = apply(obj, changes)
    assert annotations_of(stored)[stamps.REQUESTED_BY] == "alice"
    assert annotations_of(stored)["team"] == "a"
    requester = signer.verified_requester(NS, stored["spec"], annotations_of(stored), NOW)
    assert requester.model_dump() == {**ALICE, "extra": {"x": ["1"]}}


def test_create_overwrites_a_requester_the_user_wrote(admission: Admission, signer: Signer) -> None:
    # even a genuine stamp, copied from an account an admin created with the same spec
    admin = signer.requester_stamp(NS, SPEC, stamps.requester_from_userinfo({"username": "admin"}), NOW)
    stored = created(admission, body(annotations=admin))

    assert annotations_of(stored)[stamps.REQUESTED_BY] == "alice"
    assert signer.verified_requester(NS, SPEC, annotations_of(stored), NOW).username == "alice"


def test_create_removes_approval_stamps_the_user_wrote(admission: Admission, signer: Signer) -> None:
    genuine = signer.approval_stamp(UID, SPEC, "Approved", "root", NOW)
    obj = body(annotations={**genuine, "keep": "me"})
    changes = admission.mutate("CREATE", obj, None, ALICE)

    assert {k: changes[k] for k in APPROVAL_KEYS} == {
        stamps.APPROVED_BY: None,
        stamps.APPROVAL_SIGNATURE: None,
    }
    stored = apply(obj, changes)
    assert signer.verified_approval(UID, SPEC, annotations_of(stored)) is None
    assert annotations_of(stored)["keep"] == "me"


def test_an_approval_request_at_create_approves_nothing(admission: Admission, signer: Signer) -> None:
    stored = created(admission, body(annotations={stamps.APPROVAL_REQUEST: "approve"}))
    assert not set(APPROVAL_KEYS) & set(annotations_of(stored))
    assert signer.verified_approval(UID, SPEC, annotations_of(stored)) is None


def test_create_stamps_the_spec_as_sent(admission: Admission, signer: Signer) -> None:
    stored = created(admission)
    with pytest.raises(NotPermitted, match="rule requester-recorded"):
        signer.verified_requester(NS, {**SPEC, "lifetime": "24h"}, annotations_of(stored), NOW)
    with pytest.raises(NotPermitted, match="rule requester-recorded"):
        signer.verified_requester("other", SPEC, annotations_of(stored), NOW)


# -- mutate: UPDATE without a spec change ---------------------------------------------------------


def test_an_update_that_changes_nothing_of_ours_changes_nothing(admission: Admission) -> None:
    stored = approved(admission, created(admission))
    update = copy.deepcopy(stored)
    update["metadata"]["finalizers"] = ["agentaccounts.dev/revoke"]
    update["metadata"]["labels"] = {"a": "b"}
    update["metadata"]["annotations"]["kopf.zalando.org/last-handled-configuration"] = "{}"
    assert admission.mutate("UPDATE", update, stored, OPERATOR) == {}


@pytest.mark.parametrize(
    "tamper",
    [
        {stamps.REQUESTED_BY: "admin"},
        {stamps.REQUESTER: '{"username": "admin"}'},
        {stamps.REQUESTER_SIGNATURE: "v1:" + "0" * 64},
        {stamps.REQUESTER_SIGNATURE: None},
        {k: None for k in REQUESTER_KEYS},
        {stamps.APPROVED_BY: '{"decision": "Approved", "by": "root", "at": "2030-01-01T12:00:00+00:00"}'},
        {stamps.APPROVAL_SIGNATURE: None},
        {k: None for k in (*REQUESTER_KEYS, *APPROVAL_KEYS)},
    ],
    ids=[
        "requested-by",
        "payload",
        "signature",
        "signature-removed",
        "requester-removed",
        "approval-rewritten",
        "approval-signature-removed",
        "everything-removed",
    ],
)
def test_an_update_without_a_spec_change_restores_tampered_stamps(
    admission: Admission, signer: Signer, tamper: dict[str, str | None]
) -> None:
    stored = approved(admission, created(admission))
    update = apply(stored, tamper)
    after = apply(update, admission.mutate("UPDATE", update, stored, ALICE))

    ours = (*REQUESTER_KEYS, *APPROVAL_KEYS)
    assert {k: annotations_of(after).get(k) for k in ours} == {k: annotations_of(stored).get(k) for k in ours}
    assert signer.verified_requester(NS, SPEC, annotations_of(after), NOW).username == "alice"
    assert signer.verified_approval(UID, SPEC, annotations_of(after)) is not None


def test_stamps_cannot_be_added_to_an_account_that_has_none(admission: Admission, signer: Signer) -> None:
    # created while the webhook was not registered: no stamp, and none can be written later
    unstamped = body()
    forged = signer.requester_stamp(NS, SPEC, stamps.requester_from_userinfo({"username": "admin"}), NOW)
    update = apply(unstamped, forged)
    after = apply(update, admission.mutate("UPDATE", update, unstamped, ALICE))
    assert not set(REQUESTER_KEYS) & set(annotations_of(after))


# -- mutate: UPDATE with a spec change ------------------------------------------------------------


@pytest.mark.parametrize(
    "edit",
    [
        {"lifetime": "1h"},
        {"scopes": [{"permissions": ["get"], "resources": ["pods/log"]}]},
        {"dryRun": True},
    ],
)
def test_a_spec_change_stamps_the_editor_and_drops_the_approval(
    admission: Admission, signer: Signer, edit: dict[str, Any]
) -> None:
    stored = approved(admission, created(admission))
    update = with_spec(stored, **edit)
    changes = admission.mutate("UPDATE", update, stored, BOB)
    after = apply(update, changes)

    assert annotations_of(after)[stamps.REQUESTED_BY] == "bob"
    assert signer.verified_requester(NS, after["spec"], annotations_of(after), NOW).username == "bob"
    assert {changes[k] for k in APPROVAL_KEYS} == {None}
    assert signer.verified_approval(UID, after["spec"], annotations_of(after)) is None


def test_a_spec_change_with_an_approval_request_approves_nothing(
    admission: Admission, signer: Signer
) -> None:
    stored = created(admission)
    update = apply(with_spec(stored, lifetime="1h"), {stamps.APPROVAL_REQUEST: "approve"})
    after = apply(update, admission.mutate("UPDATE", update, stored, BOB))
    assert signer.verified_approval(UID, after["spec"], annotations_of(after)) is None


def test_a_keep_expired_for_edit_keeps_the_approval(admission: Admission, signer: Signer) -> None:
    # keepExpiredFor is outside both signatures (stamps.py) precisely so that editing it keeps them
    # valid; dropping the approval here would leave a Ready account retrying AwaitingApproval.
    stored = approved(admission, created(admission))
    update = with_spec(stored, keepExpiredFor="7d")
    after = apply(update, admission.mutate("UPDATE", update, stored, ALICE))
    assert signer.verified_approval(UID, after["spec"], annotations_of(after)) is not None


# -- mutate: approval -----------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "decision"), [("approve", "Approved"), ("deny", "Denied")])
def test_an_approval_request_becomes_a_signed_approval(
    admission: Admission, signer: Signer, value: str, decision: str
) -> None:
    stored = created(admission)
    after = approved(admission, stored, value)

    assert signer.verified_approval(UID, SPEC, annotations_of(after)) == {
        "decision": decision,
        "by": "bob",
        "at": "2030-01-01T12:00:00+00:00",
    }
    # the requester is still the one who asked, not the approver
    assert {k: annotations_of(after)[k] for k in REQUESTER_KEYS} == {
        k: annotations_of(stored)[k] for k in REQUESTER_KEYS
    }


def test_an_approval_is_bound_to_the_account_uid(admission: Admission, signer: Signer) -> None:
    after = approved(admission, created(admission))
    assert signer.verified_approval("another-uid", SPEC, annotations_of(after)) is None


def test_an_approval_can_change_its_mind(admission: Admission, signer: Signer) -> None:
    denied = approved(admission, approved(admission, created(admission), "approve"), "deny")
    approval = signer.verified_approval(UID, SPEC, annotations_of(denied))
    assert approval is not None
    assert approval["decision"] == "Denied"


@pytest.mark.parametrize("value", ["yes", "Approve", "approved", "", "deny "])
def test_a_bad_approval_value_is_refused(admission: Admission, value: str) -> None:
    stored = created(admission)
    request = apply(stored, {stamps.APPROVAL_REQUEST: value})
    with pytest.raises(InvalidSpec) as caught:
        admission.mutate("UPDATE", request, stored, BOB)
    assert stamps.APPROVAL_REQUEST in caught.value.message
    assert repr(value) in caught.value.message


def test_an_unchanged_approval_request_is_no_new_approval(admission: Admission, signer: Signer) -> None:
    stored = approved(admission, created(admission))
    update = apply(stored, {stamps.APPROVED_BY: None, stamps.APPROVAL_SIGNATURE: None})  # kept: "approve"
    after = apply(update, admission.mutate("UPDATE", update, stored, ALICE))
    assert annotations_of(after)[stamps.APPROVED_BY] == annotations_of(stored)[stamps.APPROVED_BY]  # restored
    assert '"by": "bob"' in annotations_of(after)[stamps.APPROVED_BY]


def test_an_approval_request_written_at_create_does_not_block_the_real_approval(
    admission: Admission, signer: Signer
) -> None:
    # The requester wrote `agentaccounts.dev/approval: approve` into the manifest. It approved nothing
    # (above) and must not stop the approver's `kubectl annotate --overwrite ...approval=approve` from
    # approving, which today is a no-op because the value did not change.
    stored = created(admission, body(annotations={stamps.APPROVAL_REQUEST: "approve"}))
    after = approved(admission, stored, "approve")
    approval = signer.verified_approval(UID, SPEC, annotations_of(after))
    assert approval is not None
    assert approval["by"] == "bob"


def test_an_account_edited_after_approval_can_be_approved_again(admission: Admission, signer: Signer) -> None:
    first = approved(admission, created(admission))
    update = with_spec(first, lifetime="1h")
    edited = apply(update, admission.mutate("UPDATE", update, first, ALICE))
    again = approved(admission, edited, "approve")
    approval = signer.verified_approval(UID, again["spec"], annotations_of(again))
    assert approval is not None
    assert approval["decision"] == "Approved"


# -- validate -------------------------------------------------------------------------------------


def grant_use(kube: FakeKube, username: str = "alice", verb: str = "use") -> None:
    kube.allow(username, Grant(verb, "accountproviders", group="agentaccounts.dev", name="p", namespace=NS))


async def test_a_stamped_create_within_the_requesters_rights_is_allowed(
    kube: FakeKube, admission: Admission
) -> None:
    grant_use(kube)
    kube.allow("alice", Grant("get", "configmaps"), Grant("list", "configmaps"))
    await admission.validate("CREATE", created(admission), None, ALICE)
    assert [a["verb"] for _, a in kube.sar_calls] == ["use", "get", "list"]
    assert all(
        user["username"] == "alice" and user["groups"] == ALICE["groups"] for user, _ in kube.sar_calls
    )


async def test_no_use_on_the_provider_is_refused(kube: FakeKube, admission: Admission) -> None:
    kube.allow("alice", Grant("*", "configmaps"))
    with pytest.raises(NotPermitted) as caught:
        await admission.validate("CREATE", created(admission), None, ALICE)
    assert caught.value.message.startswith("rule provider-use: alice may not use AccountProvider 'p'")
    assert refusal_message(caught.value).startswith("NotPermitted: rule provider-use: ")


async def test_missing_delegation_names_the_first_missing_permission(
    kube: FakeKube, admission: Admission
) -> None:
    grant_use(kube)
    kube.allow("alice", Grant("get", "configmaps"))
    with pytest.raises(NotPermitted) as caught:
        await admission.validate("CREATE", created(admission), None, ALICE)
    assert caught.value.message.startswith(
        "rule delegation: alice may not list configmaps in namespace agents"
    )


async def test_a_spec_edit_is_judged_as_the_editor(kube: FakeKube, admission: Admission) -> None:
    kube.allow("alice", ALL)
    stored = created(admission)
    update = with_spec(stored, lifetime="1h")
    edited = apply(update, admission.mutate("UPDATE", update, stored, BOB))
    with pytest.raises(NotPermitted, match="rule provider-use: bob may not use"):
        await admission.validate("UPDATE", edited, stored, BOB)


@pytest.mark.parametrize(
    ("setup", "secret", "reason"),
    [
        (
            lambda k: k.add("AgentAccount", body() | {"metadata": {"name": "other", "namespace": NS}}),
            "other-credentials",
            "AgentAccount other",
        ),
        (
            lambda k: k.add(
                "AccountProvider",
                {
                    "metadata": {"name": "cf", "namespace": NS},
                    "spec": {"cloudflare": {"apiTokenSecretRef": {"name": "cf-token"}}},
                },
            ),
            "cf-token",
            "referenced by AccountProvider cf",
        ),
        (
            lambda k: k.add_secret(NS, "minted", {"app.kubernetes.io/managed-by": "agentaccounts"}),
            "minted",
            "managed by",
        ),
    ],
    ids=["another-accounts-secret", "provider-token", "managed-label"],
)
async def test_protected_secret_names_are_refused(
    kube: FakeKube, admission: Admission, setup: Any, secret: str, reason: str
) -> None:
    setup(kube)
    kube.allow("alice", ALL)
    spec = {**SPEC, "scopes": [{"permissions": ["get"], "resources": ["secrets"], "resourceNames": [secret]}]}
    with pytest.raises(NotPermitted) as caught:
        await admission.validate("CREATE", created(admission, body(spec)), None, ALICE)
    assert caught.value.message.startswith(f"rule never-grantable: Secret agents/{secret}: ")
    assert reason in caught.value.message


async def test_a_namespace_outside_allowed_namespaces_is_refused(
    kube: FakeKube, admission: Admission
) -> None:
    kube.add(
        "ClusterAccountProvider",
        {
            "metadata": {"name": "shared"},
            "spec": {"kubernetes": {}, "policy": {"allowedNamespaces": {"matchLabels": {"agents": "yes"}}}},
        },
    )
    kube.namespaces[NS] = {"agents": "no"}
    kube.allow("alice", ALL)
    spec = {**SPEC, "providerRef": {"kind": "ClusterAccountProvider", "name": "shared"}}
    with pytest.raises(NotPermitted, match="rule allowed-namespaces: namespace agents is not selected"):
        await admission.validate("CREATE", created(admission, body(spec)), None, ALICE)
    kube.namespaces[NS] = {"agents": "yes"}
    await admission.validate("CREATE", created(admission, body(spec)), None, ALICE)


def live_account(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}"},
        "spec": copy.deepcopy(SPEC),
        "status": {"phase": "Ready", "issuedAt": "2030-01-01T11:00:00Z"},
    }


async def test_quota_is_judged_on_create(kube: FakeKube, admission: Admission) -> None:
    kube.custom[("AccountProvider", NS, "p")]["spec"]["policy"] = {"maxActiveAccounts": 1}
    kube.add("AgentAccount", live_account("first"))
    kube.allow("alice", ALL)
    with pytest.raises(QuotaExceeded) as caught:
        await admission.validate("CREATE", created(admission), None, ALICE)
    assert caught.value.message.startswith(
        "rule max-active-accounts: 1 live AgentAccounts in namespace agents"
    )
    assert refusal_message(caught.value).startswith("QuotaExceeded: rule max-active-accounts")


async def test_quota_is_not_judged_on_update(kube: FakeKube, admission: Admission) -> None:
    kube.custom[("AccountProvider", NS, "p")]["spec"]["policy"] = {"maxActiveAccounts": 1}
    kube.add("AgentAccount", live_account("first"))
    kube.allow("alice", ALL)
    stored = created(admission)
    update = with_spec(stored, lifetime="1h")
    await admission.validate(
        "UPDATE", apply(update, admission.mutate("UPDATE", update, stored, ALICE)), stored, ALICE
    )


async def test_a_dry_run_create_is_not_held_by_the_quota(kube: FakeKube, admission: Admission) -> None:
    kube.custom[("AccountProvider", NS, "p")]["spec"]["policy"] = {"maxActiveAccounts": 0}
    kube.allow("alice", ALL)
    await admission.validate("CREATE", created(admission, body({**SPEC, "dryRun": True})), None, ALICE)


async def test_an_approval_needs_approve_on_the_provider(kube: FakeKube, admission: Admission) -> None:
    stored = created(admission)
    request = apply(stored, {stamps.APPROVAL_REQUEST: "approve"})
    after = apply(request, admission.mutate("UPDATE", request, stored, BOB))
    grant_use(kube, "bob")  # use is not approve
    with pytest.raises(NotPermitted) as caught:
        await admission.validate("UPDATE", after, stored, BOB)
    assert caught.value.message.startswith("rule provider-approve: bob may not approve AccountProvider 'p'")

    grant_use(kube, "bob", "approve")
    kube.calls.clear()
    await admission.validate("UPDATE", after, stored, BOB)
    assert [a["verb"] for _, a in kube.sar_calls] == ["approve"]  # the account's scopes are not re-judged


async def test_a_create_through_a_missing_provider_is_allowed(kube: FakeKube, admission: Admission) -> None:
    # checked in full by reconcile once the provider appears
    spec = {**SPEC, "providerRef": {"kind": "ClusterAccountProvider", "name": "not-yet"}}
    await admission.validate("CREATE", created(admission, body(spec)), None, ALICE)
    assert kube.sar_calls == []


async def test_an_approval_through_a_missing_provider_is_refused(
    kube: FakeKube, admission: Admission
) -> None:
    # Unlike the requester's rights, an approval is never judged again: reconcile only checks the
    # signature. Allowing it while the provider is missing lets anyone who may update the account (the
    # requester) approve it before a requireApproval provider of that name is created.
    spec = {**SPEC, "providerRef": {"kind": "ClusterAccountProvider", "name": "not-yet"}}
    stored = created(admission, body(spec))
    request = apply(stored, {stamps.APPROVAL_REQUEST: "approve"})
    after = apply(request, admission.mutate("UPDATE", request, stored, ALICE))
    with pytest.raises(NotPermitted):
        await admission.validate("UPDATE", after, stored, ALICE)


@pytest.mark.parametrize(
    "change",
    [
        lambda o: o["metadata"].update(finalizers=["agentaccounts.dev/revoke"]),
        lambda o: o["metadata"].update(finalizers=[]),
        lambda o: o["metadata"]["annotations"].update({"kopf.zalando.org/last-handled-configuration": "{}"}),
        lambda o: o["metadata"].update(labels={"x": "y"}),
        lambda o: o.update(status={"phase": "Ready"}),
        lambda o: None,
    ],
    ids=["finalizer-added", "finalizer-removed", "kopf-annotation", "labels", "status", "nothing"],
)
async def test_updates_that_change_neither_spec_nor_approval_make_no_api_call(
    kube: FakeKube, admission: Admission, change: Any
) -> None:
    stored = created(admission)
    update = copy.deepcopy(stored)
    change(update)
    await admission.validate("UPDATE", update, stored, OPERATOR)
    assert kube.calls == []


async def test_an_invalid_spec_is_refused(admission: Admission) -> None:
    obj = body({**SPEC, "lifetime": "soon"})
    with pytest.raises(InvalidSpec, match="invalid spec"):
        await admission.validate("CREATE", obj, None, ALICE)


def test_a_spec_the_model_rejects_is_refused_by_the_stamp_webhook_in_one_line(admission: Admission) -> None:
    # Before: pydantic's ValidationError escaped mutate, so kopf logged a traceback per request and
    # the refusal was a raw multi-line pydantic dump. (Mutating webhooks run before schema validation.)
    with pytest.raises(InvalidSpec) as caught:
        admission.mutate("CREATE", body({**SPEC, "lifetime": "soon"}), None, ALICE)
    assert caught.value.message.startswith("invalid spec: lifetime: Value error, invalid duration")
    assert "\n" not in caught.value.message


async def test_a_create_without_a_stamp_is_refused(kube: FakeKube, admission: Admission) -> None:
    kube.allow("alice", ALL)
    with pytest.raises(NotPermitted, match="rule requester-recorded: no requester was recorded"):
        await admission.validate("CREATE", body(), None, ALICE)


async def test_a_stamp_of_someone_else_is_refused(kube: FakeKube, admission: Admission) -> None:
    # e.g. a later mutating webhook rewrote the annotations: the stamp verifies, but names admin
    kube.allow("alice", ALL)
    admin = created(admission, userinfo={"username": "admin", "groups": ["system:masters"]})
    with pytest.raises(NotPermitted, match="rule requester-recorded: the requester stamp was altered"):
        await admission.validate("CREATE", admin, None, ALICE)


async def test_a_stamp_for_another_spec_is_refused(kube: FakeKube, admission: Admission) -> None:
    kube.allow("alice", ALL)
    stamped = created(admission)
    with pytest.raises(NotPermitted, match="rule requester-recorded: the requester stamp does not match"):
        await admission.validate("CREATE", with_spec(stamped, lifetime="24h"), None, ALICE)


# -- shortening an issued account (agentaccounts revoke / extend to less) -------------------------

ISSUED = {"phase": "Ready", "issuedAt": "2030-01-01T11:50:00Z", "expiresAt": "2030-01-01T12:20:00Z"}


def issued(stored: dict[str, Any], **status: Any) -> dict[str, Any]:
    """`stored` as the operator leaves it once issued (SPEC's 30m from 11:50)."""
    out = copy.deepcopy(stored)
    out["status"] = {**ISSUED, **status}
    return out


def edited(
    admission: Admission, stored: dict[str, Any], editor: dict[str, Any], **spec: Any
) -> dict[str, Any]:
    update = with_spec(stored, **spec)
    for key, value in spec.items():
        if value is None:
            update["spec"].pop(key)
    return apply(update, admission.mutate("UPDATE", update, stored, editor))


def test_a_shortening_keeps_the_requester_and_the_approval(admission: Admission, signer: Signer) -> None:
    stored = issued(approved(admission, created(admission)))
    after = edited(admission, stored, BOB, lifetime="600123ms")  # ends at 12:00:00.123, before 12:20

    assert annotations_of(after)[stamps.REQUESTED_BY] == "alice"
    requester = signer.verified_requester(NS, after["spec"], annotations_of(after), NOW)
    assert requester.model_dump() == {**ALICE, "extra": {"x": ["1"]}}  # reconcile checks alice, as issued
    payload = json.loads(annotations_of(after)[stamps.REQUESTER])
    assert payload[stamps.SHORTENED_BY] == {"username": "bob", "at": "2030-01-01T12:00:00+00:00"}
    approval = signer.verified_approval(UID, after["spec"], annotations_of(after))
    assert approval is not None and approval["by"] == "bob" and approval["decision"] == "Approved"
    # the old stamps do not verify for the new spec, nor the new ones for the old spec
    with pytest.raises(NotPermitted):
        signer.verified_requester(NS, SPEC, annotations_of(after), NOW)


async def test_a_shortening_passes_admission_without_the_editors_rights(
    kube: FakeKube, admission: Admission
) -> None:
    kube.allow("alice", ALL)  # bob holds nothing: not `use`, not configmaps
    stored = issued(created(admission))
    after = edited(admission, stored, BOB, lifetime="10m")
    await admission.validate("UPDATE", after, stored, BOB)
    assert kube.sar_calls == []  # nothing to judge: it can only end sooner what was checked at issue


async def test_a_shortening_of_an_account_on_the_providers_default_lifetime(
    kube: FakeKube, admission: Admission, signer: Signer
) -> None:
    spec = {k: v for k, v in SPEC.items() if k != "lifetime"}
    stored = issued(created(admission, body(spec)), expiresAt="2030-01-01T12:50:00Z")  # default 1h
    after = edited(admission, stored, BOB, lifetime="59m")
    assert signer.verified_requester(NS, after["spec"], annotations_of(after), NOW).username == "alice"
    await admission.validate("UPDATE", after, stored, BOB)


@pytest.mark.parametrize(
    ("status", "edit"),
    [
        ({}, {"lifetime": "1h"}),  # longer
        ({}, {"lifetime": "1801s"}),  # a second longer
        ({}, {"lifetime": "10m", "secretName": "elsewhere"}),
        ({}, {"lifetime": "10m", "dryRun": True}),
        ({}, {"lifetime": "10m", "scopes": [{"permissions": ["get"], "resources": ["secrets"]}]}),
        ({}, {"lifetime": "0s"}),  # refused in full: a lifetime must be positive
        ({}, {"lifetime": None}),  # back to the provider's default, which may be longer
        ({"expiresAt": "2030-01-01T11:55:00Z"}, {"lifetime": "10m"}),  # ends later than status says
        ({"issuedAt": None, "expiresAt": None, "phase": "Pending"}, {"lifetime": "10m"}),  # not issued
    ],
    ids=[
        "longer", "a-second-longer", "secret-name", "dry-run", "scopes", "zero",
        "default", "later-than-status", "not-issued",
    ],
)  # fmt: skip
async def test_every_other_edit_stamps_the_editor_and_is_judged_in_full(
    kube: FakeKube, admission: Admission, signer: Signer, status: dict[str, Any], edit: dict[str, Any]
) -> None:
    kube.allow("alice", ALL)
    stored = issued(created(admission), **status)
    after = edited(admission, stored, BOB, **edit)
    assert annotations_of(after)[stamps.REQUESTED_BY] == "bob"
    assert stamps.SHORTENED_BY not in json.loads(annotations_of(after)[stamps.REQUESTER])
    with pytest.raises(NotPermitted, match="rule provider-use: bob may not use"):
        await admission.validate("UPDATE", after, stored, BOB)


async def test_a_shortening_over_a_stamp_that_does_not_verify_stamps_the_editor(
    kube: FakeKube, admission: Admission, signer: Signer
) -> None:
    # e.g. written while the webhook was away: there is no genuine requester to keep
    stored = issued(apply(created(admission), {stamps.REQUESTER_SIGNATURE: "v1:" + "0" * 64}))
    after = edited(admission, stored, BOB, lifetime="10m")
    assert signer.verified_requester(NS, after["spec"], annotations_of(after), NOW).username == "bob"
    with pytest.raises(NotPermitted, match="rule provider-use: bob may not use"):
        await admission.validate("UPDATE", after, stored, BOB)


async def test_a_shortening_whose_stamp_was_swapped_after_mutation_is_judged_in_full(
    kube: FakeKube, admission: Admission, signer: Signer
) -> None:
    # a later mutating webhook (or a bug) put a genuine stamp of someone else on the shortened spec
    stored = issued(created(admission))
    update = with_spec(stored, lifetime="10m")
    admin = signer.requester_stamp(
        NS, update["spec"], stamps.requester_from_userinfo({"username": "root"}), NOW
    )
    with pytest.raises(NotPermitted):
        await admission.validate("UPDATE", apply(update, admin), stored, BOB)


def test_updates_of_an_issued_account_without_a_spec_change_record_no_shortening(
    admission: Admission,
) -> None:
    stored = issued(approved(admission, created(admission)))
    update = copy.deepcopy(stored)
    update["metadata"]["finalizers"] = ["agentaccounts.dev/revoke"]
    assert admission.mutate("UPDATE", update, stored, OPERATOR) == {}
    same = with_spec(stored, lifetime="1800s")  # 30m, written differently: no spec change
    assert admission.mutate("UPDATE", same, stored, BOB) == {}
