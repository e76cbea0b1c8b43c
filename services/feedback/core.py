"""The feedback service's logic: validation, idempotent logging, joined reads, stats.

No gRPC here: the servicer converts, the store persists, ``sources`` reaches the
decision service (reward specs) and the trainer (model lineage). Proto messages are
used as plain data where converting them would be boilerplate.
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from google.protobuf import timestamp_pb2

from loopwise import tracing
from loopwise.clock import Clock, plausible_decision_time_ms
from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.errors import InvalidArgument, NotFound, ResourceExhausted, quote
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.services.feedback.rewards import RewardRule
from loopwise.services.feedback.spool import DurableWrites, Entry, store_failure
from loopwise.services.feedback.training import build_batch, join_decisions
from loopwise.store.feedback import DecisionColumns, FeedbackStore, OutcomeRow, StoredDecision
from loopwise.upstream import DecisionUseCases, TrainerModels

log = logging.getLogger("loopwise.feedback")

DEFAULT_BATCH_ROWS = 4096
# Decisions read from the store per query while streaming training data.
PAGE_ROWS = 4096
# GetStats answers with only the spool fields when the store does not answer in time.
STATS_STORE_TIMEOUT_S = 5.0
# At most this many field violations are reported for one request.
MAX_VIOLATIONS = 20


@dataclass(frozen=True)
class OutcomeCounts:
    """What LogOutcomes did with a batch."""

    accepted: int
    duplicates: int
    orphans: int


def normalize_id(value: str) -> str:
    """The canonical (lower-case, hyphenated) form of a UUID string."""
    return str(uuid.UUID(value))


class _Violations:
    """Collects field violations and raises them together."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, field: str, description: str) -> None:
        if len(self.items) < MAX_VIOLATIONS:
            self.items.append((field, description))

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument(self.items[0][0], self.items[0][1], self.items[1:])


def _ms(ts: timestamp_pb2.Timestamp) -> int:
    return ts.seconds * 1000 + ts.nanos // 1_000_000


def _timestamp(ms: int) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromMilliseconds(ms)
    return ts


class Feedback:
    """Stores decisions and outcomes, joins them by the reward spec, serves reads."""

    def __init__(self, store: FeedbackStore, blueprints: DecisionUseCases, models: TrainerModels,
                 clock: Clock, spool_dir: Path, max_batch_rows: int = 100_000) -> None:
        self.store = store
        self.durable = DurableWrites(store, spool_dir, on_replayed=self._replayed)
        self.blueprints = blueprints
        self.models = models
        self.clock = clock
        self.max_batch_rows = max_batch_rows
        # Process counter (not derived from data): duplicate deliveries are not stored,
        # so this restarts at 0 with the process; GetStats documents it as "since start".
        self.duplicate_outcomes: dict[str, int] = defaultdict(int)

    # ---- writes -----------------------------------------------------------------------

    def _replayed(self, entry: Entry, result: object) -> None:
        """Count the duplicates a spool replay found (informational, like live ones)."""
        if entry.decisions or not isinstance(result, tuple):
            return
        new, new_orphans = result
        for row, fresh in [*zip(entry.outcomes, new, strict=True), *zip(entry.orphans, new_orphans, strict=True)]:
            if not fresh:
                self.duplicate_outcomes[row.use_case] += 1

    async def log_decisions(self, records: Sequence[fpb.DecisionRecord]) -> int:
        """Validate and store decisions (idempotent on decision id); returns how many
        are stored, new or already present, once committed."""
        if len(records) > self.max_batch_rows:
            raise ResourceExhausted(f"{len(records)} decisions in one request; at most {self.max_batch_rows}")
        now_ms = self.clock.now_ms()
        bad = _Violations()
        stored: list[StoredDecision] = []
        for i, r in enumerate(records):
            at = f"decisions[{i}]"
            if not r.use_case:
                bad.add(f"{at}.use_case", "required")
            time_ms = plausible_decision_time_ms(r.decision_id, now_ms)
            if time_ms is None:
                bad.add(f"{at}.decision_id", f"{quote(r.decision_id)} is not a UUIDv7 of a plausible decision time")
            if len(r.features) % 4:
                bad.add(f"{at}.features", f"{len(r.features)} bytes is not a whole number of float32 values")
            if r.blueprint_version < 1:
                bad.add(f"{at}.blueprint_version", "must be >= 1")
            if r.model_version < 0:
                bad.add(f"{at}.model_version", "must be >= 0")
            if r.action_index < 0:
                bad.add(f"{at}.action_index", "must be >= 0")
            elif r.action_probabilities and r.action_index >= len(r.action_probabilities):
                bad.add(f"{at}.action_index", "has no entry in action_probabilities")
            if any(not (0.0 <= p <= 1.0) for p in r.action_probabilities):
                bad.add(f"{at}.action_probabilities", "every probability must be in [0, 1]")
            if not (math.isfinite(r.serving_latency_ms) and r.serving_latency_ms >= 0.0):
                bad.add(f"{at}.serving_latency_ms", "must be a finite number >= 0")
            if time_ms is not None:
                record = fpb.DecisionRecord()
                record.CopyFrom(r)
                record.decision_id = normalize_id(r.decision_id)
                stored.append(StoredDecision(record, time_ms))
        bad.raise_if_any()
        await self.durable.decisions(stored)  # in the store, or fsync'd in the spool
        return len(stored)

    async def log_outcomes(self, outcomes: Sequence[fpb.Outcome]) -> OutcomeCounts:
        """Validate and store outcomes (idempotent on use case, decision id, outcome id).

        A decision id that is not a plausible UUIDv7 makes an orphan (stored, counted);
        an unknown but valid id is stored normally and counted at join time.
        """
        if len(outcomes) > self.max_batch_rows:
            raise ResourceExhausted(f"{len(outcomes)} outcomes in one request; at most {self.max_batch_rows}")
        now_ms = self.clock.now_ms()
        bad = _Violations()
        rows: list[OutcomeRow] = []
        orphans: list[OutcomeRow] = []
        for i, o in enumerate(outcomes):
            at = f"outcomes[{i}]"
            if not o.use_case:
                bad.add(f"{at}.use_case", "required")
            if not o.outcome_id:
                bad.add(f"{at}.outcome_id", "required (it is the idempotency key)")
            if not o.name:
                bad.add(f"{at}.name", "required")
            if not math.isfinite(o.value):
                bad.add(f"{at}.value", "must be finite")
            event_ms = _ms(o.event_time) if o.HasField("event_time") else now_ms
            decision_ms = plausible_decision_time_ms(o.decision_id, now_ms)
            if decision_ms is None:
                orphans.append(OutcomeRow(o.use_case, o.decision_id, o.outcome_id, o.name, o.value, o.label,
                                          event_ms, 0))
            else:
                rows.append(OutcomeRow(o.use_case, normalize_id(o.decision_id), o.outcome_id, o.name, o.value,
                                       o.label, event_ms, decision_ms))
        bad.raise_if_any()
        result = await self.durable.outcomes(rows, orphans)  # in the store, or fsync'd in the spool
        if result is None:  # spooled: whether rows were new is unknown until replayed
            return OutcomeCounts(accepted=len(rows), duplicates=0, orphans=len(orphans))
        new, new_orphans = result
        for row, fresh in [*zip(rows, new, strict=True), *zip(orphans, new_orphans, strict=True)]:
            if not fresh:
                self.duplicate_outcomes[row.use_case] += 1
        accepted, orphan_count = sum(new), sum(new_orphans)
        duplicates = len(outcomes) - accepted - orphan_count
        return OutcomeCounts(accepted=accepted, duplicates=duplicates, orphans=orphan_count)

    # ---- reward specs -----------------------------------------------------------------

    async def _rule(self, use_case: str, version: int) -> tuple[bp.Blueprint, RewardRule]:
        blueprint = await self.blueprints.version(use_case, version)
        return blueprint, RewardRule.from_blueprint(blueprint)

    async def _rules(self, use_case: str, versions: list[int] | None = None
                     ) -> dict[int, tuple[bp.Blueprint, RewardRule]]:
        """The blueprint and rule of every stored version; with no stored decision,
        checks that the use case exists (NOT_FOUND otherwise)."""
        if versions is None:
            versions = await self.store.blueprint_versions(use_case)
        if not versions:
            await self.blueprints.latest_version(use_case)
        return {v: await self._rule(use_case, v) for v in versions}

    # ---- reads ------------------------------------------------------------------------

    async def get_decision(self, use_case: str, decision_id: str) -> fpb.GetDecisionResponse:
        """A decision with its outcomes, reward, window state, feature names and lineage."""
        bad = _Violations()
        if not use_case:
            bad.add("use_case", "required")
        if not decision_id:
            bad.add("decision_id", "required")
        bad.raise_if_any()
        try:
            key = normalize_id(decision_id)
        except ValueError:
            raise InvalidArgument("decision_id", f"{quote(decision_id)} is not a decision id (a UUID)") from None
        found = await self.store.get_decision(use_case, key)
        if found is None:
            raise NotFound(f"decision {quote(decision_id)} of {quote(use_case)} is not stored")
        blueprint, rule = await self._rule(use_case, found.record.blueprint_version)
        outcomes = await self.store.outcomes_of(use_case, key)
        joined, _ = join_decisions(rule, np.array([found.decision_time_ms]), [outcomes])
        response = fpb.GetDecisionResponse(
            decision=found.record,
            outcomes=[
                fpb.Outcome(use_case=o.use_case, decision_id=o.decision_id, outcome_id=o.outcome_id, name=o.name,
                            value=o.value, label=o.label, event_time=_timestamp(o.event_time_ms))
                for o in outcomes
            ],
            reward=float(joined.rewards[0]),
            window_closed=rule.window_closed(found.decision_time_ms, self.clock.now_ms()),
            feature_names=[f.name for f in blueprint.features],
        )
        if found.record.model_version > 0:
            response.model_lineage.update(await self._lineage(use_case, found.record.model_version))
        return response

    async def _lineage(self, use_case: str, version: int) -> dict[str, str]:
        """The model's lineage as strings (empty if unknown): family, blueprint version,
        training data range and row counts, the code that trained it, its parent model
        (the production model it was trained next to), its artifact's sha256 and metrics."""
        model = await self.models.model(use_case, version)
        if model is None or not model.version:
            return {}
        lineage = {
            "model_version": str(model.version),
            "family": model.family,
            "blueprint_version": str(model.blueprint_version),
            "training_rows": str(model.training_rows),
            "holdout_rows": str(model.holdout_rows),
            "labelled_rows": str(model.labelled_rows),
            "source": model.source,
            "artifact_sha256": model.artifact_sha256,
            "artifact_size": str(model.artifact_size),
        }
        if model.code_version:
            lineage["code_version"] = model.code_version
        if model.parent_version:
            lineage["parent_version"] = str(model.parent_version)
        if model.HasField("data_start_time"):
            lineage["data_start_time"] = model.data_start_time.ToJsonString()
        if model.HasField("data_end_time"):
            lineage["data_end_time"] = model.data_end_time.ToJsonString()
        if model.HasField("create_time"):
            lineage["create_time"] = model.create_time.ToJsonString()
        if model.operation_id:
            lineage["operation_id"] = model.operation_id
        tracing.set_attributes(model_version=model.version, model_family=model.family,
                               model_data_start_time=lineage.get("data_start_time"),
                               model_data_end_time=lineage.get("data_end_time"),
                               model_operation_id=model.operation_id or None)
        lineage.update({f"metric.{k}": repr(v) for k, v in sorted(model.metrics.items())})
        lineage.update({f"baseline.{k}": repr(v) for k, v in sorted(model.baseline_metrics.items())})
        return lineage

    async def stats(self, use_case: str) -> fpb.GetStatsResponse:
        """Counts computed from the stored rows with each version's reward spec."""
        if not use_case:
            raise InvalidArgument("use_case", "required")
        # The spool as it was before the rows are read: a depth of 0 means that every
        # record acknowledged until then is in the counts.
        spool = replace(self.durable.counters)
        try:
            versions = await asyncio.wait_for(self.store.blueprint_versions(use_case), STATS_STORE_TIMEOUT_S)
        except Exception as exc:
            if not store_failure(exc):
                raise
            log.warning("GetStats: the store cannot be read (%s: %s)", type(exc).__name__, exc)
            return fpb.GetStatsResponse(
                spool_depth=spool.depth, spooled_records=spool.spooled, replayed_records=spool.replayed,
                store_unavailable=True, duplicate_outcomes=self.duplicate_outcomes.get(use_case, 0))
        rules = await self._rules(use_case, versions)
        counts = await self.store.stats(
            use_case, {v: rule.counting() for v, (_, rule) in rules.items()}, self.clock.now_ms()
        )
        return fpb.GetStatsResponse(
            decisions=counts.decisions,
            outcomes=counts.outcomes,
            joined_decisions=counts.joined_decisions,
            join_rate=counts.joined_decisions / counts.decisions if counts.decisions else 0.0,
            orphan_outcomes=counts.orphan_outcomes,
            late_outcomes=counts.late_outcomes,
            unmatched_outcomes=counts.unmatched_outcomes,
            closed_windows=counts.closed_windows,
            open_windows=counts.decisions - counts.closed_windows,
            spool_depth=spool.depth,
            spooled_records=spool.spooled,
            replayed_records=spool.replayed,
            fallback_decisions=counts.fallback_decisions,
            duplicate_outcomes=self.duplicate_outcomes.get(use_case, 0),
        )

    async def read_training_data(
        self, request: fpb.ReadTrainingDataRequest
    ) -> AsyncIterator[fpb.ReadTrainingDataResponse]:
        """Joined rows in decision-time order, in batches of one blueprint version.

        Reads the store page by page (``PAGE_ROWS`` decisions and the outcomes of their
        decision-time range at a time), so memory stays bounded by a batch and a page.
        """
        bad = _Violations()
        if not request.use_case:
            bad.add("use_case", "required")
        if request.batch_rows < 0:
            bad.add("batch_rows", "must be >= 0")
        now_ms = self.clock.now_ms()
        start_ms = _ms(request.start_time) if request.HasField("start_time") else 0
        end_ms = _ms(request.end_time) if request.HasField("end_time") else now_ms
        if end_ms < start_ms:
            bad.add("end_time", "must not be before start_time")
        bad.raise_if_any()
        use_case = request.use_case
        batch_rows = min(request.batch_rows or DEFAULT_BATCH_ROWS, self.max_batch_rows)
        rules = await self._rules(use_case)  # fails before the first message when unknown
        if not request.include_open_windows and rules:
            # No decision later than now - (shortest window) can have a closed window.
            end_ms = min(end_ms, now_ms - min(rule.window_ms for _, rule in rules.values()) + 1)

        pending = _Pending()
        async for page in self.store.scan_decision_columns(use_case, start_ms, end_ms, request.include_fallback,
                                                           PAGE_ROWS):
            by_decision: dict[str, list[OutcomeRow]] = defaultdict(list)
            for o in await self.store.outcomes_between(use_case, int(page.times_ms[0]), int(page.times_ms[-1])):
                by_decision[o.decision_id].append(o)
            versions = page.blueprint_versions
            for version in np.unique(versions).tolist():
                if version not in rules:  # logged after the read started
                    rules[version] = await self._rule(use_case, version)
            if not request.include_open_windows:
                windows = np.array([rules[v][1].window_ms for v in versions.tolist()], dtype=np.int64)
                closed = np.flatnonzero(page.times_ms + windows <= now_ms)
                if closed.size < len(page):
                    page, versions = page.take(closed), versions[closed]
                if not closed.size:
                    continue
            # Runs of one blueprint version, in time order, cut into batches of batch_rows.
            cuts = [0, *(np.flatnonzero(np.diff(versions)) + 1).tolist(), len(page)]
            for a, b in zip(cuts[:-1], cuts[1:], strict=False):
                version = int(versions[a])
                while a < b:
                    if pending.rows and version != pending.version:
                        yield pending.flush(rules)
                    take = min(b - a, batch_rows - pending.rows)
                    pending.add(version, page.take(np.arange(a, a + take)) if take < len(page) else page,
                                by_decision)
                    a += take
                    if pending.rows >= batch_rows:
                        yield pending.flush(rules)
        if pending.rows:
            yield pending.flush(rules)


class _Pending:
    """Decisions of one blueprint version waiting to fill a training batch."""

    def __init__(self) -> None:
        self.version = 0
        self.rows = 0
        self.parts: list[DecisionColumns] = []
        self.outcomes: dict[str, list[OutcomeRow]] = {}

    def add(self, version: int, part: DecisionColumns, outcomes: dict[str, list[OutcomeRow]]) -> None:
        """Append decisions of ``version`` with the outcomes of their page."""
        self.version = version
        self.rows += len(part)
        self.parts.append(part)
        self.outcomes.update((i, outcomes[i]) for i in part.decision_ids if i in outcomes)

    def flush(self, rules: dict[int, tuple[bp.Blueprint, RewardRule]]) -> fpb.ReadTrainingDataResponse:
        """The batch of what is pending; empties it."""
        blueprint, rule = rules[self.version]
        batch = build_batch(self.version, blueprint, rule, DecisionColumns.concat(self.parts), self.outcomes)
        self.rows, self.parts, self.outcomes = 0, [], {}
        return batch
