"""Labels and owner references that tie every created object to its AgentAccount, and `owned_by`."""

from __future__ import annotations

import re
from typing import Any

import pytest

from agentaccounts.ownership import (
    API_VERSION,
    KIND,
    MANAGED_BY,
    NAME_LABEL,
    UID_LABEL,
    labels,
    metadata,
    owned_by,
    owner_reference,
    selector,
)

UID = "5c1b2f3e-9a8d-4c7b-b6a5-0f1e2d3c4b5a"
OTHER_UID = "0f1e2d3c-4b5a-4c7b-b6a5-5c1b2f3e9a8d"
# A label value: empty, or up to 63 characters, alphanumeric at both ends, [-_.] and alphanumerics inside.
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def obj(labels: dict[str, str] | None) -> dict[str, Any]:
    return {"metadata": {"name": "agentaccount-bot", "labels": labels}}


def test_labels() -> None:
    assert labels("triage-bot", UID) == {
        UID_LABEL: UID,
        NAME_LABEL: "triage-bot",
        "app.kubernetes.io/managed-by": "agentaccounts",
    }


@pytest.mark.parametrize(
    "name",
    [
        "a" * 63,
        "a" * 64,
        "a" * 253,
        "a" * 62 + "-" + "b" * 10,  # the cut lands right after a dash
        "a" * 61 + ".-" + "b" * 10,
        "a" * 62 + "." + "b" * 10,
        "web.example.com",
    ],
)
def test_name_label_is_a_valid_label_value(name: str) -> None:
    value = labels(name, UID)[NAME_LABEL]
    assert len(value) <= 63
    assert LABEL_VALUE.match(value), value
    assert name.startswith(value), "the label is a prefix of the name, so it still reads as the name"


def test_a_long_name_keeps_its_full_uid_label() -> None:
    assert labels("a" * 253, UID)[UID_LABEL] == UID


def test_owner_reference() -> None:
    assert owner_reference("bot", UID) == {
        "apiVersion": "agentaccounts.dev/v1alpha1",
        "kind": "AgentAccount",
        "name": "bot",
        "uid": UID,
        "controller": True,
        "blockOwnerDeletion": False,
    }
    assert (API_VERSION, KIND) == ("agentaccounts.dev/v1alpha1", "AgentAccount")


def test_metadata_names_the_object_and_points_at_the_owner() -> None:
    meta = metadata("agentaccount-bot", "agents", "bot", UID)

    assert meta["name"] == "agentaccount-bot"
    assert meta["namespace"] == "agents"
    assert meta["labels"] == labels("bot", UID)
    assert meta["ownerReferences"] == [owner_reference("bot", UID)]
    assert owned_by({"metadata": meta}, UID)


def test_metadata_returns_fresh_dicts() -> None:
    first = metadata("x", "ns", "bot", UID)
    first["labels"]["extra"] = "1"
    assert "extra" not in metadata("x", "ns", "bot", UID)["labels"]
    assert "extra" not in MANAGED_BY


@pytest.mark.parametrize(
    ("candidate", "owned"),
    [
        (obj({UID_LABEL: UID}), True),
        (obj({UID_LABEL: UID, NAME_LABEL: "bot", "team": "x"}), True),
        (None, False),
        ({}, False),
        ({"metadata": {}}, False),
        (obj(None), False),
        (obj({}), False),
        (obj({UID_LABEL: OTHER_UID}), False),
        (obj({UID_LABEL: UID.upper()}), False),
        (obj({UID_LABEL: UID + "x"}), False),
        (obj({UID_LABEL: UID[:-1]}), False),
        (obj({UID_LABEL: ""}), False),
        (obj({NAME_LABEL: "bot", **MANAGED_BY}), False),  # the right name is not enough
        (obj({"agentaccounts.dev/account-uid-old": UID}), False),
        ({"metadata": {"annotations": {UID_LABEL: UID}}}, False),  # an annotation is not a label
        ({"metadata": {"ownerReferences": [owner_reference("bot", UID)]}}, False),  # nor an owner ref
    ],
    ids=[
        "exact",
        "exact-with-others",
        "none",
        "empty-object",
        "no-labels-key",
        "null-labels",
        "empty-labels",
        "other-uid",
        "uppercased-uid",
        "uid-with-suffix",
        "uid-prefix",
        "empty-uid-label",
        "name-label-only",
        "similar-key",
        "annotation",
        "owner-reference-only",
    ],
)
def test_owned_by(candidate: dict[str, Any] | None, owned: bool) -> None:
    assert owned_by(candidate, UID) is owned


def test_an_empty_uid_owns_nothing() -> None:
    assert owned_by(obj({}), "") is False
    assert owned_by(obj({NAME_LABEL: "bot"}), "") is False


def test_selector_matches_the_uid_label() -> None:
    assert selector(UID) == f"agentaccounts.dev/account-uid={UID}"
