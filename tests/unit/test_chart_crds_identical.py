"""The chart ships byte-identical copies of crds/ (the single source of truth) in files/crds/.

If this fails after a CRD change: `cp crds/*.yaml charts/agentaccounts/files/crds/`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "crds"
CHART_COPY = REPO / "charts" / "agentaccounts" / "files" / "crds"


def test_the_chart_has_exactly_the_repository_crds() -> None:
    assert sorted(p.name for p in CHART_COPY.glob("*.yaml")) == sorted(p.name for p in SOURCE.glob("*.yaml"))
    assert list(SOURCE.glob("*.yaml")), "no CRDs found in crds/"


@pytest.mark.parametrize("name", sorted(p.name for p in SOURCE.glob("*.yaml")))
def test_chart_crd_is_byte_identical(name: str) -> None:
    assert (CHART_COPY / name).read_bytes() == (SOURCE / name).read_bytes(), (
        f"charts/agentaccounts/files/crds/{name} differs from crds/{name}: "
        "run `cp crds/*.yaml charts/agentaccounts/files/crds/`"
    )
