"""Reconciler over the in-memory Kube: issue, refuse, dry-run, wait for approval, revoke.

The real Reconciler, Access, ProviderResolver, CredentialSecrets and Kubernetes provider run here; only
the API server is faked (tests/unit/fakes.py), so what each test asserts is what the operator would
have written to a cluster: status, Events, and the ServiceAccount/Role/RoleBinding/Secret it owns.
The last section holds the fake itself to the behaviour of the API server these tests rely on.
"""

from __future__ import annotations

import base64
import copy
import inspect
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import httpx
import pytest

from agentaccounts import metrics, ownership
from agentaccounts.clock import rfc3339
from agentaccounts.errors import (
    AwaitingApproval,
    Denied,
    NotPermitted,
    ProviderNotFound,
    SecretConflict,
    TemporaryError,
)
from agentaccounts.kube import AlreadyExists, Conflict, Kube, KubeApiError
from agentaccounts.models import AgentAccount, Requester
from agentaccounts.providers.base import Deps
from agentaccounts.providers.kubernetes.rbac import GRANTS_SECRETS_LABEL
from agentaccounts.reconcile import Reconciler
from agentaccounts.settings import Settings
from agentaccounts.stamps import Signer
from unit.fakes import FakeClock, FakeKube, Grant

KEY = b"k" * 32
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
NS = "agents"
UID = "7f1c1e52-0000-4000-8000-000000000001"
SETTINGS = Settings(operator_namespace="ops", leader_election_namespace="ops")
ALICE = Requester(username="alice", uid="u-a", groups=["devs", "system:authenticated"])
SPEC: dict[str, Any] = {
    "providerRef": {"kind": "AccountProvider", "name": "k8s"},
    "lifetime": "30m",
    "scopes": [{"permissions": ["get", "list"], "resources": ["configmaps"]}],
}
NAMES = ("ServiceAccount", "Role", "RoleBinding")
Emitted = tuple[str, str, str]


@dataclass
class Rig:
    """A Reconciler on a FakeKube, with alice allowed to use provider `k8s` and read configmaps."""

    kube: FakeKube
    clock: FakeClock
    signer: Signer
    http: httpx.AsyncClient
    sent: list[httpx.Request]
    events: list[Emitted] = field(default_factory=list)

    def reconciler(self) -> Reconciler:
        deps = Deps(kube=cast(Kube, self.kube), settings=SETTINGS, http=self.http, now=self.clock.now)
        return Reconciler(deps, self.signer)

    def emit(self, kind: str, reason: str, message: str) -> None:
        self.events.append((kind, reason, message))

    def reasons(self) -> list[str]:
        return [reason for _, reason, _ in self.events]

    def account(
        self,
        spec: dict[str, Any] | None = None,
        *,
        name: str = "bot",
        uid: str = UID,
        stamp: bool = True,
        annotations: dict[str, str] | None = None,
        status: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """An AgentAccount as admission would have stored it: stamped by alice (unless `stamp=False`)."""
        spec = copy.deepcopy(spec or SPEC)
        stamps = self.signer.requester_stamp(NS, spec, ALICE, NOW) if stamp else {}
        body: dict[str, Any] = {
            "apiVersion": "agentaccounts.dev/v1alpha1",
            "kind": "AgentAccount",
            "metadata": {
                "name": name,
                "namespace": NS,
                "uid": uid,
                "generation": 1,
                "creationTimestamp": rfc3339(NOW),
                "annotations": {**stamps, **(annotations or {})},
            },
            "spec": spec,
        }
        if status is not None:
            body["status"] = status
        return self.kube.add("AgentAccount", body)

    def provider(self, **policy: Any) -> dict[str, Any]:
        body = {"metadata": {"name": "k8s", "namespace": NS}, "spec": {"kubernetes": {}, "policy": policy}}
        return self.kube.add("AccountProvider", body)

    def status(self, name: str = "bot") -> dict[str, Any]:
        stored = self.kube.stored("AgentAccount", NS, name)
        assert stored is not None
        return dict(stored.get("status") or {})

    def owned(self, uid: str = UID) -> dict[str, list[str]]:
        selector = ownership.selector(uid)
        return {kind: self.kube.names(kind, NS, selector) for kind in (*NAMES, "Secret")}


def use_grant() -> Grant:
    return Grant("use", "accountproviders", group="agentaccounts.dev", name="k8s")


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    clock = FakeClock(NOW)
    kube = FakeKube(now=clock.now)
    sent: list[httpx.Request] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(599)

    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as http:
        rig = Rig(kube, clock, Signer(KEY), http, sent)
        rig.provider()
        kube.allow("alice", use_grant(), Grant("get", "configmaps"), Grant("list", "configmaps"))
        yield rig


@pytest.fixture(autouse=True)
def forget_expiry_metrics() -> Iterator[None]:
    yield
    for uid in (UID, "uid-other"):
        metrics.EXPIRY.discard(uid)


def ready_condition(status: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == "Ready")


def expiry_samples() -> dict[tuple[str, str, str], float]:
    family = next(f for f in metrics.EXPIRY.collect() if f.name.endswith("expiry_timestamp_seconds"))
    return {(s.labels["namespace"], s.labels["name"], s.labels["provider"]): s.value for s in family.samples}


def created_kinds(kube: FakeKube) -> list[str]:
    return [c[1] for c in kube.calls if c[0] == "create"]


# -- issue ----------------------------------------------------------------------------------------


async def test_a_stamped_account_becomes_ready_with_status_recorded(rig: Rig) -> None:
    status = await rig.reconciler().ensure_issued(rig.account(), rig.emit)

    stored = rig.status()
    assert status is not None and status["phase"] == stored["phase"] == "Ready"
    sa = rig.kube.stored("ServiceAccount", NS, "agentaccount-bot")
    assert sa is not None
    assert stored["issuedAt"] == rfc3339(NOW)
    assert stored["expiresAt"] == rfc3339(NOW + timedelta(minutes=30))
    assert stored["secretName"] == "bot-credentials"
    assert stored["provider"] == "kubernetes"
    assert stored["accountRef"] == {
        "kind": "ServiceAccount",
        "name": "agentaccount-bot",
        "namespace": NS,
        "id": sa["metadata"]["uid"],
    }
    assert stored["requester"] == {"username": "alice", "uid": "u-a", "groups": ALICE.groups}
    assert stored["observedGeneration"] == 1
    assert ready_condition(stored)["status"] == "True"
    assert ready_condition(stored)["reason"] == "Issued"
    assert rig.reasons() == ["Issued"]
    assert rig.sent == []  # the kubernetes provider never speaks HTTP


async def test_a_ready_account_owns_a_service_account_role_binding_and_secret(rig: Rig) -> None:
    await rig.reconciler().ensure_issued(rig.account(), rig.emit)

    assert rig.owned() == {
        "ServiceAccount": ["agentaccount-bot"],
        "Role": ["agentaccount-bot"],
        "RoleBinding": ["agentaccount-bot"],
        "Secret": ["bot-credentials"],
    }
    role = rig.kube.stored("Role", NS, "agentaccount-bot") or {}
    assert role["rules"] == [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]
    binding = rig.kube.stored("RoleBinding", NS, "agentaccount-bot") or {}
    assert binding["roleRef"]["name"] == "agentaccount-bot"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "agentaccount-bot", "namespace": NS}]
    for kind in NAMES:
        owner = (rig.kube.stored(kind, NS, "agentaccount-bot") or {})["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["uid"]) == ("AgentAccount", UID)
    assert [t["seconds"] for t in rig.kube.tokens] == [1800]  # the lifetime, no more


async def test_the_secret_holds_a_kubeconfig_with_the_issued_token(rig: Rig) -> None:
    await rig.reconciler().ensure_issued(rig.account(), rig.emit)

    secret = rig.kube.stored("Secret", NS, "bot-credentials") or {}
    assert secret["metadata"]["labels"][ownership.UID_LABEL] == UID
    assert secret["metadata"]["annotations"]["agentaccounts.dev/expires-at"] == rfc3339(
        NOW + timedelta(minutes=30)
    )
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    token = rig.kube.tokens[0]["token"]
    assert data["token"] == token
    config = json.loads(data["kubeconfig"])
    assert config["users"][0]["user"]["token"] == token
    assert config["contexts"][0]["context"]["namespace"] == NS
    assert config["clusters"][0]["cluster"]["server"] == FakeKube.server


async def test_expiry_and_account_ref_are_in_status_before_the_next_object_is_created(rig: Rig) -> None:
    await rig.reconciler().ensure_issued(rig.account(), rig.emit)

    calls = [c for c in rig.kube.writes if c[0] in ("create", "patch_account_status")]
    first_create = next(i for i, c in enumerate(calls) if c[0] == "create")
    timing = next(i for i, c in enumerate(calls) if c[0] == "patch_account_status" and "expiresAt" in c[3])
    ref = next(i for i, c in enumerate(calls) if c[0] == "patch_account_status" and "accountRef" in c[3])
    assert timing < first_create  # a crash never extends a lifetime
    assert [c[1] for c in calls[:ref] if c[0] == "create"] == ["ServiceAccount"]  # recorded at once


async def test_an_up_to_date_ready_account_is_left_alone_without_a_read(rig: Rig) -> None:
    await rig.reconciler().ensure_issued(rig.account(), rig.emit)
    rig.kube.calls.clear()

    stored = rig.kube.stored("AgentAccount", NS, "bot") or {}
    assert await rig.reconciler().ensure_issued(copy.deepcopy(stored), rig.emit) is None
    assert rig.kube.calls == []  # at a start with 10,000 accounts: 10,000 reads not made


async def test_an_account_being_deleted_is_never_issued_again(rig: Rig) -> None:
    """A create handler re-run after the deletion began (a killed operator had not recorded it done)
    holds a stale body; deletion bumped the generation, so without this the account looks out of date."""
    body = rig.account()
    await rig.reconciler().ensure_issued(copy.deepcopy(body), rig.emit)
    stored = rig.kube.custom[("AgentAccount", NS, "bot")]
    stored["metadata"]["deletionTimestamp"] = rfc3339(NOW)
    stored["metadata"]["generation"] = 2
    rig.kube.calls.clear()

    assert await rig.reconciler().ensure_issued(body, rig.emit) is None
    assert rig.kube.writes == []
    assert len(rig.kube.tokens) == 1


async def test_issuing_again_after_a_crash_adopts_everything_and_keeps_the_expiry(rig: Rig) -> None:
    await rig.reconciler().ensure_issued(rig.account(), rig.emit)
    first = rig.status()
    # As if the process died after the Secret was written but before status said Ready.
    rig.kube.custom[("AgentAccount", NS, "bot")]["status"] = {
        k: v for k, v in first.items() if k in ("issuedAt", "expiresAt", "accountRef")
    }
    rig.clock.advance(60)

    await rig.reconciler().ensure_issued(
        copy.deepcopy(rig.kube.stored("AgentAccount", NS, "bot") or {}), rig.emit
    )

    assert rig.status()["phase"] == "Ready"
    assert rig.status()["expiresAt"] == first["expiresAt"]
    assert rig.owned() == {
        **{kind: ["agentaccount-bot"] for kind in NAMES},
        "Secret": ["bot-credentials"],
    }
    assert [c[1] for c in rig.kube.writes if c[0] == "replace"] == ["Secret"]  # new token, same Secret


async def test_an_approved_account_is_issued(rig: Rig) -> None:
    rig.provider(requireApproval=True)
    approval = rig.signer.approval_stamp(UID, SPEC, "Approved", "bob", NOW)

    await rig.reconciler().ensure_issued(rig.account(annotations=approval), rig.emit)

    assert rig.status()["phase"] == "Ready"
    assert rig.status()["approval"]["by"] == "bob"


# -- refusals -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stamp", "tamper", "rule"),
    [
        (False, False, "no requester was recorded"),
        (True, True, "does not match this account's namespace and spec"),
    ],
    ids=["no-stamp", "spec-edited-after-stamping"],
)
async def test_without_a_valid_requester_stamp_nothing_is_issued(
    rig: Rig, stamp: bool, tamper: bool, rule: str
) -> None:
    body = rig.account(stamp=stamp)
    if tamper:
        body["spec"]["scopes"][0]["permissions"].append("watch")

    with pytest.raises(NotPermitted, match=rule):
        await rig.reconciler().ensure_issued(body, rig.emit)

    status = rig.status()
    assert status["phase"] == "Failed"
    assert ready_condition(status)["reason"] == "NotPermitted"
    assert ready_condition(status)["message"].startswith("rule requester-recorded")
    assert created_kinds(rig.kube) == [] and rig.kube.tokens == []
    assert rig.kube.sar_calls == []  # nobody's rights are asked about without a requester
    assert rig.events == [("Warning", "IssueFailed", ready_condition(status)["message"])]


async def test_a_requester_lacking_a_permission_fails_naming_it(rig: Rig) -> None:
    rig.kube.grants["alice"] = [use_grant(), Grant("get", "configmaps")]  # no list

    with pytest.raises(NotPermitted):
        await rig.reconciler().ensure_issued(rig.account(), rig.emit)

    status = rig.status()
    assert status["phase"] == "Failed"
    assert ready_condition(status)["reason"] == "NotPermitted"
    assert ready_condition(status)["message"].startswith(
        "rule delegation: alice may not list configmaps in namespace agents"
    )
    assert created_kinds(rig.kube) == []


async def test_a_requester_without_use_on_the_provider_is_refused(rig: Rig) -> None:
    rig.kube.grants["alice"] = [Grant("get", "configmaps"), Grant("list", "configmaps")]

    with pytest.raises(NotPermitted, match="rule provider-use: alice may not use AccountProvider 'k8s'"):
        await rig.reconciler().ensure_issued(rig.account(), rig.emit)
    assert created_kinds(rig.kube) == []


async def test_a_missing_provider_leaves_the_account_pending(rig: Rig) -> None:
    del rig.kube.custom[("AccountProvider", NS, "k8s")]

    with pytest.raises(ProviderNotFound) as caught:
        await rig.reconciler().ensure_issued(rig.account(), rig.emit)

    assert isinstance(caught.value, TemporaryError)
    assert caught.value.delay == SETTINGS.provider_retry_seconds
    status = rig.status()
    assert status["phase"] == "Pending"
    assert ready_condition(status)["reason"] == "ProviderNotFound"
    assert created_kinds(rig.kube) == []
    assert rig.events == [("Warning", "ProviderNotFound", ready_condition(status)["message"])]


async def test_a_foreign_secret_with_the_target_name_is_left_untouched(rig: Rig) -> None:
    foreign = rig.kube.add_secret(NS, "bot-credentials", {"team": "a"}, data={"password": "hunter2"})
    before = copy.deepcopy(foreign)

    with pytest.raises(SecretConflict):
        await rig.reconciler().ensure_issued(rig.account(), rig.emit)

    status = rig.status()
    assert status["phase"] == "Failed"
    assert ready_condition(status)["reason"] == "SecretConflict"
    assert rig.kube.stored("Secret", NS, "bot-credentials") == before
    assert created_kinds(rig.kube) == []  # refused before any identity exists
    assert "issuedAt" not in status  # nor is a lifetime started


async def test_credentials_never_go_where_a_provider_reads_its_own_credential(rig: Rig) -> None:
    # Before: the account wrote its kubeconfig and token into a not-yet-existing Secret that a
    # Cloudflare provider names as its parent token, and that token was then sent to Cloudflare.
    cloudflare = {"accountId": "a" * 32, "apiTokenSecretRef": {"name": "squat"}}
    rig.kube.add(
        "AccountProvider", {"metadata": {"name": "cf", "namespace": NS}, "spec": {"cloudflare": cloudflare}}
    )

    with pytest.raises(SecretConflict, match="AccountProvider cf reads its own credential"):
        await rig.reconciler().ensure_issued(rig.account({**SPEC, "secretName": "squat"}), rig.emit)
    assert rig.kube.stored("Secret", NS, "squat") is None
    assert created_kinds(rig.kube) == []


async def test_a_secret_name_another_agent_is_granted_is_not_written(rig: Rig) -> None:
    labels = {**ownership.labels("thief", "uid-thief"), GRANTS_SECRETS_LABEL: "true"}
    rule = {
        "apiGroups": [""],
        "resources": ["secrets"],
        "verbs": ["get"],
        "resourceNames": ["bot-credentials"],
    }
    meta = {"name": "agentaccount-thief", "namespace": NS, "labels": labels}
    rig.kube.add_object("Role", {"metadata": meta, "rules": [rule]})

    with pytest.raises(SecretConflict, match="granted to another agent by Role agents/agentaccount-thief"):
        await rig.reconciler().ensure_issued(rig.account(), rig.emit)

    assert rig.kube.stored("Secret", NS, "bot-credentials") is None
    assert rig.status()["phase"] == "Failed"


async def test_a_dry_run_plans_and_creates_nothing(rig: Rig) -> None:
    status = await rig.reconciler().ensure_issued(rig.account({**SPEC, "dryRun": True}), rig.emit)

    stored = rig.status()
    assert status is not None and stored["phase"] == "DryRun"
    assert stored["plan"] == {
        "serviceAccount": "agentaccount-bot",
        "role": {
            "name": "agentaccount-bot",
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
        },
        "lifetime": "30m",
        "approvalRequired": False,
    }
    assert "expiresAt" not in stored and "accountRef" not in stored
    assert created_kinds(rig.kube) == [] and rig.kube.tokens == []
    assert rig.reasons() == ["DryRun"]


async def test_require_approval_without_an_approval_waits(rig: Rig) -> None:
    rig.provider(requireApproval=True)

    with pytest.raises(AwaitingApproval, match="agentaccounts approve bot -n agents"):
        await rig.reconciler().ensure_issued(rig.account(), rig.emit)

    status = rig.status()
    assert status["phase"] == "Pending"
    assert ready_condition(status)["reason"] == "AwaitingApproval"
    assert created_kinds(rig.kube) == []


async def test_a_denied_account_fails(rig: Rig) -> None:
    rig.provider(requireApproval=True)
    denial = rig.signer.approval_stamp(UID, SPEC, "Denied", "bob", NOW)

    with pytest.raises(Denied, match="denied by bob"):
        await rig.reconciler().ensure_issued(rig.account(annotations=denial), rig.emit)

    assert rig.status()["phase"] == "Failed"
    assert created_kinds(rig.kube) == []


async def test_an_event_is_emitted_once_per_reason_change(rig: Rig) -> None:
    del rig.kube.custom[("AccountProvider", NS, "k8s")]
    body = rig.account()
    for _ in range(3):
        with pytest.raises(ProviderNotFound):
            await rig.reconciler().ensure_issued(body, rig.emit)
    assert rig.reasons() == ["ProviderNotFound"]

    rig.provider()
    rig.kube.grants["alice"] = [use_grant()]
    for _ in range(2):
        with pytest.raises(NotPermitted):
            await rig.reconciler().ensure_issued(body, rig.emit)
    assert rig.reasons() == ["ProviderNotFound", "IssueFailed"]

    rig.kube.allow("alice", Grant("get", "configmaps"), Grant("list", "configmaps"))
    await rig.reconciler().ensure_issued(body, rig.emit)
    assert rig.reasons() == ["ProviderNotFound", "IssueFailed", "Issued"]


async def test_an_account_deleted_or_replaced_meanwhile_is_not_touched(rig: Rig) -> None:
    body = rig.account()
    replaced = copy.deepcopy(body)
    replaced["metadata"]["uid"] = "uid-newer"
    rig.kube.custom[("AgentAccount", NS, "bot")] = replaced

    assert await rig.reconciler().ensure_issued(body, rig.emit) is None
    del rig.kube.custom[("AgentAccount", NS, "bot")]
    assert await rig.reconciler().ensure_issued(body, rig.emit) is None
    assert rig.kube.writes == [] and rig.events == []


# -- revoke ---------------------------------------------------------------------------------------


async def issued(rig: Rig) -> dict[str, Any]:
    await rig.reconciler().ensure_issued(rig.account(), rig.emit)
    rig.events.clear()
    rig.kube.calls.clear()
    return copy.deepcopy(rig.kube.stored("AgentAccount", NS, "bot") or {})


def add_foreign_objects(kube: FakeKube) -> None:
    """Another account's objects in the same namespace: revocation must spare them."""
    meta = ownership.metadata("agentaccount-other", NS, "other", "uid-other")
    for kind in NAMES:
        kube.add_object(kind, {"metadata": copy.deepcopy(meta)})
    kube.add_secret(NS, "other-credentials", ownership.labels("other", "uid-other"))


async def test_revoke_finds_its_objects_by_name_and_only_what_carries_its_label(rig: Rig) -> None:
    # By name first (one object a call), by label for what is not there: a labelled ServiceAccount
    # under another name still goes; an unlabelled object with our name was never ours and stays.
    body = await issued(rig)
    sa = rig.kube.stored("ServiceAccount", NS, "agentaccount-bot") or {}
    rig.kube.objects["ServiceAccount"].pop((NS, "agentaccount-bot"))
    renamed = copy.deepcopy(sa)
    renamed["metadata"]["name"] = "made-by-an-older-version"
    rig.kube.add_object("ServiceAccount", renamed)
    role = rig.kube.objects["Role"][(NS, "agentaccount-bot")]
    role["metadata"]["labels"] = {}  # now someone else's Role that happens to have our name
    rig.clock.advance(30 * 60)

    await rig.reconciler().revoke(body, "expired", rig.emit)

    assert rig.kube.names("ServiceAccount", NS) == []
    assert rig.kube.names("Role", NS) == ["agentaccount-bot"]  # not ours: untouched
    assert rig.kube.names("RoleBinding", NS) == []


async def test_revoke_on_expiry_deletes_what_carries_the_uid_label_and_records_expired(rig: Rig) -> None:
    body = await issued(rig)
    add_foreign_objects(rig.kube)
    rig.clock.advance(30 * 60)

    patch = await rig.reconciler().revoke(body, "expired", rig.emit)

    assert rig.owned() == {kind: [] for kind in (*NAMES, "Secret")}
    assert rig.owned("uid-other") == {
        **{kind: ["agentaccount-other"] for kind in NAMES},
        "Secret": ["other-credentials"],
    }
    # Each by its name, with its own uid as the precondition: never a scan of the namespace.
    deleted = sorted((c[1], c[3]) for c in rig.kube.calls if c[0] == "delete")
    assert deleted == sorted([*((kind, "agentaccount-bot") for kind in NAMES), ("Secret", "bot-credentials")])
    assert all(c[4] for c in rig.kube.calls if c[0] == "delete")
    assert not [c for c in rig.kube.calls if c[0] == "delete_labelled"]
    status = rig.status()
    assert patch is not None and status["phase"] == patch["phase"] == "Expired"
    assert status["revokedAt"] == rfc3339(NOW + timedelta(minutes=30))
    assert ready_condition(status)["reason"] == "Expired"
    assert status["accountRef"]["name"] == "agentaccount-bot"  # the audit record keeps what it was
    assert rig.reasons() == ["Expired"]


async def test_revoke_on_deletion_of_an_expired_account_does_nothing(rig: Rig) -> None:
    body = await issued(rig)
    await rig.reconciler().revoke(body, "expired", rig.emit)
    expired = copy.deepcopy(rig.kube.stored("AgentAccount", NS, "bot") or {})
    rig.kube.calls.clear()
    rig.events.clear()

    assert await rig.reconciler().revoke(expired, "deleted", rig.emit) is None
    assert rig.kube.calls == [] and rig.events == []


async def test_revoke_on_deletion_of_a_ready_account_deletes_everything_and_writes_no_status(
    rig: Rig,
) -> None:
    body = await issued(rig)

    assert await rig.reconciler().revoke(body, "deleted", rig.emit) is None

    assert rig.owned() == {kind: [] for kind in (*NAMES, "Secret")}
    assert rig.kube.status_patches(NS, "bot") == []
    assert rig.reasons() == ["Revoked"]


async def test_revoke_when_the_provider_is_gone_still_removes_kubernetes_objects(rig: Rig) -> None:
    body = await issued(rig)
    del rig.kube.custom[("AccountProvider", NS, "k8s")]

    await rig.reconciler().revoke(body, "expired", rig.emit)  # a fresh reconciler: nothing cached

    assert rig.owned() == {kind: [] for kind in (*NAMES, "Secret")}
    assert rig.status()["phase"] == "Expired"
    assert "RevokeIncomplete" not in rig.reasons()


async def test_deleting_an_account_whose_spec_no_longer_validates_still_revokes(rig: Rig) -> None:
    # Before: parse() raised InvalidSpec (a PermanentError) and kopf dropped the finalizer with the
    # ServiceAccount, Role, RoleBinding and Secret all still there.
    body = await issued(rig)
    body["spec"]["keepExpiredFor"] = "soon"

    assert await rig.reconciler().revoke(body, "deleted", rig.emit) is None
    assert rig.owned() == {kind: [] for kind in (*NAMES, "Secret")}
    assert rig.reasons() == ["Revoked"]


async def test_an_identity_that_could_not_be_revoked_is_never_called_revoked(rig: Rig) -> None:
    # A Cloudflare identity whose provider object is gone: nothing can revoke it but its own expiry.
    status = {
        "phase": "Ready",
        "provider": "cloudflare",
        "expiresAt": rfc3339(NOW),
        "accountRef": {"kind": "APIToken", "id": "tok-1"},
    }
    spec = {**SPEC, "providerRef": {"kind": "AccountProvider", "name": "gone"}}
    body = rig.account(spec, status=status)
    rig.clock.advance(1)

    patch = await rig.reconciler().revoke(body, "expired", rig.emit)

    assert patch is not None and patch["phase"] == "Expired"
    condition = ready_condition(rig.status())
    assert condition["reason"] == "RevokeIncomplete"
    assert "NOT revoked" in condition["message"] and "identity revoked" not in condition["message"]
    assert f"it ends at {rfc3339(NOW)}" in condition["message"]
    warning = [m for kind, reason, m in rig.events if (kind, reason) == ("Warning", "RevokeIncomplete")]
    assert len(warning) == 1 and "'gone' is gone" in warning[0]


async def test_a_provider_refusing_revocation_is_recorded_not_hidden(rig: Rig) -> None:
    body = await issued(rig)
    rig.kube.fail("delete", KubeApiError("delete: HTTP 403 forbidden", 403))

    assert await rig.reconciler().revoke(body, "deleted", rig.emit) is None  # the finalizer may go
    revoked = [m for _, reason, m in rig.events if reason == "Revoked"]
    assert rig.reasons()[0] == "RevokeIncomplete" and len(revoked) == 1
    assert "NOT revoked" in revoked[0] and "ProviderRejected" in revoked[0]


async def test_revoke_removes_the_expiry_metric(rig: Rig) -> None:
    body = await issued(rig)
    assert (NS, "bot", "kubernetes") in expiry_samples()

    await rig.reconciler().revoke(body, "expired", rig.emit)
    assert (NS, "bot", "kubernetes") not in expiry_samples()


async def test_a_failed_kubernetes_delete_is_a_retryable_error_and_records_nothing(rig: Rig) -> None:
    body = await issued(rig)
    rig.kube.fail("delete", KubeApiError("delete: HTTP 503 unavailable", 503))

    with pytest.raises(TemporaryError, match="HTTP 503"):
        await rig.reconciler().revoke(body, "expired", rig.emit)
    assert rig.status()["phase"] == "Ready"
    assert rig.events == []


# -- remember -------------------------------------------------------------------------------------


def account_with(status: dict[str, Any]) -> AgentAccount:
    return AgentAccount.from_body(
        {"metadata": {"name": "bot", "namespace": NS, "uid": UID}, "spec": SPEC, "status": status}
    )


async def test_remember_sets_the_expiry_metric_of_a_ready_account(rig: Rig) -> None:
    expires = NOW + timedelta(minutes=5)
    status = {"phase": "Ready", "provider": "kubernetes", "expiresAt": rfc3339(expires)}

    rig.reconciler().remember(account_with(status))

    assert expiry_samples()[(NS, "bot", "kubernetes")] == expires.timestamp()


@pytest.mark.parametrize("phase", ["Pending", "Expired", "Failed"])
async def test_remember_ignores_an_account_that_is_not_ready(rig: Rig, phase: str) -> None:
    status = {"phase": phase, "provider": "kubernetes", "expiresAt": rfc3339(NOW)}

    rig.reconciler().remember(account_with(status))

    assert (NS, "bot", "kubernetes") not in expiry_samples()


# -- the fake, held to the API server -------------------------------------------------------------


@pytest.mark.parametrize(
    "method", sorted(m for m in vars(FakeKube) if not m.startswith("_") and callable(getattr(Kube, m, None)))
)
def test_the_fake_mirrors_the_signatures_of_kube(method: str) -> None:
    fake, real = getattr(FakeKube, method), getattr(Kube, method)
    assert inspect.signature(fake) == inspect.signature(real)
    assert inspect.iscoroutinefunction(fake) == inspect.iscoroutinefunction(real)


async def test_the_fake_refuses_a_duplicate_create_and_assigns_uid_and_version() -> None:
    kube = FakeKube()
    body = {"metadata": {"name": "a", "namespace": NS}}
    created = await kube.create("ConfigMap", NS, body)
    assert created is not None and created["metadata"]["uid"] and created["metadata"]["resourceVersion"]
    assert "uid" not in body["metadata"]  # the caller's body is not the stored object
    with pytest.raises(AlreadyExists):
        await kube.create("ConfigMap", NS, body)


async def test_the_fake_refuses_a_replace_with_a_stale_resource_version() -> None:
    kube = FakeKube()
    created = await kube.create("ConfigMap", NS, {"metadata": {"name": "a", "namespace": NS}}) or {}
    replaced = await kube.replace("ConfigMap", NS, {**created, "data": {"k": "1"}}) or {}
    assert replaced["metadata"]["resourceVersion"] != created["metadata"]["resourceVersion"]
    with pytest.raises(Conflict):
        await kube.replace("ConfigMap", NS, {**created, "data": {"k": "2"}})
    assert (kube.stored("ConfigMap", NS, "a") or {})["data"] == {"k": "1"}


async def test_the_fake_merge_patches_status() -> None:
    kube = FakeKube()
    kube.add("AgentAccount", {"metadata": {"name": "a", "namespace": NS}, "status": {"x": 1, "y": {"z": 2}}})
    await kube.patch_account_status(NS, "a", {"x": None, "y": {"w": 3}, "list": [1]})
    assert (kube.stored("AgentAccount", NS, "a") or {})["status"] == {"y": {"z": 2, "w": 3}, "list": [1]}


async def test_the_fake_selects_by_every_label_of_the_selector() -> None:
    kube = FakeKube()
    kube.add_secret(NS, "both", {"a": "1", "b": "2"})
    kube.add_secret(NS, "one", {"a": "1"})
    kube.add_secret("elsewhere", "far", {"a": "1", "b": "2"})
    assert [s["metadata"]["name"] for s in await kube.list_objects("Secret", NS, "a=1,b=2")] == ["both"]
    await kube.delete_labelled("Secret", NS, "a=1")
    assert kube.names("Secret", NS) == [] and kube.names("Secret", "elsewhere") == ["far"]


async def test_the_fake_refuses_tokens_shorter_than_ten_minutes() -> None:
    kube = FakeKube()
    kube.add_object("ServiceAccount", {"metadata": {"name": "sa", "namespace": NS}})
    with pytest.raises(KubeApiError) as caught:
        await kube.request_token(NS, "sa", 599)
    assert caught.value.status == 422


async def test_a_lifetime_shortened_into_the_past_is_ended_not_reissued(rig: Rig) -> None:
    # `agentaccounts revoke`: before, reconcile minted a fresh token and rewrote the Secret only for
    # the timer to revoke both a moment later.
    await issued(rig)
    rig.clock.advance(5 * 60)
    stored = rig.kube.custom[("AgentAccount", NS, "bot")]  # the edit, as the API server stores it
    stored["spec"]["lifetime"] = "2m"
    stored["metadata"]["generation"] = 2
    rig.kube.calls.clear()

    patch = await rig.reconciler().ensure_issued(copy.deepcopy(stored), rig.emit)  # kopf's body: the edit

    assert patch is not None and patch["expiresAt"] == rfc3339(NOW + timedelta(minutes=2))
    assert not rig.kube.called("request_token") and not rig.kube.called("create")
    assert rig.status()["expiresAt"] == rfc3339(NOW + timedelta(minutes=2))
