"""One effect analysis, start to finish, without gRPC: estimator choice and fit, the
doubly robust ATE with the verdict, the CATE, overlap and nuisance diagnostics, segments
(chosen on the training rows, estimated on held-out ones), validation (DRTester) and the
check of the per-row intervals, the policy and its gains, refutations, data quality, the
ONNX effect model and the HTML report.

Rows are split once (:func:`split_rows`): the estimator is fitted, and the segments are
chosen, on the training rows; the held-out rows get doubly robust pseudo-outcomes from
outcome models fitted on training rows, and carry segment effects, validation, the
interval check and policy values. The ATE pools every row's AIPW score (docs/evaluator.md).

:func:`run_analysis` runs in a worker process (see :mod:`.isolation`), reporting its
stages through a callback; it returns the structured result, the page, the pickled
:class:`~loopwise.services.evaluator.estimation.EffectModel` and the ONNX bytes.
"""

from __future__ import annotations

import hashlib
import pickle
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from loopwise.evaluator.v1 import evaluator_service_pb2 as epb
from loopwise.services.evaluator import estimators as E
from loopwise.services.evaluator import formatting as F
from loopwise.services.evaluator import policy_eval
from loopwise.services.evaluator.estimation import (
    POOR_OVERLAP_HIGH,
    POOR_OVERLAP_LOW,
    QUANTILE_LEVELS,
    EffectModel,
)
from loopwise.services.evaluator.intervals import interval_check, misspecification_findings
from loopwise.services.evaluator.segments import segment_effects, tree_masks
from loopwise.services.evaluator.verdict import average_effect, quality_notes, recommend, statement

VALIDATION_SHARE = 0.2
MAX_VALIDATION_ROWS = 20_000
# Refutations refit the estimator twice on a seeded sample of the rows: they test the
# sign and the stability of the ATE, for which this many rows are plenty.
REFUTATION_ROWS = 10_000
REFUTATION_FOREST_TREES = 48
EXTREME_LOW, EXTREME_HIGH = 0.05, 0.95
ESTIMATOR_ENUM = {E.LINEAR_DML: epb.ESTIMATOR_LINEAR_DML, E.CAUSAL_FOREST_DML: epb.ESTIMATOR_CAUSAL_FOREST_DML,
                  E.DR_LEARNER: epb.ESTIMATOR_DR_LEARNER}
ATE_METHOD = ("doubly robust (AIPW): the mean of every row's score; training rows with the estimator's own "
              "cross-fitted nuisances, held-out rows with outcome models fitted on training rows; logged "
              "propensities clipped to [0.01, 0.99]")

Report = Callable[[str, float, str], None]


@dataclass
class EffectTask:
    """Everything an analysis needs (picklable)."""

    x: np.ndarray  # [n, F] float64, NaN = missing
    t: np.ndarray  # [n] 0/1
    y: np.ndarray  # [n] reward
    propensity: np.ndarray  # [n] logged probability of treatment within the pair
    times_ms: np.ndarray  # [n] decision times
    feature_names: list[str]
    estimator: str  # one of estimators.ESTIMATORS or estimators.AUTO
    seed: int
    rows_read: int
    meta: dict[str, Any]  # use_case, report_id, treatment, control, create_time, source
    categories: dict[str, list[str]] = field(default_factory=dict)
    segment_features: list[str] = field(default_factory=list)
    treatment_cost: float = 0.0
    forest_trees: int = E.DEFAULT_FOREST_TREES
    export_onnx: bool = False
    n_actions: int = 2  # width of the one-hot action block of the ONNX model
    treatment_index: int = 1  # the treatment's index among the blueprint's actions
    arms: bool = False  # experiment arms (not actions) are the treatments
    outcome_name: str = "reward"  # the reward's outcome names (verdict.describe_reward)
    outcome_definition: str = ""  # how the outcomes make the reward, readable
    # Per row: outcomes counted, the blueprint and model versions that logged it (None: unknown).
    outcome_counts: np.ndarray | None = None
    blueprint_versions: np.ndarray | None = None
    model_versions: np.ndarray | None = None
    # Feedback's counts for the use case (GetStats), filled by the caller; None: not asked.
    quality: epb.DataQuality | None = None


@dataclass
class EffectOutput:
    """What an analysis produced."""

    result: epb.EstimateEffectsResult
    html: bytes
    model: bytes
    onnx: bytes = b""


@dataclass
class Plots:
    """Arrays the report plots (kept out of the result message)."""

    cate: np.ndarray
    propensity: np.ndarray
    treated: np.ndarray
    x: np.ndarray
    top_feature: int
    calibration: list[tuple[float, float, float]] = field(default_factory=list)  # (predicted, observed, se)
    # QINI as DRTester gives it: % treated (highest CATE first), gain over random targeting.
    qini_curve: tuple[np.ndarray, np.ndarray] | None = None
    toc_curve: tuple[np.ndarray, np.ndarray] | None = None
    # The held-out rows' average effect: the random-targeting line of the QINI plot ends there.
    held_out_ate: float = 0.0


def _medians(x: np.ndarray) -> np.ndarray:
    out = np.zeros(x.shape[1])
    for j in range(x.shape[1]):
        present = x[~np.isnan(x[:, j]), j]
        out[j] = float(np.median(present)) if present.size else 0.0
    return out


def split_rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, held-out rows), sorted indices of the rows in the order read: the
    first min(MAX_VALIDATION_ROWS, max(50, 20% of n)) of a seeded permutation are held
    out (SampleSplit in the result)."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = min(MAX_VALIDATION_ROWS, max(50, int(VALIDATION_SHARE * n)))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def rows_digest(rows: np.ndarray) -> str:
    """sha256 (hex) of sorted row indices as int64 little-endian."""
    return hashlib.sha256(np.sort(rows).astype("<i8").tobytes()).hexdigest()


def overlap_of(propensity: np.ndarray, t: np.ndarray) -> tuple[epb.Overlap, list[str]]:
    """Overlap diagnostics and their warnings."""
    edges = np.linspace(0.0, 1.0, 11)
    weights = np.where(t == 1, 1.0 / propensity, 1.0 / (1.0 - propensity))
    ess = float(weights.sum() ** 2 / np.square(weights).sum())
    extreme = float(np.mean((propensity < EXTREME_LOW) | (propensity > EXTREME_HIGH)))
    low, high = float(propensity.min()), float(propensity.max())
    warnings = []
    if low < POOR_OVERLAP_LOW or high > POOR_OVERLAP_HIGH:
        warnings.append(
            f"poor overlap: logged propensity of treatment ranges {low:.3f}..{high:.3f} "
            f"(outside [{POOR_OVERLAP_LOW}, {POOR_OVERLAP_HIGH}]); effects there rest on extrapolation"
        )
    if ess < 0.2 * t.size:
        warnings.append(f"poor overlap: inverse-propensity weights leave an effective sample of {ess:.0f} "
                        f"of {t.size} rows")
    overlap = epb.Overlap(
        extreme_share=extreme, effective_sample_size=ess, poor=bool(warnings), bin_edges=edges.tolist(),
        treated_counts=np.histogram(propensity[t == 1], edges)[0].tolist(),
        control_counts=np.histogram(propensity[t == 0], edges)[0].tolist(),
    )
    return overlap, warnings


def treatment_scores(propensity: np.ndarray, t: np.ndarray) -> list[epb.NuisanceScore]:
    """Log loss and AUC of the logged propensities as the treatment model."""
    from sklearn.metrics import log_loss, roc_auc_score

    p = np.clip(propensity, 1e-9, 1 - 1e-9)
    return [epb.NuisanceScore(model="treatment", metric="log_loss", value=float(log_loss(t, p, labels=[0, 1]))),
            epb.NuisanceScore(model="treatment", metric="auc", value=float(roc_auc_score(t, p)))]


class _WithoutLastColumn:
    """The fitted estimator seen by DRTester, whose rows carry the propensity last."""

    def __init__(self, est) -> None:
        self.est = est

    def effect(self, X, T0=0, T1=1):
        return self.est.effect(np.asarray(X)[:, :-1], T0=T0, T1=T1)


def _held_out_tester(regression, propensity_model, cate):
    """A DRTester whose doubly robust outcomes on the validation rows come from nuisances
    fitted on the training sample (one outcome model per arm, kept as ``reg_preds_``);
    the training sample's own DR outcomes (cross-fitted: three times as many outcome
    models) are skipped, as the calibration, BLP and uplift evaluations read only the
    CATE quantiles of the training sample. The propensities are clipped as in
    :func:`~.estimators.dr_scores`."""
    from econml.validate import DRTester

    class HeldOutTester(DRTester):
        def fit_nuisance(self, Xval, Dval, yval, Xtrain, Dtrain, ytrain):
            self.Dval = np.asarray(Dval)
            self.treatments = np.sort(np.unique(self.Dval))
            self.n_treat = len(self.treatments) - 1
            self.fit_on_train = True
            self.reg_preds_, prop_preds = self.fit_nuisance_train(Xtrain, np.asarray(Dtrain), ytrain, Xval)
            e = np.clip(prop_preds[:, 1], E.PROPENSITY_CLIP, 1 - E.PROPENSITY_CLIP)
            mu0, mu1 = self.reg_preds_[:, 0], self.reg_preds_[:, 1]
            treated = self.Dval == self.treatments[1]
            y = np.asarray(yval, dtype=np.float64)
            self.control_val_ = mu0 + (~treated) * (y - mu0) / (1 - e)
            self.dr_val_ = (mu1 + treated * (y - mu1) / e - self.control_val_).reshape(-1, 1)
            self.ate_val = self.dr_val_.mean(axis=0)
            self.dr_train_ = None  # evaluate_cal only checks that training data was given
            return self

    return HeldOutTester(model_regression=regression, model_propensity=propensity_model, cate=cate)


@dataclass
class HeldOut:
    """The held-out rows with their doubly robust pseudo-outcomes (nuisances fitted on a
    sample of the training rows) and the tester that made them."""

    rows: np.ndarray  # indices among all rows
    effect: np.ndarray  # φ: doubly robust pseudo-outcome of the effect, mean τ
    control: np.ndarray  # doubly robust outcome under control, mean E[Y(0)]
    reference: np.ndarray  # μ̂₁ − μ̂₀: the T-learner CATE of the tester's outcome models
    tester: Any
    xw: np.ndarray  # held-out rows ⊕ propensity, as the tester reads them
    train_xw: np.ndarray  # the training sample's rows ⊕ propensity
    train_rows: np.ndarray  # the training sample's indices


def held_out(est, x: np.ndarray, t: np.ndarray, y: np.ndarray, propensity: np.ndarray, train: np.ndarray,
             val: np.ndarray, seed: int) -> HeldOut:
    """Fit the tester's outcome models (one per action) on a seeded sample of at most
    MAX_VALIDATION_ROWS training rows and make the held-out rows' pseudo-outcomes."""
    from loopwise.services.evaluator.estimation import LoggedPropensityClassifier

    sample = train if train.size <= MAX_VALIDATION_ROWS else np.sort(
        np.random.default_rng(seed + 2).choice(train, MAX_VALIDATION_ROWS, replace=False))
    xw = np.column_stack([x[val], propensity[val]])
    train_xw = np.column_stack([x[sample], propensity[sample]])
    tester = _held_out_tester(E.outcome_model(seed), LoggedPropensityClassifier(), _WithoutLastColumn(est))
    tester.fit_nuisance(xw, t[val], y[val], train_xw, t[sample], y[sample])
    return HeldOut(val, tester.dr_val_[:, 0], tester.control_val_, tester.reg_preds_[:, 1] - tester.reg_preds_[:, 0],
                   tester, xw, train_xw, sample)


def validate(held: HeldOut, plots: Plots) -> epb.Validation:
    """DRTester on held-out rows: calibration, QINI, AUTOC and the BLP test; the
    calibration groups are quartiles of the training sample's CATE."""
    from scipy.stats import norm

    tester, xw, train_xw = held.tester, held.xw, held.train_xw
    cal = tester.evaluate_cal(xw, train_xw, n_groups=4)
    blp = tester.evaluate_blp(xw, train_xw)
    qini = tester.evaluate_uplift(xw, train_xw, metric="qini", n_bootstrap=200)
    toc = tester.evaluate_uplift(xw, train_xw, metric="toc", n_bootstrap=200)
    frame = cal.plot_data_dict[1]
    plots.calibration = [(float(a), float(b), float(c)) for a, b, c in
                         zip(frame["g_cate"], frame["gate"], frame["se_gate"], strict=True)]
    plots.qini_curve = (np.asarray(qini.curves[1]["Percentage treated"]), np.asarray(qini.curves[1]["value"]))
    plots.toc_curve = (np.asarray(toc.curves[1]["Percentage treated"]), np.asarray(toc.curves[1]["value"]))
    plots.held_out_ate = float(tester.ate_val[0])
    slope, se = float(blp.params[0]), float(blp.errs[0])
    q, q_se = float(qini.params[0]), float(qini.errs[0])
    a, a_se = float(toc.params[0]), float(toc.errs[0])
    z = E.Z95
    return epb.Validation(
        rows=int(held.rows.size), calibration_r2=float(cal.cal_r_squared[0]), qini=q, qini_ci_lower=q - z * q_se,
        qini_ci_upper=q + z * q_se, autoc=a, autoc_ci_lower=a - z * a_se, autoc_ci_upper=a + z * a_se,
        blp_slope=slope, blp_slope_stderr=se, blp_p_value=float(norm.sf(slope / se)) if se > 0 else 0.0,
    )


def policy_summary(cate_val: np.ndarray, x_val: np.ndarray, t: np.ndarray, y: np.ndarray,
                   propensity: np.ndarray, cost: float, cate_all: np.ndarray, x_all: np.ndarray,
                   task: EffectTask) -> epb.PolicySummary:
    """Treat when the CATE exceeds the cost: doubly robust values (net of the cost) of
    that policy, treat-all and treat-none on held-out rows, and readable rules."""
    logged = np.where(t == 1, propensity, 1.0 - propensity)
    q = policy_eval.fit_reward_model(x_val, t, y, 2, task.seed)
    treat = (cate_val > cost).astype(float)
    candidates = {"cate_policy": np.column_stack([1 - treat, treat]),
                  "treat_all": policy_eval.constant_policy(t.size, 2, 1),
                  "treat_none": policy_eval.constant_policy(t.size, 2, 0)}
    values, terms = [], {}
    for name, target in candidates.items():
        terms[name] = policy_eval.evaluate(target, t, logged, y, q).dr_terms - cost * target[:, 1]
        est = policy_eval.Estimate.of_terms(terms[name])
        values.append(epb.PolicyValue(name=name, value=est.value, ci_lower=est.lower, ci_upper=est.upper))
    gains = {}
    for baseline in ("treat_none", "treat_all"):  # paired: the same rows' terms
        est = policy_eval.Estimate.of_terms(terms["cate_policy"] - terms[baseline])
        gains[baseline] = epb.PolicyValue(name=f"cate_policy - {baseline}", value=est.value, ci_lower=est.lower,
                                          ci_upper=est.upper)
    decide = (cate_all > cost).astype(int)
    rules = []
    if 0 < decide.sum() < decide.size:
        for rule, mask, share in tree_masks(x_all, decide, task.feature_names, task.categories, task.seed,
                                            classify=True):
            verdict = "treat" if share >= 0.5 else "do not treat"
            rules.append(f"{verdict} when {rule} ({int(mask.sum())} rows, {share:.0%} of them benefit)")
    else:
        rules.append("treat everyone" if decide.all() else "treat no one")
    return epb.PolicySummary(treatment_cost=cost, treated_share=float(decide.mean()), values=values, rules=rules,
                             gain_over_treat_none=gains["treat_none"], gain_over_treat_all=gains["treat_all"],
                             rows=int(t.size))


def refute(task: EffectTask, x: np.ndarray, ate: tuple[float, float, float], name: str) -> list[epb.Refutation]:
    """A placebo treatment (randomly permuted) and a random common cause, each refitted on
    at most REFUTATION_ROWS rows."""
    rng = np.random.default_rng(task.seed + 1)
    rows = rng.permutation(task.t.size)[:REFUTATION_ROWS]
    xs, ts, ys, es = x[rows], task.t[rows], task.y[rows], task.propensity[rows]
    trees = min(task.forest_trees, REFUTATION_FOREST_TREES)
    placebo_t = rng.permutation(ts)
    placebo = E.fit_estimator(name, xs, placebo_t, ys, np.full(ts.size, placebo_t.mean()), task.seed, trees)
    p_ate, p_lo, p_hi = E.ate_with_interval(placebo)
    common = E.fit_estimator(name, xs, ts, ys, es, task.seed, trees, extra_controls=rng.normal(size=(ts.size, 1)))
    c_ate, c_lo, c_hi = E.ate_with_interval(common)
    return [
        epb.Refutation(method="placebo_treatment", original_effect=ate[0], new_effect=p_ate, ci_lower=p_lo,
                       ci_upper=p_hi, passed=p_lo <= 0.0 <= p_hi),
        epb.Refutation(method="random_common_cause", original_effect=ate[0], new_effect=c_ate, ci_lower=c_lo,
                       ci_upper=c_hi, passed=c_lo <= ate[0] <= c_hi),
    ]


def strongest_modifier(x: np.ndarray, cate: np.ndarray) -> int:
    """The feature whose values correlate most (in absolute value) with the CATE."""
    if x.shape[1] == 0 or np.std(cate) == 0:
        return 0
    corr = [abs(np.corrcoef(x[:, j], cate)[0, 1]) if np.std(x[:, j]) > 0 else 0.0 for j in range(x.shape[1])]
    return int(np.argmax(corr))


def sampling_note(n_rows: int, n_validation: int, n_tester_train: int, forest: bool) -> str:
    """Where the analysis works on seeded samples rather than all rows (for the report's
    reproducibility metadata)."""
    from loopwise.services.evaluator.cate_onnx import DISTILL_ROWS

    parts = [f"DRTester on {n_validation} held-out rows (also segment effects, policy values and the interval "
             f"check) with outcome models fitted on {n_tester_train} training rows",
             f"refutations refitted on {min(n_rows, REFUTATION_ROWS)} rows"
             + (f" with at most {REFUTATION_FOREST_TREES} trees" if forest else "")]
    if forest:
        parts.append(f"forest distilled for ONNX on {min(n_rows, DISTILL_ROWS)} rows")
    return "samples (seeded): " + "; ".join(parts)


def versions() -> dict[str, str]:
    """Versions of what computed the report."""
    import econml
    import sklearn

    import loopwise

    return {"econml": econml.__version__, "scikit-learn": sklearn.__version__, "numpy": np.__version__,
            "loopwise": getattr(loopwise, "__version__", "dev"), "python": platform.python_version()}


def data_quality(task: EffectTask) -> epb.DataQuality:
    """Feedback's counts (from the caller) with the rows' outcomes and versions, and notes."""
    quality = epb.DataQuality()
    if task.quality is not None:
        quality.CopyFrom(task.quality)
    else:
        quality.stats_error = "not asked"
    n = int(task.t.size)
    quality.rows_with_outcome = int((task.outcome_counts > 0).sum()) if task.outcome_counts is not None else n
    for column, target in ((task.blueprint_versions, quality.blueprint_versions),
                           (task.model_versions, quality.model_versions)):
        if column is not None and column.size:
            versions, counts = np.unique(column, return_counts=True)
            target.extend(epb.VersionCount(version=int(v), rows=int(c)) for v, c in zip(versions, counts, strict=True))
    quality.notes.extend(quality_notes(quality, n))
    return quality


def run_analysis(task: EffectTask, report: Report) -> EffectOutput:
    """The whole analysis (see the module doc); ``report(stage, progress, message)``."""
    from loopwise.services.evaluator.report import render_report

    medians = _medians(task.x)
    model = EffectModel(None, list(task.feature_names), medians)
    full = model.impute(task.x)
    warnings = []
    missing = int(np.isnan(task.x).sum())
    if missing:
        warnings.append(f"{F.count(missing)} missing feature values were imputed with column medians")
    # A constant feature makes a linear final stage singular: the estimator leaves it out.
    keep = [j for j in range(full.shape[1]) if np.ptp(full[:, j]) > 0]
    if len(keep) < full.shape[1]:
        dropped = [task.feature_names[j] for j in range(full.shape[1]) if j not in keep]
        warnings.append(f"constant features left out of the effect model: {', '.join(dropped)}")
        model.columns = keep
    x = full[:, keep]
    name, scores = task.estimator, {}
    if name == E.AUTO:
        report("selecting", 0.15, "fitting LinearDML, CausalForestDML and DRLearner; scoring with RScorer")
        choice = E.choose_estimator(x, task.t, task.y, task.propensity, task.seed, task.forest_trees)
        name, scores = choice.name, choice.scores
    train, val = split_rows(task.t.size, task.seed)
    report("fitting", 0.3, f"{name} on {train.size} rows ({int(task.t[train].sum())} treated)")
    est = E.fit_estimator(name, x[train], task.t[train], task.y[train], task.propensity[train], task.seed,
                          task.forest_trees)
    model.estimator = est
    cate = E.effects(est, x)
    held = held_out(est, x, task.t, task.y, task.propensity, train, val, task.seed)
    train_scores = E.dr_scores(est)
    avg = average_effect(np.concatenate([train_scores.effect, held.effect]),
                         np.concatenate([train_scores.control, held.control]))
    overlap, overlap_warnings = overlap_of(task.propensity, task.t)
    warnings += overlap_warnings
    nuisance = treatment_scores(task.propensity, task.t)
    r2 = E.outcome_r2(est, task.y)
    if r2 is not None:
        nuisance.insert(0, epb.NuisanceScore(model="outcome", metric="r2", value=r2))

    report("segments", 0.55, f"effects by segment: chosen on {train.size} rows, estimated on {val.size} others")
    segments = segment_effects(full[train], cate[train], full[val], held.effect, cate[val], task.feature_names,
                               task.segment_features, task.categories, task.seed)
    report("validating", 0.62, f"DRTester on {val.size} held-out rows")
    linear = E.linear_coefficients(est)
    if linear is not None:  # back to the width of all features (0 for the left-out ones)
        coef = np.zeros(full.shape[1])
        coef[keep] = linear[0]
        linear = (coef, linear[1])
    plots = Plots(cate, task.propensity, task.t, full, strongest_modifier(full, cate))
    validation = validate(held, plots)
    if validation.blp_p_value > 0.05:
        warnings.append(f"the BLP test does not detect heterogeneity ({F.p_value(validation.blp_p_value)}): "
                        "segment and policy differences may be noise")
    lower, upper = (np.asarray(bound, dtype=np.float64).reshape(-1) for bound in
                    est.effect_interval(x[val], alpha=0.05))
    intervals = interval_check(cate[val], lower, upper, held.effect, held.reference)
    findings = misspecification_findings(intervals, validation, name)
    intervals.findings.extend(findings)
    intervals.misspecified = bool(findings)
    warnings += [f"effect model check: {finding}" for finding in findings]
    policy = policy_summary(cate[val], x[val], task.t[val], task.y[val], task.propensity[val],
                            task.treatment_cost, cate, full, task)
    report("refuting", 0.72, "placebo treatment and random common cause")
    ate = (avg.ate, avg.lower, avg.upper)
    refutations = refute(task, x, ate, name)
    warnings += [f"refutation {r.method.replace('_', ' ')} failed: new effect "
                 f"{F.with_ci(r.new_effect, r.ci_lower, r.ci_upper)}" for r in refutations if not r.passed]
    quality = data_quality(task)
    recommendation, reason = recommend(avg, policy)
    verdict = epb.Verdict(
        outcome_name=task.outcome_name, outcome_definition=task.outcome_definition, control_mean=avg.control_mean,
        control_mean_ci_lower=avg.control_lower, control_mean_ci_upper=avg.control_upper,
        relative_lift=avg.lift, relative_lift_ci_lower=avg.lift_lower, relative_lift_ci_upper=avg.lift_upper,
        relative_lift_defined=avg.lift_defined, significant=avg.significant,
        statement=statement(avg, task.outcome_name, task.meta["treatment"], task.meta["control"], task.arms),
        recommendation=recommendation, recommendation_statement=reason,
    )

    result = epb.EstimateEffectsResult(
        report_id=task.meta["report_id"], use_case=task.meta["use_case"], ate=avg.ate, ate_ci_lower=avg.lower,
        ate_ci_upper=avg.upper, ate_stderr=avg.se, ate_p_value=avg.p_value,
        cate_quantiles=[epb.Quantile(level=q, value=float(np.quantile(cate, q))) for q in QUANTILE_LEVELS],
        rows=int(task.t.size), treated_rows=int(task.t.sum()), treatment_action=task.meta["treatment"],
        control_action=task.meta["control"], feature_names=task.feature_names, estimator=ESTIMATOR_ENUM[name],
        logged_propensities_used=not task.arms, min_propensity=float(task.propensity.min()),
        treatment_source=epb.TREATMENT_SOURCE_ARMS if task.arms else epb.TREATMENT_SOURCE_ACTIONS,
        max_propensity=float(task.propensity.max()), warnings=warnings, overlap=overlap,
        nuisance_scores=nuisance, segments=segments, validation=validation, policy=policy,
        refutations=refutations, estimator_scores=scores, verdict=verdict, interval_calibration=intervals,
        data_quality=quality,
        sample_split=epb.SampleSplit(selection_rows=int(train.size), estimation_rows=int(val.size), seed=task.seed,
                                     selection_digest=rows_digest(train), estimation_digest=rows_digest(val)),
    )
    result.create_time.FromJsonString(task.meta["create_time"])
    repro = result.reproducibility
    if task.times_ms.size:
        repro.data_start_time.FromMilliseconds(int(task.times_ms.min()))
        repro.data_end_time.FromMilliseconds(int(task.times_ms.max()))
    repro.rows_read, repro.rows_used, repro.seed = task.rows_read, int(task.t.size), task.seed
    repro.estimator_settings = f"{E.settings_of(est)}; ATE: {ATE_METHOD}; " + sampling_note(
        int(task.t.size), int(val.size), int(held.train_rows.size), linear is None)
    repro.versions.update(versions())

    onnx = b""
    if task.export_onnx:
        from loopwise.services.evaluator.cate_onnx import export_cate

        report("exporting", 0.82, "exporting the effect model to ONNX")
        exported = export_cate(task.x, cate, medians, linear, task.n_actions, task.treatment_index, task.seed)
        onnx = exported.onnx
        result.cate_model.CopyFrom(epb.CateModel(sha256=exported.sha256, family=exported.family,
                                                 fidelity_r2=exported.fidelity_r2, input_width=exported.input_width))
    report("reporting", 0.9, "rendering the HTML report")
    html = render_report(result, plots, task.meta)
    return EffectOutput(result, html, pickle.dumps(model), onnx)
