"""Drift of live decisions against the serving model's training data.

Off the request path: ``LogDecisions`` only appends what drift needs of each logged
record (:class:`LiveRow`) to a bounded buffer (:meth:`DriftMonitor.observe`); a
background task (:meth:`DriftMonitor.run`) bins them every ``drift_interval_s`` against the training profile of the model that
served them (``Model.feature_profiles`` from the trainer, fetched once per model
version), keeps per use case a live histogram per feature and of the model's scores,
and computes the population stability index (PSI)

    PSI = Σ_bins (live_share − reference_share) · ln(live_share / reference_share)

with missing values as one more bin and shares floored at ``EPSILON`` (an empty bin
would make the logarithm infinite). The live window is sliding by halving: once a
use case's live histograms hold more than ``window`` decisions, every count is
halved, so recent decisions weigh more and memory stays fixed.

Prediction drift compares the model's live scores with a reference: the training
score distribution the trainer registers with the model (``Model.prediction_profile``,
reference ``training``), otherwise, for models registered without one, the model's
first ``window / 4`` live scores (``first_live_window``), which still catches a score
distribution that moves while the model serves. A decision's score for drift is the
greedy one, as the trainer profiles it (services/trainer/scores.py): the recorded
score for binary and regression decisions, the best action's value net of its cost
(``max(action_scores)``) for multi-action ones, so exploration does not move it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.errors import NotFound
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.periodic import every

log = logging.getLogger("loopwise.feedback.drift")

EPSILON = 1e-4
DEFAULT_FEATURE_PSI = 0.2
DEFAULT_PREDICTION_PSI = 0.2
DEFAULT_MIN_DECISIONS = 500
SCORE_BINS = 10
# Decisions buffered per use case between two computations (the rest are counted
# as skipped: drift is a statistic, not a ledger).
MAX_BUFFERED = 50_000


class LiveRow(NamedTuple):
    """What drift needs of one logged decision (the record itself is not kept)."""

    blueprint_version: int
    model_version: int
    fallback: bool
    score: float
    features: bytes


def psi(live: np.ndarray, reference: np.ndarray) -> float:
    """Population stability index of two histograms over the same bins (counts or
    shares; both are normalised, empty bins floored at ``EPSILON``)."""
    live = np.asarray(live, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if live.sum() <= 0 or reference.sum() <= 0:
        return 0.0
    p = np.maximum(live / live.sum(), EPSILON)
    q = np.maximum(reference / reference.sum(), EPSILON)
    return float(np.sum((p - q) * np.log(p / q)))


@dataclass(frozen=True)
class FeatureBins:
    """How one feature's live values are binned like its training profile: numeric
    by ``edges`` (numpy.searchsorted, side="left"), categorical by code with one last
    bin for unknown codes. The last count of a histogram is the missing values."""

    name: str
    categorical: bool
    edges: np.ndarray
    reference: np.ndarray  # training counts per bin, then missing

    @classmethod
    def from_profile(cls, profile: Any) -> FeatureBins:
        """From a trainer ``FeatureProfile`` message (or anything with its fields)."""
        counts = [*profile.bin_counts, profile.missing_count]
        return cls(profile.name, bool(profile.categorical), np.asarray(profile.bin_edges, dtype=np.float64),
                   np.asarray(counts, dtype=np.float64))

    @property
    def size(self) -> int:
        """Bins including the missing bin."""
        return len(self.reference)

    def histogram(self, values: np.ndarray) -> np.ndarray:
        """Counts of ``values`` (float; NaN is missing) in these bins."""
        out = np.zeros(self.size, dtype=np.float64)
        missing = np.isnan(values)
        present = values[~missing]
        if self.categorical:
            unknown = self.size - 2
            codes = present.astype(np.int64, copy=False)
            codes = np.where((codes >= 0) & (codes < unknown) & (codes == present), codes, unknown)
        else:
            codes = np.searchsorted(self.edges, present, side="left")
        out[: self.size - 1] = np.bincount(codes, minlength=self.size - 1)[: self.size - 1]
        out[-1] = float(missing.sum())
        return out


@dataclass(frozen=True)
class Thresholds:
    """Drift thresholds of a use case, defaults applied (a negative threshold: off)."""

    feature_psi: float = DEFAULT_FEATURE_PSI
    prediction_psi: float = DEFAULT_PREDICTION_PSI
    min_decisions: int = DEFAULT_MIN_DECISIONS

    @classmethod
    def from_blueprint(cls, blueprint: bp.Blueprint | None) -> Thresholds:
        """The thresholds of ``blueprint.drift`` (0 means the default)."""
        if blueprint is None:
            return cls()
        spec = blueprint.drift
        return cls(spec.feature_psi_threshold or DEFAULT_FEATURE_PSI,
                   spec.prediction_psi_threshold or DEFAULT_PREDICTION_PSI,
                   int(spec.min_decisions) or DEFAULT_MIN_DECISIONS)


@dataclass
class LiveWindow:
    """One use case's live histograms against one model version's profile."""

    model_version: int
    features: list[FeatureBins]
    window: int
    counts: list[np.ndarray] = field(init=False)
    decisions: float = 0.0
    # Prediction: fixed score edges, the reference counts, the live counts.
    score_edges: np.ndarray | None = None
    score_reference: np.ndarray | None = None
    score_reference_kind: str = ""
    score_counts: np.ndarray | None = None
    _first_scores: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.counts = [np.zeros(f.size) for f in self.features]

    def add(self, matrix: np.ndarray, scores: np.ndarray) -> None:
        """Add live rows (columns in the profile's feature order; NaN for a feature
        the row's blueprint version lacks) and their model scores (NaN: none)."""
        for i, bins in enumerate(self.features):
            self.counts[i] += bins.histogram(matrix[:, i])
        self.decisions += matrix.shape[0]
        scores = scores[np.isfinite(scores)]
        if scores.size:
            self._add_scores(scores)
        if self.decisions > self.window:
            for counts in self.counts:
                counts *= 0.5
            if self.score_counts is not None:
                self.score_counts *= 0.5
            self.decisions *= 0.5

    def _add_scores(self, scores: np.ndarray) -> None:
        if self.score_edges is None:  # still collecting the first live window
            self._first_scores.append(scores)
            seen = np.concatenate(self._first_scores)
            if seen.size < max(self.window // 4, 100):
                return
            self.score_edges = _quantile_edges(seen, SCORE_BINS)
            self.score_reference = np.bincount(np.searchsorted(self.score_edges, seen, side="left"),
                                               minlength=len(self.score_edges) + 1).astype(np.float64)
            self.score_reference_kind = "first_live_window"
            self._first_scores.clear()
            return
        hist = np.bincount(np.searchsorted(self.score_edges, scores, side="left"),
                           minlength=len(self.score_edges) + 1)
        if self.score_counts is None:
            self.score_counts = np.zeros(len(self.score_edges) + 1)
        self.score_counts += hist

    def report(self, thresholds: Thresholds) -> fpb.DriftReport:
        """The drift report of the window (compute_time left to the caller)."""
        enough = self.decisions >= thresholds.min_decisions
        report = fpb.DriftReport(
            status="ok" if enough else "insufficient_data", model_version=self.model_version,
            window_decisions=self.decisions, feature_psi_threshold=thresholds.feature_psi,
            prediction_psi_threshold=thresholds.prediction_psi,
            prediction_reference=self.score_reference_kind,
        )
        for bins, counts in zip(self.features, self.counts, strict=True):
            value = psi(counts, bins.reference)
            drifted = enough and thresholds.feature_psi >= 0 and value > thresholds.feature_psi
            report.features.append(fpb.FeatureDrift(
                name=bins.name, psi=value, drifted=drifted,
                live_missing_rate=float(counts[-1] / counts.sum()) if counts.sum() else 0.0,
                training_missing_rate=float(bins.reference[-1] / bins.reference.sum()) if bins.reference.sum() else 0.0,
            ))
        report.max_feature_psi = max((f.psi for f in report.features), default=0.0)
        report.feature_drift = any(f.drifted for f in report.features)
        if self.score_counts is not None and self.score_reference is not None:
            report.prediction_psi = psi(self.score_counts, self.score_reference)
            report.prediction_drift = bool(enough and thresholds.prediction_psi >= 0
                                           and report.prediction_psi > thresholds.prediction_psi)
        return report


def _quantile_edges(values: np.ndarray, bins: int) -> np.ndarray:
    """Distinct interior quantile edges splitting ``values`` into about ``bins`` bins."""
    levels = np.linspace(0, 1, bins + 1)[1:-1]
    return np.unique(np.quantile(values, levels))


def score_reference_of(model: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """The training score distribution of a model record (``Model.prediction_profile``),
    if it carries one: ``(edges, counts)``."""
    if not model.HasField("prediction_profile"):
        return None
    profile = model.prediction_profile
    if not profile.bin_counts:
        return None
    return np.asarray(profile.bin_edges, dtype=np.float64), np.asarray(profile.bin_counts, dtype=np.float64)


ModelLookup = Callable[[str, int], Awaitable[Any]]
BlueprintLookup = Callable[[str, int], Awaitable[bp.Blueprint]]


class DriftMonitor:
    """Buffers logged decisions and turns them into per-use-case drift reports.

    ``model_lookup(use_case, version)`` returns the trainer's Model (or None);
    ``blueprint_lookup(use_case, version)`` a blueprint version (0: the latest, for
    thresholds); ``now_ms()`` stamps the reports; ``on_report`` is called with each new
    report (metrics)."""

    def __init__(self, model_lookup: ModelLookup, blueprint_lookup: BlueprintLookup, now_ms: Callable[[], int],
                 window: int = 20_000, interval_s: float = 10.0,
                 on_report: Callable[[str, fpb.DriftReport], None] | None = None) -> None:
        self.model_lookup = model_lookup
        self.blueprint_lookup = blueprint_lookup
        self.now_ms = now_ms
        self.window = window
        self.interval_s = interval_s
        self.on_report = on_report
        self.skipped = 0  # decisions not buffered because a buffer was full
        self._buffer: dict[str, list[LiveRow]] = {}
        self._windows: dict[str, LiveWindow] = {}
        self._reports: dict[str, fpb.DriftReport] = {}
        self._profiles: dict[tuple[str, int], list[FeatureBins] | None] = {}
        self._models: dict[tuple[str, int], Any] = {}
        self._task: asyncio.Task | None = None

    # -- request path (LogDecisions): append only ---------------------------------------
    def observe(self, records: Sequence[fpb.DecisionRecord]) -> None:
        """Buffer logged decisions (shadow records are skipped: their features are
        another record's; undelivered ones too: they never reached a caller)."""
        for record in records:
            if record.shadow or record.undelivered:
                continue
            buffered = self._buffer.setdefault(record.use_case, [])
            if len(buffered) >= MAX_BUFFERED:
                self.skipped += 1
                continue
            score = max(record.action_scores) if record.action_scores else record.score
            buffered.append(LiveRow(record.blueprint_version, record.model_version, record.fallback,
                                    score, record.features))

    # -- background ---------------------------------------------------------------------
    def start(self) -> None:
        """Start the background task."""
        if self._task is None:
            self._task = asyncio.ensure_future(self.run())

    async def stop(self) -> None:
        """Stop the background task."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def run(self) -> None:
        """Compute every ``interval_s`` until cancelled."""
        await every(self.interval_s, self.compute, "drift computation", log)

    async def compute(self) -> dict[str, fpb.DriftReport]:
        """Bin the buffered decisions and refresh the reports of their use cases."""
        buffer, self._buffer = self._buffer, {}
        for use_case, records in buffer.items():
            report = await self._compute_use_case(use_case, records)
            if report is None:
                continue
            report.compute_time.FromMilliseconds(self.now_ms())
            self._reports[use_case] = report
            if self.on_report is not None:
                self.on_report(use_case, report)
        return dict(self._reports)

    def report(self, use_case: str) -> fpb.DriftReport | None:
        """The last report of a use case, if any."""
        return self._reports.get(use_case)

    async def _compute_use_case(self, use_case: str, records: list[LiveRow]) -> fpb.DriftReport | None:
        served = [r.model_version for r in records if r.model_version > 0]
        if not served:
            current = self._windows.get(use_case)
            return None if current is not None else fpb.DriftReport(status="no_model")
        version = max(served)  # the newest model serving in this batch is the reference
        window = self._windows.get(use_case)
        if window is None or window.model_version != version:
            bins = await self._profile(use_case, version)
            if bins is None:
                return fpb.DriftReport(status="no_profile", model_version=version)
            window = LiveWindow(version, bins, self.window)
            reference = score_reference_of(self._models[(use_case, version)])
            if reference is not None:
                window.score_edges, window.score_reference = reference
                window.score_reference_kind = "training"
            self._windows[use_case] = window
        model = self._models[(use_case, version)]
        blueprints = {model.blueprint_version: await self.blueprint_lookup(use_case, model.blueprint_version)}
        for v in sorted({r.blueprint_version for r in records} - set(blueprints)):
            try:
                blueprints[v] = await self.blueprint_lookup(use_case, v)
            except NotFound:  # records of an unknown version (spooled unchecked): left out
                log.warning("drift: %s has no blueprint version %d; its decisions are left out", use_case, v)
        records = [r for r in records if r.blueprint_version in blueprints]
        thresholds = Thresholds.from_blueprint(await self._latest_blueprint(use_case))

        def bin_and_report() -> fpb.DriftReport:  # numpy work: off the event loop
            matrix, scores = _rows(window, records, blueprints, model.blueprint_version)
            window.add(matrix, scores)
            return window.report(thresholds)

        return await asyncio.to_thread(bin_and_report)

    async def _profile(self, use_case: str, version: int) -> list[FeatureBins] | None:
        key = (use_case, version)
        if key not in self._profiles:
            model = await self.model_lookup(use_case, version)
            if model is None:
                return None  # trainer unreachable: try again next time
            self._models[key] = model
            profiles = list(getattr(model, "feature_profiles", []))
            self._profiles[key] = [FeatureBins.from_profile(p) for p in profiles] if profiles else None
        return self._profiles[key]

    async def _latest_blueprint(self, use_case: str) -> bp.Blueprint | None:
        try:
            return await self.blueprint_lookup(use_case, 0)
        except Exception:  # thresholds fall back to the defaults
            log.warning("drift: cannot read the blueprint of %s; default thresholds", use_case)
            return None


def _rows(window: LiveWindow, records: list[LiveRow], blueprints: dict[int, bp.Blueprint],
          model_version_blueprint: int) -> tuple[np.ndarray, np.ndarray]:
    """Live rows in the profile's feature order (by name across blueprint versions;
    categorical codes remapped by vocabulary value) and their scores (NaN when another
    model or the default made the decision)."""
    target = blueprints[model_version_blueprint]
    names = [b.name for b in window.features]
    matrix = np.full((len(records), len(names)), np.nan, dtype=np.float64)
    scores = np.full(len(records), np.nan)
    by_version: dict[int, list[int]] = {}
    for i, record in enumerate(records):
        by_version.setdefault(record.blueprint_version, []).append(i)
        if record.model_version == window.model_version and not record.fallback:
            scores[i] = record.score
    for version, rows in by_version.items():
        source = blueprints[version]
        width = len(source.features)
        raw = np.stack([_features(records[i], width) for i in rows])
        for j, name in enumerate(names):
            column = _column(source, target, name, raw)
            if column is not None:
                matrix[rows, j] = column
    return matrix, scores


def _features(record: LiveRow, width: int) -> np.ndarray:
    values = np.frombuffer(record.features, dtype="<f4").astype(np.float64)
    if values.size != width:  # a record that does not match its version: all missing
        return np.full(width, np.nan)
    return values


def _column(source: bp.Blueprint, target: bp.Blueprint, name: str, raw: np.ndarray) -> np.ndarray | None:
    """Feature ``name`` of rows encoded with ``source``, in ``target``'s encoding."""
    index = next((k for k, f in enumerate(source.features) if f.name == name), None)
    if index is None:
        return None
    column = raw[:, index]
    src = source.features[index]
    dst = next((f for f in target.features if f.name == name), None)
    if dst is None or list(src.vocabulary) == list(dst.vocabulary):
        return column
    remap = {code: float(dst.vocabulary.index(v)) if v in dst.vocabulary else -1.0
             for code, v in enumerate(src.vocabulary)}
    out = np.array([remap.get(int(c), -1.0) if np.isfinite(c) else np.nan for c in column])
    return out
