"""The bad-input corpus (tests/data/bad-input/) against one real operator, all cases at once.

Every malformed or hostile AgentAccount and provider manifest of the corpus is either refused at
`kubectl apply` (by the CRD schema or the operator's admission webhook) with the message the case
names, or ends in the phase and reason it names (the Ready condition, and a Warning Event for Failed
and Pending). Meanwhile the operator must neither crash nor stall, measured by two canaries: a good
short-lived account created before the corpus (issued, then revoked on time while the corpus is
being played) and another created after it (issued promptly). And no foreign object may change:
the corpus's foreign objects (a Secret named like a case's secretName, objects named like what the
operator would create, parent-token Secrets, another namespace's provider) and the bystander
accounts' credentials are fingerprinted before and compared after.

One operator, one namespace, every case in its own thread (the corpus format is in
tests/data/bad-input/README.md), so the whole module costs one to two minutes on two shared cores.
A case whose expectation is right but which the operator does not meet today carries `bug:` in the
corpus and runs as a strict xfail.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes import client

from cfemulator.fixtures import SMALL_POW, mint_parent
from integration.cloudflare_support import allow_list, start_emulator
from integration.support import GROUP, VERSION, OperatorProcess, create_account, get_account, wait_for
from reliability.bad_input_support import (
    CaseResult,
    Player,
    Poller,
    classify,
    describe,
    fingerprint,
    load_corpus,
    revocation_lag,
    substitute,
    tracebacks,
    when,
)

pytestmark = pytest.mark.cluster

CORPUS = load_corpus()
REQUESTER = "bad-input-requester"
CANARY_LIFETIME = "30s"
MAX_REVOCATION_LAG = 5.0  # seconds after expiresAt
MAX_LATE_CANARY_ISSUE = 10.0  # seconds from create to Ready, after the whole corpus
RBAC = "rbac.authorization.k8s.io"
SIGNING_KEY = "agentaccounts-signing-key"  # the operator's default name for it


@dataclass
class Run:
    namespace: str
    other_namespace: str
    results: dict[str, CaseResult]
    operator: OperatorProcess
    canary_early: dict[str, Any] = field(default_factory=dict)
    canary_late: dict[str, Any] = field(default_factory=dict)
    canary_early_seen_expired: float | None = None  # seconds after expiresAt we first saw it Expired
    canary_late_issue_seconds: float | None = None
    foreign_before: dict[str, dict[str, Any]] = field(default_factory=dict)
    foreign_after: dict[str, dict[str, Any]] = field(default_factory=dict)
    bystanders_after: dict[str, str] = field(default_factory=dict)
    operator_alive: bool = False
    operator_healthy: bool = False
    log: str = ""
    seconds: float = 0.0
    play_seconds: float = 0.0


def _requester_rbac(api: client.ApiClient, namespace: str) -> None:
    rules = [
        {
            "apiGroups": [GROUP],
            "resources": ["agentaccounts"],
            "verbs": ["create", "get", "list", "watch", "update", "patch"],
        },
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
        {
            "apiGroups": [GROUP],
            "resources": ["clusteraccountproviders"],
            "verbs": ["use"],
            "resourceNames": ["in-cluster"],
        },
    ]
    rbac = client.RbacAuthorizationV1Api(api)
    rbac.create_namespaced_role(namespace, {"metadata": {"name": REQUESTER}, "rules": rules})
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": REQUESTER},
            "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": REQUESTER},
            "subjects": [{"apiGroup": RBAC, "kind": "User", "name": REQUESTER}],
        },
    )


def _key(manifest: dict[str, Any], namespace: str) -> tuple[str, str, str]:
    meta = manifest["metadata"]
    return manifest["kind"], meta["name"], meta.get("namespace") or namespace


def _apply_all(cluster: Any, namespace: str, manifests: list[dict[str, Any]]) -> None:
    for manifest in manifests:
        args = ["apply", "-f", "-"]
        if not manifest["metadata"].get("namespace") and manifest["kind"] != "ClusterAccountProvider":
            args += ["-n", namespace]
        done = cluster.kubectl(*args, input=json.dumps(manifest), check=False)
        assert done.returncode == 0, f"setup {manifest['kind']}/{manifest['metadata']['name']}: {done.stderr}"


def _ready(api: client.ApiClient, namespace: str, name: str) -> bool:
    return ((get_account(api, namespace, name) or {}).get("status") or {}).get("phase") == "Ready"


def _cleanup_namespace(api: client.ApiClient, name: str) -> None:
    custom = client.CustomObjectsApi(api)
    accounts: list[dict[str, Any]] = []
    with contextlib.suppress(client.ApiException):
        accounts = custom.list_namespaced_custom_object(GROUP, VERSION, name, "agentaccounts")["items"]
    unfinalized = {"metadata": {"finalizers": None}}
    for account in accounts:
        with contextlib.suppress(client.ApiException):
            custom.patch_namespaced_custom_object(
                GROUP, VERSION, name, "agentaccounts", account["metadata"]["name"], unfinalized
            )
    with contextlib.suppress(client.ApiException):
        client.CoreV1Api(api).delete_namespace(name, propagation_policy="Background")


@pytest.fixture(scope="module")
def corpus_run(cluster: Any, in_cluster_provider: str) -> Iterator[Run]:
    """Set up, play every case at once, measure the canaries, and keep what the tests judge."""
    started = time.monotonic()
    suffix = uuid.uuid4().hex[:6]
    namespace, other = f"bad-input-{suffix}", f"bad-input-other-{suffix}"
    api = cluster.api_client()
    core = client.CoreV1Api(api)
    for name in (namespace, other):
        core.create_namespace({"metadata": {"name": name}})
    emulator = start_emulator(previews=SMALL_POW)
    operator: OperatorProcess | None = None
    poller: Poller | None = None
    player: Player | None = None
    try:
        parents = {
            "full": mint_parent(emulator),
            "weak": mint_parent(emulator, permissions=["Workers Scripts Read"]),
            "narrow": mint_parent(emulator, permissions=["Account API Tokens Write", "Workers Scripts Read"]),
        }
        values = {
            "NS": namespace,
            "OTHER_NS": other,
            "RUN": suffix,
            "REQUESTER": REQUESTER,
            "CF_URL": emulator.base_url,
            **{f"cf.{k}.account": p.account for k, p in parents.items()},
            **{f"cf.{k}.token": p.value for k, p in parents.items()},
        }
        _requester_rbac(api, namespace)
        foreign = substitute(CORPUS.foreign, values)
        _apply_all(cluster, namespace, foreign)
        operator = OperatorProcess(
            cluster.kubeconfig,
            [namespace],
            {
                "AGENTACCOUNTS_ALLOWED_API_BASE_URLS": allow_list(emulator),
                "AGENTACCOUNTS_PROVIDER_RETRY_SECONDS": "1",
                # The operator's own Secret (the signing key) and leader Lease name live in the corpus
                # namespace, so that cases can ask for them.
                "AGENTACCOUNTS_OPERATOR_NAMESPACE": namespace,
                "AGENTACCOUNTS_LEADER_ELECTION_NAMESPACE": namespace,
            },
        )
        _apply_all(cluster, namespace, substitute(CORPUS.setup, values))
        bystanders = substitute(CORPUS.bystanders, values)
        _apply_all(cluster, namespace, bystanders)
        for body in bystanders:
            name = body["metadata"]["name"]
            wait_for(lambda name=name: _ready(api, namespace, name), 30, f"bystander {name[:40]} Ready")
        # Fingerprints: the foreign objects, and the bystanders' identities (another agent's).
        watched = [_key(m, namespace) for m in foreign] + [("Secret", SIGNING_KEY, namespace)]
        for body in bystanders:
            status = (get_account(api, namespace, body["metadata"]["name"]) or {})["status"]
            watched += [("Secret", status["secretName"], namespace)]
            watched += [("ServiceAccount", status["accountRef"]["name"], namespace)]
        before = {f"{k}/{n} in {ns}": fingerprint(cluster.kubectl, k, n, ns) for k, n, ns in watched}

        # The early canary: issued before the corpus, expires while it is being played.
        scope = [{"permissions": ["get"], "resources": ["configmaps"]}]
        provider = {"kind": "ClusterAccountProvider", "name": in_cluster_provider}
        create_account(
            api, namespace, "canary-early", providerRef=provider, lifetime=CANARY_LIFETIME, scopes=scope
        )
        wait_for(lambda: _ready(api, namespace, "canary-early"), 20, "the early canary Ready")

        play_started = time.monotonic()
        poller = Poller(cluster.api_client(), namespace).start()
        player = Player(cluster.kubectl, cluster.api_client(), poller, namespace, values, REQUESTER)
        # The cases that wait longest (timeouts, expiries, later steps) start first; refusals last.
        ordered = sorted(CORPUS.cases, key=lambda c: -c.weight)
        with ThreadPoolExecutor(max_workers=len(ordered), thread_name_prefix="case") as pool:
            results = dict(zip([c.id for c in ordered], pool.map(player.play, ordered), strict=True))

        result = Run(namespace, other, results, operator, foreign_before=before)
        result.play_seconds = time.monotonic() - play_started
        # The early canary: revoked on time while the corpus was played (or soon after).
        early = get_account(api, namespace, "canary-early") or {}
        expires = when((early.get("status") or {}).get("expiresAt"))
        assert expires is not None, f"the early canary has no expiresAt: {describe(early)}"

        def early_expired() -> dict[str, Any] | None:
            body = get_account(api, namespace, "canary-early") or {}
            return body if (body.get("status") or {}).get("phase") == "Expired" else None

        result.canary_early = wait_for(early_expired, 60, "the early canary Expired", interval=0.1)
        seen = poller.first_seen.get(("canary-early", "Expired"), datetime.now(UTC))
        result.canary_early_seen_expired = (seen - expires).total_seconds()
        # The late canary: issued promptly after everything the corpus did.
        issued = time.monotonic()
        create_account(api, namespace, "canary-late", providerRef=provider, lifetime="1h", scopes=scope)
        wait_for(lambda: _ready(api, namespace, "canary-late"), 20, "the late canary Ready", interval=0.1)
        result.canary_late_issue_seconds = time.monotonic() - issued
        result.canary_late = get_account(api, namespace, "canary-late") or {}

        result.foreign_after = {
            f"{k}/{n} in {ns}": fingerprint(cluster.kubectl, k, n, ns) for k, n, ns in watched
        }
        for body in bystanders:
            name = body["metadata"]["name"]
            result.bystanders_after[name] = describe(get_account(api, namespace, name))
        result.operator_alive = operator.proc.poll() is None
        result.operator_healthy = result.operator_alive and operator._healthy()
        result.log = operator.output()
        result.seconds = time.monotonic() - started
    except BaseException:
        if operator is not None:
            print(f"--- operator log {operator.log} ---\n{operator.output()[-8000:]}")
        raise
    else:
        yield result
    finally:
        if poller is not None:
            poller.stop()
            poller.api.close()
        if player is not None:
            player.api.close()
        if operator is not None:
            operator.stop()
            operator.log.unlink(missing_ok=True)
        for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
            cluster.kubectl("delete", kind, "agentaccounts.dev", "--ignore-not-found", check=False)
        for name in (namespace, other):
            _cleanup_namespace(api, name)
        custom = client.CustomObjectsApi(api)
        for _, name in player.cluster_objects if player else []:
            with contextlib.suppress(client.ApiException):
                custom.delete_cluster_custom_object(GROUP, VERSION, "clusteraccountproviders", name)
        emulator.stop()
        api.close()


# -- the corpus itself -------------------------------------------------------------------------------
def test_the_corpus_is_big_enough_and_well_formed() -> None:
    assert len(CORPUS.cases) >= 60, len(CORPUS.cases)
    themes = {c.theme for c in CORPUS.cases}
    assert themes >= {"durations", "names", "scopes", "secret-names", "provider-refs", "providers"}, themes
    # Cases run at once in one namespace: no two may apply the same object.
    applied = [(m["kind"], m["metadata"]["name"]) for m in CORPUS.foreign + CORPUS.setup + CORPUS.bystanders]
    applied += [
        (s["apply"]["kind"], s["apply"]["metadata"]["name"])
        for c in CORPUS.cases
        for s in c.steps
        if "apply" in s
    ]
    assert len(applied) == len(set(applied)), sorted({a for a in applied if applied.count(a) > 1})


def test_the_colliding_names_really_collide() -> None:
    """The names theme relies on two derivations (AgentAccount.secret_name, rbac.object_name): if either
    changes, these cases would silently stop colliding."""
    from agentaccounts.models import AgentAccount
    from agentaccounts.providers.kubernetes.rbac import object_name

    def secret_of(name: str) -> str:
        body = {
            "metadata": {"name": name, "namespace": "ns", "uid": "u"},
            "spec": {"providerRef": {"name": "p"}, "scopes": [{"permissions": ["get"]}]},
        }
        return AgentAccount.from_body(body).secret_name

    names = {b["metadata"]["name"] for b in CORPUS.bystanders}
    secret_long = next(n for n in names if n.startswith("secret-collision-"))
    object_long = next(n for n in names if n.startswith("object-collision-"))
    secret_twin = _first_name("name-collides-with-shortened-secret-name")
    object_twin = _first_name("name-collides-with-shortened-object-name")
    assert secret_of(secret_long) == secret_of(secret_twin) and secret_long != secret_twin
    assert object_name(object_long) == object_name(object_twin) and object_long != object_twin
    assert len(secret_of(secret_long)) == 253 == len(object_name(object_long))
    digest = hashlib.sha256(secret_long.encode()).hexdigest()[:10]
    assert digest in secret_twin


def _first_name(case_id: str) -> str:
    return str(CORPUS.case(case_id).steps[0]["apply"]["metadata"]["name"])


def _params() -> list[Any]:
    return [
        pytest.param(c.id, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=c.bug)] if c.bug else [])
        for c in CORPUS.cases
    ]


@pytest.mark.parametrize("case_id", _params())
def test_case(corpus_run: Run, case_id: str) -> None:
    result = corpus_run.results[case_id]
    if result.ok:
        return
    lines = [line for line in corpus_run.log.splitlines() if any(name[:60] in line for name in result.names)]
    pytest.fail(
        f"{case_id} ({result.case.file}): {'; '.join(result.problems)}\n"
        f"--- what the case did ---\n"
        + "\n".join(result.log)
        + "\n--- operator log about it ---\n"
        + "\n".join(lines[-15:]),
        pytrace=False,
    )


# -- the operator, meanwhile -------------------------------------------------------------------------
def test_the_early_canary_was_revoked_on_time(corpus_run: Run, request: pytest.FixtureRequest) -> None:
    """Created before the corpus, lifetime 30s: it expires while the corpus is being played."""
    status = corpus_run.canary_early["status"]
    expires, revoked = when(status["expiresAt"]), when(status.get("revokedAt"))
    lag = revocation_lag(corpus_run.log, corpus_run.namespace, "canary-early")
    seen, issue = corpus_run.canary_early_seen_expired, corpus_run.canary_late_issue_seconds
    slowest = sorted(corpus_run.results.values(), key=lambda r: -r.seconds)[:5]
    print(
        f"\nearly canary: revoked {lag}s after expiresAt (operator log), first seen Expired {seen}s after "
        f"(status polled every 0.25s); late canary Ready {issue}s after create; setup and play "
        f"{corpus_run.seconds:.0f}s, of which the corpus {corpus_run.play_seconds:.0f}s; slowest cases: "
        + ", ".join(f"{r.case.id} {r.seconds:.0f}s" for r in slowest)
    )
    with contextlib.suppress(pytest.FixtureLookupError):  # the reliability suites' figures table
        request.getfixturevalue("figures").update(
            cases=len(corpus_run.results),
            canary_revocation_lag_s=lag,
            canary_seen_expired_s=seen,
            late_canary_issue_s=issue,
            corpus_play_s=corpus_run.play_seconds,
        )
    assert expires is not None and revoked is not None, status
    assert (revoked - expires).total_seconds() < MAX_REVOCATION_LAG, status  # whole seconds
    assert lag is not None, "the operator did not log the early canary's revocation"
    assert lag < MAX_REVOCATION_LAG, f"revoked {lag:.3f}s after expiresAt"
    assert seen is not None and seen < MAX_REVOCATION_LAG + 1, seen


def test_the_late_canary_was_issued_promptly(corpus_run: Run) -> None:
    assert corpus_run.canary_late["status"]["phase"] == "Ready"
    assert corpus_run.canary_late_issue_seconds is not None
    assert corpus_run.canary_late_issue_seconds < MAX_LATE_CANARY_ISSUE, corpus_run.canary_late_issue_seconds


def test_the_bystanders_are_still_ready(corpus_run: Run) -> None:
    for name, state in corpus_run.bystanders_after.items():
        assert state.startswith("phase='Ready' reason='Issued'"), f"{name[:40]}: {state}"


def test_the_operator_survived_with_no_unexplained_traceback(corpus_run: Run) -> None:
    assert corpus_run.operator_alive, f"the operator exited:\n{corpus_run.log[-5000:]}"
    assert corpus_run.operator_healthy, "the operator's liveness endpoint did not answer 200"
    unexplained = [block for block in tracebacks(corpus_run.log) if classify(block) is None]
    assert not unexplained, "\n\n".join(unexplained[:3])


def test_no_foreign_object_was_modified(corpus_run: Run) -> None:
    changed = {
        what: (corpus_run.foreign_before[what], after)
        for what, after in corpus_run.foreign_after.items()
        if after != corpus_run.foreign_before[what]
    }
    assert not any("missing" in before for before, _ in changed.values()), changed
    assert not changed, json.dumps(changed, indent=1)[:4000]
    assert len(corpus_run.foreign_before) >= 10
