"""The demo: the checkout product closes the whole loop against running services.

``run_demo`` applies the use case, explores at random (no model yet), waits until
every reward window has closed, trains (the first model is deployed), waits until
decisions come from the model, serves the model-driven policy with its exploration
floor, asks the evaluator for the heterogeneous effects report, writes the HTML, runs
an experiment of the model against random offers (two arms) and asks for its
scorecard, and returns a :class:`DemoSummary`. The use case has two product metrics,
purchases and returns (docs/blueprints.md, "Product metrics"): the value model
maximizes purchases (weight 1) and tracks returns (weight 0), so the scorecard shows
what the model's offers do to both. It talks to loopwise only through the SDK, so it runs
against any stack the settings reach (mutual TLS and tokens included).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from loopwise.client import Client, Outcome
from loopwise.clock import Clock, uuid7_time_ms
from loopwise.common.v1 import operation_pb2 as op_pb
from loopwise.evaluator.v1 import evaluator_service_pb2 as epb
from loopwise.settings import Settings
from loopwise.simulator.checkout import USE_CASE, CheckoutUpsell, Units
from loopwise.trainer.v1 import trainer_service_pb2 as tpb

# progress(stage, fraction of the stage done in [0, 1], detail)
Progress = Callable[[str, float, str], None]

STAGES = ("apply", "explore", "windows", "training", "rollout", "exploit", "effects", "report", "scorecard")
# The demo's value model: purchases count, returns are tracked only.
DEMO_WEIGHTS = {"purchase": 1.0, "returns": 0.0}


def _quiet(stage: str, fraction: float, detail: str) -> None:
    pass


@dataclass(frozen=True)
class DemoConfig:
    """Sizes and knobs of one demo run."""

    n_explore: int = 4000
    n_exploit: int = 2000
    seed: int = 0
    window_s: float = 1800.0  # reward window, simulated seconds
    epsilon: float = 0.1
    chunk_rows: int = 500
    timeout_s: float = 240.0  # for each wait (windows, training, rollout, effects)
    n_scorecard: int = 1000  # decisions of the model-vs-random experiment (0: no scorecard)


@dataclass
class DemoSummary:
    """What the demo prints."""

    decisions_served: int
    decisions_logged: int
    outcomes_logged: int
    join_rate: float
    model_version: int
    model_family: str
    value_random: float
    value_model: float
    value_oracle: float
    gap_closed: float
    ate: float
    ate_ci: tuple[float, float]
    true_ate: float
    analysed_rows: int
    report_path: Path
    report_id: str
    seconds: float
    extras: dict[str, float] = field(default_factory=dict)
    # The experiment's scorecard: (metric, "model" arm mean, "random" arm mean,
    # difference with its 95% CI as text), one per metric.
    scorecard: list[tuple[str, float, float, str]] = field(default_factory=list)

    def rows(self) -> list[tuple[str, str]]:
        """The summary as (label, value) rows, for printing."""
        lo, hi = self.ate_ci
        return [
            ("decisions served", f"{self.decisions_served}"),
            ("decisions logged", f"{self.decisions_logged}"),
            ("outcomes logged", f"{self.outcomes_logged}"),
            ("join rate", f"{self.join_rate:.1%}"),
            ("model", f"v{self.model_version} ({self.model_family})"),
            ("value per decision: random", f"{self.value_random:.3f}"),
            ("value per decision: model-driven", f"{self.value_model:.3f}"),
            ("value per decision: oracle", f"{self.value_oracle:.3f}"),
            ("gap closed (model − random)/(oracle − random)", f"{self.gap_closed:.1%}"),
            ("ATE estimate (95% CI)", f"{self.ate:.3f} [{lo:.3f}, {hi:.3f}]"),
            ("true ATE (analysed units)", f"{self.true_ate:.3f}"),
            ("rows analysed", f"{self.analysed_rows}"),
            ("report", str(self.report_path)),
            *[(f"scorecard {metric}: model vs random arm", f"{model:.3f} vs {random:.3f}, difference {diff}")
              for metric, model, random, diff in self.scorecard],
            ("took", f"{self.seconds:.0f} s"),
        ]


class _Product:
    """The simulated product's side of the loop: decisions, pending purchases, delivery."""

    def __init__(self, settings: Settings, world: CheckoutUpsell, client: Client,
                 config: DemoConfig) -> None:
        self.settings = settings
        self.world = world
        self.client = client
        self.config = config
        self.clock = Clock.from_settings(settings)
        self.version = 0
        self.served = 0
        self.delivered = 0
        self._pending: list[tuple[int, Outcome]] = []  # (event ms, outcome), delivered when due
        self._unit_seq = 0
        self.probes: list[np.ndarray] = []  # units decided by rollout probes

    def serve(self, n: int, stage: str, progress: Progress) -> tuple[Units, np.ndarray, int]:
        """Decide for ``n`` new units in chunks; queue their purchases; return units, actions
        and the last model version seen."""
        units = self.world.sample_units(n)
        actions = np.zeros(n, dtype=np.int32)
        model_version = 0
        for start in range(0, n, self.config.chunk_rows):
            stop = min(n, start + self.config.chunk_rows)
            chunk = Units(units.matrix[start:stop])
            unit_ids = [f"unit-{self.world.seed}-{self._unit_seq + i}" for i in range(len(chunk))]
            self._unit_seq += len(chunk)
            batch = self.client.decide_batch(self.world.use_case, self.version,
                                             list(self.world.feature_names), chunk.matrix, unit_ids)
            if batch.fallback.any():
                raise RuntimeError(f"{int(batch.fallback.sum())} fallback decisions in {stage}")
            self.served += len(batch)
            actions[start:stop] = batch.action_indices
            model_version = batch.model_version
            self._queue_purchases(chunk, batch.action_indices, batch.decision_ids)
            self.deliver_due()
            progress(stage, stop / n, f"{stop}/{n} decisions")
        return units, actions, model_version

    def probe(self) -> tuple[Units, int, int]:
        """One unit decided through ``Decide`` (named features): its units, action and
        the model version that scored it. Its purchases are queued like any other."""
        units = self.world.sample_units(1)
        decision = self.client.decide(self.world.use_case, units.features(0),
                                      unit_id=f"probe-{self.world.seed}-{self._unit_seq}")
        self._unit_seq += 1
        if decision.fallback:
            raise RuntimeError("fallback decision while probing for the model")
        self.served += 1
        self.probes.append(units.matrix[0])
        self._queue_purchases(units, np.array([decision.action_index]), [decision.decision_id])
        return units, decision.action_index, decision.model_version

    def _queue_purchases(self, units: Units, actions: np.ndarray, decision_ids: list[str]) -> None:
        """Queue the purchases and returns of decided units, delivered when due."""
        times = np.array([uuid7_time_ms(d) or 0 for d in decision_ids], dtype=np.int64)
        rows, values, event_ms = self.world.sample_outcomes(units, actions, times)
        for row, value, at in zip(rows, values, event_ms, strict=True):
            decision_id = decision_ids[row]
            self._pending.append((int(at), Outcome(
                self.world.use_case, decision_id, f"purchase-{decision_id}", "purchase",
                float(value), event_time=int(at) / 1000.0)))
        returned, return_ms = self.world.sample_returns(units, actions, times)
        for row, at in zip(returned, return_ms, strict=True):
            decision_id = decision_ids[row]
            self._pending.append((int(at), Outcome(
                self.world.use_case, decision_id, f"return-{decision_id}", "return", 1.0,
                event_time=int(at) / 1000.0)))

    def deliver_due(self, everything: bool = False) -> None:
        """Log the purchases whose event time has come on the shared clock."""
        now = self.clock.now_ms()
        due = [o for at, o in self._pending if everything or at <= now]
        if not due:
            return
        self._pending = [(at, o) for at, o in self._pending if not (everything or at <= now)]
        self.client.log_outcomes(due)
        self.delivered += len(due)

    def wait_windows_closed(self, stage: str, progress: Progress) -> None:
        """Deliver purchases as they happen until every decision is logged and closed."""
        deadline = time.monotonic() + self.config.timeout_s
        while True:
            self.deliver_due()
            stats = self.client.get_stats(self.world.use_case)
            closed = stats.closed_windows
            progress(stage, closed / max(1, self.served),
                     f"{stats.decisions}/{self.served} logged, {closed} windows closed")
            if stats.decisions >= self.served and closed >= self.served and not self._pending:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"windows still open after {self.config.timeout_s}s: {stats}")
            time.sleep(0.25)


def _following(stage: str, progress: Progress) -> Callable[[op_pb.Operation], None]:
    """An ``on_progress`` callback of ``Client.wait_operation`` reporting ``stage``."""

    def report(operation: op_pb.Operation) -> None:
        detail = operation.stage + (f": {operation.message}" if operation.message else "")
        progress(stage, operation.progress, detail)

    return report


def _wait_for_model(product: _Product, progress: Progress, timeout_s: float) -> int:
    """Decide for single units (real ones, outcomes and all) until a model scores."""
    deadline = time.monotonic() + timeout_s
    while True:
        _, _, model_version = product.probe()
        if model_version > 0:
            progress("rollout", 1.0, f"model v{model_version} serving")
            return model_version
        if time.monotonic() > deadline:
            raise TimeoutError("no model serving decisions after training")
        progress("rollout", 0.5, "waiting for the model to reach the decision service")
        time.sleep(0.25)


@dataclass(frozen=True)
class Played:
    """What :func:`play` did."""

    decisions: int
    outcomes: int
    model_version: int
    value_per_decision: float

    def __str__(self) -> str:
        source = f"model v{self.model_version}" if self.model_version else "no model yet"
        return (f"{self.decisions} decisions ({source}), {self.outcomes} outcomes (purchases and returns) logged, "
                f"value per decision {self.value_per_decision:.2f}; every reward window closed")


def play(client: Client, decisions: int = 2000, seed: int = 0, timeout_s: float = 240.0) -> Played:
    """Simulated shoppers meet a running loopwise: ``decisions`` decisions of the
    ``checkout_upsell`` use case (as in ``examples/checkout_upsell.yaml``) through
    ``client``, their purchases logged as they happen on the shared clock, until every
    reward window has closed. The use case must exist; its reward window is read from it.
    """
    use_case = client.get_use_case(USE_CASE)
    window_s = use_case.blueprint.reward.window.ToTimedelta().total_seconds()
    world = CheckoutUpsell(seed=seed, window_s=window_s)
    config = DemoConfig(seed=seed, window_s=window_s, timeout_s=timeout_s)
    product = _Product(client.settings, world, client, config)
    product.version = use_case.version
    units, actions, model_version = product.serve(decisions, "play", _quiet)
    product.wait_windows_closed("windows", _quiet)
    value = float(np.mean(world.expected_reward(units, actions.astype(float))))
    return Played(decisions=product.served, outcomes=product.delivered,
                  model_version=model_version, value_per_decision=value)


def run_demo(settings: Settings, config: DemoConfig | None = None,
             progress: Progress | None = None) -> DemoSummary:
    """Run the whole loop against the services named by ``settings``; see the module doc.

    The services must run with the same clock settings (anchor, speed) as ``settings``.
    """
    config = config or DemoConfig()
    progress = progress or _quiet
    started = time.monotonic()
    world = CheckoutUpsell(seed=config.seed, window_s=config.window_s)
    with Client(settings=settings, deadline_s=max(settings.client_deadline_s, 5.0)) as client:
        product = _Product(settings, world, client, config)

        # a. the use case
        blueprint = world.metrics_blueprint(DEMO_WEIGHTS, config.epsilon)
        applied = client.apply_use_case(blueprint, author="demo", reason="checkout upsell demo")
        product.version = applied.use_case.version
        progress("apply", 1.0, f"{world.use_case} v{product.version}")

        # b, c. random exploration, then every window closed
        explore_units, explore_actions, _ = product.serve(config.n_explore, "explore", progress)
        product.wait_windows_closed("windows", progress)

        # d. training; the first model goes to production
        operation = client.start_training(world.use_case, deploy=True,
                                          request_id=product.clock.new_id())
        # wait_operation raises OperationFailed (a RuntimeError) unless the job succeeded
        operation = client.wait_operation(operation, config.timeout_s, _following("training", progress))
        result = tpb.TrainingResult()
        operation.result.Unpack(result)
        if not result.deployed:
            raise RuntimeError(f"the trained model was not deployed: {result.deployment_reason}")
        model_version = _wait_for_model(product, progress, config.timeout_s)

        # e. the model-driven policy with its exploration floor
        exploit_units, exploit_actions, _ = product.serve(config.n_exploit, "exploit", progress)
        product.wait_windows_closed("windows", progress)
        values = world.policy_values(exploit_units, exploit_actions)

        # f. heterogeneous effects on everything logged
        treated, control = world.actions[1], world.actions[0]
        operation = client.estimate_effects(world.use_case, request_id=product.clock.new_id(),
                                            treatment_action=treated, control_action=control,
                                            seed=config.seed)
        operation = client.wait_operation(operation, config.timeout_s, _following("effects", progress))
        effects = epb.EstimateEffectsResult()
        operation.result.Unpack(effects)
        report = client.get_report(effects.report_id, use_case=world.use_case)
        report_path = Path(settings.data_dir) / "reports" / f"hte-{world.use_case}.html"
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_path.write_bytes(report.html)
        progress("report", 1.0, str(report_path))

        # g. an experiment: the model against random offers, on both metrics
        scorecard = _experiment(client, product, blueprint, config, progress) if config.n_scorecard else []

        # h. the summary
        stats = client.get_stats(world.use_case)
        all_units = Units(np.vstack([explore_units.matrix, exploit_units.matrix,
                                     *[p[None, :] for p in product.probes]]))
        return DemoSummary(
            decisions_served=product.served,
            decisions_logged=int(stats.decisions),
            outcomes_logged=int(stats.outcomes),
            join_rate=float(stats.join_rate),
            model_version=model_version,
            model_family=result.model.family,
            value_random=values["random"], value_model=values["model"],
            value_oracle=values["oracle"], gap_closed=values["gap_closed"],
            ate=effects.ate, ate_ci=(effects.ate_ci_lower, effects.ate_ci_upper),
            true_ate=float(np.mean(world.effect(all_units))),
            analysed_rows=int(effects.rows),
            report_path=report_path.resolve(),
            report_id=effects.report_id,
            seconds=time.monotonic() - started,
            extras={"explore_offer_share": float(np.mean(explore_actions)),
                    "exploit_offer_share": float(np.mean(exploit_actions))},
            scorecard=scorecard,
        )


def _experiment(client: Client, product: _Product, blueprint, config: DemoConfig,
                progress: Progress) -> list[tuple[str, float, float, str]]:
    """Split units into a "model" arm and a "random" arm (uniform offers), serve
    ``n_scorecard`` decisions, wait for their windows and return the scorecard's
    comparison of the arms on every metric (reward, outcome count and the product
    metrics purchase and returns)."""
    experiment = type(blueprint)()
    experiment.CopyFrom(blueprint)
    experiment.arms.add(name="model", traffic_share=0.5)
    experiment.arms.add(name="random", traffic_share=0.5, epsilon=1.0)
    applied = client.apply_use_case(experiment, author="demo", reason="model against random offers")
    product.version = applied.use_case.version
    progress("scorecard", 0.1, f"arms model and random in v{product.version}")
    product.serve(config.n_scorecard, "scorecard", lambda stage, fraction, detail: progress(
        stage, 0.1 + 0.6 * fraction, detail))
    product.wait_windows_closed("windows", progress)
    card = client.get_scorecard(product.world.use_case, control_arm="random",
                                start_time=None).scorecard
    means = {(m.group, m.metric): m.mean for m in card.group_metrics}
    rows = []
    for c in card.comparisons:
        if c.metric == "serving_latency_ms":
            continue
        rows.append((c.metric, means.get(("model", c.metric), float("nan")),
                     means.get(("random", c.metric), float("nan")),
                     f"{c.difference:+.3f} (95% CI {c.difference_ci_lower:+.3f} .. {c.difference_ci_upper:+.3f})"))
    progress("scorecard", 1.0, f"{card.rows} decisions compared")
    return rows
