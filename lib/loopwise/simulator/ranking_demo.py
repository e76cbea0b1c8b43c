"""The ranking demo: the product feed closes the loop against running services.

``run_ranking_demo`` applies the ranking use case, ranks candidates with uniform
exploration (no model yet), logs a click per clicked item (``Outcome.item_id``), waits
until every reward window has closed, reads the per-item training rows
(``ReadTrainingData``), trains with ``StartTraining`` (the trainer fits the per-item
click model with the position as a feature, exports it to ONNX with the position fixed
at the top, checks parity, blesses it by its prefix-IPS expected clicks on the newest
rankings and deploys it), waits until rankings come from it, and then serves greedy
model-driven rankings. The summary compares the expected clicks per request of a
random ordering, of the rankings served by the model and of the oracle (exact, from
the simulator), and the prefix-IPS estimate (``EvaluatePolicy``) of the model's greedy
ranking on the exploration rankings the training job held out. It talks to loopwise
only through the SDK.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from loopwise.client import Client, Outcome, Ranking
from loopwise.clock import uuid7_time_ms
from loopwise.common.v1 import operation_pb2 as op_pb
from loopwise.settings import Settings
from loopwise.simulator.ranking import SHOWN, USE_CASE, ProductFeed, Request
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
    blessing: str = ""

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
            ("blessing (StartTraining)", self.blessing),
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


def _following(stage: str, progress: Progress) -> Callable[[op_pb.Operation], None]:
    def report(operation: op_pb.Operation) -> None:
        progress(stage, operation.progress, operation.stage + (f": {operation.message}" if operation.message else ""))

    return report


def run_ranking_demo(settings: Settings, config: RankingDemoConfig = RankingDemoConfig(),
                     progress: Progress = _quiet) -> RankingDemoSummary:
    """Run the product feed through the loop (see the module docstring)."""
    started = time.monotonic()
    world = ProductFeed(config.seed, config.n_candidates)
    with Client(settings=settings) as client:
        progress("apply", 0.0, USE_CASE)
        blueprint = world.blueprint(config.temperature, SHOWN, config.window_s)
        blueprint.training.candidate_families[:] = [config.family]
        applied = client.apply_use_case(blueprint, reason="ranking demo")
        progress("apply", 1.0, f"v{applied.use_case.version}")
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
        item_rows = [0]

        def closed() -> bool:
            item_rows[0] = sum(batch.rows for batch in client.read_training_data(USE_CASE))
            progress("windows", item_rows[0] / expected, f"{item_rows[0]} of {expected} item rows")
            return item_rows[0] >= expected

        _wait(closed, config.timeout_s, "every reward window to close")

        # StartTraining: the per-item model, blessed by its prefix-IPS expected clicks on
        # the newest rankings (the holdout) against the logged policy, deployed.
        operation = client.start_training(USE_CASE, deploy=True, request_id=f"ranking-demo-{uuid.uuid4().hex}")
        operation = client.wait_operation(operation, config.timeout_s, _following("training", progress))
        result = tpb.TrainingResult()
        operation.result.Unpack(result)
        if not result.deployed:
            raise RuntimeError(f"the trained ranking model was not deployed: {result.deployment_reason}")
        model = result.model
        progress("training", 1.0, f"model v{model.version}: {result.blessing.reason}")

        probe = world.sample_request()
        _wait(lambda: client.rank(USE_CASE, *probe.named(), top_k=SHOWN).model_version == model.version,
              config.timeout_s, f"rankings from model v{model.version}")
        progress("rollout", 1.0, f"v{model.version} serves")

        # The model's greedy ranking, estimated off-policy (EvaluatePolicy) from the
        # exploration rankings the training job held out (its newest fifth).
        held_out = explored[len(explored) - max(1, round(len(explored) * blueprint.training.holdout_fraction)):]
        first_ms = min(uuid7_time_ms(r.decision_id) or 0 for _, r in held_out)
        estimate = client.evaluate_policy(USE_CASE, model_version=model.version, start_time=first_ms / 1000.0,
                                          policy_variant={"type": "POLICY_TYPE_GREEDY"})

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
        rankings_served=feed.served, clicks_logged=feed.clicks, item_rows=item_rows[0],
        model_version=model.version, clicks_random=random_value, clicks_model=model_value,
        clicks_oracle=oracle_value,
        gap_closed=(model_value - random_value) / (oracle_value - random_value) if oracle_value > random_value else 0.0,
        ips_estimate=estimate.ips_value, ips_interval=(estimate.ips_ci_lower, estimate.ips_ci_upper),
        blessing=result.blessing.reason,
        seconds=time.monotonic() - started,
    )
