"""Activity: attribution by credential id, the bounded trail, the audit stream, the batching writer."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agentaccounts import metrics
from agentaccounts.activity import attribution, stream
from agentaccounts.activity.attribution import Identity, Index, identity_of, parse_event, remember_id
from agentaccounts.activity.collector import Collector
from agentaccounts.activity.receiver import sender_allowed
from agentaccounts.activity.trail import MAX_PAIRS, MAX_RECENT, MAX_RECENT_BYTES, Entry, Trail
from agentaccounts.providers.kubernetes.provider import credential_id
from unit.fakes import FakeKube

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SA = "system:serviceaccount:agents:agentaccount-bot"


def event(
    verb: str = "get",
    resource: str = "configmaps",
    code: int = 200,
    jti: str = "JTI=one",
    username: str = SA,
    audit_id: str = "a1",
    at: str = "2026-12-01T12:00:01.000001Z",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": audit_id,
        "stage": "ResponseComplete",
        "requestURI": f"/api/v1/namespaces/agents/{resource}",
        "verb": verb,
        "user": {
            "username": username,
            "groups": ["system:serviceaccounts"],
            "extra": {attribution.CREDENTIAL_ID_KEY: [jti]} if jti else {},
        },
        "objectRef": {"resource": resource, "namespace": "agents", "apiVersion": "v1", **extra},
        "responseStatus": {"code": code},
        "requestReceivedTimestamp": at,
        "stageTimestamp": at,
    }


@pytest.fixture(autouse=True)
def forget_expiry_series() -> Any:
    """AccountStatus.issued() records the account's expiry series; other modules count those."""
    yield
    metrics.EXPIRY.discard("uid-bot")


def account(name: str = "bot", uid: str = "uid-bot", ids: list[str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "agents", "name": name, "uid": uid},
        "spec": {},
        "status": {
            "phase": "Ready",
            "accountRef": {"kind": "ServiceAccount", "name": f"agentaccount-{name}", "namespace": "agents"},
            "credentialIds": ["JTI=one"] if ids is None else ids,
            "requester": {"username": "alice"},
        },
    }


# -- attribution --------------------------------------------------------------------------------


def test_an_event_is_parsed_into_who_and_what() -> None:
    request = parse_event(event(name="app-config", subresource="status"))
    assert request is not None
    assert (request.credential_id, request.username) == ("JTI=one", SA)
    assert request.entry == Entry(
        "2026-12-01T12:00:01.000001Z", "get", "configmaps/status", "app-config", "agents", 200, "a1"
    )


@pytest.mark.parametrize(
    "changed",
    [
        {"stage": "ResponseStarted"},  # a watch's first stage: its ResponseComplete counts it once
        {"user": {"username": "alice", "extra": {attribution.CREDENTIAL_ID_KEY: ["X509SHA256=ab"]}}},
        {"user": {"username": SA}},  # a token without a credential id (an older API server)
    ],
)
def test_what_cannot_be_attributed_is_not_parsed(changed: dict[str, Any]) -> None:
    assert parse_event({**event(), **changed}) is None


def test_a_non_resource_request_is_named_by_its_path() -> None:
    body = {**event(), "objectRef": None, "requestURI": "/apis/apps/v1?timeout=32s"}
    request = parse_event(body)
    assert request is not None and request.entry.resource == "/apis/apps/v1"


def test_attribution_is_by_credential_id_and_checked_against_the_username() -> None:
    index = Index()
    found = identity_of(account())
    assert found is not None
    index.learn(*found)
    ours = parse_event(event())
    assert ours is not None and index.attribute(ours) == found[0]
    # Same ServiceAccount name, another token (e.g. the ServiceAccount recreated by someone else):
    other_token = parse_event(event(jti="JTI=someone-elses"))
    assert other_token is not None and index.attribute(other_token) is None
    # Our credential id presented as another identity: not ours either.
    borrowed = parse_event(event(username="system:serviceaccount:agents:other"))
    assert borrowed is not None and index.attribute(borrowed) is None
    index.forget("uid-bot")
    assert index.attribute(ours) is None and len(index) == 0


def test_an_account_without_a_recorded_token_has_no_identity() -> None:
    assert identity_of(account(ids=[])) is None
    cloudflare = account()
    cloudflare["status"]["accountRef"] = {"kind": "APIToken", "id": "t1"}
    assert identity_of(cloudflare) is None


def test_credential_ids_are_bounded_newest_last() -> None:
    ids: list[str] = []
    for i in range(40):
        ids = remember_id(ids, f"JTI={i}")
    assert len(ids) == attribution.MAX_CREDENTIAL_IDS and ids[-1] == "JTI=39"
    assert remember_id(ids, "") == ids and remember_id(ids, "JTI=39") == ids


def test_the_credential_id_is_the_tokens_jti() -> None:
    claims = base64.urlsafe_b64encode(json.dumps({"jti": "4b7c-77"}).encode()).decode().rstrip("=")
    assert credential_id(f"eyJhbGciOiJSUzI1NiJ9.{claims}.c2ln") == "JTI=4b7c-77"
    assert credential_id("not-a-jwt") == ""
    assert credential_id("a.!!!.b") == ""


# -- the trail ----------------------------------------------------------------------------------


def entries(n: int, code: int = 200, start: int = 0) -> list[Entry]:
    return [
        Entry(
            f"2026-12-01T12:{i // 60:02d}:{i % 60:02d}.{i:06d}Z",
            "get",
            "configmaps",
            f"cm{i}",
            "agents",
            code,
            f"id{i}",
        )
        for i in range(start, start + n)
    ]


def test_the_summary_counts_requests_and_denials_in_order() -> None:
    trail = Trail()
    assert trail.add([*entries(3), *entries(2, code=403, start=3)][::-1]) == 5
    status = trail.status(NOW)
    assert (status["requests"], status["denied"]) == (5, 2)
    assert [e["code"] for e in status["recent"]] == [200, 200, 200, 403, 403]
    assert status["firstAt"] == "2026-12-01T12:00:00.000000Z"
    assert status["lastAt"] == "2026-12-01T12:00:04.000004Z"
    assert status["busiest"] == [{"verb": "get", "resource": "configmaps", "count": 5}]


def test_a_resent_batch_is_not_counted_twice() -> None:
    trail = Trail()
    trail.add(entries(3))
    assert trail.add(entries(3)) == 0 and trail.requests == 3


def test_status_is_the_memory_a_restart_continues_from() -> None:
    first = Trail()
    first.add(entries(3))
    first.note("Cloudflare records writes only", complete=False)
    again = Trail(json.loads(json.dumps(first.status(NOW))))
    again.add(entries(2, start=3))
    assert (again.requests, len(again.recent), again.notes, again.complete) == (
        5,
        5,
        ["Cloudflare records writes only"],
        False,
    )


def test_the_recent_trail_is_bounded_by_count_and_bytes() -> None:
    trail = Trail()
    trail.add(entries(MAX_RECENT + 50))
    assert len(trail.recent) == MAX_RECENT and trail.requests == MAX_RECENT + 50
    assert trail.recent[-1].audit_id == f"id{MAX_RECENT + 49}"  # the newest are kept
    big = [
        Entry(f"2026-12-01T12:{i // 60:02d}:{i % 60:02d}Z", "get", "x" * 400, audit_id=str(i))
        for i in range(250)
    ]
    trail = Trail()
    trail.add(big)
    size = len(json.dumps(trail.status(NOW)["recent"]))
    assert size <= MAX_RECENT_BYTES + 1024 and len(trail.recent) < 250
    assert trail.recent[-1].audit_id == "249"


def test_the_busiest_pairs_are_bounded_and_keep_the_heavy_hitters() -> None:
    trail = Trail()
    trail.add([Entry("t", "get", "hot", audit_id=f"h{i}") for i in range(100)])
    trail.add([Entry("t", "list", f"r{i}", audit_id=f"r{i}") for i in range(MAX_PAIRS * 3)])
    assert len(trail.pairs) == MAX_PAIRS
    assert trail.busiest(1) == [{"verb": "get", "resource": "hot", "count": 100}]


# -- the audit stream ---------------------------------------------------------------------------


def test_stream_lines_are_json_with_the_account_and_no_credential(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    stream.configure(str(log))
    try:
        identity = Identity("agents", "bot", "uid-bot", SA, "alice")
        stream.request(identity, entries(1)[0])
        status = {
            "requester": {"username": "alice"},
            "provider": "kubernetes",
            "issuedAt": "2026-12-01T12:00:00Z",
        }
        stream.decision("issued", "agents", "bot", "uid-bot", status, scopes=[{"permissions": ["get"]}])
    finally:
        stream.configure("")
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["kind"] for line in lines] == ["request", "decision"]
    assert lines[0]["account"] == {"namespace": "agents", "name": "bot", "uid": "uid-bot"}
    assert (lines[0]["requester"], lines[0]["verb"], lines[0]["code"]) == ("alice", "get", 200)
    assert (lines[1]["event"], lines[1]["requester"], lines[1]["provider"]) == (
        "issued",
        "alice",
        "kubernetes",
    )
    with pytest.raises(AssertionError):
        stream.decision("something-else", "agents", "bot", "", {})


# -- the sender check ---------------------------------------------------------------------------


def test_only_the_expected_subject_may_post() -> None:
    cert = {"subject": ((("commonName", "kube-apiserver-audit"),), (("organizationName", "system"),))}
    assert sender_allowed(cert, "kube-apiserver-audit", "")
    assert sender_allowed(cert, "kube-apiserver-audit", "system")
    assert not sender_allowed(cert, "kube-apiserver-audit", "other-org")
    assert not sender_allowed({"subject": ((("commonName", "mallory"),),)}, "kube-apiserver-audit", "")
    assert not sender_allowed(None, "kube-apiserver-audit", "")


# -- the collector ------------------------------------------------------------------------------


async def test_the_collector_writes_one_patch_per_account_per_flush() -> None:
    kube = FakeKube(lambda: NOW)
    kube.add("AgentAccount", account())
    kube.add("AgentAccount", account("other", "uid-other", ["JTI=two"]))
    collector = Collector(kube, lambda: NOW, [])  # type: ignore[arg-type]
    await collector.load()
    other_sa = "system:serviceaccount:agents:agentaccount-other"
    batch = [event(audit_id=f"e{i}", code=403 if i >= 3 else 200) for i in range(5)]
    batch.append(event(jti="JTI=two", username=other_sa, audit_id="o1"))
    assert collector.accept(batch) == 6
    assert await collector.flush() == 2
    ours = kube.custom[("AgentAccount", "agents", "bot")]["status"]["activity"]
    theirs = kube.custom[("AgentAccount", "agents", "other")]["status"]["activity"]
    assert (ours["requests"], ours["denied"], theirs["requests"]) == (5, 2, 1)
    assert len(kube.status_patches("agents", "bot")) == 1
    assert await collector.flush() == 0  # nothing new, nothing written


async def test_an_unknown_token_is_held_until_its_account_is_listed() -> None:
    kube = FakeKube(lambda: NOW)
    collector = Collector(kube, lambda: NOW, [])  # type: ignore[arg-type]
    await collector.load()
    assert collector.accept([event()]) == 0 and len(collector.held) == 1
    kube.add("AgentAccount", account())  # status now records the token
    await collector._refresh()
    assert not collector.held and await collector.flush() == 1


async def test_a_deleted_or_replaced_account_is_never_written() -> None:
    kube = FakeKube(lambda: NOW)
    kube.add("AgentAccount", account())
    collector = Collector(kube, lambda: NOW, [])  # type: ignore[arg-type]
    await collector.load()
    collector.accept([event()])
    del kube.custom[("AgentAccount", "agents", "bot")]
    kube.add("AgentAccount", account(uid="uid-new", ids=["JTI=new"]))  # same name, a new record
    assert await collector.flush() == 0
    assert "activity" not in kube.custom[("AgentAccount", "agents", "bot")]["status"]
    assert collector.accept([event()]) == 0  # forgotten


async def test_only_the_leader_writes() -> None:
    kube = FakeKube(lambda: NOW)
    kube.add("AgentAccount", account())
    leading = False
    collector = Collector(kube, lambda: NOW, [], lambda: leading)  # type: ignore[arg-type]
    await collector.load()
    collector.accept([event()])
    assert await collector.flush() == 0
    leading = True
    assert await collector.flush() == 1


# -- where the operator records and merges --------------------------------------------------------


def agent_account(status: dict[str, Any] | None = None) -> Any:
    from agentaccounts.models import AgentAccount

    body = account()
    body["spec"] = {
        "providerRef": {"kind": "ClusterAccountProvider", "name": "in-cluster"},
        "scopes": [{"permissions": ["get"], "resources": ["configmaps"]}],
    }
    body["status"] = status or {}
    return AgentAccount.from_body(body)


async def test_issuing_records_the_credential_id_and_tells_the_collector(tmp_path: Path) -> None:
    from agentaccounts.account_status import AccountStatus
    from agentaccounts.models import AccountRef
    from agentaccounts.providers.base import Issued

    kube = FakeKube(lambda: NOW)
    kube.add("AgentAccount", account(ids=[]))
    status = AccountStatus(kube, lambda: NOW)  # type: ignore[arg-type]
    told: list[dict[str, Any]] = []
    status.on_issued = told.append
    ref = AccountRef(kind="ServiceAccount", name="agentaccount-bot", namespace="agents", id="sa-uid")
    issued = Issued(ref, {"token": "s3cret-token-value"}, credential_id="JTI=fresh")
    timing = {"issuedAt": "2026-12-01T12:00:00Z", "expiresAt": "2026-12-01T13:00:00Z"}
    log = tmp_path / "audit.jsonl"
    stream.configure(str(log))
    try:
        current = {"credentialIds": ["JTI=old"]}
        written = await status.issued(
            agent_account(), "kubernetes", issued, NOW, timing, current, 0.0, lambda *_: None
        )
    finally:
        stream.configure("")
        metrics.EXPIRY.discard("uid-bot")  # issued() remembered it; other modules count these series
    assert written["credentialIds"] == ["JTI=old", "JTI=fresh"]
    found = identity_of(told[0])
    assert found is not None and found[1] == ["JTI=old", "JTI=fresh"]
    line = json.loads(log.read_text())
    assert line["event"] == "issued" and line["credentialIds"] == ["JTI=old", "JTI=fresh"]
    assert "s3cret-token-value" not in log.read_text()


async def test_revocation_merges_what_the_provider_recorded() -> None:
    from agentaccounts.providers.base import ActivityEntry, ProviderActivity
    from agentaccounts.revoke import Revoker

    asked: list[tuple[Any, ...]] = []

    class Recording:
        type = "cloudflare"

        async def activity(self, ref: Any, since: datetime, before: datetime) -> ProviderActivity:
            asked.append((ref.id, since, before))
            entry = ActivityEntry("2026-12-01T12:05:00Z", "create", "dns_records", "www", "", 200, "cf-1")
            return ProviderActivity([entry], False, "Cloudflare records writes only")

    issued = {"issuedAt": "2026-12-01T12:00:00Z", "accountRef": {"kind": "APIToken", "id": "tok-1"}}
    revoker = Revoker(None, None, None)  # type: ignore[arg-type]
    merged = await revoker._provider_activity(agent_account(issued), issued, Recording(), NOW)  # type: ignore[arg-type]
    assert asked == [("tok-1", datetime(2026, 12, 1, 12, 0, tzinfo=UTC), NOW)]
    assert merged is not None
    assert (merged["requests"], merged["recent"][0]["verb"], merged["complete"]) == (1, "create", False)
    assert merged["notes"] == ["Cloudflare records writes only"]
    # A provider without `activity` (Kubernetes: the audit webhook is its trail) adds nothing.
    assert await revoker._provider_activity(agent_account(issued), issued, object(), NOW) is None  # type: ignore[arg-type]


async def test_paced_writes_keep_to_the_rate_longest_waiting_first() -> None:
    kube = FakeKube(lambda: NOW)
    for i in range(30):
        kube.add("AgentAccount", account(f"a{i}", f"uid-{i}", [f"JTI={i}"]))
    collector = Collector(kube, lambda: NOW, [], flush_seconds=2.0, writes_per_second=5.0)  # type: ignore[arg-type]
    await collector.load()
    for i in range(30):
        sa = f"system:serviceaccount:agents:agentaccount-a{i}"
        assert collector.accept([event(jti=f"JTI={i}", username=sa, audit_id=f"x{i}")]) == 1
    collector._allowance, collector._ticked = 0.0, collector._ticked - 2.0  # two seconds of allowance
    assert await collector.flush(paced=True) == 10  # 5/s x 2 s, not all 30
    assert len(collector.pending) == 20
    assert await collector.flush() == 20  # unpaced (ingest, shutdown): everything


async def test_a_written_trail_is_the_base_of_the_next_write_without_a_read() -> None:
    kube = FakeKube(lambda: NOW)
    kube.add("AgentAccount", account())
    collector = Collector(kube, lambda: NOW, [])  # type: ignore[arg-type]
    await collector.load()
    for i in range(3):
        collector.accept([event(audit_id=f"r{i}")])
        assert await collector.flush() == 1
    assert len(kube.called("get_custom")) == 1  # the first write read status; the others built on it
    assert kube.custom[("AgentAccount", "agents", "bot")]["status"]["activity"]["requests"] == 3
    # Recreated under the same name (a new uid learned at its issue): the old trail is never written.
    collector.accept([event(audit_id="late")])
    collector.learn(account(uid="uid-new", ids=["JTI=new"]))
    assert await collector.flush() == 0


async def test_extending_is_its_own_decision_line(tmp_path: Path) -> None:
    from agentaccounts.account_status import AccountStatus
    from agentaccounts.models import AccountRef
    from agentaccounts.providers.base import Issued

    kube = FakeKube(lambda: NOW)
    kube.add("AgentAccount", account())
    ref = AccountRef(kind="ServiceAccount", name="agentaccount-bot", namespace="agents")
    timing = {"issuedAt": "2026-12-01T12:00:00Z", "expiresAt": "2026-12-01T14:00:00Z"}
    current = {"phase": "Ready", "issuedAt": "2026-12-01T12:00:00Z", "credentialIds": ["JTI=one"]}
    log = tmp_path / "audit.jsonl"
    stream.configure(str(log))
    try:
        await AccountStatus(kube, lambda: NOW).issued(  # type: ignore[arg-type]
            agent_account(),
            "kubernetes",
            Issued(ref, {}, credential_id="JTI=two"),
            NOW,
            timing,
            current,
            0.0,
            lambda *_: None,
        )
    finally:
        stream.configure("")
    line = json.loads(log.read_text())
    assert (line["event"], line["expiresAt"], line["credentialIds"]) == (
        "extended",
        "2026-12-01T14:00:00Z",
        ["JTI=one", "JTI=two"],
    )


class _Transport:
    """What the receiver asks of a connection: the peer certificate the TLS layer verified."""

    def __init__(self, common_name: str) -> None:
        self.peercert = {"subject": ((("commonName", common_name),),)}

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peercert if name == "peercert" else default


async def test_the_endpoint_refuses_other_subjects_and_answers_503_when_not_leading() -> None:
    from aiohttp.test_utils import make_mocked_request

    from agentaccounts.activity.receiver import Receiver

    kube = FakeKube(lambda: NOW)
    kube.add("AgentAccount", account())
    collector = Collector(kube, lambda: NOW, [])  # type: ignore[arg-type]
    await collector.load()
    leading = True
    receiver = Receiver(collector, None, "127.0.0.1", 0, "kube-apiserver-audit", is_leader=lambda: leading)  # type: ignore[arg-type]
    body = json.dumps({"kind": "EventList", "items": [event()]}).encode()

    async def post(common_name: str) -> int:
        request = make_mocked_request("POST", "/audit", transport=_Transport(common_name), payload=None)
        request._read_bytes = body  # the body as aiohttp would have read it
        answer = await receiver._post(request)
        if answer.status == 503:  # the API server's webhook client retries a 503 only when told to
            assert answer.headers["Retry-After"] == "1"
        return answer.status

    assert await post("mallory") == 403 and collector.received == 0
    leading = False
    assert await post("kube-apiserver-audit") == 503 and collector.received == 0
    leading = True
    assert await post("kube-apiserver-audit") == 200 and collector.attributed == 1


async def test_the_trails_kept_in_memory_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from agentaccounts.activity import collector as collector_module

    monkeypatch.setattr(collector_module, "MAX_CACHED", 3)
    kube = FakeKube(lambda: NOW)
    for i in range(5):
        kube.add("AgentAccount", account(f"a{i}", f"uid-{i}", [f"JTI={i}"]))
    collector = Collector(kube, lambda: NOW, [])  # type: ignore[arg-type]
    await collector.load()
    for i in range(5):
        collector.accept([event(jti=f"JTI={i}", username=f"system:serviceaccount:agents:agentaccount-a{i}")])
    assert await collector.flush() == 5
    assert list(collector._trails) == ["uid-2", "uid-3", "uid-4"]
