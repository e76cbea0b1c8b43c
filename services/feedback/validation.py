"""What LogDecisions and LogOutcomes accept (docs/storage.md, "Validation").

Every record is checked before anything of its batch is stored, first on its own:

- a decision: a use case, a UUIDv7 id of a plausible time, a blueprint version >= 1,
  features as whole float32 values, a model version >= 0, a finite serving latency
  >= 0, and ``action_probabilities`` that are a distribution the action was drawn
  from: at least one, each finite and in [0, 1], summing to 1 within 1e-6, with an
  entry at ``action_index`` that is > 0;
- an outcome: a use case, an outcome id, a name, a finite value;

then against its use case and blueprint version, read from the decision service
(:class:`~loopwise.upstream.DecisionUseCases`, cached: versions are immutable):

- the use case exists (decisions and outcomes) and the version exists (decisions);
- one probability per action of the version, ``action_index`` one of them and
  ``action`` equal to ``actions[action_index]`` (a regression blueprint without
  actions has the one action ``"predict"``); a ranking has no actions: one
  probability per candidate of its request (of being the top item), ``action`` the
  chosen candidate's id;
- one float32 feature per feature of the version (for a ranking, also per candidate).

A ranking's ``ranked_items`` (when present) are checked as a drawn ranking: one per
candidate (``action_probabilities``), unique non-empty ids, positions 1..k exactly
once (0: not shown), a shown item's propensity in (0, 1] and an unshown one's 0, the
top item at ``action_index`` with ``action`` its id, and ``ranking_probability`` the
product of the shown propensities (within 1e-6 relative).

A use case or version the decision service does not know is asked about once more
after ``RECHECK_S`` (decision workers synchronise new use cases and versions every
second, so a brand-new one can be unknown to the worker asked) before the record is
refused. When the decision service cannot be reached (or does not answer within
``LOOKUP_TIMEOUT_S``), the records that need it cannot be checked: the batch is
acknowledged into the spool marked unchecked and validated when the spool is
replayed (:meth:`RecordValidator.split`).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass

from loopwise.clock import plausible_decision_time_ms
from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.errors import InvalidArgument, LoopwiseError, NotFound, Unavailable, quote
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.upstream import DecisionUseCases

# Pause before asking again about a use case or version the decision service did not know.
RECHECK_S = 1.5
# Rechecks before a use case or version counts as unknown (workers of a busy decision
# service, e.g. on Cassandra, can take several sync intervals to learn a new one).
RECHECKS = 4
# Longest wait for the decision service on the write path.
LOOKUP_TIMEOUT_S = 2.0
# After the decision service could not be reached, blueprints not cached are not asked
# for again during this long (the write path does not wait on a service that is down).
UNREACHABLE_BACKOFF_S = 1.0
# How far the probabilities of a decision may sum from 1.
PROBABILITY_TOLERANCE = 1e-6
# The action of a regression blueprint without actions (services/decision/blueprints.py).
REGRESSION_ACTION = "predict"
# At most this many field violations are reported for one request.
MAX_VIOLATIONS = 20


class Violations:
    """Collects field violations and raises them together."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, field: str, description: str) -> None:
        """Note a violation (the first MAX_VIOLATIONS are kept)."""
        if len(self.items) < MAX_VIOLATIONS:
            self.items.append((field, description))

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self) -> None:
        """INVALID_ARGUMENT with every violation noted."""
        if self.items:
            raise InvalidArgument(self.items[0][0], self.items[0][1], self.items[1:])


class _Unchecked:
    """The decision service could not be reached: not checked yet."""

    def __repr__(self) -> str:
        return "UNCHECKED"


UNCHECKED = _Unchecked()


@dataclass(frozen=True)
class Missing:
    """The decision service does not know it: ``field`` ("use_case" or
    "blueprint_version") and why."""

    field: str
    description: str


def action_names(blueprint: bp.Blueprint) -> list[str] | None:
    """The actions a decision of the blueprint can take; None for a ranking (its
    actions are the candidates of each request)."""
    if blueprint.kind == bp.DECISION_KIND_RANKING:
        return None
    if blueprint.kind == bp.DECISION_KIND_REGRESSION and not blueprint.actions:
        return [REGRESSION_ACTION]
    return list(blueprint.actions)


def check_decision(at: str, r: fpb.DecisionRecord, now_ms: int, bad: Violations) -> int | None:
    """The checks that need no blueprint; returns the decision time (None when the id
    is not a plausible UUIDv7)."""
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
    if not (math.isfinite(r.serving_latency_ms) and r.serving_latency_ms >= 0.0):
        bad.add(f"{at}.serving_latency_ms", "must be a finite number >= 0")
    probabilities = r.action_probabilities
    n = len(probabilities)
    if r.action_index < 0:
        bad.add(f"{at}.action_index", "must be >= 0")
    elif r.action_index >= n:
        bad.add(f"{at}.action_index", f"{r.action_index} has no probability: {n} in action_probabilities")
    if not n:
        bad.add(f"{at}.action_probabilities", "one probability per action is required")
    elif not all(0.0 <= p <= 1.0 for p in probabilities):  # NaN fails both comparisons
        bad.add(f"{at}.action_probabilities", "every probability must be a finite number in [0, 1]")
    elif abs(math.fsum(probabilities) - 1.0) > PROBABILITY_TOLERANCE:
        bad.add(f"{at}.action_probabilities", f"must sum to 1 (within {PROBABILITY_TOLERANCE:g}); "
                                               f"they sum to {math.fsum(probabilities):.9g}")
    elif 0 <= r.action_index < n and probabilities[r.action_index] <= 0.0:
        bad.add(f"{at}.action_probabilities",
                f"the chosen action (index {r.action_index}) has probability 0: it cannot have been drawn")
    if r.ranked_items:
        check_ranked_items(at, r, bad)
    return time_ms


def check_ranked_items(at: str, r: fpb.DecisionRecord, bad: Violations) -> None:
    """The checks of a ranking's ``ranked_items`` that need no blueprint."""
    items = r.ranked_items
    if len(items) != len(r.action_probabilities):
        bad.add(f"{at}.ranked_items", f"{len(items)} items for {len(r.action_probabilities)} candidates "
                                      "in action_probabilities")
    seen: set[str] = set()
    positions: list[int] = []
    for i, item in enumerate(items):
        if not item.item_id:
            bad.add(f"{at}.ranked_items[{i}].item_id", "required")
        elif item.item_id in seen:
            bad.add(f"{at}.ranked_items[{i}].item_id", f"duplicate item id {quote(item.item_id)}")
        seen.add(item.item_id)
        if len(item.features) != len(r.features):
            bad.add(f"{at}.ranked_items[{i}].features", f"{len(item.features)} bytes; the decision's row has "
                                                        f"{len(r.features)}")
        if item.position < 0:
            bad.add(f"{at}.ranked_items[{i}].position", "must be >= 0 (0: not shown)")
        elif item.position > 0:
            positions.append(item.position)
            if not 0.0 < item.propensity <= 1.0:
                bad.add(f"{at}.ranked_items[{i}].propensity", "a shown item's propensity must be in (0, 1]")
        elif item.propensity != 0.0:
            bad.add(f"{at}.ranked_items[{i}].propensity", "must be 0 for an item not shown")
    if sorted(positions) != list(range(1, len(positions) + 1)):
        bad.add(f"{at}.ranked_items", "the shown positions must be 1..k, each once")
        return
    if 0 <= r.action_index < len(items):
        top = items[r.action_index]
        if top.position != 1:
            bad.add(f"{at}.action_index", f"candidate {r.action_index} is not at position 1")
        elif r.action != top.item_id:
            bad.add(f"{at}.action", f"{quote(r.action)} is not the top item's id {quote(top.item_id)}")
    product = math.prod(item.propensity for item in items if item.position > 0)
    if not math.isclose(r.ranking_probability, product, rel_tol=PROBABILITY_TOLERANCE, abs_tol=1e-300):
        bad.add(f"{at}.ranking_probability", f"{r.ranking_probability:.9g} is not the product of the shown "
                                             f"propensities ({product:.9g})")


def check_against_blueprint(at: str, r: fpb.DecisionRecord, blueprint: bp.Blueprint, bad: Violations) -> None:
    """The checks of a decision against its blueprint version."""
    width = len(r.features) // 4
    if len(r.features) % 4 == 0 and width != len(blueprint.features):
        bad.add(f"{at}.features", f"{width} float32 values for the {len(blueprint.features)} features of "
                                  f"blueprint version {r.blueprint_version}")
    actions = action_names(blueprint)
    if actions is None:  # a ranking: one probability per candidate, the chosen candidate's id
        if not r.action:
            bad.add(f"{at}.action", "required: the chosen candidate's id")
        return
    n = len(actions)
    if len(r.action_probabilities) != n:
        bad.add(f"{at}.action_probabilities", f"{len(r.action_probabilities)} probabilities for the {n} "
                                               f"actions of blueprint version {r.blueprint_version}")
    if r.action_index >= n:
        bad.add(f"{at}.action_index", f"{r.action_index} is not an action index: blueprint version "
                                      f"{r.blueprint_version} has {n} actions")
    elif r.action_index >= 0 and r.action != actions[r.action_index]:
        bad.add(f"{at}.action", f"{quote(r.action)} is not action {r.action_index} ({actions[r.action_index]!r}) "
                                f"of blueprint version {r.blueprint_version}")


def check_outcome(at: str, o: fpb.Outcome, bad: Violations) -> None:
    """The checks of an outcome that need no blueprint."""
    if not o.use_case:
        bad.add(f"{at}.use_case", "required")
    if not o.outcome_id:
        bad.add(f"{at}.outcome_id", "required (it is the idempotency key)")
    if not o.name:
        bad.add(f"{at}.name", "required")
    if not math.isfinite(o.value):
        bad.add(f"{at}.value", "must be finite")


class RecordValidator:
    """Resolves use cases and blueprint versions for the write path: a blueprint,
    :class:`Missing`, or ``UNCHECKED`` when the decision service cannot be reached."""

    def __init__(self, blueprints: DecisionUseCases) -> None:
        self.blueprints = blueprints
        self._unreachable_until = 0.0

    async def versions(self, pairs: Iterable[tuple[str, int]], wait: bool = False
                       ) -> dict[tuple[str, int], bp.Blueprint | Missing | _Unchecked]:
        """The blueprint of each (use case, version). ``wait``: ask even while the
        decision service was just found unreachable (the spool replay)."""
        pairs = sorted(set(pairs))
        found = dict(zip(pairs, await asyncio.gather(*(self._version(p, wait) for p in pairs)), strict=True))
        missing = [p for p, got in found.items() if isinstance(got, Missing)]
        for _ in range(RECHECKS):
            if not missing:
                break
            await asyncio.sleep(RECHECK_S)
            again = await asyncio.gather(*(self._version(p, wait) for p in missing))
            found.update(zip(missing, again, strict=True))
            missing = [p for p in missing if isinstance(found[p], Missing)]
        for pair in missing:
            found[pair] = await self._why_missing(pair, wait)
        return found

    async def use_cases(self, names: Iterable[str], wait: bool = False) -> dict[str, bool | _Unchecked]:
        """Whether each use case exists (``UNCHECKED`` when that cannot be known now)."""
        names = sorted(set(names))
        found = dict(zip(names, await asyncio.gather(*(self._exists(n, wait) for n in names)), strict=True))
        missing = [n for n, got in found.items() if got is False]
        for _ in range(RECHECKS):
            if not missing:
                break
            await asyncio.sleep(RECHECK_S)
            again = await asyncio.gather(*(self._exists(n, wait) for n in missing))
            found.update(zip(missing, again, strict=True))
            missing = [n for n in missing if found[n] is False]
        return found

    def _reachable(self, wait: bool) -> bool:
        return wait or time.monotonic() >= self._unreachable_until

    def _unreachable(self) -> _Unchecked:
        self._unreachable_until = time.monotonic() + UNREACHABLE_BACKOFF_S
        return UNCHECKED

    async def _version(self, pair: tuple[str, int], wait: bool) -> bp.Blueprint | Missing | _Unchecked:
        use_case, version = pair
        cached = self.blueprints.cached(use_case, version)
        if cached is not None:
            return cached
        if not self._reachable(wait):
            return UNCHECKED
        try:
            return await self.blueprints.version(use_case, version, timeout_s=LOOKUP_TIMEOUT_S)
        except (NotFound, InvalidArgument) as exc:
            return Missing("blueprint_version", exc.message)
        except LoopwiseError:
            return self._unreachable()

    async def _why_missing(self, pair: tuple[str, int], wait: bool) -> Missing | _Unchecked:
        use_case, version = pair
        exists = await self._exists(use_case, wait)
        if exists is UNCHECKED:
            return UNCHECKED
        if not exists:
            return Missing("use_case", f"use case {quote(use_case)} does not exist")
        return Missing("blueprint_version", f"use case {quote(use_case)} has no blueprint version {version}")

    async def _exists(self, use_case: str, wait: bool) -> bool | _Unchecked:
        if self.blueprints.known(use_case):
            return True
        if not self._reachable(wait):
            return UNCHECKED
        try:
            return await self.blueprints.exists(use_case, timeout_s=LOOKUP_TIMEOUT_S)
        except LoopwiseError:
            return self._unreachable()


def check_resolved(at: str, r: fpb.DecisionRecord, got: bp.Blueprint | Missing | _Unchecked | None,
                   bad: Violations) -> bool:
    """Check a decision against what its (use case, version) resolved to; True when it
    could not be checked (the decision service could not be reached)."""
    if got is UNCHECKED:
        return True
    if isinstance(got, Missing):
        bad.add(f"{at}.{got.field}", got.description)
    elif isinstance(got, bp.Blueprint):
        check_against_blueprint(at, r, got, bad)
    return False


def unavailable(what: str) -> Unavailable:
    """The error a spool replay waits on: the decision service is needed to validate."""
    return Unavailable(f"the decision service is needed to validate {what} and cannot be reached")
