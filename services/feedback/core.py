"""The feedback service's logic: validation, idempotent logging, joined reads, stats.

No gRPC here: the servicer converts, the store persists, ``blueprints`` reaches the
decision service (blueprints for validation and reward specs) and ``models`` the
trainer (model lineage). Proto messages are used as plain data where converting them
would be boilerplate.

Reads are defensive: a stored decision that cannot be interpreted (a blueprint version
the decision service does not know, features that do not fit its version, an action
without a probability: data from before validation, or written to the store directly)
is skipped and counted (GetStats.invalid_records, and the records skipped by reads in
a metric); it never fails the use case. Undelivered decisions are stored and counted,
never read as training data.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from itertools import repeat
from pathlib import Path

import numpy as np
from google.protobuf import timestamp_pb2

from loopwise import tracing
from loopwise.clock import Clock, canonical_uuid, plausible_decision_key, plausible_decision_keys
from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.errors import InvalidArgument, NotFound, ResourceExhausted, quote
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.limits import TIMESTAMP_SECONDS
from loopwise.services.feedback.ranking import is_ranking, ranking_batches
from loopwise.services.feedback.rewards import RewardRule
from loopwise.services.feedback.spool import DurableWrites, Entry
from loopwise.services.feedback.training import build_batch, join_decisions
from loopwise.services.feedback.validation import (
    UNCHECKED,
    RecordValidator,
    Violations,
    check_decision,
    check_outcome,
    check_resolved,
    unavailable,
)
from loopwise.store.failures import store_failure
from loopwise.store.feedback import (
    CountingRule,
    DecisionColumns,
    FeedbackStore,
    OutcomeRow,
    StoredDecision,
)
from loopwise.upstream import DecisionUseCases, TrainerModels

log = logging.getLogger("loopwise.feedback")

DEFAULT_BATCH_ROWS = 4096
# Decisions read from the store per query while streaming training data.
PAGE_ROWS = 4096
# GetStats answers with only the spool fields when the store does not answer in time.
STATS_STORE_TIMEOUT_S = 5.0
# An outcome whose decision is not stored although the decision was made this long ago
# (real seconds; scaled by the clock speed) counts as an outcome of a lost decision: the
# decision service's LOOPWISE_DECISION_LOG_ARRIVAL_BOUND_S, by when a decision record is
# expected here (its spool is shipped within decision_log_flush_interval_s while feedback
# answers; retries while feedback is away and a restarted decision process replaying its
# spool take longer). The server passes the setting; this is its default.
LOST_DECISION_AFTER_S = 600.0
# A stored blueprint version the decision service did not know is asked about again
# after this long (real seconds); until then reads skip its decisions without asking.
UNKNOWN_VERSION_RECHECK_S = 30.0


@dataclass(frozen=True)
class OutcomeCounts:
    """What LogOutcomes did with a batch."""

    accepted: int
    duplicates: int
    orphans: int
    # Outcomes received, by use case (all of the batch's, whatever became of them).
    received: dict[str, int] = field(default_factory=dict)


def normalize_id(value: str) -> str:
    """The canonical (lower-case, hyphenated) form of a UUID string."""
    return canonical_uuid(value)


def column_outcomes(at: str, columns: fpb.OutcomeColumns, now_ms: int, bad: Violations,
                    rows: list[OutcomeRow], orphans: list[OutcomeRow]) -> None:
    """Check one ``OutcomeColumns`` (violations named ``at``.column[i]) and add its
    outcomes to ``rows``, or to ``orphans`` when the decision id is not a plausible
    UUIDv7: the rows :meth:`Feedback.log_outcomes` makes of the same outcomes as
    messages. Valid columns are read and checked a column at a time."""
    use_case = columns.use_case
    decision_ids = list(columns.decision_ids)
    n = len(decision_ids)
    outcome_ids, names, values = list(columns.outcome_ids), list(columns.names), list(columns.values)
    labels, times, items = list(columns.labels), list(columns.event_times_ms), list(columns.item_ids)
    found = len(bad.items)
    if n and not use_case:
        bad.add(f"{at}.use_case", "required")
    for name, column in (("outcome_ids", outcome_ids), ("names", names), ("values", values)):
        if len(column) != n:
            bad.add(f"{at}.{name}", f"{len(column)} entries; decision_ids has {n} (one per outcome)")
    for name, column in (("labels", labels), ("event_times_ms", times), ("item_ids", items)):
        if column and len(column) != n:
            bad.add(f"{at}.{name}", f"{len(column)} entries; decision_ids has {n} (none, or one per outcome)")
    if len(bad.items) > found:
        return
    if not all(outcome_ids):
        for i in (i for i, v in enumerate(outcome_ids) if not v):
            bad.add(f"{at}.outcome_ids[{i}]", "required (it is the idempotency key)")
    if not all(names):
        for i in (i for i, v in enumerate(names) if not v):
            bad.add(f"{at}.names[{i}]", "required")
    if not all(map(math.isfinite, values)):
        for i in (i for i, v in enumerate(values) if not math.isfinite(v)):
            bad.add(f"{at}.values[{i}]", "must be finite")
    lo, hi = _EVENT_MS_RANGE
    if times and (min(times) < lo or max(times) > hi):
        for i in (i for i, t in enumerate(times) if not lo <= t <= hi):
            bad.add(f"{at}.event_times_ms[{i}]", f"{times[i]} is out of range (years 1 to 9999)")
    if len(bad.items) > found or not n:
        return
    event_ms = [t or now_ms for t in times] if times and 0 in times else times or repeat(now_ms, n)
    ids, decision_ms = plausible_decision_keys(decision_ids, now_ms)
    outcomes = zip(repeat(use_case, n), ids, outcome_ids, names, values, labels or repeat("", n), event_ms,
                   decision_ms, items or repeat("", n), strict=True)
    if 0 not in decision_ms:
        rows.extend(map(_outcome_row, outcomes))
        return
    for outcome in map(_outcome_row, outcomes):
        (rows if outcome.decision_time_ms else orphans).append(outcome)


# An OutcomeRow from a tuple of its fields, without a Python call per row.
_outcome_row = partial(tuple.__new__, OutcomeRow)
# Timestamp's range (years 1 to 9999) in milliseconds.
_EVENT_MS_RANGE = (TIMESTAMP_SECONDS[0] * 1000, TIMESTAMP_SECONDS[1] * 1000 + 999)


def _ms(ts: timestamp_pb2.Timestamp) -> int:
    return ts.seconds * 1000 + ts.nanos // 1_000_000


def _timestamp(ms: int) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromMilliseconds(ms)
    return ts


class Feedback:
    """Stores decisions and outcomes, joins them by the reward spec, serves reads."""

    def __init__(self, store: FeedbackStore, blueprints: DecisionUseCases, models: TrainerModels,
                 clock: Clock, spool_dir: Path, max_batch_rows: int = 100_000,
                 lost_decision_after_s: float = LOST_DECISION_AFTER_S) -> None:
        self.store = store
        self.durable = DurableWrites(store, spool_dir, on_replayed=self._replayed, validate=self._validate_spooled)
        self.blueprints = blueprints
        self.validator = RecordValidator(blueprints)
        self.models = models
        self.clock = clock
        self.max_batch_rows = max_batch_rows
        # On the decision clock, like decision ids.
        self.lost_decision_after_ms = int(lost_decision_after_s * 1000 * clock.speed)
        # Process counter (not derived from data): duplicate deliveries are not stored,
        # so this restarts at 0 with the process; GetStats documents it as "since start".
        # A replay of the same acknowledged request (the spool) is not a duplicate.
        self.duplicate_outcomes: dict[str, int] = defaultdict(int)
        # Called with (use case, records) when a read skips stored records it cannot interpret.
        self.on_invalid_skipped: Callable[[str, int], None] | None = None
        # Stored versions the decision service did not know: (use case, version) -> when to ask again.
        self._unknown_versions: dict[tuple[str, int], float] = {}

    def attach_store(self, store: FeedbackStore) -> None:
        """Use ``store`` from now on (it connected after the service started)."""
        self.store = store
        self.durable.set_store(store)

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
        are stored, new or already present, once committed. A batch with an invalid
        record is refused whole (validation.py); one whose blueprints cannot be read
        now is acknowledged from the spool and validated on replay."""
        if len(records) > self.max_batch_rows:
            raise ResourceExhausted(f"{len(records)} decisions in one request; at most {self.max_batch_rows}")
        now_ms = self.clock.now_ms()
        bad = Violations()
        stored: list[StoredDecision] = []
        for i, r in enumerate(records):
            time_ms = check_decision(f"decisions[{i}]", r, now_ms, bad)
            if time_ms is not None:
                record = fpb.DecisionRecord()
                record.CopyFrom(r)
                record.decision_id = normalize_id(r.decision_id)
                stored.append(StoredDecision(record, time_ms))
        resolved = await self.validator.versions(
            (r.use_case, r.blueprint_version) for r in records if r.use_case and r.blueprint_version >= 1)
        unchecked = False
        for i, r in enumerate(records):
            unchecked |= check_resolved(f"decisions[{i}]", r, resolved.get((r.use_case, r.blueprint_version)), bad)
        bad.raise_if_any()
        if unchecked:
            log.warning("LogDecisions: the decision service cannot be reached; %d decisions spooled unchecked",
                        len(stored))
        await self.durable.decisions(stored, unchecked=unchecked)  # in the store, or fsync'd in the spool
        return len(stored)

    async def log_outcomes(self, outcomes: Sequence[fpb.Outcome],
                           columns: Sequence[fpb.OutcomeColumns] = ()) -> OutcomeCounts:
        """Validate and store outcomes (idempotent on use case, decision id, outcome id),
        given as messages, as columns, or both.

        A decision id that is not a plausible UUIDv7 makes an orphan (stored, counted);
        an unknown but valid id is stored normally and counted at join time. An outcome
        of a use case that does not exist refuses the batch.
        """
        total = len(outcomes) + sum(len(c.decision_ids) for c in columns)
        if total > self.max_batch_rows:
            raise ResourceExhausted(f"{total} outcomes in one request; at most {self.max_batch_rows}")
        now_ms = self.clock.now_ms()
        bad = Violations()
        rows: list[OutcomeRow] = []
        orphans: list[OutcomeRow] = []
        received: dict[str, int] = {}
        finite = math.isfinite
        for i, o in enumerate(outcomes):  # one pass, each field read once: this runs per outcome
            use_case, decision_id, outcome_id, name, value = o.use_case, o.decision_id, o.outcome_id, o.name, o.value
            received[use_case] = received.get(use_case, 0) + 1
            if not (use_case and outcome_id and name and finite(value)):
                check_outcome(f"outcomes[{i}]", o, bad)
            event_ms = _ms(o.event_time) if o.HasField("event_time") else now_ms
            key = plausible_decision_key(decision_id, now_ms)
            if key is None:
                orphans.append(OutcomeRow(use_case, decision_id, outcome_id, name, value, o.label, event_ms, 0,
                                          o.item_id))
            else:
                rows.append(OutcomeRow(use_case, key[0], outcome_id, name, value, o.label, event_ms, key[1],
                                       o.item_id))
        for c, block in enumerate(columns):
            if block.decision_ids:
                received[block.use_case] = received.get(block.use_case, 0) + len(block.decision_ids)
            column_outcomes(f"columns[{c}]", block, now_ms, bad, rows, orphans)
        exists = await self.validator.use_cases(use_case for use_case in received if use_case)
        if any(found is False for found in exists.values()):
            for at, use_case in [*((f"outcomes[{i}]", o.use_case) for i, o in enumerate(outcomes)),
                                 *((f"columns[{c}]", b.use_case) for c, b in enumerate(columns))]:
                if exists.get(use_case, True) is False:
                    bad.add(f"{at}.use_case", f"use case {quote(use_case)} does not exist")
        bad.raise_if_any()
        unchecked = any(v is UNCHECKED for v in exists.values())
        if unchecked:
            log.warning("LogOutcomes: the decision service cannot be reached; %d outcomes spooled unchecked",
                        total)
        # In the store, or fsync'd in the spool.
        result = await self.durable.outcomes(rows, orphans, unchecked=unchecked)
        if result is None:  # spooled: whether rows were new is unknown until replayed
            return OutcomeCounts(accepted=len(rows), duplicates=0, orphans=len(orphans), received=received)
        new, new_orphans = result
        accepted, orphan_count = sum(new), sum(new_orphans)
        duplicates = total - accepted - orphan_count
        if duplicates:
            for row, fresh in [*zip(rows, new, strict=True), *zip(orphans, new_orphans, strict=True)]:
                if not fresh:
                    self.duplicate_outcomes[row.use_case] += 1
        return OutcomeCounts(accepted=accepted, duplicates=duplicates, orphans=orphan_count, received=received)

    async def _validate_spooled(self, entry: Entry) -> tuple[Entry, Entry, list[str]]:
        """Validate a request spooled unchecked: (valid part, invalid part, reasons);
        UNAVAILABLE while the decision service still cannot be reached."""
        reasons: list[str] = []
        if entry.decisions:
            resolved = await self.validator.versions(
                {(d.record.use_case, d.record.blueprint_version) for d in entry.decisions}, wait=True)
            if any(v is UNCHECKED for v in resolved.values()):
                raise unavailable("spooled decisions")
            valid, invalid = [], []
            for i, d in enumerate(entry.decisions):
                bad = Violations()
                check_resolved(f"decisions[{i}]", d.record,
                               resolved.get((d.record.use_case, d.record.blueprint_version)), bad)
                (invalid if bad else valid).append(d)
                reasons += [f"{field}: {description}" for field, description in bad.items]
            return Entry(entry.accept_us, decisions=valid), Entry(entry.accept_us, decisions=invalid), reasons
        exists = await self.validator.use_cases({o.use_case for o in [*entry.outcomes, *entry.orphans]}, wait=True)
        if any(v is UNCHECKED for v in exists.values()):
            raise unavailable("spooled outcomes")
        reasons = [f"use case {quote(name)} does not exist" for name, found in sorted(exists.items()) if not found]
        kept = ([o for o in entry.outcomes if exists[o.use_case]], [o for o in entry.orphans if exists[o.use_case]])
        dropped = ([o for o in entry.outcomes if not exists[o.use_case]],
                   [o for o in entry.orphans if not exists[o.use_case]])
        return (Entry(entry.accept_us, outcomes=kept[0], orphans=kept[1]),
                Entry(entry.accept_us, outcomes=dropped[0], orphans=dropped[1]), reasons)

    # ---- reward specs -----------------------------------------------------------------

    async def _rule(self, use_case: str, version: int) -> tuple[bp.Blueprint, RewardRule]:
        blueprint = await self.blueprints.version(use_case, version)
        return blueprint, RewardRule.from_blueprint(blueprint)

    async def _known_rule(self, use_case: str, version: int) -> tuple[bp.Blueprint, RewardRule] | None:
        """The blueprint and rule of a stored version, or None when the decision service
        does not know the version (its records cannot be interpreted)."""
        key = (use_case, version)
        if self._unknown_versions.get(key, 0.0) > time.monotonic():
            return None
        try:
            return await self._rule(use_case, version)
        except NotFound:
            if key not in self._unknown_versions:
                log.warning("%s: stored decisions of blueprint version %d, which the decision service does not "
                            "know, are skipped", use_case, version)
            self._unknown_versions[key] = time.monotonic() + UNKNOWN_VERSION_RECHECK_S
            return None

    async def _rules(self, use_case: str, versions: list[int] | None = None
                     ) -> dict[int, tuple[bp.Blueprint, RewardRule]]:
        """The blueprint and rule of every stored version the decision service knows
        (decisions of the others are skipped); without any, checks that the use case
        exists (NOT_FOUND otherwise)."""
        if versions is None:
            versions = await self.store.blueprint_versions(use_case)
        rules = {v: await self._known_rule(use_case, v) for v in versions}
        known = {v: rule for v, rule in rules.items() if rule is not None}
        if not known:
            await self.blueprints.latest_version(use_case)
        return known

    @staticmethod
    def _counting(blueprint: bp.Blueprint, rule: RewardRule) -> CountingRule:
        return replace(rule.counting(), feature_count=len(blueprint.features))

    def _skipped(self, use_case: str, records: int) -> None:
        if records and self.on_invalid_skipped is not None:
            self.on_invalid_skipped(use_case, records)

    # ---- reads ------------------------------------------------------------------------

    async def get_decision(self, use_case: str, decision_id: str) -> fpb.GetDecisionResponse:
        """A decision with its outcomes, reward, window state, feature names and lineage."""
        bad = Violations()
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
        known = await self._known_rule(use_case, found.record.blueprint_version)
        outcomes = await self.store.outcomes_of(use_case, key)
        response = fpb.GetDecisionResponse(
            decision=found.record,
            outcomes=[
                fpb.Outcome(use_case=o.use_case, decision_id=o.decision_id, outcome_id=o.outcome_id, name=o.name,
                            value=o.value, label=o.label, event_time=_timestamp(o.event_time_ms),
                            item_id=o.item_id)
                for o in outcomes
            ],
        )
        if known is not None:  # else a record that cannot be interpreted: no reward, no feature names
            blueprint, rule = known
            joined, _ = join_decisions(rule, np.array([found.decision_time_ms]), [outcomes])
            response.reward = float(joined.rewards[0])
            response.window_closed = rule.window_closed(found.decision_time_ms, self.clock.now_ms())
            response.feature_names.extend(f.name for f in blueprint.features)
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
        now_ms = self.clock.now_ms()
        counts = await self.store.stats(
            use_case, {v: self._counting(blueprint, rule) for v, (blueprint, rule) in rules.items()}, now_ms,
            lost_before_ms=now_ms - self.lost_decision_after_ms,
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
            undelivered_decisions=counts.undelivered_decisions,
            invalid_records=counts.invalid_records,
            lost_decision_outcomes=counts.lost_decision_outcomes,
        )

    async def read_training_data(
        self, request: fpb.ReadTrainingDataRequest
    ) -> AsyncIterator[fpb.ReadTrainingDataResponse]:
        """Joined rows in decision-time order, in batches of one blueprint version.

        Reads the store page by page (``PAGE_ROWS`` decisions and the outcomes of their
        decision-time range at a time), so memory stays bounded by a batch and a page.
        """
        bad = Violations()
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
        if is_ranking(rules):  # one row per shown item (services/feedback/ranking.py)
            async for batch in ranking_batches(self.store, use_case, start_ms, end_ms, request.include_fallback,
                                               request.include_open_windows, now_ms, batch_rows, rules,
                                               request.include_unshown_items):
                yield batch
            return

        pending = _Pending()
        unknown: set[int] = set()  # versions the decision service does not know
        async for page in self.store.scan_decision_columns(use_case, start_ms, end_ms, request.include_fallback,
                                                           PAGE_ROWS):
            for version in np.unique(page.blueprint_versions).tolist():
                if version not in rules and version not in unknown:  # logged after the read started
                    known = await self._known_rule(use_case, version)
                    if known is None:
                        unknown.add(version)
                    else:
                        rules[version] = known
            keep = _interpretable(page, rules)
            if not keep.all():
                self._skipped(use_case, int((~keep).sum()))
                if not keep.any():
                    continue
                page = page.take(np.flatnonzero(keep))
            by_decision: dict[str, list[OutcomeRow]] = defaultdict(list)
            for o in await self.store.outcomes_between(use_case, int(page.times_ms[0]), int(page.times_ms[-1])):
                by_decision[o.decision_id].append(o)
            versions = page.blueprint_versions
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


def _interpretable(page: DecisionColumns, rules: dict[int, tuple[bp.Blueprint, RewardRule]]) -> np.ndarray:
    """Which decisions of a page can be read: their version is known, their features
    fit it, their action has a probability (the store's stats count the others as
    invalid records by the same test)."""
    widths = {v: 4 * len(blueprint.features) for v, (blueprint, _) in rules.items()}
    expected = np.array([widths.get(v, -1) for v in page.blueprint_versions.tolist()], dtype=np.int64)
    features = np.fromiter((len(b) for b in page.features), dtype=np.int64, count=len(page))
    probabilities = np.fromiter((len(b) for b in page.action_probabilities), dtype=np.int64, count=len(page))
    actions = page.action_indices
    return (expected >= 0) & (features == expected) & (actions >= 0) & (8 * actions < probabilities)


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
