"""The headline of an effect report: the average effect with its CI, the control mean,
the relative lift, whether the effect is significant, what the numbers support doing,
and the data-quality notes — in numbers (for the structured result) and in plain words.

Pure numpy on per-row doubly robust (AIPW) scores: ``effect`` scores have mean τ (the
ATE) and ``control`` scores mean E[Y(control)] (docs/evaluator.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.evaluator.v1 import evaluator_service_pb2 as epb
from loopwise.services.evaluator import formatting as F

Z95 = 1.959963984540054
# Notes on the data: below this join rate most rewards are the default reward.
LOW_JOIN_RATE = 0.5
# Share of outcomes arriving after their window worth a note.
LATE_OUTCOME_SHARE = 0.05

AGGREGATIONS = {
    bp.REWARD_AGGREGATION_UNSPECIFIED: "sum",
    bp.REWARD_AGGREGATION_SUM: "sum",
    bp.REWARD_AGGREGATION_MAX: "largest value",
    bp.REWARD_AGGREGATION_FIRST: "first value",
    bp.REWARD_AGGREGATION_LAST: "last value",
}
POLICY_NAMES = {"cate_policy": "targeting (treat when the predicted effect exceeds the cost)",
                "treat_all": "treat everyone", "treat_none": "treat no one"}


@dataclass
class AverageEffect:
    """The ATE, the control mean and the relative lift, each with its 95% CI."""

    ate: float
    se: float
    lower: float
    upper: float
    p_value: float
    rows: int
    control_mean: float
    control_lower: float
    control_upper: float
    lift: float
    lift_lower: float
    lift_upper: float
    lift_defined: bool

    @property
    def significant(self) -> bool:
        """The ATE's 95% CI excludes 0."""
        return self.lower > 0 or self.upper < 0


def average_effect(effect: np.ndarray, control: np.ndarray) -> AverageEffect:
    """Means of the AIPW scores with normal CIs; the relative lift τ/μ₀ by the delta
    method on the paired scores (influence (ψ_τ − τ − L·(ψ₀ − μ₀)) / μ₀), defined only
    when the control mean's CI excludes 0."""
    from scipy.stats import norm

    n = effect.size
    ate, mu0 = float(effect.mean()), float(control.mean())
    se = float(effect.std(ddof=1) / np.sqrt(n))
    se0 = float(control.std(ddof=1) / np.sqrt(n))
    p = float(2 * norm.sf(abs(ate) / se)) if se > 0 else (0.0 if ate != 0 else 1.0)
    defined = abs(mu0) > Z95 * se0 and mu0 != 0
    lift = lift_se = 0.0
    if defined:
        lift = ate / mu0
        influence = (effect - ate - lift * (control - mu0)) / mu0
        lift_se = float(influence.std(ddof=1) / np.sqrt(n))
    return AverageEffect(ate, se, ate - Z95 * se, ate + Z95 * se, p, n, mu0, mu0 - Z95 * se0, mu0 + Z95 * se0,
                         lift, lift - Z95 * lift_se if defined else 0.0, lift + Z95 * lift_se if defined else 0.0,
                         defined)


def _duration(seconds: float) -> str:
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            value = int(seconds // size)
            return f"{value} {unit}" + ("s" if unit == "day" and value > 1 else "")
    return f"{F.num(seconds)} s"


def describe_reward(reward: bp.RewardSpec) -> tuple[str, str]:
    """(name, definition) of a use case's reward: its outcome names (or "reward") and
    how the outcomes make it."""
    names = list(reward.outcome_names)
    name = ", ".join(names) if names else "reward"
    which = " and ".join(f"“{n}”" for n in names) + " outcomes" if names else "all outcomes"
    definition = f"the {AGGREGATIONS.get(reward.aggregation, 'sum')} of {which}"
    window = reward.window.ToTimedelta().total_seconds() if reward.HasField("window") else 0.0
    if window > 0:
        definition += f" within {_duration(window)} of the decision"
    definition += f"; {F.num(reward.default_reward)} when there is none"
    return name, definition


def _who(treatment: str, control: str, arms: bool) -> tuple[str, str]:
    if arms:
        return f"arm “{treatment}”", f"arm “{control}”"
    return f"“{treatment}”", f"“{control}”"


def statement(avg: AverageEffect, outcome: str, treatment: str, control: str, arms: bool = False) -> str:
    """The verdict in plain words: the effect with its CI, the control mean, the
    relative lift, and whether the effect is significant at 5% and what that means."""
    t, c = _who(treatment, control, arms)
    verb = "Assigning" if arms else "Choosing"
    text = (f"{verb} {t} instead of {c} changed {outcome} by {F.with_ci(avg.ate, avg.lower, avg.upper, sign=True)} "
            f"per decision on average, from a mean of {F.num(avg.control_mean)} under {c}")
    if avg.lift_defined:
        text += f": a relative lift of {F.pct_with_ci(avg.lift, avg.lift_lower, avg.lift_upper, sign=True)}."
    else:
        text += " (no relative lift: the control mean is too close to 0)."
    if avg.significant:
        direction = "raises" if avg.ate > 0 else "lowers"
        text += (f" The average effect is significant at the 5% level ({F.p_value(avg.p_value)}): {t} {direction} "
                 f"{outcome} on average; data like these would be unlikely if it made no difference.")
    else:
        _, low, high = F.estimate(avg.ate, avg.lower, avg.upper)
        text += (f" The average effect is not significant at the 5% level ({F.p_value(avg.p_value)}): the interval "
                 f"includes zero, so the data are consistent with no average effect at all — and also with an "
                 f"effect as low as {low} or as high as {high}. More data would narrow the interval.")
    return text


def _clear(value: epb.PolicyValue) -> bool:
    return value.ci_lower > 0


def gain_text(value: epb.PolicyValue) -> str:
    """A policy gain with its CI and whether it is clear (its CI excludes 0)."""
    text = F.with_ci(value.value, value.ci_lower, value.ci_upper, sign=True)
    if value.ci_lower > 0:
        return f"{text}, a clear gain"
    if value.ci_upper < 0:
        return f"{text}, a clear loss"
    return f"{text}, within noise (the interval includes 0)"


def recommend(avg: AverageEffect, policy: epb.PolicySummary) -> tuple[str, str]:
    """(recommendation, reason in words) from the policy gains on held-out rows and the
    ATE net of the treatment cost (treat-all minus treat-none is ATE − cost)."""
    cost = policy.treatment_cost
    net_lower, net_upper = avg.lower - cost, avg.upper - cost
    share = F.pct(policy.treated_share)
    none, all_ = policy.gain_over_treat_none, policy.gain_over_treat_all
    if _clear(none) and _clear(all_):
        return "target", (f"Treat only the units whose predicted effect exceeds the cost ({share} of them): on "
                          "held-out rows this beats both treating everyone and treating no one.")
    cost_text = f" net of the cost of {F.num(cost)}" if cost else ""
    if net_lower > 0:
        return "treat_all", (f"Treat everyone: the average effect{cost_text} is positive, and targeting shows no "
                             "clear gain over treating everyone.")
    if net_upper < 0:
        return "treat_none", (f"Treat no one: the average effect{cost_text} is negative, and targeting shows no "
                              "clear gain over treating no one.")
    return "undecided", ("No option is clearly better: treating everyone, no one, or only the units with the "
                         "largest predicted effects give values within noise of each other. Collect more data "
                         "before acting on the targeting rule.")


def quality_notes(quality: epb.DataQuality, rows: int) -> list[str]:
    """What in the data may bias or weaken the report."""
    notes = []
    if rows and quality.rows_with_outcome < rows:
        share = 1 - quality.rows_with_outcome / rows
        notes.append(f"{F.pct(share)} of the rows used had no outcome in their window and got the default reward")
    if not quality.stats_available:
        notes.append(f"feedback's counts for the use case could not be read ({quality.stats_error}): joins, "
                     "orphan and late outcomes are not checked")
    else:
        if quality.decisions and quality.join_rate < LOW_JOIN_RATE:
            notes.append(f"only {F.pct(quality.join_rate)} of the use case's decisions have an outcome: check that "
                         "outcomes are sent with the decision id")
        if quality.outcomes and quality.late_outcomes / quality.outcomes > LATE_OUTCOME_SHARE:
            notes.append(f"{F.pct(quality.late_outcomes / quality.outcomes)} of the outcomes arrived after their "
                         "window and did not count: a longer reward window may be needed")
        if quality.orphan_outcomes:
            notes.append(f"{F.count(quality.orphan_outcomes)} outcomes carry an invalid decision id")
        if quality.lost_decision_outcomes:
            notes.append(f"{F.count(quality.lost_decision_outcomes)} outcomes belong to decisions that were lost")
        if quality.invalid_records:
            notes.append(f"{F.count(quality.invalid_records)} stored records could not be read and were skipped")
    models = [v for v in quality.model_versions if v.rows]
    if len(models) > 1:
        notes.append(f"the decisions come from {len(models)} model versions; the logged propensities account for "
                     "the change of policy, but effects may have changed with the population")
    return notes
