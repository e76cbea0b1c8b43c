"""Scorecard statistics against ground truth on simulated experiments whose lifts are
known, with the seeds written here: CI coverage of the lift, CUPED's variance cut at a
covariate correlation of 0.6, the sample-ratio test at n = 20,000, and the mSPRT's
false-positive rate under continuous peeking in A/A tests (vectorised); plus the
formulas themselves and the HTML page."""

from __future__ import annotations

import math

import numpy as np
import pytest

from loopwise.services.evaluator import scorecard as S

WEEK_MS = 7 * 24 * 3_600_000
T0_MS = 1_750_000_000_000


def experiment(seed: int, n: int, lift: float, base: float = 0.3, share_b: float = 0.5, rho: float = 0.0,
               binary: bool = True, interval_ms: int = 3_600_000) -> S.ScorecardInput:
    """Two arms ``a`` (control) and ``b`` configured 50/50, each row in ``b`` with
    probability ``share_b``, decided uniformly over a week. Binary: y ~ Bernoulli(base ·
    (1 + lift·[b])). Continuous: y = 10·(1 + lift·[b]) + 3·(ρ·x + √(1−ρ²)·e) with x, e
    standard normal, so corr(x, y) = ρ within an arm. x is the covariate."""
    rng = np.random.default_rng(seed)
    group = (rng.random(n) < share_b).astype(np.int64)
    x = rng.normal(size=n)
    if binary:
        y = (rng.random(n) < base * (1 + lift * group)).astype(np.float64)
    else:
        y = 10.0 * (1 + lift * group) + 3.0 * (rho * x + math.sqrt(1 - rho**2) * rng.normal(size=n))
    times = np.sort(rng.integers(T0_MS, T0_MS + WEEK_MS, n))
    return S.ScorecardInput(["a", "b"], np.array([0.5, 0.5]), group, times, {"y": y}, x[:, None], ["x"], [False],
                            look_interval_ms=interval_ms)


def without_covariates(data: S.ScorecardInput) -> S.ScorecardInput:
    data.covariates = np.zeros((data.group.size, 0))
    data.covariate_names, data.categorical = [], []
    return data


# ------------------------------------------------------------------ ground truth


def test_lift_ci_covers_the_true_lift_in_at_least_17_of_20_seeds() -> None:
    lift = 0.10
    covered = {"lift": 0, "difference": 0, "cuped lift": 0}
    for seed in range(20):
        c = S.compute_scorecard(without_covariates(experiment(100 + seed, 8000, lift))).comparisons[0]
        covered["lift"] += c.lift_ci_lower <= lift <= c.lift_ci_upper
        covered["difference"] += c.ci_lower <= 0.3 * lift <= c.ci_upper
        c = S.compute_scorecard(experiment(200 + seed, 4000, lift, rho=0.7, binary=False)).comparisons[0]
        assert c.adjusted
        covered["cuped lift"] += c.lift_ci_lower <= lift <= c.lift_ci_upper
    print(f"coverage over 20 seeds: {covered}")
    assert all(count >= 17 for count in covered.values()), covered


def test_cuped_cuts_the_variance_of_the_lift_estimate_by_at_least_30_percent_at_correlation_06() -> None:
    lift, seeds = 0.02, 400
    raw, adjusted, reported = [], [], []
    for seed in range(seeds):
        c = S.compute_scorecard(experiment(1000 + seed, 1000, lift, rho=0.6, binary=False)).comparisons[0]
        raw.append(c.unadjusted_relative_lift)
        adjusted.append(c.relative_lift)
        reported.append(c.variance_reduction)
    cut = 1 - np.var(adjusted) / np.var(raw)
    print(f"CUPED at rho = 0.6 over {seeds} seeds: variance of the lift cut by {cut:.3f} "
          f"(reported per scorecard: mean {np.mean(reported):.3f})")
    assert cut >= 0.30
    # What a single scorecard reports agrees with what the seeds show (ρ² = 0.36).
    assert 0.30 <= np.mean(reported) <= 0.42
    # Adjusting does not bias the lift.
    assert abs(np.mean(adjusted) - lift) < 3 * np.std(adjusted) / math.sqrt(seeds)


def test_srm_flags_a_48_52_split_of_a_50_50_design_at_20000_and_passes_a_true_50_50() -> None:
    exact = S.sample_ratio_test(np.array([9_600, 10_400]), np.array([0.5, 0.5]))
    assert exact.mismatch and exact.degrees_of_freedom == 1 and exact.chi_square == pytest.approx(32.0)
    flagged = passed = 0
    worst_flagged_p, best_passed_p = 0.0, 1.0
    for seed in range(20):
        rng = np.random.default_rng(300 + seed)
        skewed = S.sample_ratio_test(np.bincount(rng.random(20_000) < 0.52, minlength=2), np.array([0.5, 0.5]))
        fair = S.sample_ratio_test(np.bincount(rng.random(20_000) < 0.50, minlength=2), np.array([0.5, 0.5]))
        flagged += skewed.mismatch
        passed += not fair.mismatch
        worst_flagged_p = max(worst_flagged_p, skewed.p_value)
        best_passed_p = min(best_passed_p, fair.p_value)
    print(f"SRM at n = 20,000: 48/52 exact p = {exact.p_value:.2g}; simulated 48/52 flagged in {flagged}/20 "
          f"(largest p {worst_flagged_p:.2g}); true 50/50 passed in {passed}/20 (smallest p {best_passed_p:.2g})")
    assert flagged >= 19 and passed >= 19
    # Through the scorecard: the mismatch is reported and warned about.
    card = S.compute_scorecard(without_covariates(experiment(7, 20_000, 0.0, share_b=0.52)))
    assert card.sample_ratio.mismatch and any("sample ratio mismatch" in w for w in card.warnings)
    assert [g.expected_share for g in card.groups] == [0.5, 0.5]


def _aa_peeking(rows: np.ndarray, y: np.ndarray, effect_size: float) -> tuple[np.ndarray, np.ndarray]:
    """(always-valid p-values, naive z-test rejections) of every look of every row of
    A/A simulations ``[sims, n]``: one look after every row."""
    def running(mask: np.ndarray):
        n = np.cumsum(mask, axis=1)
        s = np.cumsum(y * mask, axis=1)
        ss = np.cumsum(y * y * mask, axis=1)
        mean = s / np.maximum(n, 1)
        var = (ss - n * mean * mean) / np.maximum(n - 1, 1)
        return n, mean, var

    nt, mt, vt = running(rows)
    nc, mc, vc = running(~rows)
    enough = (nt >= S.MIN_SEQUENTIAL_ROWS) & (nc >= S.MIN_SEQUENTIAL_ROWS)
    var = np.full(nt.shape, np.nan)
    var[enough] = vt[enough] / nt[enough] + vc[enough] / nc[enough]
    pooled = ((nt - 1) * vt + (nc - 1) * vc) / np.maximum(nt + nc - 2, 1)
    p, _, _ = S.mixture_sprt(mt - mc, var, effect_size**2 * pooled)
    with np.errstate(invalid="ignore"):
        naive = enough & (np.abs(mt - mc) / np.sqrt(var) > S.Z95)
    return p, naive


@pytest.mark.parametrize("kind", ["normal", "bernoulli"])
def test_sequential_false_positive_rate_under_continuous_peeking_in_aa_stays_below_7_percent(kind: str) -> None:
    sims, n = 200, 4000
    rng = np.random.default_rng(4242 if kind == "normal" else 4243)
    rows = rng.random((sims, n)) < 0.5
    y = rng.normal(size=(sims, n)) if kind == "normal" else (rng.random((sims, n)) < 0.1).astype(np.float64)
    p, naive = _aa_peeking(rows, y, S.DEFAULT_EFFECT_SIZE)
    rate = float((p[:, -1] <= 0.05).mean())
    naive_rate = float(naive.any(axis=1).mean())
    print(f"A/A {kind}, {sims} simulations, a look after every row: mSPRT false positives {rate:.3f}, "
          f"a fixed-horizon z-test at every look {naive_rate:.3f}")
    assert rate <= 0.07
    assert naive_rate > 0.2  # peeking at a fixed-horizon test would have failed


def test_sequential_false_positive_rate_through_the_scorecard_stays_below_7_percent() -> None:
    sims, n = 200, 2000
    rng = np.random.default_rng(77)
    rows, y = rng.random((sims, n)) < 0.5, rng.normal(size=(sims, n))
    x = 0.6 * y + 0.8 * rng.normal(size=(sims, n))  # a covariate: θ re-estimated at every look
    false = 0
    for s in range(sims):
        data = S.ScorecardInput(["a", "b"], np.array([0.5, 0.5]), rows[s].astype(np.int64), np.arange(n),
                                {"y": y[s]}, x[s][:, None], ["x"], [False], look_interval_ms=10)
        c = S.compute_scorecard(data).comparisons[0]
        assert len(c.looks) == n // 10
        false += c.sequential_p_value <= 0.05
    print(f"A/A through compute_scorecard with CUPED, {sims} simulations, a look every 10 rows: "
          f"{false} false positives ({false / sims:.3f})")
    assert false / sims <= 0.07


def test_confidence_sequence_keeps_the_true_difference_at_every_look_and_detects_an_effect() -> None:
    sims, n, delta = 200, 4000, 0.15
    rng = np.random.default_rng(99)
    rows = rng.random((sims, n)) < 0.5
    y = rng.normal(size=(sims, n)) + delta * rows
    nt, nc = np.cumsum(rows, axis=1), np.cumsum(~rows, axis=1)
    st, sc = np.cumsum(y * rows, axis=1), np.cumsum(y * ~rows, axis=1)
    enough = (nt >= S.MIN_SEQUENTIAL_ROWS) & (nc >= S.MIN_SEQUENTIAL_ROWS)
    diff = st / np.maximum(nt, 1) - sc / np.maximum(nc, 1)
    var = np.where(enough, 1.0 / np.maximum(nt, 1) + 1.0 / np.maximum(nc, 1), np.nan)
    p, lower, upper = S.mixture_sprt(diff, var, S.DEFAULT_EFFECT_SIZE**2)
    kept = float(((lower <= delta) & (delta <= upper)).all(axis=1).mean())
    detected = float((p[:, -1] <= 0.05).mean())
    print(f"true difference {delta}: inside the running confidence sequence at every look in {kept:.3f} of "
          f"{sims}; detected in {detected:.3f}")
    assert kept >= 0.93 and detected >= 0.8


# ------------------------------------------------------------------ the formulas


def test_relative_lift_uses_the_delta_method() -> None:
    est = S.relative_lift(1.1, 0.0004, 1.0, 0.0009)
    var = 0.0004 / 1.0 + 1.1**2 * 0.0009 / 1.0
    assert est.value == pytest.approx(0.1)
    assert est.lower == pytest.approx(0.1 - S.Z95 * math.sqrt(var))
    assert est.upper == pytest.approx(0.1 + S.Z95 * math.sqrt(var))
    assert math.isnan(S.relative_lift(1.0, 0.1, 0.0, 0.1).value)


def test_mixture_sprt_matches_its_closed_form_and_never_recovers() -> None:
    diff, var, tau2 = np.array([0.0, 0.5, 0.1]), np.array([0.04, 0.01, 0.005]), 0.02
    p, lower, upper = S.mixture_sprt(diff, var, tau2)
    lam = np.sqrt(var / (var + tau2)) * np.exp(tau2 * diff**2 / (2 * var * (var + tau2)))
    assert p[0] == pytest.approx(min(1.0, 1 / lam[0]))
    assert p[1] == pytest.approx(min(1.0, 1 / lam[1]))
    assert p[2] == p[1] < 0.05  # the always-valid p-value is a running minimum
    half = np.sqrt(var * (var + tau2) / tau2 * (2 * np.log(20) + np.log((var + tau2) / var)))
    assert lower[1] == pytest.approx(max(diff[0] - half[0], diff[1] - half[1]))
    assert upper[2] == pytest.approx(min(diff[:3] + half[:3]))
    skipped, lo, hi = S.mixture_sprt(np.array([1.0]), np.array([np.nan]), tau2)
    assert skipped[0] == 1.0 and lo[0] == -np.inf and hi[0] == np.inf


def test_looks_are_aligned_to_the_interval_and_coarsened_past_the_limit() -> None:
    hour = 3_600_000
    times = np.array([5 * hour + 10, 5 * hour + 20, 6 * hour, 9 * hour + 1])
    index, interval = S.look_schedule(times, hour)
    assert list(index) == [0, 0, 1, 2] and interval == hour
    many = np.arange(0, 5000 * hour, hour)
    index, interval = S.look_schedule(many, hour, max_looks=1000)
    assert interval == 5 * hour and index.max() + 1 == 1000


def test_covariate_design_expands_categories_and_flags_missing_values() -> None:
    x = np.array([[1.0, 0], [np.nan, 1], [3.0, 1], [5.0, 2], [2.0, np.nan]])
    columns, names = S.covariate_design(x, ["num", "cat"], [False, True])
    # Code 1 is the most frequent, so the reference; ties keep the order of the codes.
    assert names == ["num", "num missing", "cat=0", "cat=2", "cat missing"]
    assert columns[1, 0] == pytest.approx(np.nanmean(x[:, 0])) and columns[1, 1] == 1.0
    assert list(columns[:, 2]) == [1, 0, 0, 0, 0] and list(columns[:, 3]) == [0, 0, 0, 1, 0]
    assert list(columns[:, 4]) == [0, 0, 0, 0, 1]


def test_three_arms_metrics_missing_for_some_rows_and_a_categorical_covariate() -> None:
    rng = np.random.default_rng(5)
    n = 9000
    group = rng.integers(0, 3, n)
    code = rng.integers(0, 3, n).astype(np.float64)
    y = 2.0 + code + 0.2 * (group == 2) + rng.normal(size=n)
    latency = np.where(rng.random(n) < 0.5, np.nan, rng.exponential(5, n))
    data = S.ScorecardInput(["a", "b", "c"], np.array([1, 1, 1]) / 3, group, np.arange(n) * 1000,
                            {"reward": y, "serving_latency_ms": latency}, code[:, None], ["country"], [True])
    card = S.compute_scorecard(data)
    assert [g.name for g in card.groups] == ["a", "b", "c"] and not card.sample_ratio.mismatch
    assert card.sample_ratio.degrees_of_freedom == 2
    by = {(c.metric, c.group): c for c in card.comparisons}
    assert set(by) == {("reward", "b"), ("reward", "c"), ("serving_latency_ms", "b"), ("serving_latency_ms", "c")}
    c = by[("reward", "c")]
    assert abs(c.difference - 0.2) <= 4 * (c.ci_upper - c.ci_lower) / (2 * S.Z95)  # within 4 standard errors
    assert by[("reward", "b")].variance_reduction > 0.3  # var(code) = 2/3 of the unit noise
    assert by[("serving_latency_ms", "b")].rows + by[("serving_latency_ms", "b")].rows_control < 0.4 * n
    assert len(card.covariate_columns) == 2 and all(c.startswith("country=") for c in card.covariate_columns)
    assert len(card.coefficients["reward"]) == 2


def test_the_html_scorecard_has_its_sections_and_plots() -> None:
    from loopwise.services.evaluator.scorecard_report import render_scorecard

    card = S.compute_scorecard(experiment(11, 3000, 0.2, rho=0.7, binary=False, interval_ms=12 * 3_600_000))
    html = render_scorecard(card, {"use_case": "shop", "comparison": "arms", "create_time": "now",
                                   "canary_model_version": 0, "production_model_version": 0,
                                   "deployment_revision": 0, "rows_read": 3000, "extra_warnings": ["note"]}).decode()
    for section in ("summary", "warnings", "sample-ratio", "metrics", "lifts", "sequential", "cuped", "method"):
        assert f'<section id="{section}">' in html, section
    assert html.count("data:image/png;base64,") == 2  # the lift plot and one confidence sequence
    assert "delta method" in html and "note" in html
