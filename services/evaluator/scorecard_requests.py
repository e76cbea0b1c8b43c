"""GetScorecard: validating the request, reading the compared rows from feedback, and
turning the statistics of :mod:`.scorecard` into the response.

Arms: every row of a blueprint version with experiment arms counts for its arm; the
configured share of each arm is its ``traffic_share`` in the row's version, so the
sample-ratio test's expected counts follow the versions the rows were decided under.
Fallback decisions are kept (they are part of what an arm did); shadow records (rows of
a model that is only a shadow in the deployment in force) are left out.

Canary: the deployment in force names the production and the canary model; a row
belongs to the model version that decided it. Fallbacks have no model and are left out
(a canary that falls back more often shows up in the sample-ratio test). Without a
start time, rows start at the deployment revision's time.

Metrics: ``reward`` (after the reward spec), ``outcome_count`` (outcomes that counted
in the reward window) and ``serving_latency_ms`` (where measured); for a blueprint with
product metrics (``Blueprint.metrics``) also every metric of the latest version under
its own name (``metric:<name>`` when the name is one of those three), from
ReadTrainingData's metric columns; rows of a version without that metric leave it out.
ReadTrainingData carries one reward per row, not each outcome's value, so per-outcome
metrics are not on the scorecard (docs/scorecards.md).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.errors import FailedPrecondition, InvalidArgument, LoopwiseError
from loopwise.evaluator.v1 import evaluator_service_pb2 as epb
from loopwise.services.evaluator import scorecard as S
from loopwise.services.evaluator.data import rows_of
from loopwise.services.evaluator.isolation import run_isolated
from loopwise.services.evaluator.policy_check import time_range
from loopwise.tensors import F32, I64, unpack_matrix, unpack_vector
from loopwise.trainer.v1 import trainer_service_pb2 as tpb

MAX_COVARIATES = 16
MIN_LOOK_INTERVAL_MS = 1000
DEFAULT_LOOK_INTERVAL_MS = 3_600_000
MAX_EFFECT_SIZE = 10.0
PRODUCTION, CANARY = "production", "canary"
METRICS = ("reward", "outcome_count", "serving_latency_ms")


class _Rows:
    """The compared rows of several batches, concatenated at the end."""

    def __init__(self, groups: int, covariates: int, metric_names: tuple[str, ...] = ()) -> None:
        self.parts: list[tuple[np.ndarray, ...]] = []
        self.expected = np.zeros(groups)
        self.covariates = covariates
        self.metric_names = metric_names
        self.rows_read = 0

    def add(self, group: np.ndarray, times: np.ndarray, reward: np.ndarray, outcomes: np.ndarray,
            latency: np.ndarray, x: np.ndarray, product: np.ndarray) -> None:
        keep = group >= 0
        if keep.any():
            self.parts.append((group[keep], times[keep], reward[keep], outcomes[keep].astype(np.float64),
                               latency[keep], x[keep], product[keep]))

    def build(self) -> tuple[np.ndarray, ...]:
        if not self.parts:
            return (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros(0), np.zeros(0),
                    np.zeros((0, self.covariates)), np.zeros((0, len(self.metric_names))))
        return tuple(np.concatenate(column) for column in zip(*self.parts, strict=True))

    def product_metrics(self, batch) -> np.ndarray:
        """The batch's product metric columns in ``metric_names`` order, NaN (absent)
        where the batch's version lacks the metric."""
        out = np.full((batch.rows, len(self.metric_names)), np.nan)
        names = list(batch.metric_names)
        if names and self.metric_names:
            values = unpack_matrix(batch.metric_values, batch.rows, len(names), "metric_values", F32)
            for j, name in enumerate(self.metric_names):
                if name in names:
                    out[:, j] = values[:, names.index(name)]
        return out


def _latency(batch, n: int) -> np.ndarray:
    """Serving latency per row, NaN where not measured (0 or an older server)."""
    if not batch.serving_latencies_ms:
        return np.full(n, np.nan)
    values = unpack_vector(batch.serving_latencies_ms, F32).astype(np.float64)
    return np.where(values > 0, values, np.nan)


def scorecard_job(data: S.ScorecardInput, html: bool, meta: dict[str, Any], report) -> tuple[S.Scorecard, bytes]:
    """Worker entry point: the statistics, and the HTML page when asked."""
    card = S.compute_scorecard(data)
    if not html:
        return card, b""
    report("rendering", 0.8, "rendering the HTML scorecard")
    from loopwise.services.evaluator.scorecard_report import render_scorecard

    return card, render_scorecard(card, meta)


class ScorecardRequests:
    """The scorecard half of the evaluator (mixed into ``core.Evaluator``, which provides
    use_cases, training_data, deployments, clock and threads)."""

    async def get_scorecard(self, request: epb.GetScorecardRequest) -> epb.GetScorecardResponse:
        """Validate, read the compared rows, compute (in a worker process) and answer."""
        if not request.use_case:
            raise InvalidArgument("use_case", "required")
        if request.comparison not in epb.ScorecardComparison.values():
            raise InvalidArgument("comparison", f"unknown comparison {request.comparison}")
        canary = request.comparison == epb.SCORECARD_COMPARISON_CANARY
        if len(request.covariates) > MAX_COVARIATES:
            raise InvalidArgument("covariates", f"at most {MAX_COVARIATES} covariates")
        if len(set(request.covariates)) != len(request.covariates):
            raise InvalidArgument("covariates", "names a feature twice")
        interval_ms = DEFAULT_LOOK_INTERVAL_MS
        if request.HasField("look_interval"):
            nanos = request.look_interval.ToNanoseconds()
            if nanos < 0 or 0 < nanos < MIN_LOOK_INTERVAL_MS * 1_000_000:
                raise InvalidArgument("look_interval", "must be at least one second (or 0: one hour)")
            interval_ms = nanos // 1_000_000 or DEFAULT_LOOK_INTERVAL_MS
        effect = request.mixture_effect_size
        if not (math.isfinite(effect) and 0 <= effect <= MAX_EFFECT_SIZE):
            raise InvalidArgument("mixture_effect_size", f"must be in [0, {MAX_EFFECT_SIZE:g}]")
        srm_alpha = request.srm_alpha
        if not (math.isfinite(srm_alpha) and 0 <= srm_alpha < 0.5):
            raise InvalidArgument("srm_alpha", "must be in [0, 0.5)")
        if canary and request.control_arm:
            raise InvalidArgument("control_arm", "only with SCORECARD_COMPARISON_ARMS (production is the "
                                  "canary's control)")
        start_ms, end_ms = time_range(request)
        use_case = request.use_case
        blueprint, _ = await self.use_cases.latest(use_case)
        features = {f.name: f for f in blueprint.features}
        for name in request.covariates:
            if name not in features:
                raise InvalidArgument("covariates", f"{name!r} is not a feature of {use_case!r}")
        covariates = list(request.covariates)
        categorical = [features[n].type == bp.FEATURE_TYPE_CATEGORICAL for n in covariates]

        card = epb.Scorecard(use_case=use_case, comparison=(epb.SCORECARD_COMPARISON_CANARY if canary
                                                            else epb.SCORECARD_COMPARISON_ARMS))
        warnings: list[str] = []
        deployment = None
        share = 0.0
        if canary:
            deployment = await self.deployments.current(use_case) if self.deployments is not None else None
            if deployment is None or not deployment.HasField("canary") or deployment.canary.version == 0:
                raise FailedPrecondition(f"use case {use_case!r} has no canary model deployed")
            if not deployment.HasField("production") or deployment.production.version == 0:
                raise FailedPrecondition(f"use case {use_case!r} has a canary but no production model to "
                                         "compare it with")
            if deployment.canary.version == deployment.production.version:
                raise FailedPrecondition("the canary and production are the same model version")
            groups = [PRODUCTION, CANARY]
            share = min(max(deployment.canary_share, 0.0), 1.0)
            if start_ms is None and deployment.HasField("update_time"):
                start_ms = deployment.update_time.ToMilliseconds()
            card.control = PRODUCTION
            card.canary_model_version = deployment.canary.version
            card.production_model_version = deployment.production.version
            card.deployment_revision = deployment.revision
        else:
            arms = [a.name for a in blueprint.arms]
            if len(arms) < 2:
                raise InvalidArgument("comparison", f"use case {use_case!r} has {len(arms)} experiment "
                                      "arm(s); an arms scorecard needs two")
            control = request.control_arm or arms[0]
            if control not in arms:
                raise InvalidArgument("control_arm", f"{control!r} is not one of the arms {arms}")
            groups = [control] + [a for a in arms if a != control]
            card.control = control
            try:
                deployment = await self.deployments.current(use_case) if self.deployments is not None else None
            except LoopwiseError as exc:  # shadows are only left out when known
                warnings.append(f"the deployment could not be read ({exc}), so rows of shadow models could "
                                "not be told apart and are counted in their arms")
        if start_ms is not None and end_ms is not None and start_ms >= end_ms:
            raise InvalidArgument("end_time", "must be after the start (the deployment's time for a canary)")

        rows = await self._scorecard_rows(use_case, blueprint, groups, covariates, categorical, canary, deployment,
                                          share, start_ms, end_ms)
        group, times, reward, outcomes, latency, x, product = rows.build()
        if group.size == 0:
            what = "the canary or production model" if canary else f"the arms {groups}"
            raise FailedPrecondition(f"no decisions of {what} with a closed reward window in the time range "
                                     f"({rows.rows_read} rows read)")
        metrics = {"reward": reward, "outcome_count": outcomes}
        if np.isfinite(latency).any():
            metrics["serving_latency_ms"] = latency
        for j, name in enumerate(rows.metric_names):
            if np.isfinite(product[:, j]).any():
                metrics[f"metric:{name}" if name in METRICS else name] = product[:, j]
        data = S.ScorecardInput(
            groups=groups, expected_shares=rows.expected, group=group, times_ms=times, metrics=metrics,
            covariates=x, covariate_names=covariates, categorical=categorical, look_interval_ms=interval_ms,
            effect_size=effect or S.DEFAULT_EFFECT_SIZE, srm_alpha=srm_alpha or S.DEFAULT_SRM_ALPHA,
        )
        card.create_time.FromMilliseconds(self.clock.now_ms())
        meta = {"use_case": use_case, "comparison": "canary" if canary else "arms",
                "create_time": card.create_time.ToJsonString(),
                "canary_model_version": card.canary_model_version,
                "production_model_version": card.production_model_version,
                "deployment_revision": card.deployment_revision, "rows_read": rows.rows_read,
                "extra_warnings": warnings}
        computed, html = await run_isolated(scorecard_job, data, request.include_html, meta, threads=self.threads)
        self._fill(card, computed, rows.rows_read, warnings)
        return epb.GetScorecardResponse(scorecard=card, html=html)

    async def _scorecard_rows(self, use_case: str, latest: bp.Blueprint, groups: list[str], covariates: list[str],
                              categorical: list[bool], canary: bool, deployment: tpb.Deployment | None,
                              share: float, start_ms: int | None, end_ms: int | None) -> _Rows:
        """Read the rows of the compared groups with their configured shares."""
        rows = _Rows(len(groups), len(covariates), tuple(m.name for m in latest.metrics))
        index = {name: i for i, name in enumerate(groups)}
        shadows: set[int] = set()
        if deployment is not None:
            serving = {deployment.production.version, deployment.canary.version}
            shadows = {s.version for s in deployment.shadows} - serving
        vocab = {f.name: list(f.vocabulary) for f in latest.features}
        translations: dict[int, list[np.ndarray | None]] = {}
        async for batch in self.training_data.read(use_case, start_ms, end_ms, include_fallback=not canary):
            n = batch.rows
            if n == 0:
                continue
            rows.rows_read += n
            version = batch.blueprint_version
            blueprint = await self.use_cases.version(use_case, version)
            x, _, _, rewards, times, counts = rows_of(batch, covariates)
            if any(categorical):
                if version not in translations:
                    translations[version] = [_code_map(blueprint, name, vocab[name]) if cat else None
                                             for name, cat in zip(covariates, categorical, strict=True)]
                for j, mapping in enumerate(translations[version]):
                    if mapping is not None:
                        x[:, j] = _translate(x[:, j], mapping)
            models = unpack_vector(batch.model_versions, I64) if batch.model_versions else np.zeros(n, np.int64)
            if canary:
                group = np.full(n, -1, dtype=np.int64)
                group[models == deployment.production.version] = 0
                group[models == deployment.canary.version] = 1
                kept = int((group >= 0).sum())
                rows.expected += kept * np.array([1.0 - share, share])
            else:
                arm_shares = {a.name: a.traffic_share for a in blueprint.arms}
                if not arm_shares:
                    continue
                arms = np.array(list(batch.arms) or [""] * n)
                group = np.array([index.get(a, -1) if a in arm_shares else -1 for a in arms], dtype=np.int64)
                if shadows:
                    group[np.isin(models, list(shadows))] = -1
                weights = np.array([arm_shares.get(g, 0.0) for g in groups])
                kept = int((group >= 0).sum())
                if kept and weights.sum() > 0:
                    rows.expected += kept * weights / weights.sum()
            rows.add(group, times.astype(np.int64), rewards, counts, _latency(batch, n), x,
                     rows.product_metrics(batch))
        return rows

    @staticmethod
    def _fill(card: epb.Scorecard, computed: S.Scorecard, rows_read: int, warnings: list[str]) -> None:
        """The statistics into the response message."""
        for g in computed.groups:
            card.groups.add(name=g.name, rows=g.rows, expected_share=g.expected_share,
                            observed_share=g.observed_share)
        for m in computed.group_metrics:
            card.group_metrics.add(group=m.group, metric=m.metric, rows=m.rows, mean=m.mean, ci_lower=m.ci_lower,
                                   ci_upper=m.ci_upper, std=m.std)
        for c in computed.comparisons:
            out = card.comparisons.add(
                metric=c.metric, group=c.group, control=c.control, rows=c.rows, rows_control=c.rows_control,
                mean=c.mean, mean_control=c.mean_control, difference=c.difference,
                difference_ci_lower=c.ci_lower, difference_ci_upper=c.ci_upper, p_value=c.p_value,
                relative_lift=c.relative_lift, relative_lift_ci_lower=c.lift_ci_lower,
                relative_lift_ci_upper=c.lift_ci_upper, cuped=c.adjusted, variance_reduction=c.variance_reduction,
                unadjusted_difference=c.unadjusted_difference,
                unadjusted_difference_ci_lower=c.unadjusted_ci_lower,
                unadjusted_difference_ci_upper=c.unadjusted_ci_upper,
                unadjusted_relative_lift=c.unadjusted_relative_lift,
                unadjusted_relative_lift_ci_lower=c.unadjusted_lift_ci_lower,
                unadjusted_relative_lift_ci_upper=c.unadjusted_lift_ci_upper,
            )
            seq = out.sequential
            seq.p_value, seq.cs_lower, seq.cs_upper = c.sequential_p_value, c.cs_lower, c.cs_upper
            seq.significant = c.sequential_p_value <= computed.alpha
            for look in c.looks:
                item = seq.looks.add(rows=look.rows, rows_control=look.rows_control, difference=look.difference,
                                     cs_lower=look.cs_lower, cs_upper=look.cs_upper, p_value=look.p_value)
                item.time.FromMilliseconds(look.time_ms)
        srm = computed.sample_ratio
        card.sample_ratio.CopyFrom(epb.SampleRatioTest(chi_square=srm.chi_square,
                                                       degrees_of_freedom=srm.degrees_of_freedom,
                                                       p_value=srm.p_value, alpha=srm.alpha, mismatch=srm.mismatch))
        card.covariate_columns.extend(computed.covariate_columns)
        for metric, theta in computed.coefficients.items():
            card.coefficients.add(metric=metric, theta=theta)
        card.data_start_time.FromMilliseconds(computed.data_start_ms)
        card.data_end_time.FromMilliseconds(computed.data_end_ms)
        card.rows = computed.rows
        card.rows_read = rows_read
        card.look_interval.FromMilliseconds(computed.look_interval_ms)
        card.mixture_effect_size = computed.effect_size
        card.alpha = computed.alpha
        card.warnings.extend(warnings + computed.warnings)


def _code_map(blueprint: bp.Blueprint, name: str, latest_vocabulary: list[str]) -> np.ndarray | None:
    """Codes of a version's vocabulary → codes of the latest vocabulary (-1 unknown)."""
    for feature in blueprint.features:
        if feature.name == name:
            return np.array([latest_vocabulary.index(v) if v in latest_vocabulary else -1
                             for v in feature.vocabulary], dtype=np.float64)
    return None


def _translate(column: np.ndarray, mapping: np.ndarray) -> np.ndarray:
    """A code column through ``mapping`` (NaN stays NaN; unknown codes become -1)."""
    out = np.full(column.shape, np.nan)
    present = np.isfinite(column)
    codes = column[present].astype(np.int64)
    inside = (codes >= 0) & (codes < mapping.size)
    out_present = np.full(codes.shape, -1.0)
    out_present[inside] = mapping[codes[inside]]
    out[present] = out_present
    return out
