"""EvaluatePolicy and SuggestParameters: reading logged rows, building the candidate
policy, and running the estimate or the tuning in a worker process."""

from __future__ import annotations

import numpy as np

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.errors import FailedPrecondition, InvalidArgument, quote
from loopwise.evaluator.v1 import evaluator_service_pb2 as epb
from loopwise.services.evaluator import offpolicy, tuning
from loopwise.services.evaluator.data import rows_of
from loopwise.services.evaluator.estimation import MIN_ROWS
from loopwise.services.evaluator.isolation import run_isolated
from loopwise.services.evaluator.policy_eval import DEFAULT_MAX_WEIGHT
from loopwise.services.evaluator.ranking_eval import evaluate_ranking

DEFAULT_ITERATIONS = 20
MAX_ITERATIONS = 100


def time_range(request) -> tuple[int | None, int | None]:
    """(start_ms, end_ms) of a request with start_time/end_time; checks their order."""
    start_ms = request.start_time.ToMilliseconds() if request.HasField("start_time") else None
    end_ms = request.end_time.ToMilliseconds() if request.HasField("end_time") else None
    if start_ms is not None and end_ms is not None and start_ms >= end_ms:
        raise InvalidArgument("end_time", "must be after start_time")
    return start_ms, end_ms


def _estimate(e) -> epb.PolicyEstimate:
    return epb.PolicyEstimate(value=e.value, ci_lower=e.lower, ci_upper=e.upper)


class PolicyRequests:
    """The off-policy half of the evaluator (mixed into ``core.Evaluator``, which
    provides use_cases, training_data, registry, reports, seed and threads)."""

    async def logged_rows(self, use_case: str, start_ms: int | None, end_ms: int | None,
                          blueprint: bp.Blueprint) -> offpolicy.LoggedRows:
        """The use case's logged rows in the latest blueprint's layout; FAILED_PRECONDITION
        when propensities are missing or rows are too few."""
        names = [f.name for f in blueprint.features]
        actions = list(blueprint.actions)
        xs, acts, probs, rewards = [], [], [], []
        missing = total = 0
        versions: dict[int, list[str]] = {}
        async for batch in self.training_data.read(use_case, start_ms, end_ms):
            if batch.rows == 0:
                continue
            if batch.blueprint_version not in versions:
                versions[batch.blueprint_version] = list(
                    (await self.use_cases.version(use_case, batch.blueprint_version)).actions)
            mapping = np.array([actions.index(a) if a in actions else -1 for a in versions[batch.blueprint_version]])
            x, chosen, p, r, _, _ = rows_of(batch, names)
            total += batch.rows
            logged = p[np.arange(batch.rows), chosen].astype(np.float64) if p.shape[1] else np.full(batch.rows, np.nan)
            bad = ~(np.isfinite(logged) & (logged > 0))
            missing += int(bad.sum())
            keep = ~bad & (mapping[chosen] >= 0)
            xs.append(x[keep])
            acts.append(mapping[chosen][keep])
            probs.append(logged[keep])
            rewards.append(r[keep])
        if missing:
            raise FailedPrecondition(
                f"missing propensities: {missing} of {total} logged decisions have no probability for "
                "their action, so off-policy estimates are impossible (log action probabilities)"
            )
        rows = sum(a.size for a in acts)
        if rows < MIN_ROWS:
            raise FailedPrecondition(f"too few rows: {rows} logged decisions, need at least {MIN_ROWS}")
        return offpolicy.LoggedRows(np.vstack(xs), np.concatenate(acts), np.concatenate(probs),
                                    np.concatenate(rewards), actions, names)

    async def candidate(self, use_case: str, blueprint: bp.Blueprint, model_version: int, report_id: str,
                        constant_action: str, variant: bp.Policy) -> offpolicy.Candidate:
        """The candidate policy named by a request (exactly one source)."""
        given = [bool(model_version), bool(report_id), bool(constant_action)]
        if sum(given) != 1:
            raise InvalidArgument("model_version", "name exactly one candidate: model_version, report_id or "
                                  "constant_action")
        actions = list(blueprint.actions)
        for action in variant.action_costs:
            if action not in actions:
                raise InvalidArgument("policy_variant.action_costs", f"{quote(action)} is not one of {actions}")
        policy = offpolicy.merged_policy(blueprint.policy, variant).SerializeToString()
        if constant_action:
            if constant_action not in actions:
                raise InvalidArgument("constant_action", f"{quote(constant_action)} is not one of {actions}")
            return offpolicy.Candidate(blueprint.kind, policy, constant_action=actions.index(constant_action))
        if report_id:
            report = await self.get_report(report_id)
            if report.result.use_case != use_case:
                raise InvalidArgument("report_id", f"report {quote(report_id)} is of use case {report.result.use_case!r}")
            if report.result.treatment_source == epb.TREATMENT_SOURCE_ARMS:
                raise InvalidArgument("report_id", "a report on arms has no action to treat with")
            treatment = report.result.treatment_action
            if treatment not in actions:
                raise FailedPrecondition(f"the report's treatment {treatment!r} is no longer an action")
            return offpolicy.Candidate(bp.DECISION_KIND_ACTION_VALUE, policy,
                                       effect_model=await self.model_bytes(report_id),
                                       treatment_index=actions.index(treatment))
        if model_version < 0:
            raise InvalidArgument("model_version", "must be > 0")
        if blueprint.kind not in (bp.DECISION_KIND_ACTION_VALUE, bp.DECISION_KIND_BINARY):
            raise FailedPrecondition("off-policy evaluation of models covers action-value and binary use cases")
        model, onnx = await self.registry.download(use_case, model_version)
        model_features = [f.name for f in (await self.use_cases.version(use_case, model.blueprint_version)).features]
        names = [f.name for f in blueprint.features]
        columns = [names.index(n) if n in names else -1 for n in model_features]
        return offpolicy.Candidate(blueprint.kind, policy, onnx=onnx, onnx_columns=columns)

    async def evaluate_policy(self, request: epb.EvaluatePolicyRequest) -> epb.EvaluatePolicyResponse:
        """IPS, SNIPS and DR values of a candidate policy with 95% CIs."""
        if not request.use_case:
            raise InvalidArgument("use_case", "required")
        if request.max_weight < 0:
            raise InvalidArgument("max_weight", "must be >= 0")
        start_ms, end_ms = time_range(request)
        blueprint, _ = await self.use_cases.latest(request.use_case)
        if blueprint.kind == bp.DECISION_KIND_RANKING:  # prefix IPS over logged rankings
            return await evaluate_ranking(self, request, blueprint, start_ms, end_ms)
        candidate = await self.candidate(request.use_case, blueprint, request.model_version, request.report_id,
                                         request.constant_action, request.policy_variant)
        rows = await self.logged_rows(request.use_case, start_ms, end_ms, blueprint)
        value = await run_isolated(offpolicy.evaluate_candidate, candidate, rows, self.seed,
                                   request.max_weight or DEFAULT_MAX_WEIGHT, threads=self.threads)
        return epb.EvaluatePolicyResponse(
            ips_value=value.ips.value, ips_ci_lower=value.ips.lower, ips_ci_upper=value.ips.upper,
            rows=value.rows, snips=_estimate(value.snips), doubly_robust=_estimate(value.dr),
            effective_sample_size=value.effective_sample_size, max_importance_weight=value.max_weight,
            warnings=value.warnings, logged_value=value.logged_value, disagreement=value.disagreement,
        )

    async def suggest_parameters(self, request: epb.SuggestParametersRequest) -> epb.SuggestParametersResponse:
        """Bayesian optimisation of blueprint parameters against an off-policy goal."""
        if not request.use_case:
            raise InvalidArgument("use_case", "required")
        if not request.parameters:
            raise InvalidArgument("parameters", "name at least one parameter")
        if len(request.ranges) != len(request.parameters):
            raise InvalidArgument("ranges", "give one range per parameter")
        if not 0 <= request.iterations <= MAX_ITERATIONS:
            raise InvalidArgument("iterations", f"must be in [0, {MAX_ITERATIONS}]")
        if not 0 <= request.seed < 2**32:
            raise InvalidArgument("seed", "must be in [0, 2^32)")
        start_ms, end_ms = time_range(request)
        blueprint, _ = await self.use_cases.latest(request.use_case)
        actions = list(blueprint.actions)
        for name in request.parameters:
            offpolicy.check_parameter(name, actions, "parameters")
        low = np.array([r.low for r in request.ranges], dtype=np.float64)
        high = np.array([r.high for r in request.ranges], dtype=np.float64)
        if not (np.isfinite(low).all() and np.isfinite(high).all() and (low < high).all()):
            raise InvalidArgument("ranges", "every range needs finite low < high")
        objective = request.objective or "reward"
        offpolicy.check_metric(objective, actions, "objective")
        bounds = []
        for c in request.constraints:
            offpolicy.check_metric(c.metric, actions, "constraints")
            if not (c.HasField("min") or c.HasField("max")):
                raise InvalidArgument("constraints", f"constraint on {quote(c.metric)} needs min or max")
            bounds.append(tuning.Bound(c.metric, c.min if c.HasField("min") else None,
                                       c.max if c.HasField("max") else None))
        candidate = await self.candidate(request.use_case, blueprint, request.model_version, request.report_id,
                                         "", bp.Policy())
        rows = await self.logged_rows(request.use_case, start_ms, end_ms, blueprint)
        names = list(request.parameters)
        found = await run_isolated(offpolicy.suggest, candidate, rows, names, low, high, objective, bounds,
                                   request.iterations or DEFAULT_ITERATIONS, request.seed or self.seed,
                                   request.net_of_costs, threads=self.threads)
        outcome = found.outcome
        return epb.SuggestParametersResponse(
            suggestion=dict(zip(names, map(float, outcome.best.point), strict=True)),
            expected_value=outcome.mean, expected_value_stddev=outcome.stddev,
            ci_lower=found.estimate.lower, ci_upper=found.estimate.upper, metrics=found.metrics,
            history=[epb.Trial(parameters=dict(zip(names, map(float, h.point), strict=True)), objective=h.objective,
                               metrics=h.metrics, feasible=h.feasible) for h in outcome.history],
            warnings=outcome.warnings,
        )
