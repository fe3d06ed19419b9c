"""The provider table is the one declaration: the spec model, the CRDs and the chart agree with it.

A new provider type is its package, one entry in `agentaccounts.providers.TYPES`, and its block in
the two provider CRDs. These tests fail the moment any of the three disagrees: a block in the table
but not in a CRD (or in the chart's copy), a CRD block the operator cannot parse, a CEL exactly-one
rule that forgets a block, or a block model whose fields differ from the CRD's.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentaccounts.providers import TYPES, ProviderSpec

REPO = Path(__file__).resolve().parents[2]
PROVIDER_CRDS = ["agentaccounts.dev_accountproviders.yaml", "agentaccounts.dev_clusteraccountproviders.yaml"]
COPIES = [REPO / "crds" / name for name in PROVIDER_CRDS] + [
    REPO / "charts" / "agentaccounts" / "files" / "crds" / name for name in PROVIDER_CRDS
]


def _spec_schema(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    schema: dict[str, Any] = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema["properties"]["spec"]  # type: ignore[no-any-return]


def test_every_entry_is_keyed_by_its_own_name() -> None:
    assert TYPES and all(name == entry.name for name, entry in TYPES.items())


def test_the_model_has_exactly_the_tables_blocks() -> None:
    assert ProviderSpec.block_names() == list(TYPES)


@pytest.mark.parametrize("path", COPIES, ids=lambda p: str(p.relative_to(REPO)))
def test_each_crd_has_exactly_the_tables_blocks(path: Path) -> None:
    blocks = set(_spec_schema(path)["properties"]) - {"policy"}
    assert blocks == set(TYPES)


@pytest.mark.parametrize("path", COPIES, ids=lambda p: str(p.relative_to(REPO)))
def test_each_crds_exactly_one_rule_counts_every_block(path: Path) -> None:
    rules = [v["rule"] for v in _spec_schema(path).get("x-kubernetes-validations", [])]
    counted = [set(re.findall(r"has\(self\.([A-Za-z0-9]+)\)", rule)) for rule in rules]
    assert set(TYPES) in counted, f"no exactly-one rule over {sorted(TYPES)} in {rules}"
    message = next(v["message"] for v in _spec_schema(path)["x-kubernetes-validations"])
    assert message == f"exactly one provider block must be set ({' or '.join(TYPES)})"


@pytest.mark.parametrize("path", COPIES, ids=lambda p: str(p.relative_to(REPO)))
@pytest.mark.parametrize("name", list(TYPES))
def test_each_block_model_has_the_crds_fields(path: Path, name: str) -> None:
    crd_fields = set(_spec_schema(path)["properties"][name].get("properties", {}))
    model = TYPES[name].block
    model_fields = {field.alias or key for key, field in model.model_fields.items()}
    assert model_fields == crd_fields


@pytest.mark.parametrize("name", list(TYPES))
def test_the_model_and_the_table_agree_on_type(name: str) -> None:
    spec = ProviderSpec.model_validate({name: _minimal(name)})
    assert spec.type == name and isinstance(spec.block, TYPES[name].block)


def test_two_blocks_or_none_are_refused_naming_every_block() -> None:
    names = list(TYPES)
    for body in ({}, {names[0]: _minimal(names[0]), names[1]: _minimal(names[1])}):
        with pytest.raises(ValueError, match=re.escape(f"({' or '.join(names)})")):
            ProviderSpec.model_validate(body)


def _minimal(name: str) -> dict[str, Any]:
    return {"mode": "temporaryAccount"} if name == "cloudflare" else {}


def test_every_provider_package_is_in_the_independence_contract() -> None:
    # A new provider package the contract forgot could import another provider unnoticed.
    import tomllib

    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    independent = next(c for c in contracts if c["type"] == "independence")["modules"]
    assert sorted(independent) == sorted(f"agentaccounts.providers.{name}" for name in TYPES)
    packages = {p.parent.name for p in (REPO / "operator/agentaccounts/providers").glob("*/__init__.py")}
    assert packages == set(TYPES), "a provider package that is not in the table (or the reverse)"
