"""The kopf registry is built per run from the settings: what depends on them is registered with its
real values (no import-time intervals, no module-global state)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import kopf
import pytest

from agentaccounts import handlers
from agentaccounts.kube import KubeApiError
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


def test_no_provider_gets_a_finalizer_for_its_sweep_timer() -> None:
    # Before: kopf put its finalizer on every provider for the timer, and a provider deleted after
    # the operator (helm uninstall) stayed Terminating forever.
    timers = _timers(handlers.registry(Settings()))
    assert timers and all(t.requires_finalizer is False for t in timers)


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
    # Expiry is the one scheduler, fed by every watch event; no kopf daemon per account (its memory
    # and its periodic re-reads were the cost at 10,000 accounts).
    assert _spawned(reg, "DaemonHandler") == []
    watching = [h.selector.any_name for h in reg._watching.get_all_handlers() if h.selector]
    assert watching == ["agentaccounts"]


class _Kube:
    def __init__(self, silent_for: float, answers: bool) -> None:
        self.silent_for, self.answers, self.pinged = silent_for, answers, 0

    def seconds_since_answer(self) -> float:
        return self.silent_for

    async def ping(self) -> None:
        self.pinged += 1
        if not self.answers:
            raise KubeApiError("GET /version: no answer from the API server (ConnectTimeoutError)", 0)
        self.silent_for = 0.0


def _memo(kube: _Kube) -> dict[str, Any]:
    return {"app": SimpleNamespace(deps=SimpleNamespace(kube=kube))}


async def test_liveness_is_healthy_while_the_api_server_answers_without_asking_it() -> None:
    kube = _Kube(silent_for=3.0, answers=False)
    assert await handlers.api_server_answers(memo=_memo(kube)) == {"apiServerAnsweredSecondsAgo": 3.0}
    assert kube.pinged == 0


async def test_liveness_asks_the_api_server_after_a_silence_and_fails_if_it_does_not_answer() -> None:
    kube = _Kube(silent_for=handlers.LIVENESS_STALE_SECONDS + 1, answers=False)
    with pytest.raises(kopf.PermanentError, match="does not answer"):
        await handlers.api_server_answers(memo=_memo(kube))
    recovered = _Kube(silent_for=handlers.LIVENESS_STALE_SECONDS + 1, answers=True)
    assert await handlers.api_server_answers(memo=_memo(recovered)) == {"apiServerAnsweredSecondsAgo": 0.0}


def test_the_api_server_probe_fails_at_once_instead_of_retrying() -> None:
    probes = handlers.registry(Settings())._activities.get_all_handlers()
    probe = next(h for h in probes if h.id == "api-server")
    assert probe.errors == kopf.ErrorsMode.PERMANENT
