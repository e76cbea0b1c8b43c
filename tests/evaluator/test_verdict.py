"""Reports that say what they found: the HTML page of an analysis is parsed (html.parser)
and its verdict checked against the structured result, for a scenario with a clearly
positive average effect and one with none; the QINI plot's random-targeting line, the
sample split of the segments, data quality, and numbers and names written for people."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import numpy as np
import pytest
from google.protobuf import duration_pb2
from threadpoolctl import threadpool_limits

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.evaluator.v1 import evaluator_service_pb2 as epb
from loopwise.services.evaluator import formatting as F
from loopwise.services.evaluator.analysis import EffectTask, rows_digest, run_analysis, split_rows
from loopwise.services.evaluator.report import QINI_ALT, RANDOM_LINE_LABEL, qini_figure, qini_points
from loopwise.services.evaluator.verdict import describe_reward

ROWS = 3000
SEED = 5
QUALITY = epb.DataQuality(stats_available=True, decisions=4200, outcomes=3900, join_rate=0.9, orphan_outcomes=7,
                          late_outcomes=250, unmatched_outcomes=3, open_windows=12)
# Enum constants as protobuf spells them (ESTIMATOR_LINEAR_DML, TREATMENT_SOURCE_ARMS...).
ENUM_CONSTANT = re.compile(r"\b[A-Z][A-Z0-9]+(?:_[A-Z0-9]+)+\b")
INLINE = {"code", "strong", "em", "a", "span", "b", "i"}


class Sections(HTMLParser):
    """The text of every <section id=...> of a page, the order of the sections, and the
    alt texts of their images."""

    def __init__(self) -> None:
        super().__init__()
        self.text: dict[str, str] = {}
        self.alts: dict[str, list[str]] = {}
        self.order: list[str] = []
        self.current: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self._boundary(tag)
        if tag == "section":
            self.current = values.get("id") or ""
            self.order.append(self.current)
            self.text[self.current], self.alts[self.current] = "", []
        elif tag == "img" and self.current is not None:
            self.alts[self.current].append(values.get("alt") or "")

    def _boundary(self, tag: str) -> None:
        """Table cells, paragraphs and list items are separated by a space in the text."""
        if self.current is not None and tag not in INLINE:
            self.text[self.current] += " "

    def handle_endtag(self, tag: str) -> None:
        self._boundary(tag)
        if tag == "section":
            self.current = None

    def handle_data(self, data: str) -> None:
        if self.current is not None:
            self.text[self.current] += data

    @classmethod
    def of(cls, html: str) -> Sections:
        parser = cls()
        parser.feed(html)
        for key, value in parser.text.items():
            parser.text[key] = " ".join(value.split())
        return parser


def scenario(effect: float, seed: int = SEED, n: int = ROWS) -> EffectTask:
    """Logged decisions with propensity sigmoid(0.8·x1 − 0.3) and τ(x) = effect + 0.5·x0
    (average ``effect``); reward 5 + x1 + 0.5·x2² + T·τ + N(0, 1); rows from blueprint
    version 2, the first half decided without a model, the second by model version 3."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    e = 1.0 / (1.0 + np.exp(-(0.8 * x[:, 1] - 0.3)))
    t = (rng.random(n) < e).astype(np.int64)
    y = 5.0 + x[:, 1] + 0.5 * x[:, 2] ** 2 + t * (effect + 0.5 * x[:, 0]) + rng.normal(size=n)
    name, definition = describe_reward(bp.RewardSpec(outcome_names=["purchase"],
                                                     aggregation=bp.REWARD_AGGREGATION_SUM,
                                                     window=duration_pb2.Duration(seconds=1800)))
    counts = (rng.random(n) < 0.95).astype(np.int64)
    return EffectTask(
        x=x, t=t, y=y, propensity=e, times_ms=np.arange(n) * 1000, feature_names=["x0", "x1", "x2"],
        estimator="LinearDML", seed=seed, rows_read=n + 100,
        meta={"use_case": "checkout", "report_id": f"verdict-{effect}", "treatment": "offer", "control": "no_offer",
              "create_time": "2026-12-01T12:00:00Z"},
        segment_features=["x1"], outcome_name=name, outcome_definition=definition, outcome_counts=counts,
        blueprint_versions=np.full(n, 2), model_versions=np.where(np.arange(n) < n // 2, 0, 3),
        quality=QUALITY,
    )


@pytest.fixture(scope="module")
def reports() -> dict[str, tuple[epb.EstimateEffectsResult, str]]:
    """The result and the page of a significant (average effect 1) and a non-significant
    (average effect 0) scenario."""
    out = {}
    with threadpool_limits(1):
        for label, effect in (("significant", 1.0), ("not significant", 0.0)):
            output = run_analysis(scenario(effect), lambda *_: None)
            out[label] = (output.result, output.html.decode("utf-8"))
    return out


def without_images(html: str) -> str:
    return re.sub(r'src="data:image/png;base64,[^"]*"', 'src=""', html)


def parse_number(text: str) -> float:
    return float(text.replace(F.MINUS, "-").replace(",", "").replace("+", ""))


@pytest.mark.timeout(600)
@pytest.mark.parametrize("label", ["significant", "not significant"])
def test_the_report_opens_with_a_verdict_matching_the_result(reports, label: str) -> None:
    result, html = reports[label]
    v = result.verdict
    page = Sections.of(html)
    assert page.order[0] == "verdict"
    text = page.text["verdict"]
    assert v.significant == (label == "significant")
    assert (result.ate_ci_lower > 0) == v.significant  # the positive scenario is clearly positive
    # The outcome by name, with its definition from the reward spec.
    assert v.outcome_name == "purchase" and "Outcome: purchase" in text
    assert "the sum of “purchase” outcomes within 30 min of the decision" in text
    # Control mean, ATE and relative lift with their CIs, as the structured result has them.
    assert F.with_ci(v.control_mean, v.control_mean_ci_lower, v.control_mean_ci_upper) in text
    assert F.with_ci(result.ate, result.ate_ci_lower, result.ate_ci_upper, sign=True) in text
    assert v.relative_lift_defined and v.relative_lift == pytest.approx(result.ate / v.control_mean)
    assert F.pct_with_ci(v.relative_lift, v.relative_lift_ci_lower, v.relative_lift_ci_upper, sign=True) in text
    # The ATE as printed is the result's, to the printed precision.
    printed = re.search(r"average effect of offer \(ATE\) (\S+) \(95% CI (\S+) to (\S+)\)", text)
    assert printed is not None, text
    value, lower, upper = (parse_number(g) for g in printed.groups())
    precision = 10.0 ** -len(printed.group(1).split(".")[1]) if "." in printed.group(1) else 1.0
    assert abs(value - result.ate) <= precision / 2 + 1e-12
    assert abs(lower - result.ate_ci_lower) <= precision / 2 + 1e-12
    assert abs(upper - result.ate_ci_upper) <= precision / 2 + 1e-12
    # Significance in numbers and words; "not significant" only where it is not.
    assert F.p_value(result.ate_p_value) in text
    assert v.statement in text
    assert "significant at the 5% level" in text
    if label == "significant":
        assert "not significant" not in text
        assert "raises purchase on average" in text
        assert result.ate_p_value < 0.0001 and "p < 0.0001" in text
    else:
        assert "not significant" in text
        assert "consistent with no average effect" in text
    # The policy's gains over treat-none and treat-all, as differences with CIs.
    for gain in (result.policy.gain_over_treat_none, result.policy.gain_over_treat_all):
        assert F.with_ci(gain.value, gain.ci_lower, gain.ci_upper, sign=True) in text
    values = {p.name: p for p in result.policy.values}
    assert result.policy.gain_over_treat_none.value == pytest.approx(
        values["cate_policy"].value - values["treat_none"].value)
    assert result.policy.gain_over_treat_all.value == pytest.approx(
        values["cate_policy"].value - values["treat_all"].value)
    assert v.recommendation in ("target", "treat_all", "treat_none", "undecided")
    assert v.recommendation_statement in text
    if label == "significant":
        assert v.recommendation in ("target", "treat_all")


@pytest.mark.timeout(600)
@pytest.mark.parametrize("label", ["significant", "not significant"])
def test_numbers_and_names_are_written_for_people(reports, label: str) -> None:
    result, html = reports[label]
    visible = without_images(html)
    assert "0.0000" not in visible
    assert ENUM_CONSTANT.findall(visible) == []
    assert "EconML LinearDML" in visible
    assert "cate_policy" not in visible and "placebo_treatment" not in visible


@pytest.mark.timeout(600)
def test_data_quality_section(reports) -> None:
    result, html = reports["significant"]
    text = Sections.of(html).text["data-quality"]
    q = result.data_quality
    assert q.stats_available and q.join_rate == 0.9
    assert "join rate (decisions with an outcome) 90%" in text
    assert "orphan outcomes (invalid decision id) 7" in text
    assert "late outcomes (after their window, not counted) 250" in text
    assert "rows read / used (the two compared actions, reward window closed) 3,100 / 3,000" in text
    assert {(m.version, m.rows) for m in q.model_versions} == {(0, ROWS // 2), (3, ROWS - ROWS // 2)}
    assert {(b.version, b.rows) for b in q.blueprint_versions} == {(2, ROWS)}
    assert "no model: 1,500 rows; model v3: 1,500 rows" in text
    assert q.rows_with_outcome < ROWS and any("no outcome in their window" in n for n in q.notes)
    assert any("6.4% of the outcomes arrived after their window" in n for n in q.notes)
    assert any("2 model versions" in n for n in q.notes)


@pytest.mark.timeout(600)
def test_segments_are_estimated_on_rows_not_used_to_choose_them(reports) -> None:
    result, html = reports["significant"]
    split = result.sample_split
    assert split.selection_rows + split.estimation_rows == result.rows
    selection, estimation = split_rows(result.rows, int(split.seed))
    assert np.intersect1d(selection, estimation).size == 0
    assert (selection.size, estimation.size) == (split.selection_rows, split.estimation_rows)
    assert rows_digest(selection) == split.selection_digest and rows_digest(estimation) == split.estimation_digest
    tree = [s for s in result.segments if s.source == "tree"]
    declared = [s for s in result.segments if s.source == "feature"]
    assert tree and declared
    # Tree leaves and the declared feature's quartiles each partition both samples.
    for group in (tree, declared):
        assert sum(s.rows for s in group) == split.estimation_rows
        assert sum(s.selection_rows for s in group) == split.selection_rows
    # The tree was fitted on x0's effect (τ = 1 + 0.5·x0): its leaves split on x0, and
    # their held-out effects rise with it.
    assert all("x0" in s.rule for s in tree)
    text = Sections.of(html).text["segments"]
    assert f"chosen on the {F.count(split.selection_rows)} training rows" in text
    assert f"estimated on the {F.count(split.estimation_rows)} held-out rows only" in text


@pytest.mark.timeout(600)
def test_the_qini_plot_has_its_random_targeting_line(reports) -> None:
    _, html = reports["significant"]
    page = Sections.of(html)
    assert QINI_ALT in page.alts["validation"] and "random-targeting line" in QINI_ALT
    assert f"against the {RANDOM_LINE_LABEL} line" in page.text["validation"]
    # DRTester's curve is the gain over random targeting; the plot adds the random line back.
    curve = (np.array([95.0, 50.0, 5.0]), np.array([0.05, 0.2, 0.02]))
    share, targeted, random = qini_points(curve, held_out_ate=0.8)
    assert list(share) == [0.0, 5.0, 50.0, 95.0, 100.0]
    assert np.allclose(random, share / 100 * 0.8)
    assert np.allclose(targeted - random, [0.0, 0.02, 0.2, 0.05, 0.0])
    fig = qini_figure(curve, 0.8)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert RANDOM_LINE_LABEL in legend
    line = next(line for line in fig.axes[0].get_lines() if line.get_label() == RANDOM_LINE_LABEL)
    assert np.allclose(line.get_ydata(), np.asarray(line.get_xdata()) / 100 * 0.8)


def test_formatting() -> None:
    assert F.p_value(0.0) == "p < 0.0001" and F.p_value(3e-5) == "p < 0.0001"
    assert F.p_value(0.0023) == "p = 0.0023" and F.p_value(0.41) == "p = 0.41"
    assert F.estimate(0.3712, -0.5134, 1.2498) == ("0.37", f"{F.MINUS}0.51", "1.25")
    assert F.with_ci(0.3712, -0.5134, 1.2498, sign=True) == f"+0.37 (95% CI {F.MINUS}0.51 to 1.25)"
    assert F.num(1.0) == "1" and F.num(0.0) == "0" and F.num(-0.0) == "0" and F.num(21.69) == "21.7"
    assert F.num(0.00002) == "2.0×10⁻⁵" and F.num(-1e-7) == f"{F.MINUS}1.0×10⁻⁷"
    assert F.pct(0.536) == "53.6%" and F.pct(0.5) == "50%"
    assert F.count(50000) == "50,000"
