"""Training jobs of ranking use cases (docs/ranking.md, "Training").

The job reads every logged ranking with all its candidates (ReadTrainingData with
``include_unshown_items``), aligned onto the current blueprint's features. The newest
``holdout_fraction`` of rankings (by decision time) is the holdout. Each candidate
family is fitted as the per-item click model with the position as a feature
(services/trainer/ranking.py) on the shown items of the training rankings, exported to
ONNX with the top position fixed inside the graph and parity checked.

Candidates are compared, and blessed, by a ranking metric estimated off-policy: the
prefix-IPS expected clicks per ranking (:func:`loopwise.ranking.ranking_policy_value`)
of the candidate's rankings under the blueprint's policy (Plackett–Luce at the
temperature for softmax, else greedy, with the policy's epsilon), on the holdout
rankings. The best candidate is blessed when its value beats the production model's
(scored the same way) or, when no model serves, the logged policy's (the clicks the
holdout rankings got). The first blessed model is deployed (unless
``rollout.hold_first_model``); a later one starts a rollout at the canary step (the
decision service does not score rankings with shadows; services/trainer/rollout.py
compares clicks per ranking of the canary with production's), or, with
``rollout.manual``, is deployed only when the request asks for it (``deploy``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.errors import FailedPrecondition, LoopwiseError
from loopwise.operations import Progress
from loopwise.policy import base_epsilon
from loopwise.ranking import LoggedRanking, group_rankings, ranking_policy_value, ranking_rule
from loopwise.services.trainer.core import StageClock, Trainer, TrainingJob, code_version
from loopwise.services.trainer.data import (
    DEFAULT_HOLDOUT_FRACTION,
    DEFAULT_MIN_ROWS,
    align_features,
    align_to,
)
from loopwise.services.trainer.models import FAMILIES, score_output
from loopwise.services.trainer.ranking import export_ranking_onnx, fit_ranking, ranking_parity
from loopwise.tensors import F32, I32, I64, unpack_vector
from loopwise.trainer.v1 import trainer_service_pb2 as tpb

METRIC = "expected_clicks_prefix_ips"
# Candidate rows the parity check compares (the newest holdout candidates).
PARITY_ROWS = 2000


@dataclass
class RankingCandidate:
    """One fitted and exported per-item model (pool result)."""

    family: str
    kind: str
    onnx: bytes
    fit_seconds: float
    parity_ok: bool
    max_abs_diff: float
    error: str = ""
    value: float = float("nan")
    low: float = float("nan")
    high: float = float("nan")
    latency_ms: float = 0.0


def fit_candidate(family: str, x: np.ndarray, positions: np.ndarray, labels: np.ndarray, seed: int,
                  x_parity: np.ndarray) -> RankingCandidate:
    """Fit the per-item model of ``family``, export it and check parity (pool function)."""
    started = time.perf_counter()
    estimator, kind = fit_ranking(family, x, positions, labels, seed)
    seconds = time.perf_counter() - started
    try:
        onnx = export_ranking_onnx(estimator, kind, x.shape[1])
    except Exception as exc:  # an export failure disqualifies the candidate only
        return RankingCandidate(family, kind, b"", seconds, False, float("nan"), f"ONNX export failed: {exc}")
    parity = ranking_parity(onnx, estimator, kind, x_parity)
    return RankingCandidate(family, kind, onnx, seconds, parity.ok, parity.max_abs_diff,
                            "" if parity.ok else f"ONNX parity failed: {parity.reason}")


def onnx_scores(onnx: bytes, output: str, x: np.ndarray) -> np.ndarray:
    """One score per candidate row from an ONNX model (column 1 of class probabilities)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(onnx, options, providers=["CPUExecutionProvider"])
    out = np.asarray(session.run([output], {"features": x.astype(np.float32)})[0], dtype=np.float64)
    return out[:, 1] if out.ndim == 2 and out.shape[1] == 2 else out.reshape(x.shape[0], -1).mean(axis=1)


def holdout_value(onnx: bytes, output: str, rankings: list[LoggedRanking], policy: bp.Policy,
                  features: list[np.ndarray] | None = None) -> tuple[float, float, float]:
    """Prefix-IPS expected clicks per ranking (value, 95% low, high) of the blueprint
    ``policy`` ranking by the model's scores, on ``rankings`` (pool function);
    ``features``: the candidates' rows in the model's own feature order when they
    differ from the rankings'."""
    rows = features if features is not None else [r.features for r in rankings]
    flat = onnx_scores(onnx, output, np.vstack(rows))
    scores, at = [], 0
    for r in rows:
        scores.append(flat[at:at + r.shape[0]])
        at += r.shape[0]
    rules = [ranking_rule(policy, base_epsilon(policy), r.features.shape[0], False) for r in rankings]
    estimate, _ = ranking_policy_value(rankings, scores, rules)
    return estimate.value, estimate.low, estimate.high


async def read_rankings(trainer: Trainer, job: TrainingJob) -> list[LoggedRanking]:
    """Every closed logged ranking of the job's window with all its candidates, aligned
    onto the job's blueprint, oldest first."""
    rankings: list[LoggedRanking] = []
    async for batch in trainer.training_data.read(job.use_case, job.start_ms, job.end_ms,
                                                  include_unshown_items=True):
        if batch.rows == 0:
            continue
        version = batch.blueprint_version or job.blueprint_version
        own = job.blueprint if version == job.blueprint_version else await trainer.use_cases.version(
            job.use_case, version)
        x = align_features(batch, own, job.blueprint)
        rankings += group_rankings(
            list(batch.decision_ids), unpack_vector(batch.action_indices, I32), unpack_vector(batch.positions, I32),
            unpack_vector(batch.propensities, F32), unpack_vector(batch.rewards, F32), x,
            unpack_vector(batch.decision_times_ms, I64))
    rankings.sort(key=lambda r: r.time_ms)
    return rankings


def shown_rows(rankings: list[LoggedRanking]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The shown items of ``rankings``: features [N, F], positions [N] (1 = top), rewards [N]."""
    x = np.vstack([r.features[r.shown] for r in rankings])
    positions = np.concatenate([np.arange(1, r.shown.shape[0] + 1) for r in rankings]).astype(np.float64)
    rewards = np.concatenate([r.rewards for r in rankings])
    return x, positions, np.nan_to_num(rewards, nan=0.0)


async def run_ranking_job(trainer: Trainer, job: TrainingJob, progress: Progress, result: tpb.TrainingResult,
                          laps: StageClock) -> None:
    """The training job of a ranking use case (see the module docstring): fills
    ``result`` and charges the stages to ``laps``."""
    blueprint = job.blueprint
    await progress.stage("reading_data", 0.02, "reading logged rankings with all their candidates from feedback")
    rankings = await read_rankings(trainer, job)
    shown_total = sum(r.shown.shape[0] for r in rankings)
    result.rows = shown_total
    laps.lap("reading")
    fraction = blueprint.training.holdout_fraction or DEFAULT_HOLDOUT_FRACTION
    min_rows = blueprint.training.min_rows or DEFAULT_MIN_ROWS
    n_holdout = max(1, int(round(len(rankings) * fraction)))
    train, holdout = rankings[:len(rankings) - n_holdout], rankings[len(rankings) - n_holdout:]
    if len(rankings) < 2 or sum(r.shown.shape[0] for r in train) < min_rows:
        raise FailedPrecondition(f"too few rows to train: {len(rankings)} rankings with {shown_total} shown items "
                                 f"read; training.min_rows is {min_rows} shown items")
    x, positions, rewards = shown_rows(train)
    if np.unique(rewards).size < 2:
        raise FailedPrecondition("the shown items' rewards are all equal: nothing to learn (no clicks logged?)")
    x_parity = np.vstack([r.features for r in holdout])[-PARITY_ROWS:]
    laps.lap("validating")

    families = list(blueprint.training.candidate_families) or list(FAMILIES)
    candidates: list[RankingCandidate] = []
    for k, family in enumerate(families, start=1):
        await progress.stage("fitting", 0.1 + 0.5 * (k - 1) / len(families),
                             f"candidate {k} of {len(families)}: per-item {family} on {x.shape[0]} shown items")
        candidate = await trainer.pool.run(fit_candidate, family, x, positions, rewards, trainer.seed, x_parity)
        if candidate.parity_ok:
            output = score_output(candidate.kind)
            candidate.value, candidate.low, candidate.high = await trainer.pool.run(
                holdout_value, candidate.onnx, output, holdout, blueprint.policy)
            candidate.latency_ms = await trainer.latency_probe(family, candidate.onnx, candidate.kind,
                                                               len(blueprint.features), 1)
            if 0 < blueprint.latency_budget_ms < candidate.latency_ms:
                candidate.error = (f"single-row p99 {candidate.latency_ms:.3f} ms is over the latency budget "
                                   f"{blueprint.latency_budget_ms:g} ms")
        candidates.append(candidate)
    laps.lap("fitting")
    result.candidates.extend(tpb.Candidate(
        family=c.family, score=c.value if math.isfinite(c.value) else 0.0, metric=METRIC,
        fit_seconds=c.fit_seconds, latency_p99_ms=c.latency_ms, within_budget=not c.error.startswith("single-row"),
        error=c.error) for c in candidates)
    usable = [c for c in candidates if not c.error and math.isfinite(c.value)]
    if not usable:
        raise FailedPrecondition("no candidate is usable: " + "; ".join(f"{c.family}: {c.error}" for c in candidates))
    winner = max(usable, key=lambda c: c.value)  # ties: the earlier family
    result.candidates[candidates.index(winner)].chosen = True

    await progress.stage("blessing", 0.8, f"{winner.family} against what serves, prefix IPS on {len(holdout)} "
                                          "holdout rankings")
    current = await trainer.registry.current_deployment(job.use_case)
    serving_ref = current.production if current is not None and current.HasField("production") else None
    blessing = await _bless(trainer, job, winner, holdout, serving_ref)
    result.blessing.CopyFrom(blessing)
    laps.lap("blessing")
    if not blessing.blessed:
        result.deployment_reason = f"nothing registered: {blessing.reason}"
        return

    await progress.stage("registering", 0.88, f"registering per-item {winner.family}")
    serving_value = blessing.slices[0].serving
    model = tpb.Model(
        use_case=job.use_case, family=winner.family, blueprint_version=job.blueprint_version,
        metrics={METRIC: winner.value}, baseline_metrics={METRIC: serving_value},
        training_rows=int(x.shape[0]), holdout_rows=sum(r.shown.shape[0] for r in holdout), source="trainer",
        input_width=len(blueprint.features), score_output=score_output(winner.kind),
        operation_id=progress.operation_id, code_version=code_version(),
        parent_version=serving_ref.version if serving_ref is not None else 0, labelled_rows=shown_total,
        blessing=blessing, latency_p99_ms=winner.latency_ms,
        description=f"per-item {winner.family} click model with the position as a feature (fixed at the top when "
                    f"serving), trained on {x.shape[0]} shown items of {len(train)} rankings; max |ONNX - sklearn| "
                    f"on holdout candidates {winner.max_abs_diff:.2g}",
    )
    model.data_start_time.FromMilliseconds(rankings[0].time_ms)
    model.data_end_time.FromMilliseconds(rankings[-1].time_ms)
    model = await trainer.registry.add_model(model, winner.onnx, f"training:{progress.operation_id}")
    result.model.CopyFrom(model)
    await progress.stage("rollout", 0.94, f"version {model.version} registered; deciding how it serves")
    result.deployed, result.deployment_reason, rollout = await _deploy(trainer, job, model, serving_ref,
                                                                       progress.operation_id)
    if rollout is not None:
        result.rollout.CopyFrom(rollout)
    laps.lap("registering")


async def _serving_value(trainer: Trainer, job: TrainingJob, ref: tpb.ModelRef,
                         holdout: list[LoggedRanking]) -> tuple[float, float, float] | None:
    """The production model's prefix-IPS value on the holdout (None: unreadable)."""
    try:
        model, chunks = await trainer.registry.download(job.use_case, ref.version)
        onnx = b"".join([piece async for _, piece in chunks])
        own = await trainer.use_cases.version(job.use_case, model.blueprint_version)
    except LoopwiseError:
        return None
    features = [align_to(r.features.astype(np.float32), job.blueprint, own) for r in holdout]
    try:
        return await trainer.pool.run(holdout_value, onnx, model.score_output or "probabilities", holdout,
                                      job.blueprint.policy, features)
    except Exception:  # a model that cannot score the holdout is compared as absent
        return None


async def _bless(trainer: Trainer, job: TrainingJob, winner: RankingCandidate, holdout: list[LoggedRanking],
                 serving_ref: tpb.ModelRef | None) -> tpb.Blessing:
    """The winner's prefix-IPS expected clicks against the production model's, or the
    logged policy's when no model serves (or it cannot be scored)."""
    serving = None if serving_ref is None else await _serving_value(trainer, job, serving_ref, holdout)
    if serving is not None:
        compared_with = f"model v{serving_ref.version}"
        base, base_low, base_high = serving
    else:
        compared_with = "logged policy"
        clicks = np.array([r.logged_clicks for r in holdout])
        base = float(clicks.mean())
        stderr = float(clicks.std(ddof=1) / math.sqrt(clicks.size)) if clicks.size > 1 else float("inf")
        base_low, base_high = base - 1.96 * stderr, base + 1.96 * stderr
    blessed = winner.value > base
    reason = (f"{'blessed' if blessed else 'not blessed'}: expected clicks per ranking (prefix IPS on "
              f"{len(holdout)} holdout rankings, 95% CI) {winner.family} {winner.value:.4f} "
              f"[{winner.low:.4f}, {winner.high:.4f}] {'>' if blessed else '<='} {compared_with} {base:.4f} "
              f"[{base_low:.4f}, {base_high:.4f}]")
    return tpb.Blessing(
        blessed=blessed, compared_with=compared_with, metric=METRIC, higher_is_better=True,
        slices=[tpb.SliceComparison(slice="all", rows=len(holdout), candidate=winner.value, serving=base,
                                    passed=blessed)],
        reason=reason,
    )


async def _deploy(trainer: Trainer, job: TrainingJob, model: tpb.Model, serving_ref: tpb.ModelRef | None,
                  operation_id: str) -> tuple[bool, str, tpb.Rollout | None]:
    """The first blessed model goes to production (unless held); a later one starts a
    rollout straight at the canary step (rankings have no shadow step), or, with a
    manual rollout, is deployed only when the request asks for it."""
    if serving_ref is None and job.blueprint.rollout.hold_first_model:
        return False, f"not deployed: rollout.hold_first_model is set ({model.blessing.reason})", None
    if serving_ref is not None and (job.blueprint.rollout.manual or trainer.rollouts is None):
        if not job.deploy:
            return False, (f"registered only: rollout.manual is set and version {serving_ref.version} serves "
                           "production"), None
    elif serving_ref is not None:
        rollout = await trainer.rollouts.start(model, serving_ref, job.blueprint, model.blessing.reason,
                                               f"rollout:{operation_id}")
        return False, f"rollout started: {rollout.message}", rollout
    what = "first model" if serving_ref is None else "deploy requested and the rollout is manual"
    reason = f"{what}: {model.blessing.reason}"
    await trainer.registry.set_deployment(tpb.SetDeploymentRequest(
        request_id=f"training-deploy:{operation_id}", use_case=job.use_case,
        production_version=model.version, reason=reason,
    ), action="training")
    return True, reason, None
