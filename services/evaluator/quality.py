"""Feedback's counts for an effect report's data-quality section, read through the
feedback proto (``GetStats`` via :class:`loopwise.upstream.FeedbackStats`), best effort:
a report is still made when feedback cannot answer, and says so."""

from __future__ import annotations

from typing import Protocol

from loopwise.errors import LoopwiseError
from loopwise.evaluator.v1 import evaluator_service_pb2 as epb
from loopwise.feedback.v1 import feedback_service_pb2 as fpb


class Stats(Protocol):
    """A use case's counts (feedback GetStats)."""

    async def get(self, use_case: str) -> fpb.GetStatsResponse: ...


async def read_quality(stats: Stats | None, use_case: str) -> epb.DataQuality:
    """The GetStats part of the report's DataQuality (the analysis adds the rows' own)."""
    quality = epb.DataQuality()
    if stats is None:
        quality.stats_error = "no feedback statistics source is configured"
        return quality
    try:
        counts = await stats.get(use_case)
    except LoopwiseError as exc:
        quality.stats_error = str(exc)
        return quality
    if counts.store_unavailable:
        quality.stats_error = "feedback's store could not be read"
        return quality
    quality.stats_available = True
    for name in ("decisions", "outcomes", "join_rate", "orphan_outcomes", "late_outcomes", "unmatched_outcomes",
                 "lost_decision_outcomes", "invalid_records", "fallback_decisions", "open_windows"):
        setattr(quality, name, getattr(counts, name))
    return quality
