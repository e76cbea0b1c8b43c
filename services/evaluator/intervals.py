"""How far per-row CATE intervals can be trusted, and whether the effect model is
misspecified, measured on held-out rows.

A row's true effect τᵢ is never observed. Its doubly robust pseudo-outcome φᵢ (outcome
models fitted on other rows, the logged propensity) has E[φᵢ | xᵢ] = τᵢ but a noise of
unknown variance, so counting the rows whose interval covers φᵢ says nothing about the
coverage of τᵢ. What the held-out rows do identify, with no noise model, is the
difference of two CATE models' mean squared errors: for τ̂ and τ̃ fitted on other rows,

    E[(φ − τ̂)² − (φ − τ̃)² | x] = (τ − τ̂)² − (τ − τ̃)²,

the noise cancelling. With τ̃ a reference model, the excess is a lower bound on the
effect model's own mean squared error; compared with the error its intervals assume,
mean((half-width / 1.96)²), it bounds their coverage of the truth from above (for normal
errors with variances proportional to the intervals'). The bound has power against
intervals that are too narrow — the misspecified effect model's failure — and cannot
confirm coverage: that is said on the report.
"""

from __future__ import annotations

import numpy as np

from loopwise.evaluator.v1 import evaluator_service_pb2 as epb
from loopwise.services.evaluator import formatting as F

Z95 = 1.959963984540054
Z90 = 1.6448536269514722
NOMINAL = 0.95
# The effect model's errors at least this many times the squared size its intervals
# assume (errors at least twice as large) make the intervals untrustworthy.
ERROR_RATIO_LIMIT = 4.0
# A BLP slope this far from 1, with its CI excluding 1, says the CATE is mis-scaled.
BLP_SLOPE_TOLERANCE = 0.5
REFERENCE = ("a T-learner: one gradient-boosting outcome model per action, fitted on the training rows "
             "(the same models that make the pseudo-outcomes)")


def definition(rows: int) -> str:
    """What the interval check measures, in words (stored in the result and shown)."""
    return (f"On {F.count(rows)} held-out rows, the doubly robust pseudo-outcome φ of each row is its true effect "
            "plus noise of unknown size, so the share of intervals covering the true effect cannot be counted. "
            "Measured instead: the effect model's mean squared error in excess of a reference model's, "
            "mean[(φ − τ̂)² − (φ − τ̃)²], in which the noise cancels. It is a lower bound on the effect model's "
            "own mean squared error; against the error the intervals assume, mean[(half-width / 1.96)²], it gives "
            "an upper bound on their coverage of the true effect (if errors are normal with variances "
            "proportional to the intervals'). The check finds intervals that are too narrow; it cannot "
            "confirm that they are wide enough.")


def coverage_for_ratio(ratio: float, nominal: float = NOMINAL) -> float:
    """Coverage of nominal intervals whose errors have ``ratio`` times the variance they
    assume (normal errors): 2Φ(z / √ratio) − 1."""
    from scipy.stats import norm

    if not ratio > 0:
        return 1.0
    z = float(norm.ppf(0.5 + nominal / 2))
    return float(2 * norm.cdf(z / np.sqrt(ratio)) - 1)


def interval_check(cate: np.ndarray, lower: np.ndarray, upper: np.ndarray, pseudo_outcome: np.ndarray,
                   reference: np.ndarray) -> epb.IntervalCalibration:
    """The check of :mod:`this module <.intervals>` on held-out rows: the effect model's
    CATE with its 95% intervals, the rows' pseudo-outcomes and the reference CATE."""
    n = cate.size
    interval_mse = float(np.mean(((upper - lower) / (2 * Z95)) ** 2))
    terms = (pseudo_outcome - cate) ** 2 - (pseudo_outcome - reference) ** 2
    excess = float(terms.mean())
    se = float(terms.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0
    bound = max(0.0, excess - Z90 * se)
    ratio = bound / interval_mse if interval_mse > 0 else (np.inf if bound > 0 else 0.0)
    coverage = coverage_for_ratio(ratio)
    return epb.IntervalCalibration(
        rows=n, nominal_coverage=NOMINAL, coverage_upper_bound=coverage, interval_mse=interval_mse,
        excess_mse=excess, excess_mse_ci_lower=excess - Z95 * se, excess_mse_ci_upper=excess + Z95 * se,
        mse_lower_bound=bound, error_ratio_lower_bound=float(ratio), reference=REFERENCE, definition=definition(n),
    )


def misspecification_findings(check: epb.IntervalCalibration, validation: epb.Validation,
                              estimator: str) -> list[str]:
    """Readable findings that the effect model is misspecified (empty when none)."""
    findings = []
    if check.error_ratio_lower_bound > ERROR_RATIO_LIMIT:
        findings.append(
            f"the {estimator} per-row intervals are too narrow: on held-out rows its errors are at least "
            f"{F.num(np.sqrt(check.error_ratio_lower_bound), 2)} times as large as its intervals assume, so its 95% "
            f"intervals cover the true effect for at most about {F.pct(check.coverage_upper_bound)} of units; "
            "read segment effects rather than per-unit intervals")
    if check.excess_mse_ci_lower > 0:
        findings.append(
            f"a per-action gradient-boosting model predicts the held-out effects better than {estimator} "
            f"(mean squared error lower by {F.with_ci(check.excess_mse, check.excess_mse_ci_lower, check.excess_mse_ci_upper)}): "
            "the effect model misses part of how the effect varies (a linear effect model for a nonlinear "
            "effect?); CausalForestDML or auto may fit better")
    slope, se = validation.blp_slope, validation.blp_slope_stderr
    if se > 0 and abs(slope - 1) > BLP_SLOPE_TOLERANCE and abs(slope - 1) > Z95 * se:
        spread = "too spread out" if slope < 1 else "too compressed"
        findings.append(f"the predicted effects are {spread}: the best linear predictor's slope is "
                        f"{F.with_ci(slope, slope - Z95 * se, slope + Z95 * se)} where 1 is calibrated")
    if validation.calibration_r2 < 0 and validation.blp_p_value < 0.05:
        findings.append(f"the predicted effects are poorly calibrated across quartile groups (calibration R² "
                        f"{F.num(validation.calibration_r2, 2)}) although they carry heterogeneity")
    return findings
