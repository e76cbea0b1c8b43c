"""Experiment scorecards: the statistics, free of gRPC and of plotting.

A scorecard compares groups of logged decisions — experiment arms, or a canary model
against production — on metrics. ``groups[0]`` is the control; every other group is
compared with it. The unit of analysis is the decision: decisions are treated as
independent draws (docs/scorecards.md says when that is too optimistic).

Per group g and metric y (rows where y is present, ``n_g`` of them):

* mean ``m_g = Σ y / n_g``, sample variance ``s_g²``, 95% CI ``m_g ± z·s_g/√n_g``
  with ``z = Φ⁻¹(0.975) = 1.95996``.

Per treatment group t against the control c:

* difference ``Δ = m_t − m_c``, ``Var(Δ) = s_t²/n_t + s_c²/n_c`` (Welch, the groups
  are independent), 95% CI ``Δ ± z·√Var(Δ)``, two-sided p-value ``2·(1 − Φ(|Δ|/√Var(Δ)))``.
* relative lift ``L = m_t/m_c − 1`` with a 95% CI by the **delta method**:
  ``Var(L) ≈ Var(m_t)/m_c² + m_t²·Var(m_c)/m_c⁴``, CI ``L ± z·√Var(L)``. It is
  undefined (NaN) when ``m_c = 0`` and unreliable when ``|m_c|`` is within two
  standard errors of 0 (a warning says so).

**CUPED** (Deng et al. 2013) with pre-decision covariates X (features seen at decision
time, so the arm cannot have changed them): one coefficient vector per metric,
estimated on the rows of every group pooled, ``θ = Σ_XX⁻¹ Σ_XY`` with ``Σ`` the pooled
(co)variances around the pooled means ``X̄``, ``Ȳ``. Each row's metric becomes
``y − θ·(x − X̄)``; the adjusted group mean is ``m_g − θ·(X̄_g − X̄)`` and its variance
``s²_{g,adj}/n_g`` with ``s²_{g,adj}`` the within-group variance of the adjusted
metric. Differences, lifts, CIs and the sequential test then use the adjusted means
and variances. The variance reduction reported is ``1 − Var_adj(Δ)/Var(Δ)`` (about
``ρ²`` for one covariate whose correlation with the metric is ρ). Categorical
covariates enter as indicators of their most frequent codes; a missing covariate value
is replaced by the pooled mean and flagged by an indicator column.

**Sample ratio mismatch**: Pearson's chi-square of the rows per group against the
configured shares, ``χ² = Σ_g (O_g − E_g)²/E_g`` with ``E_g = N·share_g``, on
``G − 1`` degrees of freedom; a mismatch is flagged when its p-value is below
``srm_alpha`` (0.001 by default).

**Always-valid sequential test**: the normal-mixture sequential probability ratio
test (mSPRT) of Johari, Koomen, Pekelis and Walsh ("Peeking at A/B tests", KDD 2017;
"Always valid inference", Operations Research 2022). With the mixture ``θ ~ N(0, τ²)``
over the true difference and ``V = Var(Δ)`` at a look, the mixture likelihood ratio of
``H₀: θ = θ₀`` is::

    Λ(θ₀) = sqrt(V / (V + τ²)) · exp( τ²·(Δ − θ₀)² / (2·V·(V + τ²)) )

The always-valid p-value is ``p_k = min(1, p_{k−1}, 1/Λ_k(0))`` over the looks so far,
and the ``1 − α`` confidence sequence is the running intersection of::

    Δ_k ± sqrt( V_k·(V_k + τ²)/τ² · (2·log(1/α) + log((V_k + τ²)/V_k)) )

Under H₀ the chance that ``p_k ≤ α`` at *any* look is at most α, so the scorecard may
be read every hour (or after every row) without inflating false positives. ``τ`` is
``effect_size`` pooled standard deviations of the (unadjusted) metric. Looks are the
ends of ``look_interval_ms`` intervals aligned to the epoch (a coarser multiple when
there would be more than ``MAX_LOOKS``) and the end of the data; looks where a group
has fewer than ``MIN_SEQUENTIAL_ROWS`` rows count as p = 1 with an unbounded interval
(the plug-in variance needs some rows). With covariates, θ is re-estimated at each look
from the rows up to it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.special import chdtrc, ndtr, ndtri

Z95 = float(ndtri(0.975))
DEFAULT_ALPHA = 0.05
DEFAULT_SRM_ALPHA = 0.001
DEFAULT_EFFECT_SIZE = 0.05
MIN_SEQUENTIAL_ROWS = 100
MIN_GROUP_ROWS = 2
MAX_LOOKS = 1000
MAX_CATEGORY_LEVELS = 10
MAX_COVARIATE_COLUMNS = 32


@dataclass
class ScorecardInput:
    """Rows of a scorecard, in any order.

    ``group`` indexes ``groups`` (control first); ``metrics`` maps a metric name to one
    value per row (NaN: not measured for that row); ``covariates`` is [rows, C] of raw
    feature values (NaN: missing; categorical ones as integer codes, -1 unknown)."""

    groups: list[str]
    expected_shares: np.ndarray
    group: np.ndarray
    times_ms: np.ndarray
    metrics: dict[str, np.ndarray]
    covariates: np.ndarray
    covariate_names: list[str] = field(default_factory=list)
    categorical: list[bool] = field(default_factory=list)
    look_interval_ms: int = 3_600_000
    effect_size: float = DEFAULT_EFFECT_SIZE
    alpha: float = DEFAULT_ALPHA
    srm_alpha: float = DEFAULT_SRM_ALPHA


@dataclass
class GroupSummary:
    """Rows of one group against its configured share."""

    name: str
    rows: int
    expected_share: float
    observed_share: float


@dataclass
class GroupMetric:
    """One metric in one group: mean with its 95% CI."""

    group: str
    metric: str
    rows: int
    mean: float
    ci_lower: float
    ci_upper: float
    std: float


@dataclass
class Look:
    """The sequential test at one look (cumulative data up to ``time_ms``)."""

    time_ms: int
    rows: int
    rows_control: int
    difference: float
    cs_lower: float
    cs_upper: float
    p_value: float


@dataclass
class Comparison:
    """One treatment group against the control on one metric.

    ``difference``, ``relative_lift`` and their CIs are CUPED-adjusted when covariates
    were given (``adjusted``); the ``unadjusted_*`` fields never are."""

    metric: str
    group: str
    control: str
    rows: int
    rows_control: int
    mean: float
    mean_control: float
    difference: float
    ci_lower: float
    ci_upper: float
    p_value: float
    relative_lift: float
    lift_ci_lower: float
    lift_ci_upper: float
    adjusted: bool
    variance_reduction: float
    unadjusted_difference: float
    unadjusted_ci_lower: float
    unadjusted_ci_upper: float
    unadjusted_relative_lift: float
    unadjusted_lift_ci_lower: float
    unadjusted_lift_ci_upper: float
    sequential_p_value: float
    cs_lower: float
    cs_upper: float
    looks: list[Look]


@dataclass
class SampleRatio:
    """Pearson's chi-square test of the rows per group against the configured shares."""

    chi_square: float
    degrees_of_freedom: int
    p_value: float
    alpha: float
    mismatch: bool


@dataclass
class Scorecard:
    """Everything a scorecard shows."""

    groups: list[GroupSummary]
    group_metrics: list[GroupMetric]
    comparisons: list[Comparison]
    sample_ratio: SampleRatio
    covariate_columns: list[str]
    coefficients: dict[str, list[float]]
    warnings: list[str]
    look_interval_ms: int
    effect_size: float
    alpha: float
    data_start_ms: int
    data_end_ms: int
    rows: int


# ------------------------------------------------------------------ basic estimates


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its 95% CI and two-sided p-value against 0."""

    value: float
    lower: float
    upper: float
    p_value: float = float("nan")


def difference(mean_t: np.ndarray | float, var_mean_t: np.ndarray | float, mean_c: np.ndarray | float,
               var_mean_c: np.ndarray | float) -> Estimate:
    """``Δ = m_t − m_c`` with the 95% CI ``Δ ± z·√(Var(m_t) + Var(m_c))`` and the
    two-sided normal p-value (arguments are means and the variances of the means)."""
    delta = float(mean_t - mean_c)
    se = math.sqrt(float(var_mean_t + var_mean_c))
    p = float(2 * ndtr(-abs(delta) / se)) if se > 0 else (1.0 if delta == 0 else 0.0)
    return Estimate(delta, delta - Z95 * se, delta + Z95 * se, p)


def relative_lift(mean_t: float, var_mean_t: float, mean_c: float, var_mean_c: float) -> Estimate:
    """``L = m_t/m_c − 1`` with the delta-method 95% CI:
    ``Var(L) ≈ Var(m_t)/m_c² + m_t²·Var(m_c)/m_c⁴``; NaN when ``m_c = 0``."""
    if mean_c == 0 or not np.isfinite(mean_c):
        nan = float("nan")
        return Estimate(nan, nan, nan, nan)
    lift = mean_t / mean_c - 1.0
    var = var_mean_t / mean_c**2 + mean_t**2 * var_mean_c / mean_c**4
    se = math.sqrt(max(var, 0.0))
    p = float(2 * ndtr(-abs(lift) / se)) if se > 0 else (1.0 if lift == 0 else 0.0)
    return Estimate(float(lift), float(lift - Z95 * se), float(lift + Z95 * se), p)


def sample_ratio_test(observed: np.ndarray, shares: np.ndarray, alpha: float = DEFAULT_SRM_ALPHA) -> SampleRatio:
    """Pearson's ``χ² = Σ (O_g − E_g)²/E_g`` with ``E_g = N·share_g`` (shares are
    normalised to sum 1; groups with share 0 must have no rows and are left out), on
    ``G − 1`` degrees of freedom; ``mismatch`` when the p-value is below ``alpha``."""
    observed = np.asarray(observed, dtype=np.float64)
    shares = np.asarray(shares, dtype=np.float64)
    total = observed.sum()
    if total <= 0 or shares.sum() <= 0:
        return SampleRatio(0.0, 0, 1.0, alpha, False)
    shares = shares / shares.sum()
    if (observed[shares <= 0] > 0).any():  # rows where none were expected
        return SampleRatio(float("inf"), int((shares > 0).sum()), 0.0, alpha, True)
    keep = shares > 0
    expected = total * shares[keep]
    chi = float(((observed[keep] - expected) ** 2 / expected).sum())
    dof = int(keep.sum()) - 1
    if dof < 1:
        return SampleRatio(0.0, 0, 1.0, alpha, False)
    p = float(chdtrc(dof, chi))
    return SampleRatio(chi, dof, p, alpha, p < alpha)


def mixture_sprt(diff: np.ndarray, var: np.ndarray, tau2: np.ndarray | float,
                 alpha: float = DEFAULT_ALPHA, theta0: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The normal-mixture SPRT over a sequence of looks (last axis; any leading axes
    are independent sequences, e.g. simulations).

    Returns (always-valid p-values, confidence-sequence lower, upper bounds), each
    already the running minimum / intersection up to every look. A look whose ``var``
    is not a positive finite number (too few rows) is skipped: p = 1, (−∞, ∞)."""
    diff = np.asarray(diff, dtype=np.float64)
    var = np.asarray(var, dtype=np.float64)
    tau2 = np.broadcast_to(np.asarray(tau2, dtype=np.float64), diff.shape)
    ok = np.isfinite(var) & (var > 0) & np.isfinite(diff) & np.isfinite(tau2) & (tau2 > 0)
    v = np.where(ok, var, 1.0)
    t2 = np.where(ok, tau2, 1.0)
    log_lr = 0.5 * np.log(v / (v + t2)) + t2 * (diff - theta0) ** 2 / (2 * v * (v + t2))
    p = np.where(ok, np.minimum(1.0, np.exp(-log_lr)), 1.0)
    half = np.sqrt(v * (v + t2) / t2 * (2 * np.log(1 / alpha) + np.log((v + t2) / v)))
    lower = np.where(ok, diff - half, -np.inf)
    upper = np.where(ok, diff + half, np.inf)
    return (np.minimum.accumulate(p, axis=-1), np.maximum.accumulate(lower, axis=-1),
            np.minimum.accumulate(upper, axis=-1))


# ------------------------------------------------------------------ looks and covariates


def look_schedule(times_ms: np.ndarray, interval_ms: int, max_looks: int = MAX_LOOKS) -> tuple[np.ndarray, int]:
    """(look index of every row, effective interval): looks end at multiples of the
    interval since the epoch (exclusive), the last one after the latest row; the
    interval is multiplied until there are at most ``max_looks``. Looks are numbered
    densely over the intervals that hold rows."""
    if times_ms.size == 0:
        return np.zeros(0, dtype=np.int64), interval_ms
    interval = max(int(interval_ms), 1)
    first, last = int(times_ms.min()), int(times_ms.max())
    count = last // interval - first // interval + 1
    if count > max_looks:
        interval *= math.ceil(count / max_looks)
    slot = times_ms.astype(np.int64) // interval
    _, index = np.unique(slot, return_inverse=True)
    return index.astype(np.int64), interval


def covariate_design(x: np.ndarray, names: list[str], categorical: list[bool]) -> tuple[np.ndarray, list[str]]:
    """The covariate columns of CUPED: numeric features as they are, categorical ones as
    indicators of their ``MAX_CATEGORY_LEVELS`` most frequent codes beyond the first
    (the first is the reference), and an indicator per feature with missing values,
    which are set to the feature's mean. Constant columns are dropped."""
    columns: list[np.ndarray] = []
    labels: list[str] = []
    for j, name in enumerate(names):
        col = x[:, j].astype(np.float64)
        missing = ~np.isfinite(col)
        if categorical[j] if j < len(categorical) else False:
            codes, counts = np.unique(col[~missing], return_counts=True)
            order = codes[np.argsort(-counts, kind="stable")][: MAX_CATEGORY_LEVELS + 1]
            for code in order[1:]:
                columns.append((col == code).astype(np.float64))
                labels.append(f"{name}={int(code)}")
        else:
            fill = float(col[~missing].mean()) if (~missing).any() else 0.0
            columns.append(np.where(missing, fill, col))
            labels.append(name)
        if missing.any() and not missing.all():
            columns.append(missing.astype(np.float64))
            labels.append(f"{name} missing")
    keep = [i for i, c in enumerate(columns) if c.size and np.ptp(c) > 0]
    if not keep:
        return np.zeros((x.shape[0], 0)), []
    return np.column_stack([columns[i] for i in keep]), [labels[i] for i in keep]


# ------------------------------------------------------------------ moments per look


@dataclass
class Moments:
    """Cumulative sums of one group's rows up to each look: count, Σy, Σy², Σx, Σxy,
    Σxxᵀ (x the covariate columns)."""

    n: np.ndarray      # [L]
    sy: np.ndarray     # [L]
    syy: np.ndarray    # [L]
    sx: np.ndarray     # [L, K]
    sxy: np.ndarray    # [L, K]
    sxx: np.ndarray    # [L, K, K]

    @classmethod
    def of(cls, y: np.ndarray, x: np.ndarray, look: np.ndarray, looks: int) -> Moments:
        """Per-look sums by ``bincount``, then cumulated over looks."""
        k = x.shape[1]
        n = np.bincount(look, minlength=looks).astype(np.float64)
        sy = np.bincount(look, weights=y, minlength=looks)
        syy = np.bincount(look, weights=y * y, minlength=looks)
        sx = np.zeros((looks, k))
        sxy = np.zeros((looks, k))
        sxx = np.zeros((looks, k, k))
        for a in range(k):
            sx[:, a] = np.bincount(look, weights=x[:, a], minlength=looks)
            sxy[:, a] = np.bincount(look, weights=x[:, a] * y, minlength=looks)
            for b in range(a, k):
                sxx[:, a, b] = sxx[:, b, a] = np.bincount(look, weights=x[:, a] * x[:, b], minlength=looks)
        return cls(*(np.cumsum(v, axis=0) for v in (n, sy, syy, sx, sxy, sxx)))

    def __add__(self, other: Moments) -> Moments:
        return Moments(self.n + other.n, self.sy + other.sy, self.syy + other.syy, self.sx + other.sx,
                       self.sxy + other.sxy, self.sxx + other.sxx)


@dataclass
class GroupAtLooks:
    """A group's (adjusted) mean, within-group variance of the (adjusted) metric and
    rows, at every look."""

    n: np.ndarray
    mean: np.ndarray
    var: np.ndarray


def pooled_theta(pooled: Moments) -> np.ndarray:
    """``θ = Σ_XX⁻¹ Σ_XY`` at every look from the pooled moments ([L, K]; a
    pseudo-inverse, so collinear columns share their weight; 0 before K + 2 rows)."""
    looks, k = pooled.sx.shape
    if k == 0:
        return np.zeros((looks, 0))
    n = np.maximum(pooled.n, 1.0)
    mx = pooled.sx / n[:, None]
    my = pooled.sy / n
    cxx = pooled.sxx - n[:, None, None] * mx[:, :, None] * mx[:, None, :]
    cxy = pooled.sxy - n[:, None] * mx * my[:, None]
    theta = np.einsum("lab,lb->la", np.linalg.pinv(cxx, rcond=1e-10, hermitian=True), cxy)
    theta[pooled.n < k + 2] = 0.0
    return theta


def at_looks(m: Moments, theta: np.ndarray, pooled_mx: np.ndarray) -> GroupAtLooks:
    """Adjusted mean ``m_g − θ·(X̄_g − X̄)`` and within-group variance of
    ``y − θ·x``: ``(S_yy − 2θ·S_xy + θᵀS_xxθ)/(n − 1)`` with S the within-group
    centred sums (θ = 0 gives the unadjusted values)."""
    n = m.n
    safe = np.maximum(n, 1.0)
    my = m.sy / safe
    mx = m.sx / safe[:, None]
    syy = m.syy - n * my * my
    sxy = m.sxy - n[:, None] * mx * my[:, None]
    sxx = m.sxx - n[:, None, None] * mx[:, :, None] * mx[:, None, :]
    ss = syy - 2 * np.einsum("la,la->l", theta, sxy) + np.einsum("la,lab,lb->l", theta, sxx, theta)
    var = np.where(n > 1, np.maximum(ss, 0.0) / np.maximum(n - 1, 1.0), np.nan)
    mean = my - np.einsum("la,la->l", theta, mx - pooled_mx)
    return GroupAtLooks(n, np.where(n > 0, mean, np.nan), var)


# ------------------------------------------------------------------ the scorecard


def compute_scorecard(data: ScorecardInput) -> Scorecard:
    """All the scorecard's numbers (see the module docstring for the formulas)."""
    groups = list(data.groups)
    g_count = len(groups)
    if g_count < 2:
        raise ValueError("a scorecard compares at least two groups")
    group = np.asarray(data.group, dtype=np.int64)
    times = np.asarray(data.times_ms, dtype=np.int64)
    warnings: list[str] = []
    rows_per_group = np.bincount(group, minlength=g_count)[:g_count]
    total = int(rows_per_group.sum())
    shares = np.asarray(data.expected_shares, dtype=np.float64)
    shares = shares / shares.sum() if shares.sum() > 0 else np.full(g_count, 1.0 / g_count)
    summaries = [GroupSummary(name, int(rows_per_group[i]), float(shares[i]),
                              float(rows_per_group[i] / total) if total else 0.0) for i, name in enumerate(groups)]
    srm = sample_ratio_test(rows_per_group, shares, data.srm_alpha)
    if srm.mismatch:
        warnings.append(
            f"sample ratio mismatch (chi-square p = {srm.p_value:.2g} < {data.srm_alpha:g}): the rows per group "
            "do not match the configured shares, so the groups may not be comparable; find the cause before "
            "trusting the differences")

    look, interval = look_schedule(times, data.look_interval_ms)
    looks = int(look.max()) + 1 if look.size else 0
    look_end = np.zeros(looks, dtype=np.int64)
    if looks:
        np.maximum.at(look_end, look, times)
    if interval != data.look_interval_ms:
        warnings.append(f"more than {MAX_LOOKS} looks: the sequential test looks every {interval / 3.6e6:g} h")

    raw_x = np.asarray(data.covariates, dtype=np.float64).reshape(total, len(data.covariate_names))
    x, columns = covariate_design(raw_x, list(data.covariate_names), list(data.categorical))
    if x.shape[1] > MAX_COVARIATE_COLUMNS:
        raise ValueError(f"{x.shape[1]} covariate columns, at most {MAX_COVARIATE_COLUMNS}")
    if data.covariate_names and not columns:
        warnings.append("the covariates are constant over the rows: no CUPED adjustment")

    group_metrics: list[GroupMetric] = []
    comparisons: list[Comparison] = []
    coefficients: dict[str, list[float]] = {}
    for metric, values in data.metrics.items():
        y_all = np.asarray(values, dtype=np.float64)
        present = np.isfinite(y_all)
        if not present.any():
            continue
        y_shift = float(y_all[present].mean())
        x_shift = x[present].mean(axis=0) if columns else np.zeros(0)
        moments = []
        for g in range(g_count):
            rows = present & (group == g)
            moments.append(Moments.of(y_all[rows] - y_shift, x[rows] - x_shift, look[rows], looks))
        pooled = moments[0]
        for m in moments[1:]:
            pooled = pooled + m
        theta = pooled_theta(pooled)
        pooled_mx = pooled.sx / np.maximum(pooled.n, 1.0)[:, None]
        no_theta = np.zeros_like(theta)
        raw = [at_looks(m, no_theta, pooled_mx) for m in moments]
        adj = [at_looks(m, theta, pooled_mx) for m in moments] if columns else raw
        if columns:
            coefficients[metric] = [float(v) for v in theta[-1]]
        for g in range(g_count):
            n = int(raw[g].n[-1]) if looks else 0
            if n == 0:
                continue
            mean, var = float(raw[g].mean[-1]) + y_shift, float(raw[g].var[-1]) if n > 1 else float("nan")
            se = math.sqrt(var / n) if n > 1 else float("nan")
            group_metrics.append(GroupMetric(groups[g], metric, n, mean, mean - Z95 * se, mean + Z95 * se,
                                             math.sqrt(var) if n > 1 else float("nan")))
        # τ² per look: effect_size² × the pooled unadjusted variance of the two groups.
        for g in range(1, g_count):
            t, c = raw[g], raw[0]
            if t.n[-1] < MIN_GROUP_ROWS or c.n[-1] < MIN_GROUP_ROWS:
                warnings.append(f"{metric}: {groups[g]!r} vs {groups[0]!r} not compared: fewer than "
                                f"{MIN_GROUP_ROWS} rows in a group")
                continue
            comparisons.append(_compare(metric, groups[g], groups[0], raw[g], raw[0], adj[g], adj[0], y_shift,
                                        bool(columns), look_end, data, warnings))
    if not comparisons:
        warnings.append("nothing to compare: every comparison lacks rows")
    return Scorecard(
        summaries, group_metrics, comparisons, srm, columns, coefficients, warnings, interval,
        data.effect_size, data.alpha, int(times.min()) if times.size else 0,
        int(times.max()) if times.size else 0, total,
    )


def _compare(metric: str, name: str, control: str, raw_t: GroupAtLooks, raw_c: GroupAtLooks,
             adj_t: GroupAtLooks, adj_c: GroupAtLooks, shift: float, adjusted: bool, look_end: np.ndarray,
             data: ScorecardInput, warnings: list[str]) -> Comparison:
    """One comparison at the last look, and the sequential test over every look."""
    def final(t: GroupAtLooks, c: GroupAtLooks) -> tuple[Estimate, Estimate, float, float]:
        vt, vc = t.var[-1] / t.n[-1], c.var[-1] / c.n[-1]
        mt, mc = float(t.mean[-1]) + shift, float(c.mean[-1]) + shift
        return difference(mt, vt, mc, vc), relative_lift(mt, vt, mc, vc), vt + vc, mc

    diff_raw, lift_raw, var_raw, _ = final(raw_t, raw_c)
    diff_adj, lift_adj, var_adj, mean_c = final(adj_t, adj_c)
    se_c = math.sqrt(adj_c.var[-1] / adj_c.n[-1])
    if mean_c == 0:
        warnings.append(f"{metric}: the mean of {control!r} is 0, so the relative lift is undefined")
    elif abs(mean_c) < 2 * se_c:
        warnings.append(f"{metric}: the mean of {control!r} is within two standard errors of 0, so the "
                        f"relative lift of {name!r} and its interval are unreliable")
    # Sequential test on the (adjusted) difference at every look.
    enough = (adj_t.n >= MIN_SEQUENTIAL_ROWS) & (adj_c.n >= MIN_SEQUENTIAL_ROWS)
    diff_seq = adj_t.mean - adj_c.mean
    var_seq = np.where(enough, adj_t.var / np.maximum(adj_t.n, 1) + adj_c.var / np.maximum(adj_c.n, 1), np.nan)
    pooled_var = ((raw_t.n - 1) * raw_t.var + (raw_c.n - 1) * raw_c.var) / np.maximum(raw_t.n + raw_c.n - 2, 1)
    tau2 = data.effect_size**2 * pooled_var
    p, lower, upper = mixture_sprt(diff_seq, var_seq, tau2, data.alpha)
    if lower[-1] > upper[-1]:
        warnings.append(f"{metric}: the confidence sequence of {name!r} vs {control!r} is empty — the "
                        "difference changed over time (a drifting effect); read the looks, not the summary")
    looks = [Look(int(look_end[k]), int(adj_t.n[k]), int(adj_c.n[k]), float(diff_seq[k]), float(lower[k]),
                  float(upper[k]), float(p[k])) for k in range(look_end.size)]
    mt = float(adj_t.mean[-1]) + shift
    return Comparison(
        metric=metric, group=name, control=control, rows=int(adj_t.n[-1]), rows_control=int(adj_c.n[-1]),
        mean=mt, mean_control=mean_c, difference=diff_adj.value, ci_lower=diff_adj.lower,
        ci_upper=diff_adj.upper, p_value=diff_adj.p_value, relative_lift=lift_adj.value,
        lift_ci_lower=lift_adj.lower, lift_ci_upper=lift_adj.upper, adjusted=adjusted,
        variance_reduction=float(1.0 - var_adj / var_raw) if adjusted and var_raw > 0 else 0.0,
        unadjusted_difference=diff_raw.value, unadjusted_ci_lower=diff_raw.lower,
        unadjusted_ci_upper=diff_raw.upper, unadjusted_relative_lift=lift_raw.value,
        unadjusted_lift_ci_lower=lift_raw.lower, unadjusted_lift_ci_upper=lift_raw.upper,
        sequential_p_value=float(p[-1]), cs_lower=float(lower[-1]), cs_upper=float(upper[-1]), looks=looks,
    )
