"""The client SDK: how a product backend calls loopwise.

:class:`Client` (blocking) and :class:`AsyncClient` (``grpc.aio``) wrap the decision
and feedback services with a default deadline, retries with backoff on UNAVAILABLE
only, and a local fallback: when the decision service cannot be reached (UNAVAILABLE
or DEADLINE_EXCEEDED after the retries) ``decide`` returns the use case's default
decision, flagged ``fallback=True``, with a locally generated UUIDv7 id. The default
is learned from ``GetUseCase`` at the first successful contact with a use case and
cached, or given by the caller (``defaults={"checkout_upsell": "no_offer"}``)::

    with loopwise.Client() as client:
        decision = client.decide("checkout_upsell", {"basket_value": 42.0, "region": "north"})
        ...
        client.log_outcome("checkout_upsell", decision.decision_id, "o-1", "purchase", 35.7)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import grpc
import numpy as np

from loopwise import security, tracing
from loopwise.clock import Clock, uuid7_time_ms
from loopwise.common.v1 import blueprint_pb2
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.decision.v1 import decision_service_pb2_grpc as dgrpc
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.feedback.v1 import feedback_service_pb2_grpc as fgrpc
from loopwise.server import channel_options
from loopwise.settings import Settings, get_settings
from loopwise.tensors import F32, I32, pack, unpack_vector

__all__ = [
    "AsyncClient",
    "BatchDecisions",
    "Client",
    "Decision",
    "DecisionUnavailable",
    "Outcome",
    "UseCaseDefault",
]

# Codes after which the decision service is treated as unreachable.
_UNREACHABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
# Bulk calls (batches, outcomes, use cases) get at least this deadline.
_BULK_DEADLINE_S = 30.0
_BACKOFF_S = 0.05


@dataclass(frozen=True)
class Decision:
    """One decision, as returned by ``decide``.

    ``probabilities`` maps every action to its probability under the policy that
    chose; ``fallback`` is set when the default decision was returned (by the service,
    or locally by the SDK when loopwise could not be reached).
    """

    decision_id: str
    use_case: str
    action: str
    action_index: int
    score: float
    probabilities: dict[str, float]
    model_version: int
    blueprint_version: int
    arm: str
    explored: bool
    fallback: bool
    action_scores: dict[str, float] = field(default_factory=dict)

    @property
    def decision_time_ms(self) -> int:
        """The decision time (the UUIDv7 timestamp) in ms since the epoch."""
        return uuid7_time_ms(self.decision_id) or 0


@dataclass(frozen=True)
class BatchDecisions:
    """Columnar result of ``decide_batch``: entry i of every column is row i."""

    decision_ids: list[str]
    actions: list[str]
    action_indices: np.ndarray
    scores: np.ndarray
    probabilities: np.ndarray
    explored: np.ndarray
    fallback: np.ndarray
    arms: list[str]
    model_version: int
    blueprint_version: int

    def __len__(self) -> int:
        return len(self.decision_ids)

    @property
    def chosen(self) -> list[str]:
        """The chosen action name of every row."""
        return [self.actions[i] for i in self.action_indices]


@dataclass(frozen=True)
class Outcome:
    """An outcome to log; ``event_time`` is a datetime or epoch seconds (None: server now)."""

    use_case: str
    decision_id: str
    outcome_id: str
    name: str
    value: float = 1.0
    label: str = ""
    event_time: datetime | float | None = None

    def to_proto(self) -> fpb.Outcome:
        """The wire message."""
        message = fpb.Outcome(use_case=self.use_case, decision_id=self.decision_id,
                              outcome_id=self.outcome_id, name=self.name,
                              value=float(self.value), label=self.label)
        if isinstance(self.event_time, datetime):
            message.event_time.FromDatetime(self.event_time)
        elif self.event_time is not None:
            message.event_time.FromMilliseconds(int(round(float(self.event_time) * 1000)))
        return message


@dataclass(frozen=True)
class UseCaseDefault:
    """What the SDK needs to answer locally for a use case."""

    action: str
    score: float = 0.0
    actions: tuple[str, ...] = ()
    blueprint_version: int = 0


class DecisionUnavailable(RuntimeError):
    """Raised when loopwise cannot be reached and no default decision is known."""


def _outcome_proto(item: Outcome | fpb.Outcome | Mapping[str, Any]) -> fpb.Outcome:
    if isinstance(item, fpb.Outcome):
        return item
    if isinstance(item, Outcome):
        return item.to_proto()
    return Outcome(**dict(item)).to_proto()


def _feature_value(value: Any) -> dpb.FeatureValue:
    if value is None:
        return dpb.FeatureValue()
    if isinstance(value, str):
        return dpb.FeatureValue(category=value)
    if isinstance(value, bool | int | float | np.integer | np.floating):
        return dpb.FeatureValue(number=float(value))
    raise TypeError(f"feature value {value!r}: expected a number, a string or None")


def _decide_request(use_case: str, features: Mapping[str, Any], unit_id: str,
                    disable_exploration: bool) -> dpb.DecideRequest:
    return dpb.DecideRequest(
        use_case=use_case, unit_id=unit_id, disable_exploration=disable_exploration,
        features={name: _feature_value(v) for name, v in features.items()},
    )


def _decision_from_proto(d: dpb.Decision, actions: Sequence[str]) -> Decision:
    names = list(actions)
    if len(names) != len(d.action_probabilities):
        names = [d.action] if len(d.action_probabilities) == 1 else [
            str(i) for i in range(len(d.action_probabilities))]
    return Decision(
        decision_id=d.decision_id, use_case=d.use_case, action=d.action,
        action_index=d.action_index, score=d.score,
        probabilities=dict(zip(names, map(float, d.action_probabilities), strict=True)),
        model_version=d.model_version, blueprint_version=d.blueprint_version, arm=d.arm,
        explored=d.explored, fallback=d.fallback,
        action_scores=dict(zip(names, map(float, d.action_scores), strict=False)),
    )


def _batch_request(use_case: str, blueprint_version: int, feature_names: Sequence[str],
                   matrix: np.ndarray, unit_ids: Sequence[str] | None,
                   disable_exploration: bool) -> dpb.DecideBatchRequest:
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[1] != len(feature_names):
        raise ValueError(f"matrix shape {matrix.shape} does not match {len(feature_names)} feature names")
    if unit_ids is not None and len(unit_ids) != matrix.shape[0]:
        raise ValueError(f"{len(unit_ids)} unit ids for {matrix.shape[0]} rows")
    return dpb.DecideBatchRequest(
        use_case=use_case, blueprint_version=blueprint_version, rows=matrix.shape[0],
        feature_names=list(feature_names), features=pack(matrix, F32),
        unit_ids=list(unit_ids or []), disable_exploration=disable_exploration,
    )


def _batch_from_proto(reply: dpb.DecideBatchResponse) -> BatchDecisions:
    rows = len(reply.decision_ids)
    n_actions = len(reply.actions)
    probabilities = unpack_vector(reply.action_probabilities, F32)
    return BatchDecisions(
        decision_ids=list(reply.decision_ids), actions=list(reply.actions),
        action_indices=unpack_vector(reply.action_indices, I32).copy(),
        scores=unpack_vector(reply.scores, F32).copy(),
        probabilities=probabilities.reshape(rows, n_actions).copy() if n_actions else
        np.zeros((rows, 0), np.float32),
        explored=np.frombuffer(reply.explored, np.uint8).astype(bool),
        fallback=np.frombuffer(reply.fallback, np.uint8).astype(bool),
        arms=list(reply.arms), model_version=reply.model_version,
        blueprint_version=reply.blueprint_version,
    )


class _ClientBase:
    """What the blocking and asyncio clients share: settings, defaults, fallbacks."""

    def __init__(self, decision_address: str | None, feedback_address: str | None,
                 deadline_s: float | None, retries: int | None, settings: Settings | None,
                 defaults: Mapping[str, str] | None) -> None:
        self.settings = settings or get_settings()
        self.decision_address = decision_address or self.settings.decision_address
        self.feedback_address = feedback_address or self.settings.feedback_address
        self.deadline_s = self.settings.client_deadline_s if deadline_s is None else deadline_s
        self.retries = self.settings.client_retries if retries is None else max(0, retries)
        self.clock = Clock.from_settings(self.settings)
        self._given_defaults = dict(defaults or {})
        self._learned: dict[str, UseCaseDefault] = {}

    @property
    def _bulk_deadline_s(self) -> float:
        return max(self.deadline_s, _BULK_DEADLINE_S)

    @staticmethod
    def _backoff(attempt: int) -> float:
        return _BACKOFF_S * (2**attempt)

    def _learn(self, use_case: dpb.UseCase) -> None:
        blueprint = use_case.blueprint
        self._learned[blueprint.use_case] = UseCaseDefault(
            action=blueprint.default_decision.action,
            score=blueprint.default_decision.score,
            actions=tuple(blueprint.actions),
            blueprint_version=use_case.version,
        )

    def default_for(self, use_case: str) -> UseCaseDefault | None:
        """The default decision the SDK would answer with locally, if known."""
        learned = self._learned.get(use_case)
        given = self._given_defaults.get(use_case)
        if given is not None:
            actions = learned.actions if learned and given in learned.actions else (given,)
            return UseCaseDefault(action=given, actions=actions)
        return learned

    def _local_decision(self, use_case: str, error: grpc.RpcError) -> Decision:
        default = self.default_for(use_case)
        if default is None:
            raise DecisionUnavailable(
                f"loopwise unreachable ({error.code().name}) and no default decision "
                f"known for use case {use_case!r}") from error
        actions = default.actions or (default.action,)
        return Decision(
            decision_id=self.clock.new_id(), use_case=use_case, action=default.action,
            action_index=actions.index(default.action), score=default.score,
            probabilities={a: 1.0 if a == default.action else 0.0 for a in actions},
            model_version=0, blueprint_version=default.blueprint_version, arm="",
            explored=False, fallback=True,
        )

    def _local_batch(self, use_case: str, rows: int, error: grpc.RpcError) -> BatchDecisions:
        default = self.default_for(use_case)
        if default is None:
            raise DecisionUnavailable(
                f"loopwise unreachable ({error.code().name}) and no default decision "
                f"known for use case {use_case!r}") from error
        actions = list(default.actions or (default.action,))
        index = actions.index(default.action)
        probabilities = np.zeros((rows, len(actions)), np.float32)
        probabilities[:, index] = 1.0
        return BatchDecisions(
            decision_ids=[self.clock.new_id() for _ in range(rows)], actions=actions,
            action_indices=np.full(rows, index, np.int32),
            scores=np.full(rows, default.score, np.float32), probabilities=probabilities,
            explored=np.zeros(rows, bool), fallback=np.ones(rows, bool), arms=[""] * rows,
            model_version=0, blueprint_version=default.blueprint_version,
        )

    def _actions_of(self, use_case: str) -> tuple[str, ...]:
        learned = self._learned.get(use_case)
        return learned.actions if learned else ()


def _decision_for_reply(reply: dpb.DecideResponse, known_actions: Sequence[str]) -> Decision:
    d = reply.decision
    actions = known_actions
    if len(actions) != len(d.action_probabilities) or (
        d.action_index < len(actions) and actions[d.action_index] != d.action
    ):
        actions = []
    return _decision_from_proto(d, actions)


class Client(_ClientBase):
    """Blocking client for the decision and feedback services.

    Args:
        decision_address: ``host:port`` of the decision service (settings default).
        feedback_address: ``host:port`` of the feedback service (settings default).
        deadline_s: deadline of one ``decide`` attempt (``client_deadline_s``).
        retries: extra attempts after UNAVAILABLE (``client_retries``).
        settings: settings to read defaults from (``get_settings()``).
        defaults: default action per use case for the local fallback.
    """

    def __init__(self, decision_address: str | None = None, feedback_address: str | None = None,
                 deadline_s: float | None = None, retries: int | None = None,
                 settings: Settings | None = None, defaults: Mapping[str, str] | None = None) -> None:
        super().__init__(decision_address, feedback_address, deadline_s, retries, settings, defaults)
        options = channel_options(self.settings)
        # The caller's trace context (if it traces) goes with each call.
        self._decision_channel = tracing.with_caller_context(
            security.sync_channel(self.settings, self.decision_address, options))
        self._feedback_channel = tracing.with_caller_context(
            security.sync_channel(self.settings, self.feedback_address, options))
        self.decision_stub = dgrpc.DecisionServiceStub(self._decision_channel)
        self.feedback_stub = fgrpc.FeedbackServiceStub(self._feedback_channel)

    def _call(self, method: Any, request: Any, timeout: float) -> Any:
        """One RPC with the deadline, retried with backoff on UNAVAILABLE only."""
        for attempt in range(self.retries + 1):
            try:
                return method(request, timeout=timeout)
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE or attempt == self.retries:
                    raise
                time.sleep(self._backoff(attempt))
        raise AssertionError("unreachable")

    def _remember(self, use_case: str) -> None:
        """Learn the default decision at the first successful contact (best effort)."""
        if use_case in self._learned:
            return
        try:
            self.get_use_case(use_case)
        except grpc.RpcError:
            pass

    def decide(self, use_case: str, features: Mapping[str, Any], unit_id: str = "",
               disable_exploration: bool = False) -> Decision:
        """Decide for one unit from named features (numbers, category strings, None).

        Falls back to the default decision when loopwise cannot be reached; raises
        ``grpc.RpcError`` for other errors (bad input, unknown use case).
        """
        request = _decide_request(use_case, features, unit_id, disable_exploration)
        try:
            reply = self._call(self.decision_stub.Decide, request, self.deadline_s)
        except grpc.RpcError as error:
            if error.code() in _UNREACHABLE:
                return self._local_decision(use_case, error)
            raise
        self._remember(use_case)
        return _decision_for_reply(reply, self._actions_of(use_case))

    def decide_batch(self, use_case: str, blueprint_version: int, feature_names: Sequence[str],
                     matrix: np.ndarray, unit_ids: Sequence[str] | None = None,
                     disable_exploration: bool = False) -> BatchDecisions:
        """Decide for many units: ``matrix`` is [rows, features] (packed as float32 LE).

        Categorical columns hold vocabulary codes of ``blueprint_version`` (-1 unknown).
        """
        request = _batch_request(use_case, blueprint_version, feature_names, matrix,
                                 unit_ids, disable_exploration)
        try:
            reply = self._call(self.decision_stub.DecideBatch, request, self._bulk_deadline_s)
        except grpc.RpcError as error:
            if error.code() in _UNREACHABLE:
                return self._local_batch(use_case, request.rows, error)
            raise
        self._remember(use_case)
        return _batch_from_proto(reply)

    def log_outcome(self, use_case: str, decision_id: str, outcome_id: str, name: str,
                    value: float = 1.0, label: str = "",
                    event_time: datetime | float | None = None) -> fpb.LogOutcomesResponse:
        """Log one outcome (idempotent on ``outcome_id``)."""
        return self.log_outcomes([Outcome(use_case, decision_id, outcome_id, name, value, label,
                                          event_time)])

    def log_outcomes(self, outcomes: Iterable[Outcome | fpb.Outcome | Mapping[str, Any]],
                     batch_size: int = 5000) -> fpb.LogOutcomesResponse:
        """Log outcomes in batches; returns the summed counts."""
        total = fpb.LogOutcomesResponse()
        messages = [_outcome_proto(o) for o in outcomes]
        for start in range(0, len(messages), batch_size):
            request = fpb.LogOutcomesRequest(request_id=self.clock.new_id(),
                                             outcomes=messages[start:start + batch_size])
            reply = self._call(self.feedback_stub.LogOutcomes, request, self._bulk_deadline_s)
            total.accepted += reply.accepted
            total.duplicates += reply.duplicates
            total.orphans += reply.orphans
        return total

    def apply_use_case(self, blueprint: blueprint_pb2.Blueprint, validate_only: bool = False,
                       author: str = "", reason: str = "") -> dpb.ApplyUseCaseResponse:
        """Create or update a use case from a blueprint (or only validate it)."""
        request = dpb.ApplyUseCaseRequest(request_id=self.clock.new_id(), blueprint=blueprint,
                                          validate_only=validate_only, author=author, reason=reason)
        reply = self._call(self.decision_stub.ApplyUseCase, request, self._bulk_deadline_s)
        if not validate_only:
            self._learn(reply.use_case)
        return reply

    def get_use_case(self, use_case: str, version: int = 0) -> dpb.UseCase:
        """A use case (latest or a given blueprint version); caches its default decision."""
        reply = self._call(self.decision_stub.GetUseCase,
                           dpb.GetUseCaseRequest(use_case=use_case, version=version),
                           self._bulk_deadline_s)
        if version == 0:
            self._learn(reply.use_case)
        return reply.use_case

    def list_use_cases(self) -> list[dpb.UseCase]:
        """The latest version of every use case."""
        found: list[dpb.UseCase] = []
        token = ""
        while True:
            reply = self._call(self.decision_stub.ListUseCases,
                               dpb.ListUseCasesRequest(page_token=token), self._bulk_deadline_s)
            found.extend(reply.use_cases)
            token = reply.next_page_token
            if not token:
                return found

    def get_stats(self, use_case: str) -> fpb.GetStatsResponse:
        """Decision and outcome counts of a use case (from the feedback service)."""
        return self._call(self.feedback_stub.GetStats, fpb.GetStatsRequest(use_case=use_case),
                          self._bulk_deadline_s)

    def rollback_use_case(self, use_case: str, to_version: int, reason: str = "",
                          author: str = "") -> dpb.UseCase:
        """Make an earlier blueprint version current again (as a new version)."""
        request = dpb.RollbackUseCaseRequest(request_id=self.clock.new_id(), use_case=use_case,
                                             to_version=to_version, reason=reason, author=author)
        return self._call(self.decision_stub.RollbackUseCase, request, self._bulk_deadline_s).use_case

    def set_kill_switch(self, use_case: str, enabled: bool, reason: str = "",
                        author: str = "") -> dpb.UseCase:
        """Force (or stop forcing) the default decision for a use case."""
        request = dpb.SetKillSwitchRequest(request_id=self.clock.new_id(), use_case=use_case,
                                           enabled=enabled, reason=reason, author=author)
        return self._call(self.decision_stub.SetKillSwitch, request, self._bulk_deadline_s).use_case

    def archive_use_case(self, use_case: str, archived: bool = True, reason: str = "",
                         author: str = "") -> dpb.UseCase:
        """Archive a use case (decisions refused, hidden from lists), or restore it."""
        request = dpb.ArchiveUseCaseRequest(request_id=self.clock.new_id(), use_case=use_case,
                                            archived=archived, reason=reason, author=author)
        return self._call(self.decision_stub.ArchiveUseCase, request, self._bulk_deadline_s).use_case

    def use_case_changes(self, use_case: str) -> list[dpb.UseCaseChange]:
        """The audit trail of a use case: who changed what, when and why."""
        reply = self._call(self.decision_stub.ListUseCaseChanges,
                           dpb.ListUseCaseChangesRequest(use_case=use_case), self._bulk_deadline_s)
        return list(reply.changes)

    def close(self) -> None:
        """Close the channels."""
        self._decision_channel.close()
        self._feedback_channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_ClientBase):
    """The asyncio variant of :class:`Client` (``grpc.aio``), with the same methods."""

    def __init__(self, decision_address: str | None = None, feedback_address: str | None = None,
                 deadline_s: float | None = None, retries: int | None = None,
                 settings: Settings | None = None, defaults: Mapping[str, str] | None = None) -> None:
        super().__init__(decision_address, feedback_address, deadline_s, retries, settings, defaults)
        options = channel_options(self.settings)
        self._decision_channel = security.aio_channel(self.settings, self.decision_address, options,
                                                      tracing.caller_interceptors())
        self._feedback_channel = security.aio_channel(self.settings, self.feedback_address, options,
                                                      tracing.caller_interceptors())
        self.decision_stub = dgrpc.DecisionServiceStub(self._decision_channel)
        self.feedback_stub = fgrpc.FeedbackServiceStub(self._feedback_channel)

    async def _call(self, method: Any, request: Any, timeout: float) -> Any:
        """One RPC with the deadline, retried with backoff on UNAVAILABLE only."""
        for attempt in range(self.retries + 1):
            try:
                return await method(request, timeout=timeout)
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE or attempt == self.retries:
                    raise
                await asyncio.sleep(self._backoff(attempt))
        raise AssertionError("unreachable")

    async def _remember(self, use_case: str) -> None:
        if use_case in self._learned:
            return
        try:
            await self.get_use_case(use_case)
        except grpc.RpcError:
            pass

    async def decide(self, use_case: str, features: Mapping[str, Any], unit_id: str = "",
                     disable_exploration: bool = False) -> Decision:
        """See :meth:`Client.decide`."""
        request = _decide_request(use_case, features, unit_id, disable_exploration)
        try:
            reply = await self._call(self.decision_stub.Decide, request, self.deadline_s)
        except grpc.RpcError as error:
            if error.code() in _UNREACHABLE:
                return self._local_decision(use_case, error)
            raise
        await self._remember(use_case)
        return _decision_for_reply(reply, self._actions_of(use_case))

    async def decide_batch(self, use_case: str, blueprint_version: int,
                           feature_names: Sequence[str], matrix: np.ndarray,
                           unit_ids: Sequence[str] | None = None,
                           disable_exploration: bool = False) -> BatchDecisions:
        """See :meth:`Client.decide_batch`."""
        request = _batch_request(use_case, blueprint_version, feature_names, matrix,
                                 unit_ids, disable_exploration)
        try:
            reply = await self._call(self.decision_stub.DecideBatch, request, self._bulk_deadline_s)
        except grpc.RpcError as error:
            if error.code() in _UNREACHABLE:
                return self._local_batch(use_case, request.rows, error)
            raise
        await self._remember(use_case)
        return _batch_from_proto(reply)

    async def log_outcome(self, use_case: str, decision_id: str, outcome_id: str, name: str,
                          value: float = 1.0, label: str = "",
                          event_time: datetime | float | None = None) -> fpb.LogOutcomesResponse:
        """See :meth:`Client.log_outcome`."""
        return await self.log_outcomes([Outcome(use_case, decision_id, outcome_id, name, value,
                                                label, event_time)])

    async def log_outcomes(self, outcomes: Iterable[Outcome | fpb.Outcome | Mapping[str, Any]],
                           batch_size: int = 5000) -> fpb.LogOutcomesResponse:
        """See :meth:`Client.log_outcomes`."""
        total = fpb.LogOutcomesResponse()
        messages = [_outcome_proto(o) for o in outcomes]
        for start in range(0, len(messages), batch_size):
            request = fpb.LogOutcomesRequest(request_id=self.clock.new_id(),
                                             outcomes=messages[start:start + batch_size])
            reply = await self._call(self.feedback_stub.LogOutcomes, request, self._bulk_deadline_s)
            total.accepted += reply.accepted
            total.duplicates += reply.duplicates
            total.orphans += reply.orphans
        return total

    async def apply_use_case(self, blueprint: blueprint_pb2.Blueprint, validate_only: bool = False,
                             author: str = "", reason: str = "") -> dpb.ApplyUseCaseResponse:
        """See :meth:`Client.apply_use_case`."""
        request = dpb.ApplyUseCaseRequest(request_id=self.clock.new_id(), blueprint=blueprint,
                                          validate_only=validate_only, author=author, reason=reason)
        reply = await self._call(self.decision_stub.ApplyUseCase, request, self._bulk_deadline_s)
        if not validate_only:
            self._learn(reply.use_case)
        return reply

    async def get_use_case(self, use_case: str, version: int = 0) -> dpb.UseCase:
        """See :meth:`Client.get_use_case`."""
        reply = await self._call(self.decision_stub.GetUseCase,
                                 dpb.GetUseCaseRequest(use_case=use_case, version=version),
                                 self._bulk_deadline_s)
        if version == 0:
            self._learn(reply.use_case)
        return reply.use_case

    async def get_stats(self, use_case: str) -> fpb.GetStatsResponse:
        """See :meth:`Client.get_stats`."""
        return await self._call(self.feedback_stub.GetStats,
                                fpb.GetStatsRequest(use_case=use_case), self._bulk_deadline_s)

    async def close(self) -> None:
        """Close the channels."""
        await self._decision_channel.close()
        await self._feedback_channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

