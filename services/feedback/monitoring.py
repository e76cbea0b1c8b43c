"""The feedback service's metrics and background monitors.

Counters on the logging path (decisions stored, undelivered decisions, outcomes by
result), of stored records that reads skipped because they cannot be interpreted,
gauges of the spool, gauges refreshed from ``GetStats`` every ``stats_interval_s`` for
the use cases this process has seen (join rate, late, orphan, unmatched and lost-decision
outcomes, undelivered decisions, invalid records: derived from the stored data, so they
agree with GetStats), and the drift gauges of
:class:`~loopwise.services.feedback.drift.DriftMonitor`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter as Tally
from collections.abc import Sequence
from typing import Any

from loopwise import tracing
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.metrics import Registry
from loopwise.periodic import every
from loopwise.services.feedback.core import OutcomeCounts
from loopwise.services.feedback.drift import DriftMonitor
from loopwise.settings import Settings

log = logging.getLogger("loopwise.feedback.monitoring")


class FeedbackMonitor:
    """Metrics of the feedback service plus its stats and drift refreshers."""

    def __init__(self, registry: Registry, feedback: Any, settings: Settings) -> None:
        self.feedback = feedback
        self.stats_interval_s = settings.stats_interval_s
        r = registry
        self.decisions = r.counter("loopwise_feedback_decisions_logged_total",
                                   "Decisions stored by LogDecisions (retries included)", ["use_case"])
        self.undelivered = r.counter("loopwise_feedback_undelivered_decisions_logged_total",
                                     "Decisions logged flagged undelivered (made, never reached the caller)",
                                     ["use_case"])
        self.skipped = r.counter("loopwise_feedback_invalid_records_skipped_total",
                                 "Stored decisions that reads (training data) skipped: they cannot be interpreted",
                                 ["use_case"])
        self.outcomes = r.counter("loopwise_feedback_outcomes_received_total",
                                  "Outcomes received by LogOutcomes", ["use_case"])
        self.results = r.counter("loopwise_feedback_outcome_results_total",
                                 "What LogOutcomes did with outcomes: accepted, duplicate, orphan", ["result"])
        self.spool = r.gauge("loopwise_feedback_spool",
                             "Local spool: records waiting now (depth) and since start (spooled, replayed, damaged, "
                             "invalid: unchecked records found invalid on replay)", ["counter"])
        self.spool_depth = r.gauge("loopwise_feedback_spool_depth", "Records acknowledged but waiting in the spool")
        self.stats = r.gauge("loopwise_feedback_stats", "GetStats of a use case (refreshed periodically)",
                             ["use_case", "stat"])
        self.join_rate = r.gauge("loopwise_join_rate", "Share of stored decisions with a counted outcome",
                                 ["use_case"])
        self.late = r.gauge("loopwise_late_outcomes", "Stored outcomes that arrived after their window",
                            ["use_case"])
        self.orphans = r.gauge("loopwise_orphan_outcomes", "Stored outcomes with an invalid decision id",
                               ["use_case"])
        self.feature_psi = r.gauge("loopwise_feature_drift_psi", "PSI of a feature's live values vs training",
                                   ["use_case", "feature"])
        self.prediction_psi = r.gauge("loopwise_prediction_drift_psi", "PSI of live model scores vs reference",
                                      ["use_case"])
        self.drifting = r.gauge("loopwise_drift_detected", "1 when drift exceeds the blueprint threshold",
                                ["use_case", "kind"])
        self.thresholds = r.gauge("loopwise_drift_threshold", "Drift thresholds in force (blueprint)",
                                  ["use_case", "kind"])
        self.window = r.gauge("loopwise_drift_window_decisions", "Live decisions in the drift window",
                              ["use_case", "model_version"])
        self.use_cases: set[str] = set()
        feedback.on_invalid_skipped = self._invalid_skipped
        registry.on_collect(self._collect_spool)
        self.drift = DriftMonitor(
            self._model, self._blueprint, feedback.clock.now_ms, window=settings.drift_window_decisions, interval_s=settings.drift_interval_s,
            on_report=self._drift_metrics,
        )
        self._task: asyncio.Task | None = None

    async def _model(self, use_case: str, version: int) -> Any:
        return await self.feedback.models.model(use_case, version)

    async def _blueprint(self, use_case: str, version: int) -> Any:
        """A blueprint version (cached), or the latest one for version 0."""
        if version == 0:
            return (await self.feedback.blueprints.latest(use_case))[0]
        return await self.feedback.blueprints.version(use_case, version)

    # -- request path -------------------------------------------------------------------
    def decisions_logged(self, records: Sequence[fpb.DecisionRecord]) -> None:
        """Count stored decisions, put their ids on the span, buffer them for drift."""
        for use_case, n in Tally(r.use_case for r in records).items():
            self.decisions.inc((use_case,), n)
            self.use_cases.add(use_case)
        for use_case, n in Tally(r.use_case for r in records if r.undelivered).items():
            self.undelivered.inc((use_case,), n)
        self.drift.observe(records)
        if tracing.enabled() or log.isEnabledFor(logging.DEBUG):
            ids = [r.decision_id for r in records]
            tracing.set_attributes(decision_ids=ids, decision_count=len(ids))
            log.debug("decisions stored", extra={"decision_ids": ids})

    def outcomes_logged(self, request: fpb.LogOutcomesRequest, counts: OutcomeCounts) -> None:
        """Count received outcomes and what happened to them; ids on the span."""
        for use_case, n in counts.received.items():
            self.outcomes.inc((use_case,), n)
            self.use_cases.add(use_case)
        accepted, duplicates, orphans = counts.accepted, counts.duplicates, counts.orphans
        for result, n in (("accepted", accepted), ("duplicate", duplicates), ("orphan", orphans)):
            if n:
                self.results.inc((result,), n)
        if tracing.enabled() or log.isEnabledFor(logging.DEBUG):
            decision_ids = [o.decision_id for o in request.outcomes]
            outcome_ids = [o.outcome_id for o in request.outcomes]
            for block in request.columns:
                decision_ids += block.decision_ids
                outcome_ids += block.outcome_ids
            ids = sorted(set(decision_ids))
            tracing.set_attributes(decision_ids=ids, outcome_count=len(outcome_ids), accepted=accepted,
                                   duplicates=duplicates, orphans=orphans)
            log.debug("outcomes stored", extra={"decision_ids": ids, "outcome_ids": outcome_ids})

    def fill_stats(self, use_case: str, response: fpb.GetStatsResponse) -> None:
        """Add the use case's last drift report to a GetStats response."""
        report = self.drift.report(use_case)
        if report is not None:
            response.drift.CopyFrom(report)

    # -- gauges ---------------------------------------------------------------------------
    def _invalid_skipped(self, use_case: str, records: int) -> None:
        self.skipped.inc((use_case,), records)

    def _collect_spool(self) -> None:
        counters = self.feedback.durable.counters
        self.spool.set(("depth",), counters.depth)
        self.spool.set(("spooled",), counters.spooled)
        self.spool.set(("replayed",), counters.replayed)
        self.spool.set(("damaged",), counters.damaged)
        self.spool.set(("invalid",), counters.invalid)
        self.spool_depth.set((), counters.depth)

    def _drift_metrics(self, use_case: str, report: fpb.DriftReport) -> None:
        for feature in report.features:
            self.feature_psi.set((use_case, feature.name), feature.psi)
        if report.prediction_reference:
            self.prediction_psi.set((use_case,), report.prediction_psi)
        self.drifting.set((use_case, "feature"), float(report.feature_drift))
        self.drifting.set((use_case, "prediction"), float(report.prediction_drift))
        if report.status in ("ok", "insufficient_data"):
            self.thresholds.set((use_case, "feature"), report.feature_psi_threshold)
            self.thresholds.set((use_case, "prediction"), report.prediction_psi_threshold)
            self.window.values = {k: v for k, v in self.window.values.items() if k[0] != use_case}
            self.window.set((use_case, str(report.model_version)), report.window_decisions)

    async def refresh_stats(self) -> None:
        """Set the stats gauges of every use case seen from GetStats."""
        for use_case in sorted(self.use_cases):
            try:
                stats = await self.feedback.stats(use_case)
            except Exception as exc:  # unknown use case, store down: next time
                log.warning("stats of %s not refreshed: %s", use_case, exc)
                continue
            if stats.store_unavailable:
                continue
            labels = (use_case,)
            self.join_rate.set(labels, stats.join_rate)
            self.late.set(labels, stats.late_outcomes)
            self.orphans.set(labels, stats.orphan_outcomes)
            for name in ("decisions", "outcomes", "joined_decisions", "unmatched_outcomes", "closed_windows",
                         "open_windows", "fallback_decisions", "duplicate_outcomes", "undelivered_decisions",
                         "invalid_records", "lost_decision_outcomes"):
                self.stats.set((use_case, name), getattr(stats, name))

    async def _stats_forever(self) -> None:
        await every(self.stats_interval_s, self.refresh_stats, "stats refresh", log)

    def start(self) -> None:
        """Start the stats and drift background tasks."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._stats_forever())
        self.drift.start()

    async def stop(self) -> None:
        """Stop the background tasks."""
        await self.drift.stop()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

