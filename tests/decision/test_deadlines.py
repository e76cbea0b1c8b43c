"""Deadlines and per-use-case latency budgets."""

from __future__ import annotations

import time

import pytest

from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.errors import DeadlineExceeded
from loopwise.services.decision.servicer import _check_deadline
from tests.decision.helpers import blueprint, features, start_decider


class _Context:
    """Stands in for the servicer context: only the remaining time matters here."""

    def __init__(self, remaining: float | None) -> None:
        self.remaining = remaining

    def time_remaining(self) -> float | None:
        return self.remaining


def test_a_passed_deadline_is_refused_before_any_work() -> None:
    with pytest.raises(DeadlineExceeded):
        _check_deadline(_Context(-0.001))
    _check_deadline(_Context(0.5))  # time left: served
    _check_deadline(_Context(None))  # no deadline: served


async def test_a_spent_latency_budget_returns_the_default_decision(make_settings) -> None:
    d = await start_decider(make_settings(decision_log_enabled=False))
    try:
        b = blueprint("budgeted", kind="action_value", explore_without_model=True)
        b.latency_budget_ms = 5.0
        await d.apply(b)
        request = dpb.DecideRequest(use_case="budgeted", unit_id="u1", features=features())
        fresh = d.core.decide(request, time.perf_counter())
        assert not fresh.fallback and fresh.explored  # within budget: uniform exploration
        before = d.core.budget_fallbacks
        late = d.core.decide(request, time.perf_counter() - 0.050)  # 50 ms already spent
        assert late.fallback and late.action == b.default_decision.action
        assert list(late.action_probabilities) == [1.0, 0.0, 0.0]
        assert d.core.budget_fallbacks == before + 1
        b.latency_budget_ms = 0.0  # no budget: never forced
        await d.apply(b)
        assert not d.core.decide(request, time.perf_counter() - 10.0).fallback
    finally:
        await d.stop()
