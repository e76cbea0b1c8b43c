"""The ranking demo: the product feed closes the loop against running services.

``run_ranking_demo`` applies the ranking use case, ranks candidates with uniform
exploration (no model yet), logs a click per clicked item (``Outcome.item_id``), waits
until every reward window has closed, reads the per-item training rows
(``ReadTrainingData``), fits the per-item click model with the position as a feature
(services/trainer/ranking.py), exports it to ONNX (position fixed at the top) and
checks parity, registers and deploys it, waits until rankings come from it, and then
serves greedy model-driven rankings. The summary compares the expected clicks per
request of a random ordering, of the rankings served by the model and of the oracle
(exact, from the simulator), and the prefix-IPS estimate of the model's greedy ranking
from the exploration logs. It talks to loopwise only through the SDK.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from loopwise.client import Client, Outcome, Ranking
from loopwise.clock import uuid7_time_ms
from loopwise.ranking import RankingPolicy, prefix_ips, ranking_propensities
from loopwise.settings import Settings
from loopwise.simulator.ranking import SHOWN, USE_CASE, ProductFeed, Request
from loopwise.tensors import F32, I32, unpack_matrix, unpack_vector
from loopwise.trainer.v1 import trainer_service_pb2 as tpb

Progress = Callable[[str, float, str], None]
STAGES = ("apply", "explore", "windows", "training", "rollout", "exploit")


def _quiet(stage: str, fraction: float, detail: str) -> None:
    pass


@dataclass(frozen=True)
class RankingDemoConfig:
    """Sizes and knobs of one ranking demo run."""

    n_explore: int = 1500
    n_exploit: int = 500
    seed: int = 0
    n_candidates: int = 10
    window_s: float = 60.0  # reward window, simulated seconds
    temperature: float = 0.5
    family: str = "hist_gradient_boosting"
    timeout_s: float = 240.0  # for each wait


@dataclass
class RankingDemoSummary:
    """What the ranking demo prints."""

    rankings_served: int
    clicks_logged: int
    item_rows: int
    model_version: int
    clicks_random: float
    clicks_model: float
    clicks_oracle: float
    gap_closed: float
    ips_estimate: float
    ips_interval: tuple[float, float]
    seconds: float

    def rows(self) -> list[tuple[str, str]]:
        """The summary as (label, value) rows, for printing."""
        lo, hi = self.ips_interval
        return [
            ("rankings served", f"{self.rankings_served}"),
            ("clicks logged", f"{self.clicks_logged}"),
            ("item training rows", f"{self.item_rows}"),
            ("model", f"v{self.model_version} (per-item click model, position as a feature)"),
            ("expected clicks per request: random", f"{self.clicks_random:.3f}"),
            ("expected clicks per request: model-driven", f"{self.clicks_model:.3f}"),
            ("expected clicks per request: oracle", f"{self.clicks_oracle:.3f}"),
            ("gap closed (model − random)/(oracle − random)", f"{self.gap_closed:.1%}"),
            ("off-policy estimate of the model's ranking on held-out exploration (prefix IPS, 95% CI)",
             f"{self.ips_estimate:.3f} [{lo:.3f}, {hi:.3f}]"),
            ("took", f"{self.seconds:.0f} s"),
        ]


def _wait(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.2)


class _Feed:
    """The product's side: requests, rankings, clicks."""

    def __init__(self, client: Client, world: ProductFeed) -> None:
        self.client = client
        self.world = world
        self.served = 0
        self.clicks = 0
        self._pending: list[Outcome] = []

    def rank(self, request: Request, disable_exploration: bool = False) -> Ranking:
        """Rank the request's candidates through loopwise (its top SHOWN positions)."""
        context, items = request.named()
        ranking = self.client.rank(USE_CASE, context, items, top_k=SHOWN, disable_exploration=disable_exploration)
        if not ranking.decision_id:
            raise RuntimeError("loopwise could not be reached: the ranking was made locally")
        self.served += 1
        return ranking

    def click(self, request: Request, ranking: Ranking) -> None:
        """Sample the clicks on the shown items and log one outcome per click, naming the item."""
        index = {item_id: i for i, item_id in enumerate(request.item_ids)}
        shown = np.array([index[i] for i in ranking.shown])
        clicks = self.world.sample_clicks(request, shown)
        at_s = (uuid7_time_ms(ranking.decision_id) or 0) / 1000.0 + 1.0
        outcomes = [Outcome(USE_CASE, ranking.decision_id, f"click-{ranking.decision_id}-{j}", "click", 1.0,
                            event_time=at_s, item_id=ranking.shown[j]) for j in np.flatnonzero(clicks)]
        self._pending += outcomes
        self.clicks += len(outcomes)
        if len(self._pending) >= 200:
            self.flush()

    def flush(self) -> None:
        """Log the clicks not logged yet (one LogOutcomes call)."""
        if self._pending:
            self.client.log_outcomes(self._pending)
            self._pending = []


def _item_rows(client: Client) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], np.ndarray, np.ndarray]:
    """Per-item rows: features, positions, rewards, decision ids, propensities, candidate indices."""
    x, positions, rewards, ids, propensities, indices = [], [], [], [], [], []
    for batch in client.read_training_data(USE_CASE):
        if not batch.rows:
            continue
        x.append(unpack_matrix(batch.features, batch.rows, len(batch.feature_names), "features"))
        positions.append(unpack_vector(batch.positions, I32))
        rewards.append(unpack_vector(batch.rewards, F32))
        propensities.append(unpack_vector(batch.propensities, F32))
        indices.append(unpack_vector(batch.action_indices, I32))
        ids += list(batch.decision_ids)
    if not ids:
        return np.zeros((0, 0)), np.zeros(0), np.zeros(0), [], np.zeros(0), np.zeros(0)
    return (np.vstack(x), np.concatenate(positions), np.concatenate(rewards), ids, np.concatenate(propensities),
            np.concatenate(indices))


def run_ranking_demo(settings: Settings, config: RankingDemoConfig = RankingDemoConfig(),
                     progress: Progress = _quiet) -> RankingDemoSummary:
    """Run the product feed through the loop (see the module docstring)."""
    from loopwise.services.trainer.ranking import (
        export_ranking_onnx,
        fit_ranking,
        item_scores,
        ranking_parity,
    )

    started = time.monotonic()
    world = ProductFeed(config.seed, config.n_candidates)
    with Client(settings=settings) as client:
        progress("apply", 0.0, USE_CASE)
        applied = client.apply_use_case(world.blueprint(config.temperature, SHOWN, config.window_s),
                                        reason="ranking demo")
        version = applied.use_case.version
        progress("apply", 1.0, f"v{version}")
        feed = _Feed(client, world)
        explored: list[tuple[Request, Ranking]] = []
        for n in range(config.n_explore):
            request = world.sample_request()
            ranking = feed.rank(request)
            feed.click(request, ranking)
            explored.append((request, ranking))
            if n % 100 == 0:
                progress("explore", n / config.n_explore, f"{n} rankings")
        feed.flush()
        progress("explore", 1.0, f"{config.n_explore} rankings, {feed.clicks} clicks")

        expected = config.n_explore * SHOWN
        rows: list = []

        def closed() -> bool:
            rows[:] = [_item_rows(client)]
            progress("windows", len(rows[0][3]) / expected, f"{len(rows[0][3])} of {expected} item rows")
            return len(rows[0][3]) >= expected

        _wait(closed, config.timeout_s, "every reward window to close")
        x, positions, rewards, row_ids, _, _ = rows[0]
        # The last quarter of the exploration is held out: the off-policy estimate of the
        # model's ranking is made on rankings the model was not trained on.
        held_out = {r.decision_id for _, r in explored[len(explored) * 3 // 4:]}
        train = np.array([i not in held_out for i in row_ids])

        progress("training", 0.0, f"{int(train.sum())} item rows")
        estimator, kind = fit_ranking(config.family, x[train], positions[train], rewards[train], config.seed)
        onnx = export_ranking_onnx(estimator, kind, x.shape[1])
        parity = ranking_parity(onnx, estimator, kind, x[-min(500, x.shape[0]):])
        if not parity.ok:
            raise RuntimeError(f"the ranking model failed its parity check: {parity.reason}")
        model = client.register_model(tpb.Model(use_case=USE_CASE, family=f"ranking_{config.family}",
                                                blueprint_version=version, input_width=x.shape[1],
                                                score_output="probabilities",
                                                description="per-item click model, position fixed at 1"), onnx)
        progress("training", 1.0, f"model v{model.version}")

        client.set_deployment(USE_CASE, production_version=model.version, reason="ranking demo")
        probe = world.sample_request()
        _wait(lambda: client.rank(USE_CASE, *probe.named(), top_k=SHOWN).model_version == model.version,
              config.timeout_s, f"rankings from model v{model.version}")
        progress("rollout", 1.0, f"v{model.version} serves")

        # The model's greedy ranking, estimated off-policy from the held-out exploration.
        greedy = RankingPolicy(softmax=False)
        evaluated = [(request, r) for request, r in explored if r.decision_id in held_out]
        logged = np.array([r.propensities for _, r in evaluated])
        scores = item_scores(estimator, kind, np.vstack([request.rows() for request, _ in evaluated]))
        scores = scores.reshape(len(evaluated), config.n_candidates)
        target = np.array([ranking_propensities(greedy, s, np.array([request.item_ids.index(i) for i in r.shown]))
                           for s, (request, r) in zip(scores, evaluated, strict=True)])
        clicks = np.zeros_like(logged)
        # Clicks per shown position of the exploration rankings, from the item rows read.
        by_decision: dict[str, list[float]] = {}
        for decision_id, reward in zip(row_ids, rewards, strict=True):
            by_decision.setdefault(decision_id, []).append(float(reward))
        for n, (_, r) in enumerate(evaluated):
            clicks[n] = by_decision.get(r.decision_id, [0.0] * SHOWN)[:SHOWN]
        estimate = prefix_ips(clicks, logged, target)

        values_model: list[float] = []
        values_random: list[float] = []
        values_oracle: list[float] = []
        for n in range(config.n_exploit):
            request = world.sample_request()
            ranking = feed.rank(request, disable_exploration=True)
            feed.click(request, ranking)
            order = np.array([request.item_ids.index(i) for i in ranking.ranked_ids])
            values_model.append(world.expected_clicks(request, order))
            values_random.append(world.random_clicks(request))
            values_oracle.append(world.oracle_clicks(request))
            if n % 100 == 0:
                progress("exploit", n / config.n_exploit, f"{n} rankings")
        feed.flush()
        progress("exploit", 1.0, f"{config.n_exploit} rankings")
    model_value, random_value, oracle_value = (float(np.mean(v)) for v in (values_model, values_random,
                                                                          values_oracle))
    return RankingDemoSummary(
        rankings_served=feed.served, clicks_logged=feed.clicks, item_rows=int(x.shape[0]),
        model_version=model.version, clicks_random=random_value, clicks_model=model_value,
        clicks_oracle=oracle_value,
        gap_closed=(model_value - random_value) / (oracle_value - random_value) if oracle_value > random_value else 0.0,
        ips_estimate=estimate.value, ips_interval=(estimate.low, estimate.high),
        seconds=time.monotonic() - started,
    )
