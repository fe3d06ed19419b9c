"""Status patches: the Ready condition's lastTransitionTime semantics, truncation, and the phase patch."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from agentaccounts.clock import rfc3339
from agentaccounts.conditions import current_reason, phase_patch, ready_condition

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)
SCHEDULED = {
    "type": "Scheduled",
    "status": "True",
    "reason": "Queued",
    "lastTransitionTime": "2029-12-31T00:00:00Z",
}


def ready(status: str, reason: str = "Issued", at: str = "2030-01-01T12:00:00Z") -> dict[str, Any]:
    return {"type": "Ready", "status": status, "reason": reason, "message": "m", "lastTransitionTime": at}


def the_ready(conditions: list[dict[str, Any]]) -> dict[str, Any]:
    matches = [c for c in conditions if c["type"] == "Ready"]
    assert len(matches) == 1
    return matches[0]


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (T0, "2030-01-01T12:00:00Z"),
        (T0.replace(microsecond=999_999), "2030-01-01T12:00:00Z"),  # whole seconds
        (datetime(2030, 1, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))), "2030-01-01T12:00:00Z"),
        (datetime(2029, 12, 31, 19, 0, tzinfo=timezone(timedelta(hours=-5))), "2030-01-01T00:00:00Z"),
    ],
    ids=["utc", "microseconds", "plus-two-hours", "minus-five-hours"],
)
def test_rfc3339_is_utc_with_z(moment: datetime, text: str) -> None:
    # The `Z` suffix claims UTC, so an aware datetime in another zone must be converted, not relabelled
    # (status timestamps written by other clients can carry an offset and are re-rendered from here).
    assert rfc3339(moment) == text


def test_first_ready_condition() -> None:
    conditions = ready_condition({}, "False", "Issuing", "issuing through X", 4, T0)
    assert conditions == [
        {
            "type": "Ready",
            "status": "False",
            "reason": "Issuing",
            "message": "issuing through X",
            "observedGeneration": 4,
            "lastTransitionTime": "2030-01-01T12:00:00Z",
        }
    ]


@pytest.mark.parametrize(
    ("previous", "status", "moves"),
    [
        ("False", "False", False),
        ("True", "True", False),
        ("Unknown", "Unknown", False),
        ("False", "True", True),
        ("True", "False", True),
        ("Unknown", "True", True),
    ],
)
def test_last_transition_time_moves_only_when_status_changes(previous: str, status: str, moves: bool) -> None:
    current = {"conditions": [ready(previous, at=rfc3339(T0))]}
    condition = the_ready(ready_condition(current, status, "NewReason", "new message", 2, T1))

    assert condition["lastTransitionTime"] == (rfc3339(T1) if moves else rfc3339(T0))
    # everything else is always refreshed
    assert (
        condition["status"],
        condition["reason"],
        condition["message"],
        condition["observedGeneration"],
    ) == (
        status,
        "NewReason",
        "new message",
        2,
    )


def test_same_status_without_a_recorded_transition_time_gets_now() -> None:
    previous = ready("True")
    del previous["lastTransitionTime"]
    condition = the_ready(ready_condition({"conditions": [previous]}, "True", "Issued", "ok", 1, T1))
    assert condition["lastTransitionTime"] == rfc3339(T1)


def test_other_condition_types_are_preserved() -> None:
    other = {"type": "Degraded", "status": "False", "reason": "Fine"}
    current = {"conditions": [copy.deepcopy(SCHEDULED), ready("False"), copy.deepcopy(other)]}
    before = copy.deepcopy(current)

    conditions = ready_condition(current, "True", "Issued", "ok", 1, T1)

    assert [c["type"] for c in conditions] == ["Scheduled", "Degraded", "Ready"]
    assert conditions[0] == SCHEDULED
    assert conditions[1] == other
    assert current == before, "the current status must not be mutated"


@pytest.mark.parametrize("current", [{}, {"conditions": None}, {"conditions": []}, {"phase": "Pending"}])
def test_no_previous_conditions(current: dict[str, Any]) -> None:
    conditions = ready_condition(current, "True", "Issued", "ok", 1, T0)
    assert [(c["type"], c["lastTransitionTime"]) for c in conditions] == [("Ready", rfc3339(T0))]


@pytest.mark.parametrize(
    ("length", "kept"), [(0, 0), (1023, 1023), (1024, 1024), (1025, 1024), (10_000, 1024)]
)
def test_message_is_truncated_at_1024(length: int, kept: int) -> None:
    message = "x" * length
    condition = the_ready(ready_condition({}, "False", "ProviderRejected", message, 1, T0))
    assert condition["message"] == message[:kept]


@pytest.mark.parametrize(("is_ready", "status"), [(True, "True"), (False, "False")])
def test_phase_patch(is_ready: bool, status: str) -> None:
    current = {"phase": "Pending", "conditions": [copy.deepcopy(SCHEDULED), ready("False", at=rfc3339(T0))]}
    patch = phase_patch(
        current, "Ready" if is_ready else "Failed", is_ready, "R", "msg", 7, T1, expiresAt="x"
    )

    assert set(patch) == {"phase", "conditions", "expiresAt"}
    assert patch["phase"] == ("Ready" if is_ready else "Failed")
    assert patch["expiresAt"] == "x"
    assert patch["conditions"][0] == SCHEDULED
    condition = the_ready(patch["conditions"])
    assert (
        condition["status"],
        condition["reason"],
        condition["message"],
        condition["observedGeneration"],
    ) == (
        status,
        "R",
        "msg",
        7,
    )
    assert condition["lastTransitionTime"] == (rfc3339(T1) if is_ready else rfc3339(T0))


@pytest.mark.parametrize(
    ("current", "reason"),
    [
        ({}, None),
        ({"conditions": None}, None),
        ({"conditions": [SCHEDULED]}, None),
        ({"conditions": [SCHEDULED, ready("False", reason="RateLimited")]}, "RateLimited"),
        ({"conditions": [ready("True", reason="Issued")]}, "Issued"),
    ],
)
def test_current_reason_is_the_ready_conditions(current: dict[str, Any], reason: str | None) -> None:
    assert current_reason(current) == reason
