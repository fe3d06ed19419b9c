"""The kopf registry is built per run from the settings: what depends on them is registered with its
real values (no import-time intervals, no module-global state)."""

from __future__ import annotations

from typing import Any

import kopf

from agentaccounts import handlers
from agentaccounts.settings import Settings


def _spawned(reg: kopf.OperatorRegistry, kind: str) -> list[Any]:
    """Timers or daemons (kopf's handler classes are not public API; their names are stable)."""
    return [h for h in reg._spawning.get_all_handlers() if type(h).__name__ == kind]


def _timers(reg: kopf.OperatorRegistry) -> list[Any]:
    return _spawned(reg, "TimerHandler")


def test_the_orphan_sweep_runs_at_the_configured_interval_after_one_period() -> None:
    timers = _timers(handlers.registry(Settings(orphan_sweep_seconds=42)))
    assert sorted(t.selector.any_name for t in timers if t.selector) == list(handlers.PROVIDER_PLURALS)
    assert {(t.interval, t.initial_delay) for t in timers} == {(42.0, 42.0)}


def test_each_run_gets_its_own_registry() -> None:
    first, second = handlers.registry(Settings()), handlers.registry(Settings(orphan_sweep_seconds=7))
    assert first is not second
    assert {t.interval for t in _timers(first)} == {300.0}
    assert {t.interval for t in _timers(second)} == {7.0}


def test_every_account_and_provider_event_has_a_handler() -> None:
    reg = handlers.registry(Settings())
    changing = {(h.id, h.selector.any_name) for h in reg._changing.get_all_handlers() if h.selector}
    for plural in ("agentaccounts", *handlers.PROVIDER_PLURALS):
        assert any(name == plural for _, name in changing), plural
    webhooks = {h.id for h in reg._webhooks.get_all_handlers()}
    assert webhooks == {"stamp", "check"}
    assert [d.id for d in _spawned(reg, "DaemonHandler")] == ["expiry"]
