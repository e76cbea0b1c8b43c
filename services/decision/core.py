"""The decision core: encode features, score, choose, id, log. No gRPC here; decision
protos are used as plain data. Everything on this path is synchronous and in memory
(the ONNX run takes microseconds); logging only appends a compact tuple to a queue —
the decision log's shipper builds the record protos (and scores shadow models)
off the request path.

A call's decisions can be held in a :class:`Delivery` until the call's fate is known
and then logged, with ``DecisionRecord.undelivered`` set when the answer could not reach
its caller (docs/architecture.md §6).

Order of the splits (docs/internals.md): the experiment arm first (salted hash of use
case and unit id), then the canary within the arm (a hash with its own salt, the same
share in every arm). Shadows score every row and are only logged.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from loopwise.clock import Clock, uuid7_time_ms
from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.errors import FailedPrecondition, InvalidArgument, quote
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.policy import Policy, base_epsilon
from loopwise.privacy import PiiRules
from loopwise.services.decision.arm_parameters import decide_by_arm
from loopwise.services.decision.decision_log import DecisionLog
from loopwise.services.decision.encoding import (
    UseCaseVersion,
    check_batch,
    encode_named,
    named_values,
)
from loopwise.services.decision.models import ALIKE_PROBE_ROWS, Serving
from loopwise.services.decision.policy import (
    DEFAULT_ARM,
    ROLE_CANARY,
    ROLE_DEFAULT,
    ROLE_PRODUCTION,
    ROLE_SHADOW,
    Choices,
    assign_arms,
    canary_mask,
    choose_one,
    merge,
)
from loopwise.services.decision.ranking import Ranking, rank_candidates, shown_count
from loopwise.services.decision.use_cases import UseCases
from loopwise.tensors import F32, I32, pack, unpack_matrix

# Seed streams of the decision service, derived from the shared seed.
_SEED_STREAM = 0xDEC1
_SHADOW_STREAM = 0xDEC2


class Delivery:
    """The decisions of one call, held until the call's fate is known, then logged:
    as served when its answer reached the transport, with ``undelivered`` set when it
    could not (its deadline passed first, or it failed). ``settle`` logs them once;
    the undelivered ones are also counted per use case in ``DecisionCore.undelivered``."""

    __slots__ = ("core", "held", "settled", "deadline")

    def __init__(self, core: DecisionCore) -> None:
        self.core = core
        self.held: list[tuple[str, int, int, Callable[[], list[fpb.DecisionRecord]] | None]] = []
        self.settled = False
        self.deadline: float | None = None  # the call's deadline, time.monotonic() seconds

    def hold(self, use_case: str, decisions: int, records: int,
             build: Callable[[], list[fpb.DecisionRecord]] | None) -> None:
        """Keep ``decisions`` served decisions (``records`` records with their shadows,
        built by ``build``; None when logging is off) until :meth:`settle`."""
        if self.settled:  # decided after the fate was known (not on any current path)
            self.core._submit(use_case, decisions, records, build, delivered=True)
            return
        self.held.append((use_case, decisions, records, build))

    def settle(self, delivered: bool, sent: bool = True) -> None:
        """Log what is held, as delivered or not (only the first call counts);
        ``sent=False``: the answer was not even sent (counted in ``DecisionCore.unsent``)."""
        if self.settled:
            return
        self.settled = True
        for use_case, decisions, records, build in self.held:
            if not sent:
                self.core.unsent[use_case] = self.core.unsent.get(use_case, 0) + decisions
            self.core._submit(use_case, decisions, records, build, delivered)
        self.held.clear()

    def on_done(self, _task: object = None) -> None:
        """The done callback of the call's task: delivered when the call ended before
        its deadline (``deadline``; None: the call had none)."""
        self.settle(self.deadline is None or time.monotonic() < self.deadline)


def _undelivered(build: Callable[[], list[fpb.DecisionRecord]]) -> Callable[[], list[fpb.DecisionRecord]]:
    def marked() -> list[fpb.DecisionRecord]:
        records = build()
        for record in records:
            record.undelivered = True
        return records

    return marked


@dataclass(frozen=True)
class OneRowPlan:
    """What a one-row Decide of a binary or regression use case version without arms
    needs, worked out once per version (:meth:`DecisionCore._plan`): the policy, its
    parameters as Python values, and the answer's constant fields as a template."""

    uc: UseCaseVersion
    binary: bool
    threshold: float
    epsilon: float
    policy: Policy
    template: dpb.DecideResponse  # use case, blueprint version, arm, production role

    @staticmethod
    def of(uc: UseCaseVersion) -> OneRowPlan | None:
        """The plan of ``uc``, or None when its Decide takes the general path."""
        b = uc.blueprint
        if b.kind not in (bp.DECISION_KIND_BINARY, bp.DECISION_KIND_REGRESSION) or b.arms:
            return None
        template = dpb.DecideResponse()
        d = template.decision
        d.use_case, d.blueprint_version, d.arm, d.deployment_role = uc.use_case, uc.version, DEFAULT_ARM, ROLE_PRODUCTION
        return OneRowPlan(uc, b.kind == bp.DECISION_KIND_BINARY, b.policy.threshold or 0.5, base_epsilon(b.policy),
                          Policy.of_blueprint(b.policy), template)


@dataclass(frozen=True, slots=True)
class Scored:
    """A one-row Decide request scored with others of its model
    (:meth:`DecisionCore.score_together`): its plan, its serving models, its encoded
    [1, F] row and the production model's score of it."""

    plan: OneRowPlan
    serving: Serving
    row: np.ndarray
    score: float


class DecisionCore:
    """Decide, DecideBatch and DecideStream logic for every use case."""

    def __init__(
        self,
        use_cases: UseCases,
        clock: Clock,
        seed: int,
        decision_log: DecisionLog,
        scorers: Mapping[str, Serving],
        max_batch_rows: int,
        max_candidates: int = 1000,
        pii_key: str = "",
    ) -> None:
        self.use_cases = use_cases
        self.clock = clock
        self.rng = np.random.default_rng([seed, _SEED_STREAM])
        self.shadow_rng = np.random.default_rng([seed, _SHADOW_STREAM])
        self.log = decision_log
        self.scorers = scorers
        self.max_batch_rows = max_batch_rows
        self.max_candidates = max_candidates
        # Personal data rules per blueprint version, applied to records before logging.
        self.pii_key = pii_key
        self._pii: dict[tuple[str, int], PiiRules] = {}
        self.served = 0
        self.budget_fallbacks = 0  # decisions defaulted because the latency budget was spent
        # One-row plans by (use case, version); checked against the version object.
        self._plans: dict[tuple[str, int], tuple[UseCaseVersion, OneRowPlan | None]] = {}
        # Decisions made whose answer could not reach the caller, by use case.
        self.undelivered: dict[str, int] = {}
        # Of those, the ones whose answer was not sent at all (ready too close to the
        # call's deadline): not in the served-decision metrics, which count answers.
        self.unsent: dict[str, int] = {}

    # -- shared steps -------------------------------------------------------------
    def _version(self, use_case: str, version: int) -> UseCaseVersion:
        uc = self.use_cases.find(use_case, version)  # a name held is well formed
        if uc is None:  # the name's or the version's error
            UseCases.check_name(use_case)
            uc = self.use_cases.get(use_case, version, "blueprint_version")
        self._check_live(uc)
        return uc

    def _check_live(self, uc: UseCaseVersion) -> None:
        """FAILED_PRECONDITION when the use case is archived."""
        if self.use_cases.archived(uc.use_case):
            raise FailedPrecondition(f"use case {uc.use_case!r} is archived")

    def _force_default(self, uc: UseCaseVersion, started: float | None) -> bool:
        """Kill switch on, or the use case's latency budget already spent."""
        if self.use_cases.kill_switch(uc.use_case):
            return True
        budget = uc.blueprint.latency_budget_ms
        if budget > 0 and started is not None and (time.perf_counter() - started) * 1000.0 > budget:
            self.budget_fallbacks += 1
            return True
        return False

    def _choose(self, uc: UseCaseVersion, rows: np.ndarray, unit_ids: Sequence[str],
                disable_exploration: bool, forced_arm: str, started: float | None,
                serving: Serving | None, force: bool | None = None) -> Choices:
        """Choices with their serving latency: the time from ``started`` (the request's
        arrival; now when None) to the end of the row's own model's scoring."""
        began = time.perf_counter() if started is None else started
        n = rows.shape[0]
        arms, eps = assign_arms(uc, unit_ids, n, self.rng, forced_arm)
        if force is None:
            force = self._force_default(uc, started)
        if serving is None or force:
            return _timed(decide_by_arm(uc, rows, arms, eps, None, self.rng, disable_exploration, force), began)
        if serving.canary is None or serving.canary_share <= 0:
            return _timed(decide_by_arm(uc, rows, arms, eps, serving.production, self.rng, disable_exploration,
                                      role=ROLE_PRODUCTION), began)
        mask = canary_mask(uc.use_case, unit_ids, n, serving.canary_share, self.rng)
        parts = []
        scoring = np.zeros(n)
        ready = time.perf_counter()
        for m, scorer, role in ((~mask, serving.production, ROLE_PRODUCTION), (mask, serving.canary, ROLE_CANARY)):
            index = np.flatnonzero(m)
            if index.size:
                at = time.perf_counter()
                parts.append((index, decide_by_arm(uc, rows[index], [arms[i] for i in index], eps[index],
                                                 scorer, self.rng, disable_exploration, role=role)))
                scoring[index] = time.perf_counter() - at
        choices = merge(parts, n, len(uc.actions), arms)
        # Each row waits for the request's preparation and its own model, not the other slot's.
        choices.latency_ms = (ready - began + scoring) * 1000.0
        return choices

    # -- Decide -------------------------------------------------------------------
    def delivery(self) -> Delivery:
        """A holder for one call's decisions (pass it to decide / decide_batch)."""
        return Delivery(self)

    def _submit(self, use_case: str, decisions: int, records: int,
                build: Callable[[], list[fpb.DecisionRecord]] | None, delivered: bool = True) -> None:
        """Hand records to the decision log (marked undelivered when they did not reach
        their caller)."""
        if not delivered:
            self.undelivered[use_case] = self.undelivered.get(use_case, 0) + decisions
        if build is not None:
            self.log.submit_lazy(records, build if delivered else _undelivered(build))

    def _hand(self, delivery: Delivery | None, use_case: str, decisions: int, records: int,
              build: Callable[[], list[fpb.DecisionRecord]] | None) -> None:
        if delivery is None:
            self._submit(use_case, decisions, records, build)
        else:
            delivery.hold(use_case, decisions, records, build)

    def decide(self, request: dpb.DecideRequest, started: float | None = None,
               delivery: Delivery | None = None) -> dpb.Decision:
        """One decision from named features (or a ranking of candidates). With
        ``delivery``, its record waits there until the call's fate is known."""
        return self.decide_response(request, started, delivery).decision

    def score_together(self, requests: Sequence[dpb.DecideRequest]) -> list[Scored | None]:
        """Score in one session run the requests among ``requests`` that share a
        production model and blueprint version and take the one-row path of
        :meth:`decide_response` (valid features, no arm asked for, no canary), when at
        least two do and the model scores rows alike alone and among others
        (``OnnxScorer.rows_score_alike``), in runs of at most ``ALIKE_PROBE_ROWS``.
        None for the rest, which :meth:`decide_response` scores alone. Each request
        then gets the decision it would get alone. Nothing here draws a random number
        or raises a request's error."""
        scored: list[Scored | None] = [None] * len(requests)
        groups: dict[tuple[int, int], tuple[OneRowPlan, Serving, list[int], list[list[float]]]] = {}
        for i, request in enumerate(requests):
            uc = self.use_cases.find(request.use_case, request.blueprint_version)
            if uc is None or request.candidates:
                continue
            serving = self.scorers.get(uc.use_case)
            if not _production_alone(serving, request) or not serving.production.rows_score_alike:  # type: ignore[union-attr]
                continue
            plan = self._plan(uc)
            values = named_values(uc, request.features) if plan is not None else None
            if plan is None or values is None:
                continue
            group = groups.get((id(serving), uc.version))
            if group is None:
                group = groups[(id(serving), uc.version)] = (plan, serving, [], [])
            group[2].append(i)
            group[3].append(values)
        for plan, serving, index, rows in groups.values():
            if len(index) < 2:
                continue
            for start in range(0, len(index), ALIKE_PROBE_ROWS):  # runs no longer than the probe's
                x = np.array(rows[start:start + ALIKE_PROBE_ROWS], dtype=np.float32)
                try:
                    scores = serving.production.score_rows(plan.uc, x)  # type: ignore[union-attr]
                except Exception:  # each is scored alone, and fails alone
                    continue
                for j, i in enumerate(index[start:start + ALIKE_PROBE_ROWS]):
                    scored[i] = Scored(plan, serving, x[j:j + 1], scores[j])
        return scored

    def decide_response(self, request: dpb.DecideRequest, started: float | None = None,
                        delivery: Delivery | None = None, scored: Scored | None = None) -> dpb.DecideResponse:
        """:meth:`decide`, answered as the ``DecideResponse`` it goes out in.

        The common call, one row of a binary or regression use case without arms served
        by its production model, takes a lean path (:meth:`_decide_one_row`): plain
        Python values after the model's one session run, the answer filled into a
        template of the version, the log record's arrays built later by the decision
        log's committer. Everything else takes the general, vectorised path. Both give
        the same decision, probabilities and logged record from the same random draws
        (tests/decision/test_lean_path.py).

        ``scored``: the request's row and score from :meth:`score_together`."""
        force = None
        if scored is not None:
            uc, serving, row = scored.plan.uc, scored.serving, scored.row
            self._check_live(uc)
            force = self._force_default(uc, started)
            if not force:
                return self._one_row_answer(scored.plan, request, row, scored.score,
                                            time.perf_counter() if started is None else started, serving, delivery)
        else:
            uc = self._version(request.use_case, request.blueprint_version)
            serving = self.scorers.get(uc.use_case)  # read once: a swap cannot split a request
            if uc.blueprint.kind == bp.DECISION_KIND_RANKING:
                return dpb.DecideResponse(decision=self._rank(uc, request, started, serving, delivery))
            if request.candidates:
                raise InvalidArgument("candidates", "only ranking use cases take candidates")
            row = encode_named(uc, request.features)[None, :]
            if _production_alone(serving, request):
                plan = self._plan(uc)
                if plan is not None:
                    force = self._force_default(uc, started)
                    if not force:
                        answer = self._decide_one_row(plan, request, row, started, serving, delivery)
                        if answer is not None:
                            return answer
        unit_ids = [request.unit_id]
        choices = self._choose(uc, row, unit_ids, request.disable_exploration, request.arm, started, serving, force)
        ids = self._ids(1)
        self._log(uc, row, unit_ids, choices, ids, serving, request.disable_exploration, delivery)
        return dpb.DecideResponse(decision=self._decision(uc, choices, 0, ids[0]))

    def _plan(self, uc: UseCaseVersion) -> OneRowPlan | None:
        key = (uc.use_case, uc.version)
        entry = self._plans.get(key)
        if entry is None or entry[0] is not uc:
            entry = self._plans[key] = (uc, OneRowPlan.of(uc))
        return entry[1]

    def _decide_one_row(self, plan: OneRowPlan, request: dpb.DecideRequest, row: np.ndarray,
                        started: float | None, serving: Serving, delivery: Delivery | None) -> dpb.DecideResponse | None:
        """The lean path of :meth:`decide_response`; None when the model cannot score
        the row (the general path then scores it again, logs why and falls back)."""
        assert serving.production is not None
        began = time.perf_counter() if started is None else started
        try:
            score = serving.production.score_one(plan.uc, row)
        except Exception:
            return None
        return self._one_row_answer(plan, request, row, score, began, serving, delivery)

    def _one_row_answer(self, plan: OneRowPlan, request: dpb.DecideRequest, row: np.ndarray, score: float,
                        began: float, serving: Serving, delivery: Delivery | None) -> dpb.DecideResponse:
        """The lean path's decision from the production model's ``score`` of ``row``
        (``began``: the request's arrival, perf_counter seconds; its latency runs to the
        policy's choice)."""
        uc = plan.uc
        scorer = serving.production
        assert scorer is not None
        n_actions = len(uc.actions)
        chosen, probabilities, explored, ok = choose_one(plan.binary, plan.threshold, n_actions, score, plan.epsilon,
                                                         plan.policy, request.disable_exploration, self.rng)
        latency_ms = (time.perf_counter() - began) * 1000.0
        model_version, role = scorer.version, ROLE_PRODUCTION
        if not ok:  # the default decision, as policy._apply_fallback makes it
            chosen, score, explored, model_version, role = uc.default_index, uc.blueprint.default_decision.score, \
                False, 0, ROLE_DEFAULT
            probabilities = [0.0] * n_actions
            probabilities[chosen] = 1.0
        self.served += 1
        decision_id, decision_ms = self.clock.new_id_ms()
        response = dpb.DecideResponse()
        response.CopyFrom(plan.template)
        d = response.decision
        d.decision_id = decision_id
        d.action = uc.actions[chosen]
        d.action_index = chosen
        d.score = score
        d.action_probabilities[:] = probabilities
        d.model_version = model_version
        d.explored = explored
        if not ok:
            d.fallback = True
            d.deployment_role = role
        when = d.decision_time
        when.seconds, when.nanos = decision_ms // 1000, decision_ms % 1000 * 1_000_000

        def choices() -> Choices:
            c = Choices(action_index=np.array([chosen], dtype=np.int32), score=np.array([score]), action_scores=None,
                        probabilities=np.array([probabilities]), explored=np.array([explored]),
                        fallback=np.array([not ok]), model_version=np.array([model_version], dtype=np.int64),
                        arms=[DEFAULT_ARM], roles=[role])
            c.latency_ms = np.array([latency_ms])
            return c

        self._log(uc, row, [request.unit_id], choices, [decision_id], serving, request.disable_exploration, delivery)
        return response

    def _rank(self, uc: UseCaseVersion, request: dpb.DecideRequest, started: float | None,
              serving: Serving | None, delivery: Delivery | None = None) -> dpb.Decision:
        candidates = request.candidates
        if not candidates:
            raise InvalidArgument("candidates", "a ranking use case needs at least one candidate")
        if len(candidates) > self.max_candidates:
            raise InvalidArgument("candidates", f"{len(candidates)} candidates exceed the limit of {self.max_candidates}")
        seen: set[str] = set()
        rows = np.empty((len(candidates), len(uc.feature_names)), dtype=np.float32)
        for i, candidate in enumerate(candidates):
            if not candidate.id:
                raise InvalidArgument(f"candidates[{i}].id", "required")
            if candidate.id in seen:
                raise InvalidArgument(f"candidates[{i}].id", f"duplicate candidate id {quote(candidate.id)}")
            seen.add(candidate.id)
            merged = dict(request.features)
            merged.update(candidate.features)
            rows[i] = encode_named(uc, merged, f"candidates[{i}].features")
        k = shown_count(uc, request.top_k, len(candidates))
        arms, eps = assign_arms(uc, [request.unit_id], 1, self.rng, request.arm)
        began = time.perf_counter() if started is None else started
        force = self._force_default(uc, started)
        scorer, role = None, ROLE_PRODUCTION
        if serving is not None and not force:
            scorer = serving.production
            if serving.canary is not None and canary_mask(uc.use_case, [request.unit_id], 1,
                                                          serving.canary_share, self.rng)[0]:
                scorer, role = serving.canary, ROLE_CANARY
        ranking = rank_candidates(uc, rows, k, arms[0], float(eps[0]), scorer, self.rng,
                                  request.disable_exploration, force, role)
        latency_ms = (time.perf_counter() - began) * 1000.0
        ids = self._ids(1)
        cand_ids = [c.id for c in candidates]
        build = None
        if self.log.enabled:
            unit_id = request.unit_id

            def build() -> list[fpb.DecisionRecord]:
                return [self._ranking_record(uc, rows, unit_id, ranking, ids[0], cand_ids, latency_ms)]
        self._hand(delivery, uc.use_case, 1, 1, build)
        return self._ranking_decision(uc, ranking, ids[0], cand_ids)

    # -- DecideBatch --------------------------------------------------------------
    def decide_batch(self, request: dpb.DecideBatchRequest, started: float | None = None,
                     delivery: Delivery | None = None) -> dpb.DecideBatchResponse:
        """Decisions for a packed [rows, F] float32 tensor, one scoring run per model
        (with ``delivery``: their records wait there until the call's fate is known)."""
        UseCases.check_name(request.use_case)
        if request.blueprint_version <= 0:
            raise InvalidArgument("blueprint_version", "required: the version whose feature order the tensor uses")
        uc = self._version(request.use_case, request.blueprint_version)
        ranking = uc.blueprint.kind == bp.DECISION_KIND_RANKING
        if not ranking and (request.candidate_counts or request.candidate_ids):
            raise InvalidArgument("candidate_counts", "only ranking use cases take candidate groups")
        if tuple(request.feature_names) != uc.feature_names:
            raise InvalidArgument(
                "feature_names", f"must equal blueprint v{uc.version}'s features in order: {list(uc.feature_names)}"
            )
        if request.rows < 0:
            raise InvalidArgument("rows", "must be >= 0")
        if request.rows > self.max_batch_rows:
            raise InvalidArgument("rows", f"{request.rows} rows exceed the limit of {self.max_batch_rows}")
        if request.unit_ids and len(request.unit_ids) != request.rows and not ranking:
            raise InvalidArgument("unit_ids", f"has {len(request.unit_ids)} ids for {request.rows} rows")
        matrix = unpack_matrix(request.features, request.rows, len(uc.feature_names), "features")
        rows = check_batch(uc, matrix)
        if ranking:
            return self._rank_batch(uc, request, rows, started, delivery)
        unit_ids = list(request.unit_ids)
        serving = self.scorers.get(uc.use_case)
        choices = self._choose(uc, rows, unit_ids, request.disable_exploration, "", started, serving)
        ids = self._ids(request.rows)
        self._log(uc, rows, unit_ids, choices, ids, serving, request.disable_exploration, delivery)
        return dpb.DecideBatchResponse(
            decision_ids=ids,
            action_indices=pack(choices.action_index, I32),
            scores=pack(choices.score, F32),
            action_probabilities=pack(choices.probabilities, F32),
            explored=choices.explored.astype(np.uint8).tobytes(),
            fallback=choices.fallback.astype(np.uint8).tobytes(),
            actions=uc.actions,
            model_version=int(choices.model_version.max(initial=0)),
            blueprint_version=uc.version,
            arms=choices.arms,
            deployment_roles=choices.roles,
            model_versions=choices.model_version.astype("<i8").tobytes(),
        )

    def _rank_batch(self, uc: UseCaseVersion, request: dpb.DecideBatchRequest, rows: np.ndarray,
                    started: float | None, delivery: Delivery | None) -> dpb.DecideBatchResponse:
        """Rankings of consecutive candidate groups of a batch (``candidate_counts``): each
        group is ranked and logged as one ``Decide`` with candidates would be (one scoring
        run per group)."""
        counts = list(request.candidate_counts)
        if not counts:
            raise InvalidArgument("candidate_counts", "required for a ranking use case: candidates per ranking")
        if any(c < 1 for c in counts):
            raise InvalidArgument("candidate_counts", "every ranking needs at least one candidate")
        if sum(counts) != request.rows:
            raise InvalidArgument("candidate_counts", f"sum to {sum(counts)} for {request.rows} rows")
        if max(counts) > self.max_candidates:
            raise InvalidArgument("candidate_counts", f"{max(counts)} candidates exceed the limit of "
                                                      f"{self.max_candidates}")
        if request.unit_ids and len(request.unit_ids) != len(counts):
            raise InvalidArgument("unit_ids", f"has {len(request.unit_ids)} ids for {len(counts)} rankings")
        if request.candidate_ids and len(request.candidate_ids) != request.rows:
            raise InvalidArgument("candidate_ids", f"has {len(request.candidate_ids)} ids for {request.rows} rows")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int).tolist()
        groups = []
        for g, (a, c) in enumerate(zip(starts, counts, strict=True)):
            ids = list(request.candidate_ids[a:a + c]) if request.candidate_ids else [str(i) for i in range(c)]
            if len(set(ids)) != c or not all(ids):
                raise InvalidArgument("candidate_ids", f"ranking {g}: candidate ids must be non-empty and unique")
            groups.append(ids)
        began = time.perf_counter() if started is None else started
        unit_ids = list(request.unit_ids)
        arms, eps = assign_arms(uc, unit_ids, len(counts), self.rng)
        serving = self.scorers.get(uc.use_case)
        force = self._force_default(uc, started)
        canary = canary_mask(uc.use_case, unit_ids, len(counts), serving.canary_share, self.rng) \
            if serving is not None and serving.canary is not None else np.zeros(len(counts), dtype=bool)
        rankings: list[Ranking] = []
        for g, (a, c) in enumerate(zip(starts, counts, strict=True)):
            scorer, role = None, ROLE_PRODUCTION
            if serving is not None and not force:
                scorer, role = (serving.canary, ROLE_CANARY) if canary[g] else (serving.production, ROLE_PRODUCTION)
            rankings.append(rank_candidates(uc, rows[a:a + c], shown_count(uc, request.top_k, c), arms[g],
                                            float(eps[g]), scorer, self.rng, request.disable_exploration, force, role))
        latency_ms = (time.perf_counter() - began) * 1000.0
        ids = self._ids(len(counts))
        build = None
        if self.log.enabled:
            def build() -> list[fpb.DecisionRecord]:
                return [self._ranking_record(uc, rows[a:a + c], unit_ids[g] if g < len(unit_ids) else "", r,
                                             ids[g], groups[g], latency_ms)
                        for g, (a, c, r) in enumerate(zip(starts, counts, rankings, strict=True))]
        self._hand(delivery, uc.use_case, len(ids), len(ids), build)
        ranked = np.concatenate([r.order for r in rankings]).astype(np.int32)
        propensities = np.concatenate([np.pad(r.propensities, (0, len(r.order) - r.shown)) for r in rankings])
        top = np.array([int(r.order[0]) for r in rankings], dtype=np.int32)
        scores = np.array([float(r.scores[t]) if r.scores is not None else uc.blueprint.default_decision.score
                           for r, t in zip(rankings, top, strict=True)])
        models = np.array([r.model_version for r in rankings], dtype=np.int64)
        return dpb.DecideBatchResponse(
            decision_ids=ids, action_indices=pack(top, I32), scores=pack(scores, F32),
            action_probabilities=pack(np.concatenate([r.top_probabilities for r in rankings]), F32),
            explored=np.array([r.explored for r in rankings], dtype=np.uint8).tobytes(),
            fallback=np.array([r.fallback for r in rankings], dtype=np.uint8).tobytes(),
            model_version=int(models.max(initial=0)), blueprint_version=uc.version,
            arms=[r.arm for r in rankings], deployment_roles=[r.role for r in rankings],
            model_versions=models.astype("<i8").tobytes(), ranked_indices=pack(ranked, I32),
            position_propensities=pack(propensities, F32),
            shown_counts=pack(np.array([r.shown for r in rankings], dtype=np.int32), I32),
        )

    # -- helpers ------------------------------------------------------------------
    def _ids(self, n: int) -> list[str]:
        self.served += n
        return [self.clock.new_id()] if n == 1 else self.clock.new_ids(n)

    def _decision(self, uc: UseCaseVersion, c: Choices, i: int, decision_id: str,
                  candidate_ids: Sequence[str] | None = None) -> dpb.Decision:
        index = int(c.action_index[i])
        decision = dpb.Decision(
            decision_id=decision_id, use_case=uc.use_case,
            action=candidate_ids[index] if candidate_ids is not None else uc.actions[index],
            action_index=index, score=float(c.score[i]),
            action_scores=c.action_scores[i].tolist() if c.action_scores is not None and not c.fallback[i] else [],
            action_probabilities=c.probabilities[i].tolist(),
            model_version=int(c.model_version[i]), blueprint_version=uc.version, arm=c.arms[i],
            explored=bool(c.explored[i]), fallback=bool(c.fallback[i]), deployment_role=c.roles[i],
        )
        decision.decision_time.FromMilliseconds(uuid7_time_ms(decision_id) or self.clock.now_ms())
        return decision

    def _log(self, uc: UseCaseVersion, rows: np.ndarray, unit_ids: Sequence[str],
             choices: Choices | Callable[[], Choices], ids: list[str], serving: Serving | None,
             disable_exploration: bool, delivery: Delivery | None = None) -> None:
        """Enqueue a compact tuple; the shipper calls the builder (protos, shadows).
        ``choices``: the decisions, or a function that builds them then."""
        if not self.log.enabled:
            self._hand(delivery, uc.use_case, len(ids), 0, None)
            return
        shadows = serving.shadows if serving is not None and not self.use_cases.kill_switch(uc.use_case) else ()
        unit_ids = list(unit_ids)

        def build() -> list[fpb.DecisionRecord]:
            c = choices if isinstance(choices, Choices) else choices()
            records = self._records(uc, rows, unit_ids, c, ids)
            for shadow in shadows:
                sc = decide_by_arm(uc, rows, c.arms, np.zeros(len(ids)), shadow, self.shadow_rng,
                                 disable_exploration, role=ROLE_SHADOW)
                shadow_ids = self.clock.new_ids(len(ids))
                for record in self._records(uc, rows, unit_ids, sc, shadow_ids):
                    record.shadow = True
                    records.append(record)
            return records

        self._hand(delivery, uc.use_case, len(ids), len(ids) * (1 + len(shadows)), build)

    def _records(self, uc: UseCaseVersion, rows: np.ndarray, unit_ids: Sequence[str], c: Choices,
                 ids: list[str]) -> list[fpb.DecisionRecord]:
        features = np.ascontiguousarray(rows, dtype=F32)
        probabilities = c.probabilities.tolist()
        action_scores = c.action_scores.tolist() if c.action_scores is not None else None
        out = []
        for i, decision_id in enumerate(ids):
            index = int(c.action_index[i])
            fallback = bool(c.fallback[i])
            out.append(fpb.DecisionRecord(
                decision_id=decision_id, use_case=uc.use_case, blueprint_version=uc.version,
                unit_id=unit_ids[i] if i < len(unit_ids) else "",
                features=features[i].tobytes(), action_index=index, action=uc.actions[index],
                score=float(c.score[i]), action_probabilities=probabilities[i],
                model_version=int(c.model_version[i]), arm=c.arms[i],
                explored=bool(c.explored[i]), fallback=fallback,
                action_scores=action_scores[i] if action_scores is not None and not fallback else [],
                deployment_role=c.roles[i], serving_latency_ms=_latency(c, i),
            ))
        self._private(uc, out)
        return out

    def _private(self, uc: UseCaseVersion, records: list[fpb.DecisionRecord]) -> None:
        """Apply the blueprint's personal data rules before the records leave."""
        rules = self._pii.get((uc.use_case, uc.version))
        if rules is None:
            rules = self._pii[(uc.use_case, uc.version)] = PiiRules.of(uc.stored.blueprint)
        rules.apply(records, self.pii_key)

    def _ranking_decision(self, uc: UseCaseVersion, r: Ranking, decision_id: str,
                          candidate_ids: list[str]) -> dpb.Decision:
        """A ranking's answer: the top item as the action, the whole order, and the
        shown positions' propensities (``action_probabilities``: every candidate's
        probability of the first position, in request order)."""
        top = int(r.order[0])
        decision = dpb.Decision(
            decision_id=decision_id, use_case=uc.use_case, action=candidate_ids[top], action_index=top,
            score=float(r.scores[top]) if r.scores is not None else uc.blueprint.default_decision.score,
            action_scores=r.scores.tolist() if r.scores is not None else [],
            action_probabilities=r.top_probabilities.tolist(), model_version=r.model_version,
            blueprint_version=uc.version, arm=r.arm, explored=r.explored, fallback=r.fallback,
            deployment_role=r.role, ranked_candidate_ids=[candidate_ids[int(i)] for i in r.order],
            position_propensities=r.propensities.tolist(), ranking_probability=r.probability,
        )
        decision.decision_time.FromMilliseconds(uuid7_time_ms(decision_id) or self.clock.now_ms())
        return decision

    def _ranking_record(self, uc: UseCaseVersion, rows: np.ndarray, unit_id: str, r: Ranking,
                        decision_id: str, candidate_ids: list[str], latency_ms: float) -> fpb.DecisionRecord:
        """A ranking's record: the top item as the action (``features`` its row), and
        every candidate as a :class:`RankedItem` with its row, its shown position (0:
        not shown) and its position's propensity; ``action_probabilities`` are every
        candidate's probability of the first position."""
        top = int(r.order[0])
        features = np.ascontiguousarray(rows, dtype=F32)
        positions = r.positions().tolist()
        propensities = r.candidate_propensities().tolist()
        scores = r.scores.tolist() if r.scores is not None else [0.0] * len(candidate_ids)
        record = fpb.DecisionRecord(
            decision_id=decision_id, use_case=uc.use_case, blueprint_version=uc.version, unit_id=unit_id,
            features=features[top].tobytes(), action_index=top, action=candidate_ids[top],
            score=float(r.scores[top]) if r.scores is not None else uc.blueprint.default_decision.score,
            action_probabilities=r.top_probabilities.tolist(), model_version=r.model_version, arm=r.arm,
            explored=r.explored, fallback=r.fallback,
            action_scores=r.scores.tolist() if r.scores is not None else [],
            deployment_role=r.role, serving_latency_ms=latency_ms,
            ranked_items=[fpb.RankedItem(item_id=candidate_ids[i], position=positions[i],
                                         features=features[i].tobytes(), propensity=propensities[i],
                                         score=scores[i]) for i in range(len(candidate_ids))],
            ranking_probability=r.probability,
        )
        self._private(uc, [record])
        return record


def _production_alone(serving: Serving | None, request: dpb.DecideRequest) -> bool:
    """Whether ``request`` is served by its production model alone: one is deployed,
    no canary takes a share of units, and the request forces no experiment arm."""
    return serving is not None and serving.production is not None and not request.arm \
        and (serving.canary is None or serving.canary_share <= 0)


def _timed(choices: Choices, began: float) -> Choices:
    """Choices whose rows all took the time since ``began`` (perf_counter seconds)."""
    choices.latency_ms = np.full(choices.rows, (time.perf_counter() - began) * 1000.0)
    return choices


def _latency(c: Choices, i: int) -> float:
    """Row ``i``'s serving latency in ms (0 when not measured, e.g. shadow scoring)."""
    return float(c.latency_ms[i]) if c.latency_ms is not None else 0.0
