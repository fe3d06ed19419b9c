"""access.Access over an in-memory Kube: delegation, provider policy, never-grantable Secrets, quotas.

Every refusal is a NotPermitted (or LifetimeExceeded) whose message starts with the rule's name; the
tables below pin the rule and the value each one names.
"""

from __future__ import annotations

from typing import Any

import pytest

from agentaccounts.access import Access, secret_refs
from agentaccounts.errors import InvalidSpec, LifetimeExceeded, NotPermitted
from agentaccounts.models import AgentAccount, ProviderObject, Requester
from agentaccounts.ownership import MANAGED_BY
from agentaccounts.providers import ProviderSpec
from agentaccounts.settings import Settings
from unit.fakes import ALL, FakeKube, Grant

NS = "agents"
ALICE = Requester(username="alice", uid="u-1", groups=["devs", "system:authenticated"], extra={"team": ["a"]})
SETTINGS = Settings(
    operator_namespace="ops",
    signing_key_secret="agentaccounts-signing-key",
    leader_election_namespace="ops",
    leader_election_name="agentaccounts-operator",
)
CF_ACCOUNT = "0123456789abcdef0123456789abcdef"


def account_body(
    name: str = "bot",
    namespace: str = NS,
    *,
    scopes: list[dict[str, Any]] | None = None,
    uid: str | None = None,
    **spec: Any,
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace, "uid": uid or f"uid-{name}"},
        "spec": {
            "providerRef": {"name": "p"},
            "scopes": scopes
            if scopes is not None
            else [{"permissions": ["get"], "resources": ["configmaps"]}],
            **spec,
        },
    }


def account(**kwargs: Any) -> AgentAccount:
    return AgentAccount.from_body(account_body(**kwargs))


def provider(
    kind: str = "AccountProvider",
    name: str = "p",
    namespace: str = NS,
    cloudflare: bool = False,
    **policy: Any,
) -> ProviderObject:
    block: dict[str, Any] = (
        {"cloudflare": {"accountId": CF_ACCOUNT, "apiTokenSecretRef": {"name": "cf"}}}
        if cloudflare
        else {"kubernetes": {}}
    )
    spec = ProviderSpec.model_validate({**block, "policy": policy})
    return ProviderObject(
        kind=kind, namespace="" if kind == "ClusterAccountProvider" else namespace, name=name, spec=spec
    )


def use(kind: str = "AccountProvider", name: str = "p") -> Grant:
    plural = {"AccountProvider": "accountproviders", "ClusterAccountProvider": "clusteraccountproviders"}[
        kind
    ]
    return Grant("use", plural, group="agentaccounts.dev", name=name)


@pytest.fixture
def kube() -> FakeKube:
    return FakeKube()


@pytest.fixture
def access(kube: FakeKube) -> Access:
    return Access(kube, SETTINGS)  # type: ignore[arg-type]


def may_use_and_read_everything(kube: FakeKube, username: str = "alice") -> None:
    kube.allow(username, use(), use("ClusterAccountProvider"), Grant("*", "*", group="*", subresource="*"))


# -- use and approve on the provider --------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "namespace", "plural", "where"),
    [
        # Asked in the AgentAccount's namespace for both kinds, so a RoleBinding there can grant it.
        ("AccountProvider", NS, "accountproviders", " in namespace agents"),
        ("ClusterAccountProvider", NS, "clusteraccountproviders", " in namespace agents"),
    ],
)
@pytest.mark.parametrize("verb", ["use", "approve"])
async def test_provider_verb_is_one_review_of_that_very_provider(
    kube: FakeKube, access: Access, kind: str, namespace: str, plural: str, where: str, verb: str
) -> None:
    with pytest.raises(NotPermitted) as caught:
        await access.check_provider_verb(ALICE, provider(kind), verb, NS)

    assert caught.value.message == (
        f"rule provider-{verb}: alice may not {verb} {kind} 'p'{where} (needs RBAC verb {verb!r} on "
        f"agentaccounts.dev {plural}, resourceNames [p])"
    )
    ((user, attributes),) = kube.sar_calls
    assert user == ALICE.model_dump()  # username, uid, groups and extra, as recorded
    assert attributes == {
        "namespace": namespace,
        "verb": verb,
        "group": "agentaccounts.dev",
        "resource": plural,
        "name": "p",
    }


async def test_use_of_one_provider_is_not_use_of_another(kube: FakeKube, access: Access) -> None:
    kube.allow("alice", use(name="other"), Grant("approve", "accountproviders", group="agentaccounts.dev"))
    with pytest.raises(NotPermitted, match="rule provider-use"):
        await access.check_provider_verb(ALICE, provider(), "use", NS)
    await access.check_provider_verb(ALICE, provider(), "approve", NS)  # approve on every provider


async def test_without_use_nothing_else_is_asked(kube: FakeKube, access: Access) -> None:
    kube.allow("alice", Grant("*", "configmaps"))  # holds everything the account asks for, but not `use`
    with pytest.raises(NotPermitted) as caught:
        await access.check(account(), provider(), ALICE)
    assert caught.value.message.startswith("rule provider-use: ")
    assert [c[0] for c in kube.calls] == ["subject_access_review"]


# -- delegation -----------------------------------------------------------------------------------

SCOPES = [
    {"permissions": ["get", "list"], "resources": ["configmaps", "pods/log"]},
    {"permissions": ["get"], "resources": ["secrets"], "resourceNames": ["app-config"]},
    {"permissions": ["update"], "resources": ["deployments.apps/scale"], "resourceNames": ["web"]},
]


async def test_every_permission_is_checked_as_the_requester(kube: FakeKube, access: Access) -> None:
    may_use_and_read_everything(kube)
    await access.check(account(scopes=SCOPES), provider(), ALICE)

    reviews = kube.sar_calls[1:]  # after `use`
    assert all(user == ALICE.model_dump() for user, _ in reviews)
    assert [(a["verb"], a["group"], a["resource"], a["subresource"], a["name"]) for _, a in reviews] == [
        ("get", "", "configmaps", "", ""),
        ("list", "", "configmaps", "", ""),
        ("get", "", "pods", "log", ""),
        ("list", "", "pods", "log", ""),
        ("get", "", "secrets", "", "app-config"),
        ("update", "apps", "deployments", "scale", "web"),
    ]
    assert {a["namespace"] for _, a in reviews} == {NS}


@pytest.mark.parametrize(
    ("grants", "missing"),
    [
        ([Grant("get", "configmaps")], "list configmaps"),
        ([Grant("*", "configmaps")], "get pods/log"),
        ([Grant("*", "configmaps"), Grant("*", "pods")], "get pods/log"),  # pods is not pods/log
        ([Grant("*", "configmaps"), Grant("*", "pods", subresource="log")], "get secrets named 'app-config'"),
        (
            [
                Grant("*", "configmaps"),
                Grant("*", "pods", subresource="log"),
                Grant("get", "secrets", name="other"),
            ],
            "get secrets named 'app-config'",
        ),
        (
            [
                Grant("*", "configmaps"),
                Grant("*", "pods", subresource="log"),
                Grant("get", "secrets", name="app-config"),
                Grant("update", "deployments", group="apps"),  # the object, not its scale subresource
            ],
            "update deployments.apps/scale named 'web'",
        ),
        ([Grant("*", "*", group="*", subresource="*", namespace="elsewhere")], "get configmaps"),
    ],
)
async def test_missing_delegation_names_the_first_missing_permission(
    kube: FakeKube, access: Access, grants: list[Grant], missing: str
) -> None:
    kube.allow("alice", use(), *grants)
    with pytest.raises(NotPermitted) as caught:
        await access.check(account(scopes=SCOPES), provider(), ALICE)
    assert caught.value.message == (
        f"rule delegation: alice may not {missing} in namespace agents, so no agent may be given it on "
        "their behalf"
    )


async def test_the_first_missing_permission_is_in_spec_order_not_answer_order(
    kube: FakeKube, access: Access
) -> None:
    kube.allow("alice", use())
    kube.sar_delay["configmaps"] = 0.02  # the first permission's answer comes last
    scopes = [
        {"permissions": ["get"], "resources": ["configmaps"]},
        {"permissions": ["get"], "resources": ["pods"]},
    ]
    with pytest.raises(NotPermitted, match="may not get configmaps in namespace"):
        await access.check(account(scopes=scopes), provider(), ALICE)


async def test_a_cluster_admin_passes_delegation(kube: FakeKube, access: Access) -> None:
    kube.allow("alice", ALL)
    await access.check(account(scopes=SCOPES), provider("ClusterAccountProvider"), ALICE)


# -- never grantable, whoever asks ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("scopes", "namespace", "fragment"),
    [
        ([{"permissions": ["get"], "resources": ["secrets"]}], NS, "get secrets without resourceNames"),
        ([{"permissions": ["create"], "resources": ["serviceaccounts/token"]}], NS, "serviceaccounts/token"),
        (
            [{"permissions": ["patch"], "resources": ["rolebindings.rbac.authorization.k8s.io"]}],
            NS,
            "escalate",
        ),
        (
            [{"permissions": ["get"], "resources": ["agentaccounts.agentaccounts.dev"]}],
            NS,
            "agentaccounts.dev",
        ),
        (
            [
                {
                    "permissions": ["update"],
                    "resources": ["leases.coordination.k8s.io"],
                    "resourceNames": ["agentaccounts-operator"],
                }
            ],
            "ops",
            "leader Lease",
        ),
        ([{"permissions": ["list"], "resources": ["leases.coordination.k8s.io"]}], "ops", "leader Lease"),
    ],
)
async def test_never_grantable_even_for_a_cluster_admin(
    kube: FakeKube, access: Access, scopes: list[dict[str, Any]], namespace: str, fragment: str
) -> None:
    kube.allow("alice", ALL)
    with pytest.raises(NotPermitted) as caught:
        await access.check(account(scopes=scopes, namespace=namespace), provider(namespace=namespace), ALICE)
    assert caught.value.message.startswith("rule never-grantable: ")
    assert fragment in caught.value.message
    assert len(kube.sar_calls) == 1  # only `use`: no delegation review for a refused request


async def test_the_leader_lease_namespace_comes_from_the_settings(kube: FakeKube, access: Access) -> None:
    kube.allow("alice", ALL)
    scopes = [{"permissions": ["update"], "resources": ["leases.coordination.k8s.io"]}]
    await access.check(account(scopes=scopes), provider(), ALICE)  # leases in "agents" are fine


def named_secret(name: str) -> list[dict[str, Any]]:
    return [{"permissions": ["get"], "resources": ["secrets"], "resourceNames": [name]}]


def setup_protected(kube: FakeKube) -> None:
    kube.add("AgentAccount", account_body("other"))  # default Secret other-credentials
    kube.add("AgentAccount", account_body("explicit", secretName="explicit-kubeconfig"))
    kube.add("AgentAccount", account_body("broken", scopes=[], secretName="broken-secret"))  # invalid spec
    kube.add("AgentAccount", account_body("broken-default", scopes=[]))
    kube.add("AgentAccount", account_body("far", namespace="elsewhere", secretName="far-secret"))
    kube.add(
        "AccountProvider",
        {
            "metadata": {"name": "cf-local", "namespace": NS},
            "spec": {"cloudflare": {"apiTokenSecretRef": {"name": "cf-parent"}}},
        },
    )
    kube.add(
        "AccountProvider",
        {
            "metadata": {"name": "cf-far", "namespace": "elsewhere"},
            "spec": {"cloudflare": {"apiTokenSecretRef": {"name": "far-parent"}}},
        },
    )
    kube.add(
        "ClusterAccountProvider",
        {
            "metadata": {"name": "cf-cluster"},
            "spec": {"cloudflare": {"apiTokenSecretRef": {"namespace": NS, "name": "cluster-parent"}}},
        },
    )
    kube.add(
        "ClusterAccountProvider",
        {
            "metadata": {"name": "cf-ops"},
            "spec": {"cloudflare": {"apiTokenSecretRef": {"namespace": "ops", "name": "ops-parent"}}},
        },
    )
    kube.add_secret(NS, "managed-thing", dict(MANAGED_BY))
    kube.add_secret(NS, "app-config", {"team": "a"})
    kube.add_secret(NS, "agentaccounts-signing-key")  # the name, but not in the operator's namespace
    kube.add_secret("ops", "agentaccounts-signing-key", dict(MANAGED_BY))


async def test_protected_secrets_of_a_namespace(kube: FakeKube, access: Access) -> None:
    setup_protected(kube)
    names = [
        *("other-credentials", "explicit-kubeconfig", "broken-secret", "broken-default-credentials"),
        *("cf-parent", "cluster-parent", "managed-thing", "app-config", "agentaccounts-signing-key"),
    ]  # fmt: skip
    assert await access.protected_secrets(NS, names) == {
        "other-credentials": "the credentials Secret of AgentAccount other",
        "explicit-kubeconfig": "the credentials Secret of AgentAccount explicit",
        "broken-secret": "the credentials Secret of AgentAccount broken",
        "broken-default-credentials": "the credentials Secret of AgentAccount broken-default",
        "cf-parent": "referenced by AccountProvider cf-local",
        "cluster-parent": "referenced by ClusterAccountProvider cf-cluster",
        "managed-thing": "managed by the operator",
    }


async def test_protected_secrets_of_the_operator_namespace(kube: FakeKube, access: Access) -> None:
    setup_protected(kube)
    names = ["ops-parent", "agentaccounts-signing-key", "cf-parent"]
    assert await access.protected_secrets("ops", names) == {
        "ops-parent": "referenced by ClusterAccountProvider cf-ops",
        "agentaccounts-signing-key": "the operator's signing key",
    }


@pytest.mark.parametrize(
    ("namespace", "name", "reason"),
    [
        (NS, "other-credentials", "the credentials Secret of AgentAccount other"),
        (NS, "explicit-kubeconfig", "the credentials Secret of AgentAccount explicit"),
        (NS, "broken-secret", "the credentials Secret of AgentAccount broken"),
        (NS, "cf-parent", "referenced by AccountProvider cf-local"),
        (NS, "cluster-parent", "referenced by ClusterAccountProvider cf-cluster"),
        (NS, "managed-thing", "managed by the operator"),
        ("ops", "agentaccounts-signing-key", "the operator's signing key"),
        ("ops", "ops-parent", "referenced by ClusterAccountProvider cf-ops"),
    ],
)
async def test_protected_secret_names_are_never_grantable(
    kube: FakeKube, access: Access, namespace: str, name: str, reason: str
) -> None:
    setup_protected(kube)
    kube.allow("alice", ALL)
    with pytest.raises(NotPermitted) as caught:
        await access.check(
            account(name="asker", namespace=namespace, scopes=named_secret(name)),
            provider(namespace=namespace),
            ALICE,
        )
    assert caught.value.message == f"rule never-grantable: Secret {namespace}/{name}: {reason}"


@pytest.mark.parametrize("name", ["app-config", "agentaccounts-signing-key", "far-secret", "far-parent"])
async def test_other_secret_names_are_left_to_delegation(kube: FakeKube, access: Access, name: str) -> None:
    setup_protected(kube)
    kube.allow("alice", use())
    with pytest.raises(NotPermitted, match=f"rule delegation: alice may not get secrets named '{name}'"):
        await access.check(account(name="asker", scopes=named_secret(name)), provider(), ALICE)
    kube.allow("alice", Grant("get", "secrets", name=name))
    await access.check(account(name="asker", scopes=named_secret(name)), provider(), ALICE)


async def test_no_secret_asked_no_secret_listed(kube: FakeKube, access: Access) -> None:
    kube.allow("alice", ALL)
    await access.check(account(), provider(), ALICE)
    assert not [c for c in kube.calls if c[0] in ("list_custom", "list_objects")]


# -- provider policy ------------------------------------------------------------------------------

TEAM_A = {"matchLabels": {"team": "a"}}


@pytest.mark.parametrize(
    ("labels", "selector", "allowed"),
    [
        ({"team": "a"}, TEAM_A, True),
        ({"team": "b"}, TEAM_A, False),
        ({}, TEAM_A, False),
        (None, TEAM_A, False),  # the namespace is gone
        ({"team": "b"}, {}, True),  # the empty selector selects every namespace
        (
            {"env": "prod"},
            {"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]},
            False,
        ),
    ],
)
async def test_allowed_namespaces_of_a_cluster_provider(
    kube: FakeKube, access: Access, labels: dict[str, str] | None, selector: dict[str, Any], allowed: bool
) -> None:
    may_use_and_read_everything(kube)
    if labels is not None:
        kube.namespaces[NS] = labels
    cluster = provider("ClusterAccountProvider", allowedNamespaces=selector)
    if allowed:
        await access.check(account(), cluster, ALICE)
        return
    with pytest.raises(NotPermitted) as caught:
        await access.check(account(), cluster, ALICE)
    assert caught.value.message == (
        "rule allowed-namespaces: namespace agents is not selected by ClusterAccountProvider 'p' "
        "(policy.allowedNamespaces)"
    )


async def test_allowed_namespaces_is_not_asked_without_a_selector(kube: FakeKube, access: Access) -> None:
    may_use_and_read_everything(kube)
    await access.check(account(), provider("ClusterAccountProvider"), ALICE)
    assert not [c for c in kube.calls if c[0] == "namespace_labels"]


@pytest.mark.parametrize(
    ("lifetime", "policy", "error", "fragment"),
    [
        (
            "25h",
            {},
            LifetimeExceeded,
            "rule max-lifetime: lifetime 1d1h exceeds the provider's policy.maxLifetime 1d",
        ),
        (
            None,
            {"defaultLifetime": "2h", "maxLifetime": "1h"},
            LifetimeExceeded,
            "rule max-lifetime: lifetime 2h",
        ),
        ("0s", {}, InvalidSpec, "greater than zero"),
    ],
)
async def test_lifetime_limits(
    kube: FakeKube,
    access: Access,
    lifetime: str | None,
    policy: dict[str, Any],
    error: type[Exception],
    fragment: str,
) -> None:
    may_use_and_read_everything(kube)
    spec = {} if lifetime is None else {"lifetime": lifetime}
    with pytest.raises(error, match=fragment):
        await access.check(account(**spec), provider(**policy), ALICE)


async def test_allowed_scopes_of_a_kubernetes_provider(kube: FakeKube, access: Access) -> None:
    may_use_and_read_everything(kube)
    narrow = provider(allowedScopes=[{"permissions": ["get", "list"], "resources": ["configmaps", "pods/*"]}])
    await access.check(
        account(scopes=[{"permissions": ["get"], "resources": ["configmaps", "pods/log"]}]), narrow, ALICE
    )
    with pytest.raises(NotPermitted) as caught:
        await access.check(
            account(scopes=[{"permissions": ["watch"], "resources": ["configmaps"]}]), narrow, ALICE
        )
    assert caught.value.message.startswith("rule allowed-scopes: permission 'watch' on 'configmaps'")


CF_READ = [{"permissions": ["Workers Scripts Read"], "resources": ["account"]}]


async def test_a_cloudflare_provider_without_allowed_scopes_issues_nothing(
    kube: FakeKube, access: Access
) -> None:
    kube.allow("alice", ALL)
    with pytest.raises(NotPermitted) as caught:
        await access.check(account(scopes=CF_READ), provider(cloudflare=True), ALICE)
    assert caught.value.message.startswith("rule allowed-scopes: this cloudflare provider lists no")


async def test_a_cloudflare_provider_with_allowed_scopes_needs_no_rbac_beyond_use(
    kube: FakeKube, access: Access
) -> None:
    kube.allow("alice", use())
    await access.check(
        account(scopes=CF_READ), provider(cloudflare=True, allowedScopes=[{"permissions": ["*"]}]), ALICE
    )
    assert len(kube.sar_calls) == 1


async def test_resource_names_are_for_kubernetes_only(kube: FakeKube, access: Access) -> None:
    kube.allow("alice", use())
    scopes = [{"permissions": ["Workers Scripts Read"], "resources": ["account"], "resourceNames": ["x"]}]
    with pytest.raises(InvalidSpec, match="resourceNames is for the kubernetes provider"):
        await access.check(
            account(scopes=scopes), provider(cloudflare=True, allowedScopes=[{"permissions": ["*"]}]), ALICE
        )


@pytest.mark.parametrize("group", ["Account API Tokens Write", "Account Settings Read", "Billing Read"])
async def test_never_grantable_cloudflare_groups_name_the_rule(
    kube: FakeKube, access: Access, group: str
) -> None:
    # access.py promises every refusal starts with the rule's name; a platform team allowing "*" still
    # never hands out token-minting groups.
    kube.allow("alice", use())
    everything = provider(cloudflare=True, allowedScopes=[{"permissions": ["*"]}])
    with pytest.raises(NotPermitted) as caught:
        await access.check(
            account(scopes=[{"permissions": [group], "resources": ["account"]}]), everything, ALICE
        )
    assert group in caught.value.message
    assert caught.value.message.startswith("rule never-grantable: ")


# -- quota ----------------------------------------------------------------------------------------


def other_account(
    name: str, *, phase: str = "Ready", issued: bool = True, provider_name: str = "p"
) -> dict[str, Any]:
    body = account_body(name)
    body["spec"]["providerRef"]["name"] = provider_name
    body["status"] = {"phase": phase, **({"issuedAt": "2030-01-01T11:00:00Z"} if issued else {})}
    return body


async def test_no_limit_no_listing(kube: FakeKube, access: Access) -> None:
    assert await access.check_quota(account(), provider(), issued_only=False) is None
    assert kube.calls == []


async def test_a_dry_run_is_never_held_by_the_quota(kube: FakeKube, access: Access) -> None:
    kube.add("AgentAccount", other_account("a"))
    assert (
        await access.check_quota(account(dryRun=True), provider(maxActiveAccounts=0), issued_only=False)
        is None
    )


@pytest.mark.parametrize(
    ("others", "limit", "issued_only", "refused_with"),
    [
        ([], 1, False, None),
        ([other_account("a")], 1, False, 1),
        ([other_account("a")], 2, False, None),
        ([other_account("a"), other_account("b", phase="Pending", issued=False)], 2, False, 2),
        ([other_account("a"), other_account("b", phase="Pending", issued=False)], 2, True, None),
        ([other_account("a", phase="Expired"), other_account("b", phase="Failed")], 1, False, None),
        ([other_account("a", provider_name="q")], 1, False, None),
        ([], 0, False, 0),  # maxActiveAccounts 0: the provider is closed
    ],
)
async def test_quota(
    kube: FakeKube,
    access: Access,
    others: list[dict[str, Any]],
    limit: int,
    issued_only: bool,
    refused_with: int | None,
) -> None:
    for body in others:
        kube.add("AgentAccount", body)
    kube.add("AgentAccount", account_body("bot"))  # the account itself never counts
    refusal = await access.check_quota(account(), provider(maxActiveAccounts=limit), issued_only=issued_only)
    if refused_with is None:
        assert refusal is None
        return
    assert refusal == (
        f"rule max-active-accounts: {refused_with} live AgentAccounts in namespace agents already use "
        f"AccountProvider 'p' (policy.maxActiveAccounts {limit})"
    )


async def test_quota_counts_one_namespace(kube: FakeKube, access: Access) -> None:
    far = other_account("a")
    far["metadata"]["namespace"] = "elsewhere"
    kube.add("AgentAccount", far)
    assert await access.check_quota(account(), provider(maxActiveAccounts=1), issued_only=False) is None


# -- secret_refs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"cloudflare": {"apiTokenSecretRef": {"name": "cf"}}}, [("home", "cf")]),
        ({"cloudflare": {"apiTokenSecretRef": {"name": "cf", "namespace": "ops"}}}, [("ops", "cf")]),
        ({"cloudflare": {"apiTokenSecretRef": {"key": "token"}}}, []),  # no name, nothing referenced
        ({"cloudflare": {"apiTokenSecretRef": "cf"}}, []),
        ({"kubernetes": {}}, []),
        (
            {
                "x": {
                    "adminSecretRef": {"name": "a"},
                    "list": [{"deep": {"otherSecretRef": {"name": "b", "namespace": "n"}}}],
                }
            },
            [("home", "a"), ("n", "b")],
        ),
        ({"notASecretRefs": {"name": "x"}, "secretRef": {"name": "y"}}, []),  # the key must end in SecretRef
    ],
)
def test_secret_refs(spec: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    assert secret_refs(spec, "home") == expected
