"""parse_duration / format_duration: the Go-style duration grammar (with days) shared by every CRD field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agentaccounts.models import MAX_DURATION, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("45s", timedelta(seconds=45)),
        ("30m", timedelta(minutes=30)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("2d", timedelta(days=2)),
        ("0s", timedelta(0)),
        ("1500ms", timedelta(milliseconds=1500)),
        ("999ms", timedelta(milliseconds=999)),
        ("1d2h3m4s5ms", timedelta(days=1, hours=2, minutes=3, seconds=4, milliseconds=5)),
        ("90m", timedelta(minutes=90)),  # units need not be normalised
        ("007s", timedelta(seconds=7)),
        ("3650d", timedelta(days=3650)),  # the longest duration we accept (models.MAX_DURATION)
    ],
)
def test_valid_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1.5h",  # no fractions
        "-1m",  # no sign
        "+1m",
        "10",  # a unit is required
        "1y",  # no years
        "1w",
        "5M",  # units are lower case
        " 5m",  # no surrounding whitespace
        "5m ",
        "5 m",
        "5m\n",  # the CRD pattern (RE2: `$` is end of text) rejects a trailing newline; so must we
        "m",
        "1h-30m",
        "1e3s",
        "٣s",  # a non-ASCII digit
    ],
)
def test_invalid_durations_raise_value_error_naming_the_text(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration") as caught:
        parse_duration(text)
    assert repr(text) in str(caught.value)


@pytest.mark.parametrize("value", [None, 30, timedelta(minutes=5)])
def test_non_strings_are_rejected(value: object) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    [
        "3651d",  # one day past models.MAX_DURATION
        "1000000000d",  # one day past timedelta's range, well inside the CRD's maxLength of 32
        "9999999999999999999999999999999d",  # exactly 32 characters: the CRD accepts it
    ],
)
def test_durations_beyond_the_maximum_count_as_the_maximum(text: str) -> None:
    # The CRD accepts these (pattern and maxLength only), so the model must too: refusing them here
    # would fail an account `kubectl apply` already took (a Ready one's timer could never parse it).
    # Clamped, they can never overflow `now + duration` either.
    assert parse_duration(text) == MAX_DURATION
    assert datetime.max.replace(tzinfo=UTC) - datetime(2030, 1, 1, tzinfo=UTC) > parse_duration(text)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("0s", "0s"),
        ("45s", "45s"),
        ("30m", "30m"),
        ("1h30m", "1h30m"),
        ("90m", "1h30m"),
        ("3600s", "1h"),
        ("25h", "1d1h"),
        ("2d", "2d"),
        ("1d0h0m1s", "1d1s"),
        ("1000ms", "1s"),
        ("1d2h3m4s", "1d2h3m4s"),
    ],
)
def test_format_duration_is_canonical(text: str, canonical: str) -> None:
    assert format_duration(parse_duration(text)) == canonical
    assert parse_duration(canonical) == parse_duration(text)


@pytest.mark.parametrize(
    "seconds",
    [0, 1, 59, 60, 61, 3599, 3600, 3661, 5400, 86399, 86400, 90061, 30 * 86400, 365 * 86400 + 1],
)
def test_whole_seconds_round_trip(seconds: int) -> None:
    value = timedelta(seconds=seconds)
    text = format_duration(value)
    assert parse_duration(text) == value
    assert format_duration(parse_duration(text)) == text
