"""Candidate search under a wall-time budget, and what each candidate costs to serve.

Each family has a small list of configurations (its defaults first). The search is
successive halving: every configuration is fitted on a seeded subsample of an eighth
of the fitting rows and scored on the newest fifth of the training rows (the search
validation slice, never the holdout); the best third goes on with three times the rows,
until one is left or the rows run out. The winner is refitted on all training rows
and scored on the holdout. When the family's budget is spent the search stops and
the best configuration so far is refitted.

``package_candidate`` exports a fitted candidate to ONNX and checks parity; the
single-row latency is measured by a :class:`LatencyProbe` (injectable, so tests do
not depend on timing). All ``*_candidate`` functions and ``measure_latency`` are
process-pool functions.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from loopwise.services.trainer.models import (
    ACTION_VALUE,
    BOOSTING,
    CLASSIFIER_KINDS,
    FOREST,
    CandidateFit,
    ParityReport,
    TrainingSet,
    check_parity,
    evaluate,
    export_onnx,
    family_name,
    fit_model,
    fit_weighted,
    log_loss,
    make_estimator,
    predict_scores,
    score_output,
)

# Configurations per family, defaults first (a tie keeps the earlier one).
SPACES: dict[str, list[dict[str, Any]]] = {
    "linear": [{"strength": 1.0}, {"strength": 0.1}, {"strength": 10.0}],
    BOOSTING: [{}, {"max_leaf_nodes": 15, "min_samples_leaf": 40}, {"learning_rate": 0.2, "max_depth": 4}],
    FOREST: [{}, {"max_depth": 6}, {"max_depth": 12, "min_samples_leaf": 10}],
}
FOREST_MAX_TREE_ROWS = 10_000  # each tree's bootstrap sample is at most this many rows
SEARCH_VALIDATION_FRACTION = 0.2
MIN_RUNG_ROWS = 200
FIRST_RUNG_SHARE = 8  # the first rung fits on 1/8 of the fitting rows
ETA = 3  # each rung keeps the best third, on three times the rows
LATENCY_RUNS = 300
LATENCY_WARMUP = 20


@dataclass
class SearchedFit:
    """A family's refitted winner with what its search did."""

    fit: CandidateFit
    params: dict[str, Any]
    configurations: int
    budget_spent: bool


def params_text(params: dict[str, Any]) -> str:
    """Hyper-parameters as ``key=value`` joined by ", " ("defaults" when empty)."""
    return ", ".join(f"{k}={v}" for k, v in sorted(params.items())) or "defaults"


def _sized(family: str, params: dict[str, Any], rows: int) -> dict[str, Any]:
    """Forest trees sample at most FOREST_MAX_TREE_ROWS rows each (half of smaller sets)."""
    if family != FOREST or "max_samples" in params or not rows:
        return params
    return {**params, "max_samples": min(0.5, FOREST_MAX_TREE_ROWS / rows)}


def _validation_loss(estimator: Any, kind: str, x: np.ndarray, y: np.ndarray, n_classes: int) -> float:
    """Lower is better: log loss for classifiers, mean squared error otherwise."""
    scores = predict_scores(estimator, kind, x)
    if kind in CLASSIFIER_KINDS:
        if scores.shape[1] < n_classes:  # a subsample lacked a class: the model cannot be judged
            return math.inf
        return log_loss(y.astype(np.int64), scores)
    return float(np.mean((scores[:, 0] - y) ** 2))


def search_candidate(family: str, data: TrainingSet, seed: int, budget_s: float) -> SearchedFit:
    """Successive halving over the family's configurations, then a refit on every
    training row, scored on the holdout (pool function, one native thread: on a
    shared machine OpenMP's spinning threads cost far more than they give)."""
    with threadpool_limits(1):
        return _search(family, data, seed, budget_s)


def _search(family: str, data: TrainingSet, seed: int, budget_s: float) -> SearchedFit:
    started = time.perf_counter()
    configs = SPACES[family]
    n = data.x_train.shape[0]
    n_val = int(round(n * SEARCH_VALIDATION_FRACTION))
    best = 0
    tried = 1
    spent = False
    if len(configs) > 1 and n_val >= 20 and n - n_val >= MIN_RUNG_ROWS:
        n_fit = n - n_val
        x_fit, y_fit = data.x_train[:n_fit].astype(np.float64), data.y_train[:n_fit]
        x_val, y_val = data.x_train[n_fit:].astype(np.float64), data.y_train[n_fit:]
        w_fit = None if data.w_train is None else data.w_train[:n_fit]
        order = np.random.default_rng(seed).permutation(n_fit)
        n_classes = 2 if data.kind == "binary" else data.n_actions
        survivors = list(range(len(configs)))
        size = max(MIN_RUNG_ROWS, n_fit // FIRST_RUNG_SHARE)
        tried = 0
        while True:
            losses: dict[int, float] = {}
            rows = order[:min(size, n_fit)]
            for i in survivors:
                if losses and time.perf_counter() - started > budget_s:
                    spent = True
                    break
                estimator = make_estimator(data.kind, family, seed, _sized(family, configs[i], rows.size))
                try:
                    fit_weighted(estimator, x_fit[rows], y_fit[rows], None if w_fit is None else w_fit[rows])
                    losses[i] = _validation_loss(estimator, data.kind, x_val, y_val, n_classes)
                except ValueError:  # e.g. a subsample with a single class
                    losses[i] = math.inf
                tried += 1
            ranked = sorted(losses, key=lambda i: (losses[i], i))
            best = ranked[0]
            if spent or len(ranked) <= 1 or size >= n_fit:
                break
            survivors = ranked[: max(1, len(ranked) // ETA)]
            if len(survivors) == 1:  # a lone survivor needs no more rungs: the refit follows
                break
            size *= ETA
    estimator = fit_model(data, family, seed, _sized(family, configs[best], n))
    metrics, metric, score = evaluate(estimator, data)
    fit = CandidateFit(family_name(data.kind, family), estimator, metrics, metric, score,
                       time.perf_counter() - started)
    return SearchedFit(fit, dict(configs[best]), tried, spent)


def package_candidate(estimator: Any, data: TrainingSet) -> tuple[bytes, ParityReport]:
    """Export to ONNX and check parity on the holdout (pool function); an export
    failure is reported as a failed parity report with empty bytes."""
    with threadpool_limits(1):
        try:
            onnx = export_onnx(estimator, data.kind, data.input_width)
        except Exception as exc:  # any converter failure disqualifies the candidate
            return b"", ParityReport(False, math.inf, 0, 0.0, f"ONNX export failed: {type(exc).__name__}: {exc}")
        return onnx, check_parity(onnx, estimator, data)


def measure_latency(onnx: bytes, kind: str, input_width: int, n_actions: int,
                    runs: int = LATENCY_RUNS) -> float:
    """p99 of single-decision scoring with ONNX Runtime on one thread, ms (pool function).

    One decision is one row, or one row per action for action-value kinds."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(onnx, options, providers=["CPUExecutionProvider"])
    rows = n_actions if kind == ACTION_VALUE else 1
    x = np.random.default_rng(0).normal(size=(rows, input_width)).astype(np.float32)
    output = score_output(kind)
    for _ in range(LATENCY_WARMUP):
        session.run([output], {"features": x})
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        session.run([output], {"features": x})
        times[i] = time.perf_counter() - start
    return float(np.percentile(times, 99) * 1000.0)


# (family, onnx bytes, kind, input width, number of actions) -> p99 ms
LatencyProbe = Callable[[str, bytes, str, int, int], Awaitable[float]]


def fixed_latency_probe(latencies_ms: dict[str, float], default_ms: float = 0.1) -> LatencyProbe:
    """A probe answering a fixed latency per registered family name (for tests and
    dry runs): deterministic, whatever the machine's load."""

    async def probe(family: str, onnx: bytes, kind: str, input_width: int, n_actions: int) -> float:
        return float(latencies_ms.get(family, default_ms))

    return probe
