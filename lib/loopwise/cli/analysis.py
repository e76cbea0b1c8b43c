"""Analyses of logged decisions: effect reports, experiment scorecards, off-policy values,
effects of given rows, parameter suggestions, online tuning."""

from __future__ import annotations

import csv
import json
import re
import webbrowser
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from loopwise.cli.common import (
    Output,
    OutputOption,
    UseCaseOption,
    app,
    connect,
    console,
    enum_name,
    fail,
    follow,
    group,
    print_json,
    settings,
    table_or_json,
    when,
)
from loopwise.client import operation_result
from loopwise.evaluator.v1 import evaluator_service_pb2 as epb

report_app = group("report", "Effect reports: estimate, list, read and open them.")

ESTIMATORS = ("linear_dml", "causal_forest_dml", "dr_learner", "auto")


def _print_result(result: epb.EstimateEffectsResult) -> None:
    console.print(f"ATE of {result.treatment_action} vs {result.control_action}: "
                  f"{result.ate:.4f} (95% CI {result.ate_ci_lower:.4f} .. {result.ate_ci_upper:.4f}) "
                  f"on {result.rows} rows")
    for warning in result.warnings:
        console.print(f"warning: {escape(warning)}")
    if result.cate_model.model_version:
        console.print(f"effect model registered as version {result.cate_model.model_version} "
                      f"({result.cate_model.family}, fidelity R² {result.cate_model.fidelity_r2:.4f})")


def _write(out: Path, html: bytes) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(html)
    return out.resolve()


@report_app.command("hte")
def report_hte(
    use_case: UseCaseOption,
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the HTML.")] = Path("report.html"),
    treatment: Annotated[str, typer.Option(help="Treated action (default: the 2nd).")] = "",
    control: Annotated[str, typer.Option(help="Control action (default: the 1st).")] = "",
    estimator: Annotated[str, typer.Option(help=f"One of {', '.join(ESTIMATORS)}.")] = "linear_dml",
    cost: Annotated[float, typer.Option(help="Cost of treating one unit (reward units).")] = 0.0,
    segment: Annotated[list[str] | None, typer.Option(help="Feature defining segments (repeatable).")] = None,
    register: Annotated[bool, typer.Option(help="Export the effect model to ONNX and register it.")] = False,
    arms: Annotated[bool, typer.Option(help="Compare experiment arms (--treatment/--control name arms).")] = False,
) -> None:
    """Estimate heterogeneous treatment effects and write the HTML report (with a
    progress bar while the evaluator works)."""
    if estimator not in ESTIMATORS:
        raise fail(f"--estimator must be one of {', '.join(ESTIMATORS)}")
    chosen: dict[str, Any] = ({"treatment_source": "arms", "treatment_arm": treatment, "control_arm": control}
                              if arms else {"treatment_action": treatment, "control_action": control})
    with connect() as client:
        operation = client.estimate_effects(use_case, estimator=estimator, treatment_cost=cost,
                                            segment_features=segment or [], register_cate_model=register,
                                            **chosen)
        operation = follow(client, operation, f"effects {use_case}")
        result = operation_result(operation)
        assert isinstance(result, epb.EstimateEffectsResult)
        report = client.get_report(result.report_id, result.use_case)
    path = _write(out, report.html)
    _print_result(result)
    console.print(f"report: {escape(str(path))}")


def _reports_table(reports: list[epb.EstimateEffectsResult]) -> None:
    table = Table("report", "use case", "made (UTC)", "estimator", "treatment vs control", "rows", "ATE (95% CI)")
    for r in reports:
        table.add_row(r.report_id, r.use_case, when(r.create_time), enum_name(epb.Estimator, r.estimator, "ESTIMATOR_"),
                      f"{r.treatment_action} vs {r.control_action}", str(r.rows),
                      f"{r.ate:.4f} ({r.ate_ci_lower:.4f} .. {r.ate_ci_upper:.4f})")
    console.print(table)


@report_app.command("list")
def report_list(
    use_case: Annotated[str, typer.Option("--use-case", "-u", help="Only this use case.")] = "",
    output: OutputOption = Output.table,
) -> None:
    """Reports, newest first."""
    with connect() as client:
        reports = client.list_reports(use_case)
    table_or_json(output, reports, lambda: _reports_table(reports))


ReportArgument = Annotated[str, typer.Argument(metavar="REPORT_ID", help="The report's id ('report list' shows them).")]
ReportUseCase = Annotated[str, typer.Option("--use-case", "-u", help="The report's use case (lets a token "
                                                                     "scoped to it read the report).")]


@report_app.command("get")
def report_get(
    report_id: ReportArgument,
    use_case: ReportUseCase = "",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the HTML page here.")] = None,
    open_page: Annotated[bool, typer.Option("--open", help="Open the page in a web browser (written to "
                                                           "--out, or into the data dir).")] = False,
    output: OutputOption = Output.table,
) -> None:
    """One report: its result (ATE, segments, validation, policy) and, on request, its
    HTML page."""
    with connect() as client:
        report = client.get_report(report_id, use_case)
    result = report.result
    if out is None and open_page:
        out = settings().data_dir / "reports" / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', report_id)}.html"
    path = _write(out, report.html) if out is not None else None
    if output == Output.json:
        print_json(result)
    else:
        _reports_table([result])
        _print_result(result)
        if path is not None:
            console.print(f"report: {escape(str(path))}")
    if open_page and path is not None and not webbrowser.open(path.as_uri()):
        console.print(f"no web browser found: open {escape(path.as_uri())}")


@report_app.command("open")
def report_open(
    report_id: ReportArgument,
    use_case: ReportUseCase = "",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Where to write the HTML (default: "
                                                                 "<data dir>/reports/<id>.html).")] = None,
) -> None:
    """Write a report's HTML page and open it in a web browser."""
    report_get(report_id, use_case=use_case, out=out, open_page=True, output=Output.table)


@app.command()
def scorecard(
    use_case: UseCaseOption,
    canary: Annotated[bool, typer.Option("--canary", help="Canary model against production, not the arms.")] = False,
    covariate: Annotated[list[str] | None, typer.Option(
        "--covariate", help="Feature used as a CUPED covariate (repeatable).")] = None,
    control: Annotated[str, typer.Option(help="Control arm (default: the first arm).")] = "",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the HTML scorecard here.")] = None,
    output: OutputOption = Output.table,
) -> None:
    """Experiment scorecard: arms (or the canary against production) on every metric,
    with CIs, CUPED, a sample-ratio test and an always-valid sequential test."""
    with connect() as client:
        reply = client.get_scorecard(use_case, canary=canary, control_arm=control, covariates=covariate or [],
                                     include_html=out is not None)
    card = reply.scorecard
    path = _write(out, reply.html) if out is not None else None
    if output == Output.json:
        print_json(card)
        return
    srm = card.sample_ratio
    groups = ", ".join(f"{g.name} {g.rows} ({100 * g.observed_share:.1f}% vs {100 * g.expected_share:.1f}%)"
                       for g in card.groups)
    console.print(f"{use_case}: {card.rows} rows — {escape(groups)}")
    console.print(f"sample ratio: chi-square {srm.chi_square:.2f}, p = {srm.p_value:.3g} — "
                  + ("MISMATCH" if srm.mismatch else "ok"))
    table = Table("metric", "group", "difference (95% CI)", "lift (95% CI)", "CUPED var. cut",
                  "always-valid p", title=f"against {escape(card.control)}")
    for c in card.comparisons:
        table.add_row(
            escape(c.metric), escape(c.group),
            f"{c.difference:+.4g} ({c.difference_ci_lower:+.4g} .. {c.difference_ci_upper:+.4g})",
            f"{100 * c.relative_lift:+.2f}% ({100 * c.relative_lift_ci_lower:+.2f} .. "
            f"{100 * c.relative_lift_ci_upper:+.2f})",
            f"{100 * c.variance_reduction:.1f}%" if c.cuped else "-",
            f"{c.sequential.p_value:.3g}" + (" *" if c.sequential.significant else ""))
    console.print(table)
    for warning in card.warnings:
        console.print(f"warning: {escape(warning)}")
    if path is not None:
        console.print(f"scorecard: {escape(str(path))}")


# ---------------------------------------------------------------- off-policy value


def _estimate(name: str, value: float, lower: float, upper: float) -> tuple[str, str]:
    return name, f"{value:.4f} ({lower:.4f} .. {upper:.4f})"


@app.command("evaluate-policy")
def evaluate_policy(
    use_case: UseCaseOption,
    model_version: Annotated[int, typer.Option("--model-version", help="Candidate: a model version "
                                                                       "(0: the default policy).")] = 0,
    constant_action: Annotated[str, typer.Option("--constant-action", help="Candidate: always this "
                                                                           "action.")] = "",
    report: Annotated[str, typer.Option("--report", help="Candidate: the uplift policy of this report's "
                                                         "effect model.")] = "",
    max_weight: Annotated[float, typer.Option("--max-weight", help="Largest importance weight before "
                                                                   "the estimate is flagged (0: 20).")] = 0.0,
    output: OutputOption = Output.table,
) -> None:
    """The off-policy value of a candidate policy from the logged propensities: IPS, SNIPS
    and doubly robust estimates per decision with 95% CIs, against the logged value."""
    with connect() as client:
        reply = client.evaluate_policy(use_case, model_version=model_version, constant_action=constant_action,
                                       report_id=report, max_weight=max_weight)

    def show() -> None:
        table = Table("estimate", "value per decision (95% CI)", title=use_case)
        for name, text in (
                _estimate("doubly robust", reply.doubly_robust.value, reply.doubly_robust.ci_lower,
                          reply.doubly_robust.ci_upper),
                _estimate("SNIPS", reply.snips.value, reply.snips.ci_lower, reply.snips.ci_upper),
                _estimate("IPS", reply.ips_value, reply.ips_ci_lower, reply.ips_ci_upper),
                ("logged policy", f"{reply.logged_value:.4f}")):
            table.add_row(name, text)
        console.print(table)
        console.print(f"{reply.rows} rows, effective sample size {reply.effective_sample_size:.0f}, largest "
                      f"weight {reply.max_importance_weight:.3g}, disagreement {100 * reply.disagreement:.1f}%")
        for warning in reply.warnings:
            console.print(f"warning: {escape(warning)}")

    table_or_json(output, reply, show)


# ---------------------------------------------------------------- effects of rows


def _value(text: str) -> float | str | None:
    text = text.strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        return text


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows by feature name from a CSV file (a header of feature names; numbers, category
    values, empty for missing) or a JSON file (a list of objects, or {"rows": [...]})."""
    if path.suffix.lower() == ".json":
        data = json.loads(path.read_text())
        rows = data.get("rows") if isinstance(data, dict) else data
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise fail(f"{path}: expected a list of objects (feature name: value), or {{\"rows\": [...]}}")
        return rows
    with path.open(newline="") as handle:
        return [{name: _value(value or "") for name, value in row.items()} for row in csv.DictReader(handle)]


@app.command("predict-effects")
def predict_effects(
    report: Annotated[str, typer.Option("--report", help="The report whose fitted estimator predicts.")],
    rows: Annotated[Path, typer.Option("--rows", exists=True, dir_okay=False, help="A CSV file (header: "
                                       "feature names) or a JSON file (a list of objects) of rows.")],
    use_case: ReportUseCase = "",
    output: OutputOption = Output.table,
) -> None:
    """Effects (CATE) with 95% intervals for given rows, from a report's fitted estimator."""
    given = read_rows(rows)
    if not given:
        raise fail(f"{rows}: no rows")
    with connect() as client:
        effects = client.predict_effects(report, given, use_case=use_case)
    found = [{"effect": float(e), "lower": float(lo), "upper": float(hi)}
             for e, lo, hi in zip(effects.effects, effects.lower, effects.upper, strict=True)]

    def show() -> None:
        table = Table("row", "effect", "95% CI")
        for i, row in enumerate(found):
            table.add_row(str(i), f"{row['effect']:.4f}", f"{row['lower']:.4f} .. {row['upper']:.4f}")
        console.print(table)

    table_or_json(output, found, show)


# ---------------------------------------------------------------- parameters

_CONSTRAINT = re.compile(r"^\s*(?P<metric>[^<>=\s]+)\s*(?P<op><=|>=)\s*(?P<bound>\S+)\s*$")


def _range(item: str) -> tuple[str, tuple[float, float]]:
    name, sep, bounds = item.partition("=")
    low, colon, high = bounds.partition(":")
    try:
        if not sep or not colon or not name.strip():
            raise ValueError
        return name.strip(), (float(low), float(high))
    except ValueError:
        raise fail(f"--parameter {item!r}: expected NAME=LOW:HIGH, e.g. policy.epsilon=0:0.3") from None


def _constraint(item: str) -> dict[str, Any]:
    match = _CONSTRAINT.match(item)
    try:
        if match is None:
            raise ValueError
        bound = float(match["bound"])
    except ValueError:
        raise fail(f"--constraint {item!r}: expected METRIC<=MAX or METRIC>=MIN, e.g. share:offer<=0.3") from None
    return {"metric": match["metric"], "max" if match["op"] == "<=" else "min": bound}


@app.command("suggest-parameters")
def suggest_parameters(
    use_case: UseCaseOption,
    parameter: Annotated[list[str], typer.Option("--parameter", help="NAME=LOW:HIGH, a blueprint parameter "
                                                 "and its search range, e.g. policy.epsilon=0:0.3 "
                                                 "(repeatable).")],
    report: Annotated[str, typer.Option("--report", help="Action values from this report's effect "
                                                         "model...")] = "",
    model_version: Annotated[int, typer.Option("--model-version", help="...or from this model "
                                                                       "version.")] = 0,
    objective: Annotated[str, typer.Option(help="reward (default) or share:ACTION.")] = "",
    constraint: Annotated[list[str] | None, typer.Option(
        "--constraint", help="METRIC<=MAX or METRIC>=MIN, e.g. share:offer<=0.3 (repeatable).")] = None,
    iterations: Annotated[int, typer.Option(help="Evaluations of the objective (0: 20).")] = 0,
    seed: Annotated[int, typer.Option(help="Random seed (0: the service's).")] = 0,
    net_of_costs: Annotated[bool, typer.Option("--net-of-costs", help="Subtract the blueprint's action "
                                                                      "costs from the reward.")] = False,
    output: OutputOption = Output.table,
) -> None:
    """Blueprint parameters that maximise a goal under constraints, by Bayesian
    optimisation over off-policy estimates from logged data."""
    ranges = dict(_range(item) for item in parameter)
    constraints = [_constraint(item) for item in constraint or []]
    with connect() as client:
        reply = client.suggest_parameters(use_case, ranges, report_id=report, model_version=model_version,
                                          objective=objective, constraints=constraints, iterations=iterations,
                                          seed=seed, net_of_costs=net_of_costs)

    def show() -> None:
        table = Table("parameter", "suggested", title=use_case)
        for name, value in sorted(reply.suggestion.items()):
            table.add_row(name, f"{value:.4g}")
        console.print(table)
        console.print(f"expected {objective or 'reward'}: {reply.expected_value:.4f} "
                      f"(± {reply.expected_value_stddev:.4f}; 95% CI {reply.ci_lower:.4f} .. {reply.ci_upper:.4f}) "
                      f"after {len(reply.history)} evaluations")
        for name, value in sorted(reply.metrics.items()):
            console.print(f"  {escape(name)}: {value:.4g}")
        for warning in reply.warnings:
            console.print(f"warning: {escape(warning)}")

    table_or_json(output, reply, show)


def _print_tuning(result: epb.TuningResult) -> None:
    for round_ in result.rounds:
        table = Table("arm", "setting", "source", "metrics", "feasible",
                      title=f"{result.use_case} round {round_.round} (blueprint v{round_.blueprint_version})")
        for arm in round_.arms:
            setting = ", ".join(f"{k}={v:.4g}" for k, v in sorted(arm.parameters.items()))
            metrics = "; ".join(f"{m.metric} {m.mean:.4g} [{m.ci_lower:.4g}, {m.ci_upper:.4g}]" for m in arm.metrics)
            table.add_row(arm.arm, escape(setting), escape(arm.source), escape(metrics), "yes" if arm.feasible else "no")
        console.print(table)
    if result.best:
        console.print(f"best setting (round {result.best_round}, arm {result.best_arm}): "
                      + escape(", ".join(f"{k}={v:.4g}" for k, v in sorted(result.best.items())))
                      + (" — applied" if result.applied else " — proposed, not applied"))
    console.print(f"blueprint version in force: {result.final_blueprint_version}")
    for warning in result.warnings:
        console.print(f"warning: {escape(warning)}")


@app.command("tune")
def tune(
    use_case: UseCaseOption,
    parameter: Annotated[list[str], typer.Option("--parameter", help="PATH=LOW:HIGH, a blueprint parameter and "
                                                 "its search range, e.g. policy.action_costs[discount]=0:1 or "
                                                 "value_model.weights[revenue]=0:2 (repeatable).")],
    objective: Annotated[str, typer.Option(help="Scorecard metric to maximise (default reward).")] = "reward",
    constraint: Annotated[list[str] | None, typer.Option(
        "--constraint", help="METRIC<=MAX or METRIC>=MIN on a scorecard metric, e.g. outcome_count<=0.5 "
                             "(repeatable).")] = None,
    rounds: Annotated[int, typer.Option(help="Rounds of arms (0: 5).")] = 0,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Arms per round (0: 4).")] = 0,
    min_rows: Annotated[int, typer.Option("--min-rows", help="Closed decisions per arm before a round is "
                                                             "measured (0: 1000).")] = 0,
    round_timeout: Annotated[float, typer.Option("--round-timeout", help="Seconds a round may wait for its "
                                                                         "rows (0: 7 days).")] = 0.0,
    apply: Annotated[bool, typer.Option("--apply", help="Apply the best setting at the end (default: only "
                                                        "propose it).")] = False,
    acquisition: Annotated[str, typer.Option(help="expected_improvement or upper_confidence_bound.")
                           ] = "expected_improvement",
    seed: Annotated[int, typer.Option(help="Random seed (0: the service's).")] = 0,
    offline_model: Annotated[int, typer.Option("--offline-model", help="Open the first round with "
                                               "suggest-parameters' suggestion for this model version.")] = 0,
    offline_report: Annotated[str, typer.Option("--offline-report", help="...or for this effect report.")] = "",
    author: Annotated[str, typer.Option(help="Who tunes (recorded with every applied version).")] = "",
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the job until it ends.")] = True,
    output: OutputOption = Output.table,
) -> None:
    """Tune blueprint parameters online: rounds of experiment arms proposed by Gaussian
    processes and measured on their scorecards; the best setting that meets every
    constraint is proposed, or applied with --apply (docs/tuning.md)."""
    ranges = dict(_range(item) for item in parameter)
    constraints = [_constraint(item) for item in constraint or []]
    with connect() as client:
        try:
            operation = client.start_tuning(
                use_case, ranges, objective=objective, constraints=constraints, rounds=rounds,
                batch_size=batch_size, min_rows_per_arm=min_rows, round_timeout=round_timeout or None, apply=apply,
                acquisition=acquisition, seed=seed, seed_from_offline=bool(offline_model or offline_report),
                suggest_model_version=offline_model, suggest_report_id=offline_report, author=author)
        except ValueError as exc:
            raise fail(str(exc)) from None
        if not wait:
            table_or_json(output, operation, lambda: console.print(f"tuning started: operation {operation.id}"))
            return
        operation = follow(client, operation, f"tuning {use_case}")
    result = operation_result(operation)
    table_or_json(output, result, lambda: _print_tuning(result))  # type: ignore[arg-type]
