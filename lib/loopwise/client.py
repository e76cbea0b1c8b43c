"""The client SDK: how a product backend calls loopwise.

:class:`Client` (blocking) and :class:`AsyncClient` (``grpc.aio``) wrap the four
services with the same methods, one per RPC (streams as iterators). Every call has a
deadline, which bounds the call and its retries together: a default (decisions:
``client_deadline_s``; bulk, trainer and evaluator calls at least 30 s; analyses at
least 300 s), or the ``timeout=`` given to the method. A failed call raises the error
class of its status code (:mod:`loopwise.client_errors`: ``loopwise.NotFound``,
``loopwise.InvalidArgument`` with ``field_violations``...), which is a
``grpc.RpcError`` too.

Retries: UNAVAILABLE is retried by gRPC's own retry policy, set in the service config
of every SDK channel (exponential backoff with jitter, ``grpc-retry-pushback-ms``
honoured, within the deadline); RESOURCE_EXHAUSTED only when it carries retry pushback
(a server shedding load, docs/architecture.md §6, or a rate limit), by a few lines of
the SDK's own (:func:`_retry_delay` says what the retry policy cannot express); no
other code is retried (INVALID_ARGUMENT, NOT_FOUND, ...). And a local fallback: when
the decision service cannot be reached or is shedding load (UNAVAILABLE,
DEADLINE_EXCEEDED, or RESOURCE_EXHAUSTED with pushback, after the retries) ``decide``
returns the use case's default decision, flagged ``fallback=True``, with a locally
generated UUIDv7 id. The default is learned from ``GetUseCase`` at the first successful
contact with a use case and cached, or given by the caller
(``defaults={"checkout_upsell": "no_offer"}``)::

    with loopwise.Client() as client:
        decision = client.decide("checkout_upsell", {"basket_value": 42.0, "region": "north"})
        ...
        client.log_outcome("checkout_upsell", decision.decision_id, "o-1", "purchase", 35.7)

The trainer and the evaluator (training, models, deployments, effect reports, policy
values, tuning) are reached over channels opened at their first use, so a client
that only decides opens no extra connection. Long jobs return an operation to
follow with ``wait_operation``::

    operation = client.wait_operation(client.start_training("checkout_upsell"), timeout=600)
    model = operation_result(operation).model
    effects = client.wait_operation(client.estimate_effects("checkout_upsell"), timeout=900)
    report = client.get_report(effects)      # structured result and HTML page
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import json
import math
import random
import threading
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, TypeAlias

import grpc
import numpy as np
from google.protobuf import duration_pb2, json_format, timestamp_pb2

from loopwise import security, tracing
from loopwise.admission import pushback_of
from loopwise.client_errors import (
    DeadlineExceeded,
    LoopwiseError,
    NotFound,
    Unavailable,
    from_rpc_error,
)
from loopwise.clock import Clock, uuid7_at, uuid7_time_ms
from loopwise.common.v1 import blueprint_pb2
from loopwise.common.v1 import operation_pb2 as op_pb
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.decision.v1 import decision_service_pb2_grpc as dgrpc
from loopwise.evaluator.v1 import evaluator_service_pb2 as epb
from loopwise.evaluator.v1 import evaluator_service_pb2_grpc as egrpc
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.feedback.v1 import feedback_service_pb2_grpc as fgrpc
from loopwise.grpc_options import channel_options
from loopwise.settings import ServiceName, Settings, get_settings
from loopwise.targets import ROUND_ROBIN, Address
from loopwise.tensors import F32, F64, I32, pack, unpack_matrix, unpack_vector
from loopwise.trainer.v1 import trainer_service_pb2 as tpb
from loopwise.trainer.v1 import trainer_service_pb2_grpc as tgrpc

__all__ = [
    "FINAL_STATES",
    "AsyncClient",
    "BatchDecisions",
    "Client",
    "Decision",
    "DecisionUnavailable",
    "EffectPredictions",
    "ModelArtifact",
    "OperationCancelled",
    "OperationFailed",
    "OperationTimeout",
    "Outcome",
    "Ranking",
    "UseCaseDefault",
    "metric_columns",
    "operation_result",
    "uuid7_at",
    "with_value_weights",
]

# Codes after which the decision service is treated as unreachable (and
# RESOURCE_EXHAUSTED with retry pushback: shedding load, see _unreachable).
_UNREACHABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
# Bulk calls (batches, outcomes, use cases, trainer and evaluator calls) get at least
# this deadline.
_BULK_DEADLINE_S = 30.0
# Synchronous analyses (EvaluatePolicy, SuggestParameters) get at least this deadline
# by default; the evaluator stops the work when the deadline passes.
_ANALYSIS_DEADLINE_S = 300.0
# Streams that end (ReadTrainingData, DownloadModel) get this deadline by default;
# RegisterModel at least this one.
_STREAM_DEADLINE_S = 600.0
# DeleteUnitData goes through every decision of a unit: at least this deadline.
_DELETE_DEADLINE_S = 120.0
# How long get_deployment waits for WatchDeployments' first message.
_DEPLOYMENT_WAIT_S = 5.0
# Pause before following an operation again after its service was UNAVAILABLE.
_RESUME_PAUSE_S = 0.5
# Rows per PredictEffects call (the evaluator takes at most 100,000 by default).
_PREDICT_BATCH_ROWS = 50_000

# The states after which an operation no longer changes.
FINAL_STATES = frozenset({op_pb.OPERATION_STATE_SUCCEEDED, op_pb.OPERATION_STATE_FAILED,
                          op_pb.OPERATION_STATE_CANCELLED})
# Which service runs the operations of each kind.
_SERVICE_OF_KIND = {"training": "trainer", "estimate_effects": "evaluator", "tuning": "evaluator"}

Service: TypeAlias = Literal["trainer", "evaluator"]
# A time bound of a request: a datetime (naive means UTC), epoch seconds, a Timestamp,
# or None (unset).
TimeArg: TypeAlias = datetime | float | int | timestamp_pb2.Timestamp | None
# A report: its id, its structured result, its GetReport response, or the succeeded
# EstimateEffects operation that made it.
ReportArg: TypeAlias = str | epb.EstimateEffectsResult | epb.GetReportResponse | op_pb.Operation


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
class Ranking:
    """One ranking, as returned by ``rank``.

    ``ranked_ids`` are every candidate id, best first; the first ``len(propensities)``
    are the shown items, each drawn with ``propensities[j]`` (its probability at that
    position given the items above); ``probability`` is the shown prefix's probability.
    ``fallback`` is set when the request order was kept (no model, kill switch, or
    loopwise could not be reached: then ``decision_id`` is empty and nothing is logged).
    """

    decision_id: str
    use_case: str
    ranked_ids: list[str]
    propensities: list[float]
    probability: float
    model_version: int
    blueprint_version: int
    arm: str
    explored: bool
    fallback: bool
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def shown(self) -> list[str]:
        """The shown items, top first."""
        return self.ranked_ids[: len(self.propensities)]


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
    # Rankings: the shown item this outcome belongs to (e.g. the clicked item's id).
    item_id: str = ""

    def to_proto(self) -> fpb.Outcome:
        """The wire message."""
        message = fpb.Outcome(use_case=self.use_case, decision_id=self.decision_id,
                              outcome_id=self.outcome_id, name=self.name,
                              value=float(self.value), label=self.label, item_id=self.item_id)
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


def _event_ms(value: datetime | float | None) -> int:
    """Milliseconds since the epoch of a datetime (naive: UTC, as in an Outcome) or
    epoch seconds; 0 (the server's now) for None."""
    if value is None:
        return 0
    if isinstance(value, datetime):
        stamp = timestamp_pb2.Timestamp()
        stamp.FromDatetime(value)
        return stamp.ToMilliseconds()
    return int(round(float(value) * 1000))


def _outcome_column_requests(
    use_case: str, decision_ids: Sequence[str], outcome_ids: Sequence[str], names: Sequence[str] | str,
    values: Sequence[float] | float, labels: Sequence[str] | None, event_times: Sequence[datetime | float | None] | None,
    item_ids: Sequence[str] | None, batch_size: int, new_id: Callable[[], str],
) -> list[fpb.LogOutcomesRequest]:
    """The LogOutcomes requests of :meth:`Client.log_outcome_columns`, ``batch_size``
    outcomes each (ValueError for a column of another length than ``decision_ids``)."""
    n = len(decision_ids)
    columns: dict[str, list] = {
        "decision_ids": _strings("decision_ids", decision_ids),
        "outcome_ids": _strings("outcome_ids", outcome_ids),
        "names": [names] * n if isinstance(names, str) else _strings("names", names),
        "values": [float(values)] * n if np.ndim(values) == 0 else np.asarray(values, float).tolist(),
    }
    if labels is not None:
        columns["labels"] = _strings("labels", labels, missing="")
    if event_times is not None:
        columns["event_times_ms"] = [_event_ms(v) for v in event_times]
    if item_ids is not None:
        columns["item_ids"] = _strings("item_ids", item_ids, missing="")
    for name, column in columns.items():
        if len(column) != n:
            raise ValueError(f"{name} has {len(column)} entries; decision_ids has {n} (one per outcome)")
    return [fpb.LogOutcomesRequest(request_id=new_id(), columns=[fpb.OutcomeColumns(
        use_case=use_case, **{name: column[start:start + batch_size] for name, column in columns.items()})])
        for start in range(0, n, batch_size)]


def _strings(name: str, values: Iterable[Any], missing: str | None = None) -> list[str]:
    """A column of strings; TypeError naming the column and entry for anything else
    (None and NaN, a data frame's missing values, become ``missing`` when given)."""
    out = []
    for i, value in enumerate(values):
        if not isinstance(value, str):
            if missing is None or not (value is None or (isinstance(value, float) and math.isnan(value))):
                raise TypeError(f"{name}[{i}]: expected a string, got {value!r}")
            value = missing
        out.append(value)
    return out


def _add_counts(total: fpb.LogOutcomesResponse, reply: fpb.LogOutcomesResponse) -> None:
    total.accepted += reply.accepted
    total.duplicates += reply.duplicates
    total.orphans += reply.orphans


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


Candidates: TypeAlias = Mapping[str, Mapping[str, Any]] | Sequence[tuple[str, Mapping[str, Any]]]


def _rank_request(use_case: str, features: Mapping[str, Any], candidates: Candidates, unit_id: str,
                  top_k: int, disable_exploration: bool) -> dpb.DecideRequest:
    request = _decide_request(use_case, features, unit_id, disable_exploration)
    request.top_k = top_k
    pairs = candidates.items() if isinstance(candidates, Mapping) else candidates
    for item_id, own in pairs:
        request.candidates.add(id=item_id, features={n: _feature_value(v) for n, v in own.items()})
    return request


def _ranking_from_proto(d: dpb.Decision, request: dpb.DecideRequest) -> Ranking:
    ids = [c.id for c in request.candidates]  # action_scores follow the request's order
    return Ranking(
        decision_id=d.decision_id, use_case=d.use_case, ranked_ids=list(d.ranked_candidate_ids),
        propensities=list(d.position_propensities), probability=d.ranking_probability,
        model_version=d.model_version, blueprint_version=d.blueprint_version, arm=d.arm,
        explored=d.explored, fallback=d.fallback,
        scores=dict(zip(ids, map(float, d.action_scores), strict=False)),
    )


def _local_ranking(request: dpb.DecideRequest) -> Ranking:
    """The request order, when loopwise cannot be reached (nothing is logged)."""
    ids = [c.id for c in request.candidates]
    shown = min(request.top_k or len(ids), len(ids))
    return Ranking(decision_id="", use_case=request.use_case, ranked_ids=ids, propensities=[1.0] * shown,
                   probability=1.0, model_version=0, blueprint_version=0, arm="", explored=False, fallback=True)


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


class OperationFailed(RuntimeError):
    """A long-running operation ended FAILED (or CANCELLED, see :class:`OperationCancelled`).

    ``operation`` is the final operation; ``code`` the gRPC status it failed with (None
    when cancelled or unknown) and ``error_message`` why.
    """

    def __init__(self, operation: op_pb.Operation) -> None:
        self.operation = operation
        state = op_pb.OperationState.Name(operation.state).removeprefix("OPERATION_STATE_")
        detail = operation.error_message or operation.message
        super().__init__(f"{operation.kind or 'operation'} {operation.id} of use case "
                         f"{operation.use_case!r} ended {state}" + (f": {detail}" if detail else ""))

    @property
    def state(self) -> int:
        """The final state (an ``OperationState`` value)."""
        return self.operation.state

    @property
    def code(self) -> grpc.StatusCode | None:
        """The gRPC status code the job failed with, if any."""
        for code in grpc.StatusCode:
            if code.value[0] == self.operation.error_code and code != grpc.StatusCode.OK:
                return code
        return None

    @property
    def error_message(self) -> str:
        """Why the job failed (empty when it was cancelled)."""
        return self.operation.error_message


class OperationCancelled(OperationFailed):
    """A long-running operation was cancelled (CancelOperation) before it finished."""


class OperationTimeout(TimeoutError):
    """``wait_operation`` gave up after its timeout; ``operation`` is the last state seen
    (the job itself goes on)."""

    def __init__(self, operation: op_pb.Operation, timeout: float) -> None:
        self.operation = operation
        self.timeout = timeout
        state = op_pb.OperationState.Name(operation.state).removeprefix("OPERATION_STATE_")
        super().__init__(f"{operation.kind or 'operation'} {operation.id} of use case "
                         f"{operation.use_case!r} still {state} ({operation.stage or 'no stage'}, "
                         f"{operation.progress:.0%}) after {timeout:g} s")


@dataclass(frozen=True)
class EffectPredictions:
    """Result of ``predict_effects``: per-row CATE and its 95% interval (float64)."""

    effects: np.ndarray
    lower: np.ndarray
    upper: np.ndarray

    def __len__(self) -> int:
        return len(self.effects)


def metric_columns(batch: fpb.ReadTrainingDataResponse) -> dict[str, np.ndarray]:
    """Every product metric of a ``ReadTrainingData`` batch as a float32 column, by
    metric name (empty for a blueprint version without metrics)."""
    names = list(batch.metric_names)
    if not names:
        return {}
    values = unpack_matrix(batch.metric_values, batch.rows, len(names), "metric_values", F32)
    return {name: values[:, j].copy() for j, name in enumerate(names)}


def with_value_weights(blueprint: blueprint_pb2.Blueprint,
                       weights: Mapping[str, float]) -> blueprint_pb2.Blueprint:
    """A copy of ``blueprint`` whose value model weighs the metrics by ``weights`` (metric
    name → weight; metrics not named keep their weight). ``ValueError`` for a name that
    is not one of its metrics."""
    known = [m.name for m in blueprint.metrics]
    unknown = sorted(set(weights) - set(known))
    if unknown:
        raise ValueError(f"{unknown} are not metrics of {blueprint.use_case!r} (metrics: {known})")
    changed = blueprint_pb2.Blueprint()
    changed.CopyFrom(blueprint)
    changed.value_model.weights.update({name: float(w) for name, w in weights.items()})
    return changed


def operation_result(operation: op_pb.Operation
                     ) -> tpb.TrainingResult | epb.EstimateEffectsResult | epb.TuningResult:
    """The result of a succeeded operation: a ``TrainingResult`` (training), an
    ``EstimateEffectsResult`` (effect estimation) or a ``TuningResult`` (tuning).

    Raises :class:`OperationFailed` for a failed or cancelled operation and
    ``ValueError`` when the operation has no result yet.
    """
    if operation.state == op_pb.OPERATION_STATE_CANCELLED:
        raise OperationCancelled(operation)
    if operation.state == op_pb.OPERATION_STATE_FAILED:
        raise OperationFailed(operation)
    for message_type in (tpb.TrainingResult, epb.EstimateEffectsResult, epb.TuningResult):
        if operation.result.Is(message_type.DESCRIPTOR):
            result = message_type()
            operation.result.Unpack(result)
            return result
    raise ValueError(f"operation {operation.id} has no result (state "
                     f"{op_pb.OperationState.Name(operation.state)})")


def _final(operation: op_pb.Operation) -> op_pb.Operation:
    """The operation if it succeeded; raises for FAILED and CANCELLED."""
    if operation.state == op_pb.OPERATION_STATE_CANCELLED:
        raise OperationCancelled(operation)
    if operation.state != op_pb.OPERATION_STATE_SUCCEEDED:
        raise OperationFailed(operation)
    return operation


def _timestamp(value: TimeArg, name: str) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    if isinstance(value, timestamp_pb2.Timestamp):
        return value
    stamp = timestamp_pb2.Timestamp()
    if isinstance(value, datetime):
        stamp.FromDatetime(value)
    elif isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool):
        stamp.FromNanoseconds(int(round(float(value) * 1e9)))
    else:
        raise TypeError(f"{name}: expected a datetime, epoch seconds, a Timestamp or None, "
                        f"not {value!r}")
    return stamp


def _duration(value: float | timedelta | duration_pb2.Duration | None,
              name: str) -> duration_pb2.Duration | None:
    if value is None:
        return None
    if isinstance(value, duration_pb2.Duration):
        return value
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 0:
        raise ValueError(f"{name}: must be >= 0, not {seconds}")
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(int(round(seconds * 1e9)))
    return duration


def _enum(enum: Any, prefix: str, value: int | str, name: str) -> int:
    """An enum value from its number or its name, with or without the prefix
    (``"linear_dml"``, ``"LINEAR_DML"`` and ``"ESTIMATOR_LINEAR_DML"`` are the same)."""
    if isinstance(value, str):
        key = value.strip().upper()
        key = key if key.startswith(prefix) else prefix + key
        try:
            return enum.Value(key)
        except ValueError:
            choices = ", ".join(n.removeprefix(prefix).lower() for n in enum.keys())
            raise ValueError(f"{name}: unknown value {value!r} (one of {choices})") from None
    return int(value)


def _set_times(message: Any, start_time: TimeArg, end_time: TimeArg) -> None:
    for field_name, value in (("start_time", start_time), ("end_time", end_time)):
        stamp = _timestamp(value, field_name)
        if stamp is not None:
            getattr(message, field_name).CopyFrom(stamp)


def _start_training_request(use_case: str, request_id: str, deploy: bool, start_time: TimeArg,
                            end_time: TimeArg, trigger: str) -> tpb.StartTrainingRequest:
    request = tpb.StartTrainingRequest(request_id=request_id, use_case=use_case, deploy=deploy,
                                       trigger=trigger)
    _set_times(request, start_time, end_time)
    return request


def _estimate_effects_request(
    use_case: str, request_id: str, start_time: TimeArg, end_time: TimeArg, estimator: int | str,
    treatment_action: str, control_action: str, seed: int, treatment_source: int | str,
    treatment_arm: str, control_arm: str, segment_features: Sequence[str], treatment_cost: float,
    register_cate_model: bool, forest_trees: int, timeout: float | timedelta | duration_pb2.Duration | None,
) -> epb.EstimateEffectsRequest:
    request = epb.EstimateEffectsRequest(
        request_id=request_id, use_case=use_case,
        estimator=_enum(epb.Estimator, "ESTIMATOR_", estimator, "estimator"),
        treatment_action=treatment_action, control_action=control_action, seed=seed,
        treatment_source=_enum(epb.TreatmentSource, "TREATMENT_SOURCE_", treatment_source,
                               "treatment_source"),
        treatment_arm=treatment_arm, control_arm=control_arm,
        segment_features=list(segment_features), treatment_cost=treatment_cost,
        register_cate_model=register_cate_model, forest_trees=forest_trees,
    )
    _set_times(request, start_time, end_time)
    job_timeout = _duration(timeout, "timeout")
    if job_timeout is not None:
        request.timeout.CopyFrom(job_timeout)
    return request


def _report_id(report: ReportArg) -> str:
    """The report id of any of the ways a report can be given."""
    if isinstance(report, str):
        return report
    if isinstance(report, epb.EstimateEffectsResult):
        return report.report_id
    if isinstance(report, epb.GetReportResponse):
        return report.result.report_id
    if isinstance(report, op_pb.Operation):
        result = operation_result(report)
        if not isinstance(result, epb.EstimateEffectsResult):
            raise ValueError(f"operation {report.id} is a {report.kind!r} operation, not an "
                             "effect estimation")
        return result.report_id
    raise TypeError(f"expected a report id, an EstimateEffectsResult, a GetReportResponse or "
                    f"an estimate_effects Operation, not {type(report).__name__}")


def _report_result(report: ReportArg) -> epb.EstimateEffectsResult | None:
    """The structured result carried by ``report``, if it carries one."""
    if isinstance(report, epb.EstimateEffectsResult):
        return report
    if isinstance(report, epb.GetReportResponse):
        return report.result
    if isinstance(report, op_pb.Operation):
        result = operation_result(report)
        return result if isinstance(result, epb.EstimateEffectsResult) else None
    return None


def _policy_variant(value: blueprint_pb2.Policy | Mapping[str, Any] | None) -> blueprint_pb2.Policy | None:
    if value is None or isinstance(value, blueprint_pb2.Policy):
        return value
    return json_format.ParseDict(dict(value), blueprint_pb2.Policy())


def _evaluate_policy_request(
    use_case: str, model_version: int, start_time: TimeArg, end_time: TimeArg, constant_action: str,
    report_id: ReportArg, policy_variant: blueprint_pb2.Policy | Mapping[str, Any] | None,
    max_weight: float,
) -> epb.EvaluatePolicyRequest:
    request = epb.EvaluatePolicyRequest(
        use_case=use_case, model_version=model_version, constant_action=constant_action,
        report_id=_report_id(report_id) if report_id else "", max_weight=max_weight)
    _set_times(request, start_time, end_time)
    variant = _policy_variant(policy_variant)
    if variant is not None:
        request.policy_variant.CopyFrom(variant)
    return request


def _parameter_range(value: epb.ParameterRange | Sequence[float] | Mapping[str, float]) -> epb.ParameterRange:
    if isinstance(value, epb.ParameterRange):
        return value
    if isinstance(value, Mapping):
        return epb.ParameterRange(low=float(value["low"]), high=float(value["high"]))
    low, high = value
    return epb.ParameterRange(low=float(low), high=float(high))


def _constraint(value: epb.Constraint | Mapping[str, Any]) -> epb.Constraint:
    if isinstance(value, epb.Constraint):
        return value
    return json_format.ParseDict(dict(value), epb.Constraint())


def _suggest_parameters_request(
    use_case: str,
    parameters: Sequence[str] | Mapping[str, epb.ParameterRange | Sequence[float]],
    ranges: Sequence[epb.ParameterRange | Sequence[float]] | None, report_id: ReportArg,
    model_version: int, objective: str, constraints: Sequence[epb.Constraint | Mapping[str, Any]],
    iterations: int, seed: int, start_time: TimeArg, end_time: TimeArg, net_of_costs: bool,
) -> epb.SuggestParametersRequest:
    if isinstance(parameters, Mapping):
        if ranges is not None:
            raise ValueError("give the ranges either in the parameters mapping or in ranges, not both")
        names, ranges = list(parameters), list(parameters.values())
    else:
        names = [parameters] if isinstance(parameters, str) else list(parameters)
    ranges = list(ranges or [])
    if len(ranges) != len(names):
        raise ValueError(f"{len(ranges)} ranges for {len(names)} parameters")
    request = epb.SuggestParametersRequest(
        use_case=use_case, parameters=names, ranges=[_parameter_range(r) for r in ranges],
        report_id=_report_id(report_id) if report_id else "", model_version=model_version,
        objective=objective, constraints=[_constraint(c) for c in constraints],
        iterations=iterations, seed=seed, net_of_costs=net_of_costs,
    )
    _set_times(request, start_time, end_time)
    return request


def _tuned_parameter(path: str, value: epb.TunedParameter | epb.ParameterRange | Sequence[float]
                     | Mapping[str, float]) -> epb.TunedParameter:
    if isinstance(value, epb.TunedParameter):
        return value
    bounds = _parameter_range(value)
    return epb.TunedParameter(path=path, low=bounds.low, high=bounds.high)


def _start_tuning_request(
    use_case: str, request_id: str,
    parameters: Mapping[str, epb.ParameterRange | Sequence[float] | Mapping[str, float]]
    | Sequence[epb.TunedParameter],
    objective: str, constraints: Sequence[epb.Constraint | Mapping[str, Any]], rounds: int, batch_size: int,
    min_rows_per_arm: int, round_timeout: float | timedelta | duration_pb2.Duration | None, apply: bool,
    acquisition: int | str, seed: int, seed_from_offline: bool, suggest_model_version: int,
    suggest_report_id: ReportArg, author: str,
) -> epb.StartTuningRequest:
    if isinstance(parameters, Mapping):
        tuned = [_tuned_parameter(path, value) for path, value in parameters.items()]
    else:
        tuned = [p if isinstance(p, epb.TunedParameter) else epb.TunedParameter(**p) for p in parameters]
    acquisition = _enum(epb.Acquisition, "ACQUISITION_", acquisition, "acquisition")
    request = epb.StartTuningRequest(
        request_id=request_id, use_case=use_case, parameters=tuned, objective=objective,
        constraints=[_constraint(c) for c in constraints], rounds=rounds, batch_size=batch_size,
        min_rows_per_arm=min_rows_per_arm, apply=apply, acquisition=acquisition, seed=seed,
        seed_from_offline=seed_from_offline, suggest_model_version=suggest_model_version,
        suggest_report_id=_report_id(suggest_report_id) if suggest_report_id else "", author=author,
    )
    duration = _duration(round_timeout, "round_timeout")
    if duration is not None:
        request.round_timeout.CopyFrom(duration)
    return request


def _is_records(rows: Any) -> bool:
    """Rows given as named values (a list of dicts or a data frame), not as a matrix."""
    if hasattr(rows, "columns") and hasattr(rows, "to_dict"):
        return True
    return isinstance(rows, Sequence) and len(rows) > 0 and isinstance(rows[0], Mapping)


def _records(rows: Any) -> list[Mapping[str, Any]]:
    if hasattr(rows, "columns") and hasattr(rows, "to_dict"):
        return rows.to_dict("records")
    return list(rows)


def _needs_vocabulary(records: Sequence[Mapping[str, Any]]) -> bool:
    return any(isinstance(v, str) for row in records for v in row.values())


def _vocabularies(blueprint: blueprint_pb2.Blueprint) -> dict[str, list[str]]:
    return {f.name: list(f.vocabulary) for f in blueprint.features
            if f.type == blueprint_pb2.FEATURE_TYPE_CATEGORICAL}


def _effect_matrix(rows: Any, feature_names: Sequence[str],
                   vocabularies: Mapping[str, Sequence[str]] | None) -> np.ndarray:
    """Rows as the float32 [rows, features] matrix PredictEffects takes.

    A matrix is taken as is (columns in ``feature_names`` order; categorical columns
    hold vocabulary codes). Named rows are placed by name: numbers as they are, a
    category by its code in the use case's vocabulary (-1 when unknown), a missing
    name or None as NaN (missing)."""
    if not _is_records(rows):
        matrix = np.asarray(rows, dtype=np.float64)
        if matrix.ndim == 1 and len(feature_names) and matrix.shape[0] == len(feature_names):
            matrix = matrix[None, :]
        if matrix.ndim != 2 or matrix.shape[1] != len(feature_names):
            raise ValueError(f"rows of shape {matrix.shape} do not match the report's "
                             f"{len(feature_names)} features {list(feature_names)}")
        return matrix.astype(np.float32)
    records = _records(rows)
    codes = {name: {value: i for i, value in enumerate(vocabulary)}
             for name, vocabulary in (vocabularies or {}).items()}
    matrix = np.full((len(records), len(feature_names)), np.nan, dtype=np.float32)
    for i, record in enumerate(records):
        unknown = set(record) - set(feature_names)
        if unknown:
            raise ValueError(f"row {i}: unknown feature(s) {sorted(unknown)}; the report's "
                             f"features are {list(feature_names)}")
        for j, name in enumerate(feature_names):
            value = record.get(name)
            if value is None:
                continue
            if isinstance(value, str):
                if name not in codes:
                    raise ValueError(f"row {i}: feature {name!r} is not categorical, got {value!r}")
                matrix[i, j] = codes[name].get(value, -1)
            elif isinstance(value, bool | int | float | np.integer | np.floating):
                matrix[i, j] = float(value)
            else:
                raise TypeError(f"row {i}: feature {name!r} value {value!r}: expected a number, "
                                "a category string or None")
    return matrix


def _with_use_case(request: Any, use_case: str) -> Any:
    """The request with the report's use case set (where the request has the field), so
    that a token scoped to that use case may make the call."""
    if use_case and "use_case" in request.DESCRIPTOR.fields_by_name:
        request.use_case = use_case
    return request


def _predict_requests(report_id: str, use_case: str, feature_names: Sequence[str], matrix: np.ndarray,
                      batch_size: int) -> list[epb.PredictEffectsRequest]:
    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, not {batch_size}")
    return [_with_use_case(epb.PredictEffectsRequest(report_id=report_id, rows=len(part),
                                                     feature_names=list(feature_names),
                                                     features=pack(part, F32)), use_case)
            for part in (matrix[start:start + batch_size]
                         for start in range(0, matrix.shape[0], batch_size))]


def _predictions(replies: Sequence[epb.PredictEffectsResponse]) -> EffectPredictions:
    def column(name: str) -> np.ndarray:
        parts = [unpack_vector(getattr(r, name), F64) for r in replies]
        return np.concatenate(parts).astype(np.float64) if parts else np.zeros(0, np.float64)

    return EffectPredictions(column("effects"), column("effects_lower"), column("effects_upper"))


def _check_service(service: str | None) -> Service | None:
    if service not in (None, "trainer", "evaluator"):
        raise ValueError(f"service must be 'trainer' or 'evaluator', not {service!r}")
    return service  # type: ignore[return-value]


def _service_of(operation: op_pb.Operation | str, service: str | None) -> Service | None:
    """The service that runs an operation: given, or known from the operation's kind;
    None when only an id is known (both services are asked)."""
    chosen = _check_service(service)
    if chosen is not None or isinstance(operation, str):
        return chosen
    found = _SERVICE_OF_KIND.get(operation.kind)
    if found is None:
        raise ValueError(f"operation {operation.id} has kind {operation.kind!r}; pass service=")
    return found  # type: ignore[return-value]


def _operation_ref(operation: op_pb.Operation | str, use_case: str) -> tuple[str, str]:
    if isinstance(operation, op_pb.Operation):
        return operation.id, use_case or operation.use_case
    return operation, use_case


def _seconds(value: float | timedelta | None, name: str = "timeout") -> float | None:
    """A timeout in seconds (None: unset); it must be > 0."""
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if not seconds > 0:
        raise ValueError(f"{name} must be > 0 seconds, not {value!r}")
    return seconds


# ------------------------------------------------------------ importing decisions

_RECORD_FIELDS = frozenset(fpb.DecisionRecord.DESCRIPTOR.fields_by_name)
# The action of a regression blueprint without actions.
_REGRESSION_ACTION = "predict"


def _record_needs_blueprint(item: Mapping[str, Any]) -> bool:
    """A record given as a mapping needs its blueprint version read when it leaves out the
    version, names its features, gives probabilities by action, or gives only one of the
    action and its index."""
    return (not item.get("blueprint_version") or isinstance(item.get("features"), Mapping)
            or isinstance(item.get("action_probabilities"), Mapping)
            or ("action" in item) != ("action_index" in item))


def _blueprint_actions(blueprint: blueprint_pb2.Blueprint) -> list[str]:
    return list(blueprint.actions) or [_REGRESSION_ACTION]


def _record_features(value: Any, blueprint: blueprint_pb2.Blueprint | None, at: str) -> bytes:
    """Packed float32 features: given packed, as numbers in blueprint order, or by name
    (categories coded with the version's vocabulary, -1 when unknown; absent or None
    is missing, NaN)."""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if not isinstance(value, Mapping):
        return pack(np.asarray(list(value), dtype=np.float64).reshape(1, -1), F32)
    assert blueprint is not None
    known = {f.name for f in blueprint.features}
    unknown = set(value) - known
    if unknown:
        raise ValueError(f"{at}: unknown feature(s) {sorted(unknown)} for blueprint version of "
                         f"{blueprint.use_case!r} (features {sorted(known)})")
    row = np.full((1, len(blueprint.features)), np.nan)
    for j, spec in enumerate(blueprint.features):
        given = value.get(spec.name)
        if given is None:
            continue
        if isinstance(given, str):
            vocabulary = list(spec.vocabulary)
            row[0, j] = vocabulary.index(given) if given in vocabulary else -1
        else:
            row[0, j] = float(given)
    return pack(row, F32)


def _decision_record(item: fpb.DecisionRecord | Mapping[str, Any],
                     blueprints: Mapping[tuple[str, int], tuple[int, blueprint_pb2.Blueprint]],
                     at: str) -> fpb.DecisionRecord:
    """The wire record of one decision to import (see :meth:`Client.log_decisions`)."""
    if isinstance(item, fpb.DecisionRecord):
        return item
    item = dict(item)
    unknown = set(item) - _RECORD_FIELDS
    if unknown:
        raise ValueError(f"{at}: unknown field(s) {sorted(unknown)}; a record has "
                         f"{sorted(_RECORD_FIELDS)}")
    use_case = item.get("use_case") or ""
    if not use_case:
        raise ValueError(f"{at}: use_case is required")
    found = blueprints.get((use_case, int(item.get("blueprint_version") or 0)))
    version, blueprint = found if found is not None else (int(item["blueprint_version"]), None)
    if not item.get("decision_id"):
        raise ValueError(f"{at}: decision_id is required: a UUIDv7 whose timestamp is the decision "
                         "time, e.g. loopwise.uuid7_at(decision_time)")
    item["blueprint_version"] = version
    if "features" in item:
        item["features"] = _record_features(item["features"], blueprint, at)
    actions = _blueprint_actions(blueprint) if blueprint is not None else []
    if "action" in item and "action_index" not in item:
        if item["action"] not in actions:
            raise ValueError(f"{at}: action {item['action']!r} is not one of {actions}")
        item["action_index"] = actions.index(item["action"])
    elif "action_index" in item and "action" not in item:
        index = int(item["action_index"])
        if not 0 <= index < len(actions):
            raise ValueError(f"{at}: action_index {index} is not an index of {actions}")
        item["action"] = actions[index]
    for name in ("action_probabilities", "action_scores"):
        value = item.get(name)
        if isinstance(value, Mapping):
            extra = set(value) - set(actions)
            if extra:
                raise ValueError(f"{at}: {name} names unknown action(s) {sorted(extra)}")
            item[name] = [float(value.get(action, 0.0)) for action in actions]
        elif value is not None:
            item[name] = [float(v) for v in value]
    return fpb.DecisionRecord(**item)


# ------------------------------------------------------------------ retries

# The gRPC retry policy of every SDK channel (its service config's methodConfig):
# UNAVAILABLE is retried by gRPC itself, with exponential backoff and jitter, at most
# maxAttempts attempts in all (gRPC caps it at 5), within the call's deadline, honouring
# a grpc-retry-pushback-ms trailer. RESOURCE_EXHAUSTED is not in it: see _retry_delay.
_RETRY_INITIAL_BACKOFF_S = 0.05
_RETRY_MAX_BACKOFF_S = 2.0
_RETRY_BACKOFF_MULTIPLIER = 2
_GRPC_MAX_ATTEMPTS = 5


def _service_config(retries: int) -> str:
    """The gRPC service config of an SDK channel: round robin over every address of its
    target (as loopwise.targets sets it) and, with ``retries`` > 0, the retry policy."""
    config = json.loads(ROUND_ROBIN)
    if retries > 0:
        config["methodConfig"] = [{
            "name": [{}],  # every method of every service
            "retryPolicy": {
                "maxAttempts": min(retries + 1, _GRPC_MAX_ATTEMPTS),
                "initialBackoff": f"{_RETRY_INITIAL_BACKOFF_S}s",
                "maxBackoff": f"{_RETRY_MAX_BACKOFF_S}s",
                "backoffMultiplier": _RETRY_BACKOFF_MULTIPLIER,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }]
    return json.dumps(config)


def _sdk_channel_options(settings: Settings, retries: int) -> list[tuple[str, Any]]:
    """Options of an SDK channel: message sizes, the service config with the retry
    policy, and a retry buffer as large as a message (gRPC's default of 256 KiB would
    leave larger requests, such as a big DecideBatch, without retries). The service
    config comes first: gRPC takes the first one given, and it keeps the round robin
    that loopwise.targets adds after it."""
    return [("grpc.service_config", _service_config(retries)), ("grpc.enable_retries", 1),
            ("grpc.per_rpc_retry_buffer_size", settings.max_message_bytes),
            *channel_options(settings)]


def _retry_delay(error: grpc.RpcError, attempt: int, retries: int, left: float) -> float | None:
    """Seconds to wait before the SDK itself retries a failed attempt, or None: do not.

    gRPC's retry policy (:func:`_service_config`) retries UNAVAILABLE. What it cannot
    express is left to this: RESOURCE_EXHAUSTED is retried only when it carries retry
    pushback (a server shedding load, loopwise.admission; or a rate limit, whose
    google.rpc.RetryInfo says when), because without pushback it is a size or quota
    limit that no retry passes, and a retry policy can only list the code as a whole;
    gRPC reads the pushback trailer but not RetryInfo in the status details; and when
    the pushback is longer than the time left, gRPC would wait until the deadline and
    fail with DEADLINE_EXCEEDED, where this gives up at once with the refusal (so
    ``decide`` answers with the default without waiting). The wait is at least the
    pushback (up to 1.5 times it, at random, so that refused callers do not come back
    together); at most ``retries`` retries; none when the server asked for none (a
    negative pushback)."""
    if attempt >= retries or error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
        return None
    pushback = pushback_of(error)
    if pushback is None or pushback < 0:
        return None
    delay = pushback * random.uniform(1.0, 1.5)
    return delay if delay < left else None


def _unreachable(error: grpc.RpcError) -> bool:
    """The decision service cannot answer now: unreachable, past the deadline, or
    shedding load (RESOURCE_EXHAUSTED with retry pushback)."""
    code = error.code()
    if code in _UNREACHABLE:
        return True
    return code == grpc.StatusCode.RESOURCE_EXHAUSTED and pushback_of(error) is not None


@dataclass(frozen=True)
class ModelArtifact:
    """A downloaded model: its registry entry and its ONNX bytes (sha256 checked)."""

    model: tpb.Model
    onnx: bytes
    sha256: str


def _artifact(chunks: Iterable[tpb.DownloadModelResponse], use_case: str, version: int) -> ModelArtifact:
    model = tpb.Model()
    parts: list[bytes] = []
    sha256 = ""
    total = 0
    for chunk in chunks:
        if chunk.HasField("model"):
            model = chunk.model
        parts.append(chunk.data)
        sha256, total = chunk.sha256, chunk.total_size
    data = b"".join(parts)
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != total or (sha256 and digest != sha256):
        raise ValueError(f"model {version} of {use_case!r}: got {len(data)} bytes with sha256 "
                         f"{digest}, expected {total} bytes with sha256 {sha256}")
    return ModelArtifact(model=model, onnx=data, sha256=digest)


class _ClientBase:
    """What the blocking and asyncio clients share: settings, defaults, fallbacks."""

    def __init__(self, decision_address: Address | None, feedback_address: Address | None,
                 deadline_s: float | None, retries: int | None, settings: Settings | None,
                 defaults: Mapping[str, str] | None, trainer_address: str | None = None,
                 evaluator_address: str | None = None) -> None:
        self.settings = settings or get_settings()
        self.decision_address = decision_address or self.settings.decision_address
        self.feedback_address = feedback_address or self.settings.feedback_address
        self.trainer_address = trainer_address or self.settings.trainer_address
        self.evaluator_address = evaluator_address or self.settings.evaluator_address
        self.deadline_s = self.settings.client_deadline_s if deadline_s is None else deadline_s
        self.retries = self.settings.client_retries if retries is None else max(0, retries)
        self.clock = Clock.from_settings(self.settings)
        self._given_defaults = dict(defaults or {})
        self._learned: dict[str, UseCaseDefault] = {}
        # Trainer and evaluator channels and stubs, opened at their first use.
        self._lazy: dict[str, tuple[Any, Any]] = {}
        self._lazy_lock = threading.Lock()
        self._closed = False
        # Report id -> (use case, feature names), from reports already read.
        self._report_features: dict[str, tuple[str, tuple[str, ...]]] = {}

    @property
    def _bulk_deadline_s(self) -> float:
        return max(self.deadline_s, _BULK_DEADLINE_S)

    @property
    def _analysis_deadline_s(self) -> float:
        return max(self._bulk_deadline_s, _ANALYSIS_DEADLINE_S)

    def _channel_options(self) -> list[tuple[str, Any]]:
        return _sdk_channel_options(self.settings, self.retries)

    def _open_channel(self, address: str) -> Any:
        raise NotImplementedError

    def _lazy_stub(self, service: Service) -> Any:
        """The stub of the trainer or the evaluator, opening its channel at first use."""
        with self._lazy_lock:
            if self._closed:
                raise ValueError("the client is closed")
            found = self._lazy.get(service)
            if found is None:
                if service == "trainer":
                    channel = self._open_channel(self.trainer_address)
                    found = (channel, tgrpc.TrainerServiceStub(channel))
                else:
                    channel = self._open_channel(self.evaluator_address)
                    found = (channel, egrpc.EvaluatorServiceStub(channel))
                self._lazy[service] = found
            return found[1]

    def _take_lazy_channels(self) -> list[Any]:
        """Mark the client closed and hand over the lazily opened channels to close."""
        with self._lazy_lock:
            self._closed = True
            channels = [channel for channel, _ in self._lazy.values()]
            self._lazy.clear()
            return channels

    @property
    def trainer_stub(self) -> tgrpc.TrainerServiceStub:
        """The trainer's stub (its channel is opened at the first use)."""
        return self._lazy_stub("trainer")

    @property
    def evaluator_stub(self) -> egrpc.EvaluatorServiceStub:
        """The evaluator's stub (its channel is opened at the first use)."""
        return self._lazy_stub("evaluator")

    def _stub(self, service: ServiceName) -> Any:
        if service == "decision":
            return self.decision_stub  # type: ignore[attr-defined]
        if service == "feedback":
            return self.feedback_stub  # type: ignore[attr-defined]
        return self._lazy_stub(service)

    def _address_of(self, service: ServiceName) -> str:
        """Where this client calls ``service`` (as given: ``host:port``, a list joined by
        commas, or a gRPC target)."""
        address = getattr(self, f"{service}_address")
        return address if isinstance(address, str) else ",".join(address)

    def _typed(self, error: grpc.RpcError, service: ServiceName, method: str) -> LoopwiseError:
        """The SDK's error for a failed call: the one place where gRPC errors become
        loopwise.client_errors classes."""
        return from_rpc_error(error, service=service, address=self._address_of(service), method=method)

    def _operations_services(self, operation: op_pb.Operation | str, service: str | None) -> list[Service]:
        """The service(s) to ask about an operation (both when only an id is known)."""
        chosen = _service_of(operation, service)
        return [chosen] if chosen else ["trainer", "evaluator"]

    def _remember_report(self, result: epb.EstimateEffectsResult) -> None:
        if result.report_id:
            self._report_features[result.report_id] = (result.use_case, tuple(result.feature_names))

    def _known_report(self, report: ReportArg, use_case: str) -> tuple[str, str, tuple[str, ...] | None]:
        """(report id, use case, feature names) as far as known without a call (names
        None when the report was never read)."""
        report_id = _report_id(report)
        result = _report_result(report)
        if result is not None:
            self._remember_report(result)
        known = self._report_features.get(report_id)
        if known is None:
            return report_id, use_case, None
        return report_id, use_case or known[0], known[1]

    def _report_request(self, report: ReportArg, use_case: str) -> epb.GetReportRequest:
        report_id, scope, _ = self._known_report(report, use_case)
        return _with_use_case(epb.GetReportRequest(report_id=report_id), scope)

    @staticmethod
    def _remaining(deadline: float | None, operation: op_pb.Operation, timeout: float | None) -> float | None:
        """Seconds left before ``wait_operation``'s timeout (None: no timeout)."""
        if deadline is None:
            return None
        left = deadline - time.monotonic()
        if left <= 0:
            raise OperationTimeout(operation, timeout or 0.0)
        return left

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
            decision_ids=self.clock.new_ids(rows), actions=actions,
            action_indices=np.full(rows, index, np.int32),
            scores=np.full(rows, default.score, np.float32), probabilities=probabilities,
            explored=np.zeros(rows, bool), fallback=np.ones(rows, bool), arms=[""] * rows,
            model_version=0, blueprint_version=default.blueprint_version,
        )

    def _actions_of(self, use_case: str) -> tuple[str, ...]:
        learned = self._learned.get(use_case)
        return learned.actions if learned else ()

    def _stream_decision(self, reply: dpb.DecideResponse) -> Decision:
        return _decision_for_reply(reply, self._actions_of(reply.decision.use_case))

    @staticmethod
    def _decide_stream_request(item: dpb.DecideRequest | Mapping[str, Any]) -> dpb.DecideRequest:
        if isinstance(item, dpb.DecideRequest):
            return item
        values = dict(item)
        return _decide_request(values.pop("use_case"), values.pop("features", {}),
                               values.pop("unit_id", ""), values.pop("disable_exploration", False))

    @staticmethod
    def _training_data_request(use_case: str, start_time: TimeArg, end_time: TimeArg, batch_rows: int,
                               include_open_windows: bool,
                               include_fallback: bool) -> fpb.ReadTrainingDataRequest:
        request = fpb.ReadTrainingDataRequest(use_case=use_case, batch_rows=batch_rows,
                                              include_open_windows=include_open_windows,
                                              include_fallback=include_fallback)
        _set_times(request, start_time, end_time)
        return request

    @staticmethod
    def _register_request(model: tpb.Model, onnx: bytes, request_id: str) -> tpb.RegisterModelRequest:
        return tpb.RegisterModelRequest(request_id=request_id, model=model, onnx=onnx,
                                        sha256=hashlib.sha256(onnx).hexdigest())

    @staticmethod
    def _records_needing_blueprints(items: Sequence[fpb.DecisionRecord | Mapping[str, Any]]
                                    ) -> set[tuple[str, int]]:
        return {(str(item.get("use_case") or ""), int(item.get("blueprint_version") or 0))
                for item in items if not isinstance(item, fpb.DecisionRecord)
                and _record_needs_blueprint(item) and item.get("use_case")}

    @staticmethod
    def _scorecard_request(use_case: str, canary: bool, control_arm: str, covariates: Sequence[str],
                           start_time: TimeArg, end_time: TimeArg,
                           look_interval: float | timedelta | duration_pb2.Duration | None,
                           mixture_effect_size: float, srm_alpha: float,
                           include_html: bool) -> epb.GetScorecardRequest:
        request = epb.GetScorecardRequest(
            use_case=use_case, control_arm=control_arm, covariates=list(covariates),
            comparison=epb.SCORECARD_COMPARISON_CANARY if canary else epb.SCORECARD_COMPARISON_ARMS,
            mixture_effect_size=mixture_effect_size, srm_alpha=srm_alpha, include_html=include_html)
        _set_times(request, start_time, end_time)
        interval = _duration(look_interval, "look_interval")
        if interval is not None:
            request.look_interval.CopyFrom(interval)
        return request


def _decision_for_reply(reply: dpb.DecideResponse, known_actions: Sequence[str]) -> Decision:
    d = reply.decision
    actions = known_actions
    if len(actions) != len(d.action_probabilities) or (
        d.action_index < len(actions) and actions[d.action_index] != d.action
    ):
        actions = []
    return _decision_from_proto(d, actions)


def _deadline(timeout: float | timedelta | None, default: float) -> float:
    """A call's deadline: ``timeout`` when given, else the default."""
    seconds = _seconds(timeout)
    return default if seconds is None else seconds


def _older_deadline(timeout: float | timedelta | None, deadline_s: float | None) -> float | timedelta | None:
    """``timeout``, or ``deadline_s`` (its former name) when only that is given."""
    if timeout is not None and deadline_s is not None:
        raise TypeError("give timeout or deadline_s (its former name), not both")
    return timeout if timeout is not None else deadline_s


class Client(_ClientBase):
    """Blocking client for the decision, feedback, trainer and evaluator services.

    Every method takes ``timeout=``: the deadline of that call in seconds, retries
    included, replacing the default (``deadline_s`` for decisions; at least 30 s for
    bulk, trainer and evaluator calls; at least 300 s for analyses). A failed call
    raises the typed error of its status code (:mod:`loopwise.client_errors`, e.g.
    ``loopwise.NotFound``), a ``grpc.RpcError`` too.

    Args:
        decision_address: the decision service (settings default): ``host:port``,
            several addresses (a list, or comma-separated), or a gRPC target such as
            ``dns:///loopwise-decision-headless.loopwise.svc:50051``; calls go round robin
            over every address (``loopwise.targets``).
        feedback_address: the feedback service (settings default), in the same forms.
        deadline_s: deadline of one ``decide`` call, its retries included
            (``client_deadline_s``); bulk, trainer and evaluator calls get at least 30 s.
        retries: most extra attempts after UNAVAILABLE (by gRPC's retry policy; at most
            4) or RESOURCE_EXHAUSTED with retry pushback, within the deadline
            (``client_retries``).
        settings: settings to read defaults, TLS and the token from (``get_settings()``).
        defaults: default action per use case for the local fallback.
        trainer_address: ``host:port`` of the trainer (settings default); its channel is
            opened at the first trainer call.
        evaluator_address: ``host:port`` of the evaluator (settings default); opened at
            the first evaluator call.
    """

    def __init__(self, decision_address: Address | None = None, feedback_address: Address | None = None,
                 deadline_s: float | None = None, retries: int | None = None,
                 settings: Settings | None = None, defaults: Mapping[str, str] | None = None, *,
                 trainer_address: str | None = None, evaluator_address: str | None = None) -> None:
        super().__init__(decision_address, feedback_address, deadline_s, retries, settings, defaults,
                         trainer_address, evaluator_address)
        self._decision_channel = self._open_channel(self.decision_address)
        self._feedback_channel = self._open_channel(self.feedback_address)
        self.decision_stub = dgrpc.DecisionServiceStub(self._decision_channel)
        self.feedback_stub = fgrpc.FeedbackServiceStub(self._feedback_channel)

    def _open_channel(self, address: Address) -> grpc.Channel:
        # The caller's trace context (if it traces) goes with each call.
        return tracing.with_caller_context(
            security.sync_channel(self.settings, address, self._channel_options()))

    def _call(self, service: ServiceName, method: str, request: Any, timeout: float) -> Any:
        """One unary RPC within ``timeout`` seconds, retries included (gRPC's retry
        policy, and _retry_delay); a failure raises its typed error."""
        stub = self._stub(service)
        deadline = time.monotonic() + timeout
        attempt = 0
        while True:
            try:
                return getattr(stub, method)(request, timeout=max(deadline - time.monotonic(), 0.0))
            except grpc.RpcError as error:
                delay = _retry_delay(error, attempt, self.retries, deadline - time.monotonic())
                if delay is None:
                    raise self._typed(error, service, method) from None
            time.sleep(delay)
            attempt += 1

    def _stream(self, service: ServiceName, method: str, request: Any,
                timeout: float | None) -> Iterator[Any]:
        """The messages of a server (or bidirectional) stream; a failure raises its typed
        error. The call is cancelled when the iteration stops early."""
        call = getattr(self._stub(service), method)(request, timeout=timeout)
        try:
            yield from call
        except grpc.RpcError as error:
            raise self._typed(error, service, method) from None
        finally:
            call.cancel()  # a no-op once the stream has ended

    def _remember(self, use_case: str) -> None:
        """Learn the default decision at the first successful contact (best effort)."""
        if use_case in self._learned:
            return
        try:
            self.get_use_case(use_case)
        except grpc.RpcError:
            pass

    # ----------------------------------------------------------------- decisions

    def decide(self, use_case: str, features: Mapping[str, Any], unit_id: str = "",
               disable_exploration: bool = False, *, timeout: float | None = None) -> Decision:
        """Decide for one unit from named features (numbers, category strings, None).

        Falls back to the default decision when loopwise cannot be reached or sheds
        load; raises the typed error for others (``InvalidArgument``, ``NotFound``...).
        ``timeout`` replaces ``deadline_s`` for this call.
        """
        request = _decide_request(use_case, features, unit_id, disable_exploration)
        try:
            reply = self._call("decision", "Decide", request, _deadline(timeout, self.deadline_s))
        except LoopwiseError as error:
            if _unreachable(error):
                return self._local_decision(use_case, error)
            raise
        self._remember(use_case)
        return _decision_for_reply(reply, self._actions_of(use_case))

    def rank(self, use_case: str, features: Mapping[str, Any], candidates: Candidates, unit_id: str = "",
             top_k: int = 0, disable_exploration: bool = False, *, timeout: float | None = None) -> Ranking:
        """Rank candidates for a ranking use case (docs/ranking.md).

        ``features`` are the request's (context) features; ``candidates`` map each
        candidate id to its own features (a mapping, or (id, features) pairs in
        request order). ``top_k`` positions are drawn by the policy and logged (0: the
        blueprint's ``policy.ranking_top_k``, else every candidate). Keeps the request
        order (``fallback``) when loopwise cannot be reached.
        """
        request = _rank_request(use_case, features, candidates, unit_id, top_k, disable_exploration)
        try:
            reply = self._call("decision", "Decide", request, _deadline(timeout, self.deadline_s))
        except LoopwiseError as error:
            if _unreachable(error):
                return _local_ranking(request)
            raise
        return _ranking_from_proto(reply.decision, request)

    def decide_batch(self, use_case: str, blueprint_version: int, feature_names: Sequence[str],
                     matrix: np.ndarray, unit_ids: Sequence[str] | None = None,
                     disable_exploration: bool = False, *,
                     timeout: float | None = None) -> BatchDecisions:
        """Decide for many units: ``matrix`` is [rows, features] (packed as float32 LE).

        Categorical columns hold vocabulary codes of ``blueprint_version`` (-1 unknown).
        """
        request = _batch_request(use_case, blueprint_version, feature_names, matrix,
                                 unit_ids, disable_exploration)
        try:
            reply = self._call("decision", "DecideBatch", request, _deadline(timeout, self._bulk_deadline_s))
        except LoopwiseError as error:
            if _unreachable(error):
                return self._local_batch(use_case, request.rows, error)
            raise
        self._remember(use_case)
        return _batch_from_proto(reply)

    def decide_stream(self, requests: Iterable[dpb.DecideRequest | Mapping[str, Any]], *,
                      timeout: float | None = None) -> Iterator[Decision]:
        """Decisions over one bidirectional stream (``DecideStream``), answered in order.

        ``requests`` yields ``DecideRequest`` messages or mappings with ``use_case``,
        ``features`` and optionally ``unit_id`` and ``disable_exploration``; it is read
        as the stream goes. No local fallback: a failure raises its typed error.
        ``timeout``: the deadline of the whole stream (default: none).
        """
        stream = (self._decide_stream_request(item) for item in requests)
        for reply in self._stream("decision", "DecideStream", stream, _seconds(timeout)):
            self._remember(reply.decision.use_case)
            yield self._stream_decision(reply)

    # ----------------------------------------------------------------- feedback

    def log_outcome(self, use_case: str, decision_id: str, outcome_id: str, name: str,
                    value: float = 1.0, label: str = "",
                    event_time: datetime | float | None = None, *,
                    timeout: float | None = None) -> fpb.LogOutcomesResponse:
        """Log one outcome (idempotent on ``outcome_id``)."""
        return self.log_outcomes([Outcome(use_case, decision_id, outcome_id, name, value, label,
                                          event_time)], timeout=timeout)

    def log_outcomes(self, outcomes: Iterable[Outcome | fpb.Outcome | Mapping[str, Any]],
                     batch_size: int = 5000, *, timeout: float | None = None) -> fpb.LogOutcomesResponse:
        """Log outcomes in batches; returns the summed counts. ``timeout`` is per batch."""
        total = fpb.LogOutcomesResponse()
        messages = [_outcome_proto(o) for o in outcomes]
        for start in range(0, len(messages), batch_size):
            request = fpb.LogOutcomesRequest(request_id=self.clock.new_id(),
                                             outcomes=messages[start:start + batch_size])
            _add_counts(total, self._call("feedback", "LogOutcomes", request,
                                          _deadline(timeout, self._bulk_deadline_s)))
        return total

    def log_outcome_columns(self, use_case: str, decision_ids: Sequence[str], outcome_ids: Sequence[str],
                            names: Sequence[str] | str, values: Sequence[float] | float = 1.0, *,
                            labels: Sequence[str] | None = None,
                            event_times: Sequence[datetime | float | None] | None = None,
                            item_ids: Sequence[str] | None = None, batch_size: int = 5000,
                            timeout: float | None = None) -> fpb.LogOutcomesResponse:
        """Log many outcomes of one use case given as columns (lists, arrays, a data
        frame's columns): entry i of each is outcome i. The same outcomes as
        :meth:`log_outcomes` takes, sent as ``OutcomeColumns``: cheaper to send and for
        the feedback service to check. ``names`` and ``values`` may be one value for
        every outcome; ids, names, labels and item ids must be strings (a missing label
        or item id, None or NaN, is none); ``event_times`` are datetimes or epoch
        seconds, None (or the epoch itself, which the column cannot tell from none)
        meaning the server's now. Sent in batches of ``batch_size``; returns the summed
        counts. ValueError for columns of different lengths, TypeError for a value that
        is not a string; the service's INVALID_ARGUMENT names ``columns[0].<column>[i]``
        (i within the batch). ``timeout`` is per batch."""
        total = fpb.LogOutcomesResponse()
        for request in _outcome_column_requests(use_case, decision_ids, outcome_ids, names, values, labels,
                                                event_times, item_ids, batch_size, self.clock.new_id):
            _add_counts(total, self._call("feedback", "LogOutcomes", request,
                                          _deadline(timeout, self._bulk_deadline_s)))
        return total

    def _record_blueprints(self, items: Sequence[fpb.DecisionRecord | Mapping[str, Any]],
                           timeout: float | None) -> dict[tuple[str, int], tuple[int, blueprint_pb2.Blueprint]]:
        found = {}
        for use_case, version in self._records_needing_blueprints(items):
            uc = self.get_use_case(use_case, version, timeout=timeout)
            found[(use_case, version)] = (uc.version, uc.blueprint)
        return found

    def log_decisions(self, records: Iterable[fpb.DecisionRecord | Mapping[str, Any]],
                      batch_size: int = 1000, *, timeout: float | None = None) -> fpb.LogDecisionsResponse:
        """Store decisions made elsewhere (``LogDecisions``), in batches; returns the summed
        count of decisions stored (new or already there: idempotent on ``decision_id``).

        A record is a ``DecisionRecord`` or a mapping of its fields. Its ``decision_id``
        is a UUIDv7 whose timestamp is the decision time: make it with
        ``loopwise.uuid7_at(decision_time)`` (and keep it, to log the decision's
        outcomes). A mapping may also give:

        - ``blueprint_version`` left out or 0: the use case's current version;
        - ``features`` by name (``{"basket_value": 42.0, "region": "north"}``: categories
          coded with the version's vocabulary, -1 when unknown; missing or None is NaN),
          or numbers in the blueprint's feature order;
        - ``action`` or ``action_index`` alone (the other from the blueprint);
          ``action_probabilities`` and ``action_scores`` by action name or in order.

        The feedback service checks every record against its blueprint version
        (INVALID_ARGUMENT naming ``decisions[i].<field>``). ``timeout`` is per batch.
        """
        items = list(records)
        blueprints = self._record_blueprints(items, timeout)
        messages = [_decision_record(item, blueprints, f"records[{i}]")
                    for i, item in enumerate(items)]
        accepted = 0
        for start in range(0, len(messages), batch_size):
            request = fpb.LogDecisionsRequest(request_id=self.clock.new_id(),
                                              decisions=messages[start:start + batch_size])
            accepted += self._call("feedback", "LogDecisions", request,
                                   _deadline(timeout, self._bulk_deadline_s)).accepted
        return fpb.LogDecisionsResponse(accepted=accepted)

    def get_decision(self, use_case: str, decision_id: str, *,
                     timeout: float | None = None) -> fpb.GetDecisionResponse:
        """One logged decision with its outcomes, reward and model lineage (``GetDecision``)."""
        return self._call("feedback", "GetDecision",
                          fpb.GetDecisionRequest(use_case=use_case, decision_id=decision_id),
                          _deadline(timeout, self._bulk_deadline_s))

    def get_stats(self, use_case: str, *, timeout: float | None = None) -> fpb.GetStatsResponse:
        """Decision and outcome counts of a use case (from the feedback service)."""
        return self._call("feedback", "GetStats", fpb.GetStatsRequest(use_case=use_case),
                          _deadline(timeout, self._bulk_deadline_s))

    def read_training_data(self, use_case: str, *, start_time: TimeArg = None, end_time: TimeArg = None,
                           batch_rows: int = 0, include_open_windows: bool = False,
                           include_fallback: bool = False,
                           timeout: float | None = None) -> Iterator[fpb.ReadTrainingDataResponse]:
        """The joined rows of a use case (``ReadTrainingData``) as columnar batches (every
        batch from one blueprint version; ``loopwise.tensors`` unpacks its columns).

        Args:
            use_case: the use case.
            start_time: decisions at or after this time (None: all).
            end_time: decisions before this time (None: now).
            batch_rows: rows per batch (0: 4096).
            include_open_windows: also rows whose reward window is still open.
            include_fallback: also fallback decisions.
            timeout: deadline of the whole stream (default 600 s).
        """
        request = self._training_data_request(use_case, start_time, end_time, batch_rows,
                                              include_open_windows, include_fallback)
        return self._stream("feedback", "ReadTrainingData", request, _deadline(timeout, _STREAM_DEADLINE_S))

    def delete_unit_data(self, use_case: str, unit_id: str, *, request_id: str = "",
                         timeout: float | None = None) -> fpb.DeleteUnitDataResponse:
        """Delete every decision of one unit in a use case and their outcomes
        (``DeleteUnitData``, for privacy requests; idempotent)."""
        request = fpb.DeleteUnitDataRequest(request_id=request_id or self.clock.new_id(),
                                            use_case=use_case, unit_id=unit_id)
        return self._call("feedback", "DeleteUnitData", request,
                          _deadline(timeout, max(self._bulk_deadline_s, _DELETE_DEADLINE_S)))

    # ----------------------------------------------------------------- use cases

    def apply_use_case(self, blueprint: blueprint_pb2.Blueprint, validate_only: bool = False,
                       author: str = "", reason: str = "", *,
                       timeout: float | None = None) -> dpb.ApplyUseCaseResponse:
        """Create or update a use case from a blueprint (or only validate it)."""
        request = dpb.ApplyUseCaseRequest(request_id=self.clock.new_id(), blueprint=blueprint,
                                          validate_only=validate_only, author=author, reason=reason)
        reply = self._call("decision", "ApplyUseCase", request, _deadline(timeout, self._bulk_deadline_s))
        if not validate_only:
            self._learn(reply.use_case)
        return reply

    def set_value_weights(self, use_case: str, weights: Mapping[str, float], author: str = "",
                          reason: str = "", *, timeout: float | None = None) -> dpb.ApplyUseCaseResponse:
        """Apply a new blueprint version whose value model weighs the metrics by
        ``weights`` (metric name → weight; others keep theirs). Decisions follow the new
        weights at once, with the models already deployed (no retraining)."""
        latest = self.get_use_case(use_case, timeout=timeout).blueprint
        return self.apply_use_case(with_value_weights(latest, weights), author=author,
                                   reason=reason or "value model weights", timeout=timeout)

    def get_use_case(self, use_case: str, version: int = 0, *, timeout: float | None = None) -> dpb.UseCase:
        """A use case (latest or a given blueprint version); caches its default decision."""
        reply = self._call("decision", "GetUseCase", dpb.GetUseCaseRequest(use_case=use_case, version=version),
                           _deadline(timeout, self._bulk_deadline_s))
        if version == 0:
            self._learn(reply.use_case)
        return reply.use_case

    def list_use_cases(self, *, timeout: float | None = None) -> list[dpb.UseCase]:
        """The latest version of every use case (``timeout`` per page)."""
        found: list[dpb.UseCase] = []
        token = ""
        while True:
            reply = self._call("decision", "ListUseCases", dpb.ListUseCasesRequest(page_token=token),
                               _deadline(timeout, self._bulk_deadline_s))
            found.extend(reply.use_cases)
            token = reply.next_page_token
            if not token:
                return found

    def rollback_use_case(self, use_case: str, to_version: int, reason: str = "",
                          author: str = "", *, timeout: float | None = None) -> dpb.UseCase:
        """Make an earlier blueprint version current again (as a new version)."""
        request = dpb.RollbackUseCaseRequest(request_id=self.clock.new_id(), use_case=use_case,
                                             to_version=to_version, reason=reason, author=author)
        return self._call("decision", "RollbackUseCase", request,
                          _deadline(timeout, self._bulk_deadline_s)).use_case

    def set_kill_switch(self, use_case: str, enabled: bool, reason: str = "",
                        author: str = "", *, timeout: float | None = None) -> dpb.UseCase:
        """Force (or stop forcing) the default decision for a use case."""
        request = dpb.SetKillSwitchRequest(request_id=self.clock.new_id(), use_case=use_case,
                                           enabled=enabled, reason=reason, author=author)
        return self._call("decision", "SetKillSwitch", request,
                          _deadline(timeout, self._bulk_deadline_s)).use_case

    def archive_use_case(self, use_case: str, archived: bool = True, reason: str = "",
                         author: str = "", *, timeout: float | None = None) -> dpb.UseCase:
        """Archive a use case (decisions refused, hidden from lists), or restore it."""
        request = dpb.ArchiveUseCaseRequest(request_id=self.clock.new_id(), use_case=use_case,
                                            archived=archived, reason=reason, author=author)
        return self._call("decision", "ArchiveUseCase", request,
                          _deadline(timeout, self._bulk_deadline_s)).use_case

    def use_case_changes(self, use_case: str, *, timeout: float | None = None) -> list[dpb.UseCaseChange]:
        """The audit trail of a use case: who changed what, when and why."""
        reply = self._call("decision", "ListUseCaseChanges", dpb.ListUseCaseChangesRequest(use_case=use_case),
                           _deadline(timeout, self._bulk_deadline_s))
        return list(reply.changes)

    # ------------------------------------------------------------------ trainer

    def start_training(self, use_case: str, *, deploy: bool = False, request_id: str = "",
                       start_time: TimeArg = None, end_time: TimeArg = None,
                       trigger: str = "", timeout: float | None = None) -> op_pb.Operation:
        """Start a training job for a use case (``StartTraining``); returns its operation at once.

        Args:
            use_case: the use case to train.
            deploy: deploy the result to production if it beats the baseline, even if a
                model already serves (a later blessed model otherwise goes through
                shadow and canary unless the blueprint's rollout is manual).
            request_id: idempotency key; a retry with the same key returns the same
                operation (default: a new UUIDv7, kept across the SDK's own retries).
            start_time: use decisions at or after this time (datetime, epoch seconds or
                Timestamp; None: all).
            end_time: use decisions before this time (None: now).
            trigger: why the job was started: "manual" (default) or "schedule".
            timeout: deadline of the call (not of the job).

        Follow it with :meth:`wait_operation`; its result is a ``TrainingResult``
        (:func:`operation_result`).
        """
        request = _start_training_request(use_case, request_id or self.clock.new_id(), deploy,
                                          start_time, end_time, trigger)
        return self._call("trainer", "StartTraining", request,
                          _deadline(timeout, self._bulk_deadline_s)).operation

    def get_operation(self, operation: op_pb.Operation | str, use_case: str = "", *,
                      service: Service | None = None, timeout: float | None = None) -> op_pb.Operation:
        """The current state of a training or effect-estimation operation (``GetOperation``).

        Args:
            operation: the operation, or its id.
            use_case: its use case (default: the operation's); lets a token scoped to
                that use case read it.
            service: "trainer" or "evaluator"; by default the operation's kind decides,
                and with only an id the trainer is asked, then the evaluator.
            timeout: deadline of each call.
        """
        operation_id, scope = _operation_ref(operation, use_case)
        request = op_pb.GetOperationRequest(id=operation_id, use_case=scope)
        services = self._operations_services(operation, service)
        for index, name in enumerate(services):
            try:
                return self._call(name, "GetOperation", request, _deadline(timeout, self._bulk_deadline_s)).operation
            except NotFound:
                if index == len(services) - 1:
                    raise
        raise AssertionError("unreachable")

    def list_operations(self, use_case: str = "", *, service: Service = "trainer",
                        limit: int = 50, timeout: float | None = None) -> list[op_pb.Operation]:
        """Operations of one service (``ListOperations``), newest first.

        Args:
            use_case: only this use case's operations ("" for all).
            service: "trainer" (training jobs) or "evaluator" (effect estimations).
            limit: at most this many operations (pages are followed).
            timeout: deadline of each page's call.
        """
        name = _check_service(service) or "trainer"
        found: list[op_pb.Operation] = []
        token = ""
        while len(found) < limit:
            request = op_pb.ListOperationsRequest(use_case=use_case, page_size=min(limit - len(found), 500),
                                                  page_token=token)
            reply = self._call(name, "ListOperations", request, _deadline(timeout, self._bulk_deadline_s))
            found.extend(reply.operations)
            token = reply.next_page_token
            if not token or not reply.operations:
                break
        return found[:limit]

    def cancel_operation(self, operation: op_pb.Operation | str, use_case: str = "", *,
                         service: Service | None = None, timeout: float | None = None) -> op_pb.Operation:
        """Cancel a running operation (``CancelOperation``); returns it after the cancellation
        (or as it was, if already final). Arguments as :meth:`get_operation`."""
        operation_id, scope = _operation_ref(operation, use_case)
        request = op_pb.CancelOperationRequest(id=operation_id, use_case=scope)
        services = self._operations_services(operation, service)
        for index, name in enumerate(services):
            try:
                return self._call(name, "CancelOperation", request,
                                  _deadline(timeout, self._bulk_deadline_s)).operation
            except NotFound:
                if index == len(services) - 1:
                    raise
        raise AssertionError("unreachable")

    def wait_operation(self, operation: op_pb.Operation, timeout: float | None = None,
                       on_progress: Callable[[op_pb.Operation], Any] | None = None) -> op_pb.Operation:
        """Follow an operation (``WatchOperation``) until it is final; returns it when it succeeded.

        When the service is UNAVAILABLE (e.g. restarting) the SDK reads the operation
        again with ``GetOperation`` and resumes watching, until ``timeout``.

        Args:
            operation: the operation returned by :meth:`start_training` or
                :meth:`estimate_effects` (or read with :meth:`get_operation`).
            timeout: seconds to wait at most (None: no limit, outages included). The
                watch's deadline is this timeout, never shorter.
            on_progress: called with every new state of the operation (stage, progress,
                message), from the calling thread.

        Raises:
            OperationFailed: the operation ended FAILED (``.operation``, ``.code``,
                ``.error_message`` say why).
            OperationCancelled: it was cancelled (a subclass of OperationFailed).
            OperationTimeout: it was not final after ``timeout`` seconds (the job goes on).
        """
        service = _service_of(operation, None) or "trainer"
        deadline = None if timeout is None else time.monotonic() + timeout
        seen = b""

        def report(update: op_pb.Operation) -> None:
            nonlocal seen
            body = update.SerializeToString()
            if body != seen:
                seen = body
                if on_progress is not None:
                    on_progress(update)

        while operation.state not in FINAL_STATES:
            remaining = self._remaining(deadline, operation, timeout)
            request = op_pb.WatchOperationRequest(id=operation.id, use_case=operation.use_case)
            try:
                for update in self._stream(service, "WatchOperation", request, remaining):
                    operation = update.operation
                    report(operation)
            except DeadlineExceeded as error:
                if deadline is None:
                    raise
                raise OperationTimeout(operation, timeout or 0.0) from error
            except Unavailable:
                remaining = self._remaining(deadline, operation, timeout)
                time.sleep(_RESUME_PAUSE_S if remaining is None else min(_RESUME_PAUSE_S, remaining))
                try:  # the service restarted (or is restarting): read the state, then resume
                    operation = self._call(
                        service, "GetOperation",
                        op_pb.GetOperationRequest(id=operation.id, use_case=operation.use_case),
                        self._bulk_deadline_s).operation
                    report(operation)
                except (Unavailable, DeadlineExceeded):
                    pass
        return _final(operation)

    def list_models(self, use_case: str, *, timeout: float | None = None) -> list[tpb.Model]:
        """The model versions of a use case (``ListModels``), newest first."""
        return list(self._call("trainer", "ListModels", tpb.ListModelsRequest(use_case=use_case),
                               _deadline(timeout, self._bulk_deadline_s)).models)

    def get_model(self, use_case: str, version: int = 0, *, timeout: float | None = None) -> tpb.Model:
        """One model version of a use case (``GetModel``); version 0 is the latest."""
        return self._call("trainer", "GetModel", tpb.GetModelRequest(use_case=use_case, version=version),
                          _deadline(timeout, self._bulk_deadline_s)).model

    def download_model(self, use_case: str, version: int, *, timeout: float | None = None) -> ModelArtifact:
        """A model's ONNX artifact (``DownloadModel``, in chunks), checked against its
        size and sha256 (``ValueError`` when it does not match)."""
        chunks = self._stream("trainer", "DownloadModel",
                              tpb.DownloadModelRequest(use_case=use_case, version=version),
                              _deadline(timeout, _STREAM_DEADLINE_S))
        return _artifact(chunks, use_case, version)

    def register_model(self, model: tpb.Model, onnx: bytes, *, request_id: str = "",
                       timeout: float | None = None) -> tpb.Model:
        """Register a model made elsewhere (``RegisterModel``): its metadata (``use_case``,
        ``family``, ``blueprint_version``, input and output names...) and its ONNX
        bytes; the registry assigns the version. Returns the registered model."""
        request = self._register_request(model, onnx, request_id or self.clock.new_id())
        return self._call("trainer", "RegisterModel", request,
                          _deadline(timeout, max(self._bulk_deadline_s, _STREAM_DEADLINE_S))).model

    def set_deployment(self, use_case: str, production_version: int = 0, *, canary_version: int = 0,
                       canary_share: float = 0.0, shadow_versions: Sequence[int] = (),
                       reason: str = "", request_id: str = "",
                       timeout: float | None = None) -> tpb.Deployment:
        """Set which model versions serve a use case (``SetDeployment``); returns the new revision.

        Args:
            use_case: the use case.
            production_version: the production model version (0: none, the default
                decision serves).
            canary_version: a canary model version (0: none).
            canary_share: share of units the canary serves, in [0, 1].
            shadow_versions: model versions scored and logged, never returned.
            reason: why (kept in the deployment audit).
            request_id: idempotency key (default: a new UUIDv7).
            timeout: deadline of the call.
        """
        request = tpb.SetDeploymentRequest(
            request_id=request_id or self.clock.new_id(), use_case=use_case,
            production_version=production_version, canary_version=canary_version,
            canary_share=canary_share, shadow_versions=list(shadow_versions), reason=reason)
        return self._call("trainer", "SetDeployment", request,
                          _deadline(timeout, self._bulk_deadline_s)).deployment

    def rollback_model(self, use_case: str, reason: str = "", *, request_id: str = "",
                       timeout: float | None = None) -> tpb.Deployment:
        """Return a use case's deployment to its previous revision (the trainer's ``Rollback``),
        as a new revision; returns it. (:meth:`rollback_use_case` rolls back blueprints.)"""
        request = tpb.RollbackRequest(request_id=request_id or self.clock.new_id(), use_case=use_case,
                                      reason=reason)
        return self._call("trainer", "Rollback", request, _deadline(timeout, self._bulk_deadline_s)).deployment

    def get_deployment(self, use_case: str, *, timeout: float | None = None) -> tpb.Deployment | None:
        """The deployment in force for a use case (the first message of
        ``WatchDeployments``), or None when it never had one (its deployment audit is
        empty). ``timeout`` bounds each of the two calls."""
        if not self.list_deployment_audit(use_case, timeout=timeout):
            return None
        updates = self.watch_deployments([use_case], timeout=_deadline(timeout, _DEPLOYMENT_WAIT_S))
        try:
            for update in updates:
                if update.use_case == use_case:
                    return update
        except DeadlineExceeded:
            pass
        finally:
            updates.close()
        return None

    def watch_deployments(self, use_cases: Sequence[str] = (), *,
                          timeout: float | None = None) -> Generator[tpb.Deployment, None, None]:
        """The current deployment of each use case (all when none is named), then every
        new revision as it is made (``WatchDeployments``). ``timeout``: the deadline of
        the stream (default: none; it ends with UNAVAILABLE when the trainer stops)."""
        request = tpb.WatchDeploymentsRequest(use_cases=list(use_cases))
        for update in self._stream("trainer", "WatchDeployments", request, _seconds(timeout)):
            yield update.deployment

    def get_rollout(self, use_case: str, *, timeout: float | None = None) -> tpb.Rollout:
        """The latest automatic rollout of a use case (``GetRollout``): step, guardrails,
        rewards; NOT_FOUND when it never had one."""
        return self._call("trainer", "GetRollout", tpb.GetRolloutRequest(use_case=use_case),
                          _deadline(timeout, self._bulk_deadline_s)).rollout

    def list_deployment_audit(self, use_case: str, *,
                              timeout: float | None = None) -> list[tpb.DeploymentAuditEntry]:
        """Every deployment change of a use case with its reason, oldest first
        (``ListDeploymentAudit``)."""
        return list(self._call("trainer", "ListDeploymentAudit",
                               tpb.ListDeploymentAuditRequest(use_case=use_case),
                               _deadline(timeout, self._bulk_deadline_s)).entries)

    # ---------------------------------------------------------------- evaluator

    def estimate_effects(self, use_case: str, *, request_id: str = "", start_time: TimeArg = None,
                         end_time: TimeArg = None, estimator: int | str = 0,
                         treatment_action: str = "", control_action: str = "", seed: int = 0,
                         treatment_source: int | str = 0, treatment_arm: str = "",
                         control_arm: str = "", segment_features: Sequence[str] = (),
                         treatment_cost: float = 0.0, register_cate_model: bool = False,
                         forest_trees: int = 0,
                         job_timeout: float | timedelta | duration_pb2.Duration | None = None,
                         timeout: float | None = None) -> op_pb.Operation:
        """Start estimating heterogeneous treatment effects (``EstimateEffects``); returns the
        operation at once. Follow it with :meth:`wait_operation`; its result is an
        ``EstimateEffectsResult`` whose ``report_id`` :meth:`get_report` reads.

        Args:
            use_case: the use case whose logged decisions are analysed.
            request_id: idempotency key (default: a new UUIDv7).
            start_time: decisions at or after this time (None: all).
            end_time: decisions before this time (None: now).
            estimator: ``Estimator`` value or name ("linear_dml", "causal_forest_dml",
                "dr_learner", "auto"; default linear DML).
            treatment_action: the treated action (default: the blueprint's second).
            control_action: the control action (default: the blueprint's first).
            seed: the estimator's seed (0: the service's setting).
            treatment_source: ``TreatmentSource`` value or name ("actions", "arms").
            treatment_arm: the treated experiment arm (with arms).
            control_arm: the control experiment arm (with arms).
            segment_features: features defining the declared segments.
            treatment_cost: cost of treating one unit in reward units (policy section).
            register_cate_model: export the effect model to ONNX and register it with
                the trainer.
            forest_trees: trees of the causal forest (0: 100).
            job_timeout: the job's own time limit (seconds, timedelta or Duration; None:
                one hour); the job fails with DEADLINE_EXCEEDED past it.
            timeout: deadline of the call that starts the job.
        """
        request = _estimate_effects_request(
            use_case, request_id or self.clock.new_id(), start_time, end_time, estimator,
            treatment_action, control_action, seed, treatment_source, treatment_arm, control_arm,
            segment_features, treatment_cost, register_cate_model, forest_trees, job_timeout)
        return self._call("evaluator", "EstimateEffects", request,
                          _deadline(timeout, self._bulk_deadline_s)).operation

    def start_tuning(
        self, use_case: str,
        parameters: Mapping[str, epb.ParameterRange | Sequence[float] | Mapping[str, float]]
        | Sequence[epb.TunedParameter], *,
        objective: str = "reward", constraints: Sequence[epb.Constraint | Mapping[str, Any]] = (),
        rounds: int = 0, batch_size: int = 0, min_rows_per_arm: int = 0,
        round_timeout: float | timedelta | duration_pb2.Duration | None = None, apply: bool = False,
        acquisition: int | str = 0, seed: int = 0, seed_from_offline: bool = False,
        suggest_model_version: int = 0, suggest_report_id: ReportArg = "", author: str = "",
        request_id: str = "", timeout: float | None = None,
    ) -> op_pb.Operation:
        """Start tuning blueprint parameters online (``StartTuning``, docs/tuning.md); returns
        the operation at once. Follow it with :meth:`wait_operation`; its ``details`` (while
        it runs) and its result are a ``TuningResult``.

        Args:
            use_case: the use case whose blueprint is tuned.
            parameters: parameter path → (low, high), e.g.
                ``{"policy.action_costs[discount]": (0, 1), "value_model.weights[revenue]": (0, 2)}``,
                or ``TunedParameter`` messages.
            objective: the scorecard metric to maximise (per-arm mean).
            constraints: ``Constraint`` messages or dicts such as
                ``{"metric": "outcome_count", "max": 0.5}``.
            rounds: rounds of arms (0: 5).
            batch_size: arms per round (0: 4).
            min_rows_per_arm: decisions with a closed reward window per arm before a round
                is measured (0: 1000).
            round_timeout: how long a round may wait for its rows (seconds, timedelta or
                Duration, on the service clock; None: 7 days).
            apply: apply the best setting at the end (otherwise it is only proposed and the
                starting blueprint is applied again).
            acquisition: ``Acquisition`` value or name ("expected_improvement",
                "upper_confidence_bound").
            seed: random seed (0: the service's setting).
            seed_from_offline: open the first round with SuggestParameters' suggestion for
                ``suggest_model_version`` or ``suggest_report_id``.
            suggest_model_version: the registered model of the offline suggestion.
            suggest_report_id: the effect report of the offline suggestion.
            author: who tunes, recorded with every applied blueprint version.
            request_id: idempotency key (default: a new UUIDv7).
            timeout: deadline of the call that starts the job.
        """
        request = _start_tuning_request(
            use_case, request_id or self.clock.new_id(), parameters, objective, constraints, rounds, batch_size,
            min_rows_per_arm, round_timeout, apply, acquisition, seed, seed_from_offline, suggest_model_version,
            suggest_report_id, author)
        return self._call("evaluator", "StartTuning", request, _deadline(timeout, self._bulk_deadline_s)).operation

    def get_report(self, report: ReportArg, use_case: str = "", *,
                   timeout: float | None = None) -> epb.GetReportResponse:
        """A report (``GetReport``): ``.result`` (the ``EstimateEffectsResult``: ATE, CATE
        quantiles, segments, validation, policy) and ``.html`` (a self-contained page).

        Args:
            report: the report id, its result, or the succeeded ``estimate_effects``
                operation.
            use_case: the report's use case (default: known from ``report`` or an
                earlier read); lets a token scoped to that use case read it.
            timeout: deadline of the call.
        """
        reply = self._call("evaluator", "GetReport", self._report_request(report, use_case),
                           _deadline(timeout, self._bulk_deadline_s))
        self._remember_report(reply.result)
        return reply

    def list_reports(self, use_case: str = "", *,
                     timeout: float | None = None) -> list[epb.EstimateEffectsResult]:
        """Report results (no HTML), newest first (``ListReports``); "" lists every use case's."""
        reply = self._call("evaluator", "ListReports", epb.ListReportsRequest(use_case=use_case),
                           _deadline(timeout, self._bulk_deadline_s))
        for result in reply.reports:
            self._remember_report(result)
        return list(reply.reports)

    def _report_meta(self, report: ReportArg, use_case: str,
                     timeout: float | None) -> tuple[str, str, tuple[str, ...]]:
        """(report id, use case, feature names) of a report, read once if needed."""
        report_id, scope, names = self._known_report(report, use_case)
        if names is None:
            result = self.get_report(report_id, scope, timeout=timeout).result
            scope, names = scope or result.use_case, tuple(result.feature_names)
        return report_id, scope, names

    def predict_effects(self, report: ReportArg, rows: Any, *, use_case: str = "",
                        feature_names: Sequence[str] | None = None,
                        batch_size: int = _PREDICT_BATCH_ROWS,
                        timeout: float | None = None) -> EffectPredictions:
        """Per-row effects (CATE) with 95% intervals from a report's fitted estimator
        (``PredictEffects``, which addresses the estimator by report id).

        Args:
            report: the report id, its result, or the succeeded ``estimate_effects``
                operation.
            rows: a [rows, features] matrix (a numpy array or nested lists) whose
                columns follow the report's ``feature_names`` (categorical columns hold
                vocabulary codes, NaN is missing), or named rows (a list of dicts or a
                data frame): numbers, category strings (coded with the use case's
                vocabulary, -1 when unknown) or None / absent (missing).
            use_case: the report's use case (default: known from ``report`` or an
                earlier read); lets a token scoped to that use case make the call.
            feature_names: the matrix's column names; they must equal the report's
                (default: the report's, read once with GetReport).
            batch_size: rows per call.
            timeout: deadline of each call.
        """
        records = _is_records(rows)
        if feature_names is None or records:
            report_id, scope, names = self._report_meta(report, use_case, timeout)
        else:
            report_id, scope, _ = self._known_report(report, use_case)
            names = tuple(feature_names)
        vocabularies = None
        if records:
            rows = _records(rows)
            if _needs_vocabulary(rows):
                vocabularies = _vocabularies(self.get_use_case(scope, timeout=timeout).blueprint)
        matrix = _effect_matrix(rows, names, vocabularies)
        replies = [self._call("evaluator", "PredictEffects", request, _deadline(timeout, self._bulk_deadline_s))
                   for request in _predict_requests(report_id, scope, names, matrix, batch_size)]
        return _predictions(replies)

    def evaluate_policy(self, use_case: str, *, model_version: int = 0, start_time: TimeArg = None,
                        end_time: TimeArg = None, constant_action: str = "",
                        report_id: ReportArg = "",
                        policy_variant: blueprint_pb2.Policy | Mapping[str, Any] | None = None,
                        max_weight: float = 0.0, timeout: float | None = None,
                        deadline_s: float | None = None) -> epb.EvaluatePolicyResponse:
        """Off-policy value of a candidate policy from the logged propensities
        (``EvaluatePolicy``): IPS, SNIPS and doubly robust estimates with 95% CIs.

        Args:
            use_case: the use case.
            model_version: the candidate model version (0: the default policy).
            start_time: decisions at or after this time (None: all).
            end_time: decisions before this time (None: now).
            constant_action: candidate: always take this action.
            report_id: candidate: the uplift policy of a report's effect model (an id,
                a result or the estimate_effects operation).
            policy_variant: policy settings replacing the blueprint's for the candidate
                (a ``Policy`` or a mapping such as ``{"type": "POLICY_TYPE_GREEDY"}``).
            max_weight: largest importance weight before the estimate is flagged (0: 20).
            timeout: deadline of the call (default: at least 300 s); the evaluator
                stops the work when it passes.
            deadline_s: the former name of ``timeout``.
        """
        request = _evaluate_policy_request(use_case, model_version, start_time, end_time,
                                           constant_action, report_id, policy_variant, max_weight)
        return self._call("evaluator", "EvaluatePolicy", request,
                          _deadline(_older_deadline(timeout, deadline_s), self._analysis_deadline_s))

    def suggest_parameters(
        self, use_case: str,
        parameters: Sequence[str] | Mapping[str, epb.ParameterRange | Sequence[float]],
        ranges: Sequence[epb.ParameterRange | Sequence[float]] | None = None, *,
        report_id: ReportArg = "", model_version: int = 0, objective: str = "",
        constraints: Sequence[epb.Constraint | Mapping[str, Any]] = (), iterations: int = 0,
        seed: int = 0, start_time: TimeArg = None, end_time: TimeArg = None,
        net_of_costs: bool = False, timeout: float | None = None, deadline_s: float | None = None,
    ) -> epb.SuggestParametersResponse:
        """Blueprint parameters that maximise a goal, by Bayesian optimisation over
        off-policy estimates (``SuggestParameters``).

        Args:
            use_case: the use case.
            parameters: parameter names (e.g. ``["policy.threshold"]``) with ``ranges``,
                or a mapping name -> (low, high).
            ranges: (low, high) or ``ParameterRange`` per parameter, in order.
            report_id: where the candidate's action values come from: a report's effect
                model (id, result or operation)...
            model_version: ...or a registered model version.
            objective: "reward" (default) or "share:<action>".
            constraints: ``Constraint`` messages or mappings such as
                ``{"metric": "share:offer", "max": 0.3}``.
            iterations: evaluations of the objective (0: 20).
            seed: random seed (0: the service's setting).
            start_time: decisions at or after this time (None: all).
            end_time: decisions before this time (None: now).
            net_of_costs: subtract the blueprint's action costs from the reward goal.
            timeout: deadline of the call (default: at least 300 s); the evaluator
                stops the work when it passes.
            deadline_s: the former name of ``timeout``.
        """
        request = _suggest_parameters_request(use_case, parameters, ranges, report_id, model_version,
                                              objective, constraints, iterations, seed, start_time,
                                              end_time, net_of_costs)
        return self._call("evaluator", "SuggestParameters", request,
                          _deadline(_older_deadline(timeout, deadline_s), self._analysis_deadline_s))

    def get_scorecard(self, use_case: str, *, canary: bool = False, control_arm: str = "",
                      covariates: Sequence[str] = (), start_time: TimeArg = None, end_time: TimeArg = None,
                      look_interval: float | timedelta | duration_pb2.Duration | None = None,
                      mixture_effect_size: float = 0.0, srm_alpha: float = 0.0, include_html: bool = False,
                      timeout: float | None = None, deadline_s: float | None = None) -> epb.GetScorecardResponse:
        """An experiment scorecard (``GetScorecard``): per group and metric the mean, the
        difference to the control and the relative lift with 95% CIs, CUPED, a
        sample-ratio-mismatch test and an always-valid sequential test
        (docs/scorecards.md). ``.scorecard`` holds the numbers, ``.html`` the page.

        Args:
            use_case: the use case.
            canary: compare the deployment's canary model with production instead of
                the experiment arms.
            control_arm: the control arm (arms only; default: the blueprint's first arm).
            covariates: features used as CUPED covariates.
            start_time: decisions at or after this time (None: all; for the canary, since
                the deployment revision in force).
            end_time: decisions before this time (None: now).
            look_interval: spacing of the sequential test's looks (seconds, timedelta or
                Duration; None: one hour).
            mixture_effect_size: the mSPRT mixture's standard deviation in pooled
                standard deviations of the metric (0: 0.05).
            srm_alpha: significance level of the sample-ratio test (0: 0.001).
            include_html: also render the HTML page.
            timeout: deadline of the call (default: at least 300 s).
            deadline_s: the former name of ``timeout``.
        """
        request = self._scorecard_request(use_case, canary, control_arm, covariates, start_time, end_time,
                                          look_interval, mixture_effect_size, srm_alpha, include_html)
        return self._call("evaluator", "GetScorecard", request,
                          _deadline(_older_deadline(timeout, deadline_s), self._analysis_deadline_s))

    def close(self) -> None:
        """Close the channels (the trainer's and the evaluator's if they were opened)."""
        for channel in self._take_lazy_channels():
            channel.close()
        self._decision_channel.close()
        self._feedback_channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_ClientBase):
    """The asyncio variant of :class:`Client` (``grpc.aio``), with the same methods and
    arguments; ``on_progress`` of ``wait_operation`` may also be a coroutine function;
    the streaming methods (``decide_stream``, ``read_training_data``,
    ``watch_deployments``) are async iterators."""

    def __init__(self, decision_address: Address | None = None, feedback_address: Address | None = None,
                 deadline_s: float | None = None, retries: int | None = None,
                 settings: Settings | None = None, defaults: Mapping[str, str] | None = None, *,
                 trainer_address: str | None = None, evaluator_address: str | None = None) -> None:
        super().__init__(decision_address, feedback_address, deadline_s, retries, settings, defaults,
                         trainer_address, evaluator_address)
        self._decision_channel = self._open_channel(self.decision_address)
        self._feedback_channel = self._open_channel(self.feedback_address)
        self.decision_stub = dgrpc.DecisionServiceStub(self._decision_channel)
        self.feedback_stub = fgrpc.FeedbackServiceStub(self._feedback_channel)

    def _open_channel(self, address: Address) -> grpc.aio.Channel:
        return security.aio_channel(self.settings, address, self._channel_options(),
                                    tracing.caller_interceptors())

    async def _call(self, service: ServiceName, method: str, request: Any, timeout: float) -> Any:
        """One unary RPC within ``timeout`` seconds, retries included (gRPC's retry
        policy, and _retry_delay); a failure raises its typed error."""
        stub = self._stub(service)
        deadline = time.monotonic() + timeout
        attempt = 0
        while True:
            try:
                return await getattr(stub, method)(request, timeout=max(deadline - time.monotonic(), 0.0))
            except grpc.RpcError as error:
                delay = _retry_delay(error, attempt, self.retries, deadline - time.monotonic())
                if delay is None:
                    raise self._typed(error, service, method) from None
            await asyncio.sleep(delay)
            attempt += 1

    async def _stream(self, service: ServiceName, method: str, request: Any,
                      timeout: float | None) -> AsyncGenerator[Any, None]:
        """The messages of a server (or bidirectional) stream; a failure raises its typed
        error. The call is cancelled when the iteration stops early."""
        call = getattr(self._stub(service), method)(request, timeout=timeout)
        try:
            async for message in call:
                yield message
        except grpc.RpcError as error:
            raise self._typed(error, service, method) from None
        finally:
            call.cancel()  # a no-op once the stream has ended

    async def _remember(self, use_case: str) -> None:
        if use_case in self._learned:
            return
        try:
            await self.get_use_case(use_case)
        except grpc.RpcError:
            pass

    # ----------------------------------------------------------------- decisions

    async def decide(self, use_case: str, features: Mapping[str, Any], unit_id: str = "",
                     disable_exploration: bool = False, *, timeout: float | None = None) -> Decision:
        """See :meth:`Client.decide`."""
        request = _decide_request(use_case, features, unit_id, disable_exploration)
        try:
            reply = await self._call("decision", "Decide", request, _deadline(timeout, self.deadline_s))
        except LoopwiseError as error:
            if _unreachable(error):
                return self._local_decision(use_case, error)
            raise
        await self._remember(use_case)
        return _decision_for_reply(reply, self._actions_of(use_case))

    async def rank(self, use_case: str, features: Mapping[str, Any], candidates: Candidates,
                   unit_id: str = "", top_k: int = 0, disable_exploration: bool = False, *,
                   timeout: float | None = None) -> Ranking:
        """See :meth:`Client.rank`."""
        request = _rank_request(use_case, features, candidates, unit_id, top_k, disable_exploration)
        try:
            reply = await self._call("decision", "Decide", request, _deadline(timeout, self.deadline_s))
        except LoopwiseError as error:
            if _unreachable(error):
                return _local_ranking(request)
            raise
        return _ranking_from_proto(reply.decision, request)

    async def decide_batch(self, use_case: str, blueprint_version: int,
                           feature_names: Sequence[str], matrix: np.ndarray,
                           unit_ids: Sequence[str] | None = None,
                           disable_exploration: bool = False, *,
                           timeout: float | None = None) -> BatchDecisions:
        """See :meth:`Client.decide_batch`."""
        request = _batch_request(use_case, blueprint_version, feature_names, matrix,
                                 unit_ids, disable_exploration)
        try:
            reply = await self._call("decision", "DecideBatch", request,
                                     _deadline(timeout, self._bulk_deadline_s))
        except LoopwiseError as error:
            if _unreachable(error):
                return self._local_batch(use_case, request.rows, error)
            raise
        await self._remember(use_case)
        return _batch_from_proto(reply)

    async def decide_stream(self, requests: Iterable[dpb.DecideRequest | Mapping[str, Any]]
                            | AsyncIterable[dpb.DecideRequest | Mapping[str, Any]], *,
                            timeout: float | None = None) -> AsyncIterator[Decision]:
        """See :meth:`Client.decide_stream`; ``requests`` may also be an async iterable."""

        async def stream() -> AsyncIterator[dpb.DecideRequest]:
            if isinstance(requests, AsyncIterable):
                async for item in requests:
                    yield self._decide_stream_request(item)
            else:
                for item in requests:
                    yield self._decide_stream_request(item)

        async for reply in self._stream("decision", "DecideStream", stream(), _seconds(timeout)):
            await self._remember(reply.decision.use_case)
            yield self._stream_decision(reply)

    # ----------------------------------------------------------------- feedback

    async def log_outcome(self, use_case: str, decision_id: str, outcome_id: str, name: str,
                          value: float = 1.0, label: str = "",
                          event_time: datetime | float | None = None, *,
                          timeout: float | None = None) -> fpb.LogOutcomesResponse:
        """See :meth:`Client.log_outcome`."""
        return await self.log_outcomes([Outcome(use_case, decision_id, outcome_id, name, value,
                                                label, event_time)], timeout=timeout)

    async def log_outcomes(self, outcomes: Iterable[Outcome | fpb.Outcome | Mapping[str, Any]],
                           batch_size: int = 5000, *,
                           timeout: float | None = None) -> fpb.LogOutcomesResponse:
        """See :meth:`Client.log_outcomes`."""
        total = fpb.LogOutcomesResponse()
        messages = [_outcome_proto(o) for o in outcomes]
        for start in range(0, len(messages), batch_size):
            request = fpb.LogOutcomesRequest(request_id=self.clock.new_id(),
                                             outcomes=messages[start:start + batch_size])
            _add_counts(total, await self._call("feedback", "LogOutcomes", request,
                                                _deadline(timeout, self._bulk_deadline_s)))
        return total

    async def log_outcome_columns(self, use_case: str, decision_ids: Sequence[str], outcome_ids: Sequence[str],
                                  names: Sequence[str] | str, values: Sequence[float] | float = 1.0, *,
                                  labels: Sequence[str] | None = None,
                                  event_times: Sequence[datetime | float | None] | None = None,
                                  item_ids: Sequence[str] | None = None, batch_size: int = 5000,
                                  timeout: float | None = None) -> fpb.LogOutcomesResponse:
        """See :meth:`Client.log_outcome_columns`."""
        total = fpb.LogOutcomesResponse()
        for request in _outcome_column_requests(use_case, decision_ids, outcome_ids, names, values, labels,
                                                event_times, item_ids, batch_size, self.clock.new_id):
            _add_counts(total, await self._call("feedback", "LogOutcomes", request,
                                                _deadline(timeout, self._bulk_deadline_s)))
        return total

    async def log_decisions(self, records: Iterable[fpb.DecisionRecord | Mapping[str, Any]],
                            batch_size: int = 1000, *,
                            timeout: float | None = None) -> fpb.LogDecisionsResponse:
        """See :meth:`Client.log_decisions`."""
        items = list(records)
        blueprints = {}
        for use_case, version in self._records_needing_blueprints(items):
            uc = await self.get_use_case(use_case, version, timeout=timeout)
            blueprints[(use_case, version)] = (uc.version, uc.blueprint)
        messages = [_decision_record(item, blueprints, f"records[{i}]")
                    for i, item in enumerate(items)]
        accepted = 0
        for start in range(0, len(messages), batch_size):
            request = fpb.LogDecisionsRequest(request_id=self.clock.new_id(),
                                              decisions=messages[start:start + batch_size])
            accepted += (await self._call("feedback", "LogDecisions", request,
                                          _deadline(timeout, self._bulk_deadline_s))).accepted
        return fpb.LogDecisionsResponse(accepted=accepted)

    async def get_decision(self, use_case: str, decision_id: str, *,
                           timeout: float | None = None) -> fpb.GetDecisionResponse:
        """See :meth:`Client.get_decision`."""
        return await self._call("feedback", "GetDecision",
                                fpb.GetDecisionRequest(use_case=use_case, decision_id=decision_id),
                                _deadline(timeout, self._bulk_deadline_s))

    async def get_stats(self, use_case: str, *, timeout: float | None = None) -> fpb.GetStatsResponse:
        """See :meth:`Client.get_stats`."""
        return await self._call("feedback", "GetStats", fpb.GetStatsRequest(use_case=use_case),
                                _deadline(timeout, self._bulk_deadline_s))

    async def read_training_data(self, use_case: str, *, start_time: TimeArg = None,
                                 end_time: TimeArg = None, batch_rows: int = 0,
                                 include_open_windows: bool = False, include_fallback: bool = False,
                                 timeout: float | None = None) -> AsyncIterator[fpb.ReadTrainingDataResponse]:
        """See :meth:`Client.read_training_data`."""
        request = self._training_data_request(use_case, start_time, end_time, batch_rows,
                                              include_open_windows, include_fallback)
        async for batch in self._stream("feedback", "ReadTrainingData", request,
                                        _deadline(timeout, _STREAM_DEADLINE_S)):
            yield batch

    async def delete_unit_data(self, use_case: str, unit_id: str, *, request_id: str = "",
                               timeout: float | None = None) -> fpb.DeleteUnitDataResponse:
        """See :meth:`Client.delete_unit_data`."""
        request = fpb.DeleteUnitDataRequest(request_id=request_id or self.clock.new_id(),
                                            use_case=use_case, unit_id=unit_id)
        return await self._call("feedback", "DeleteUnitData", request,
                                _deadline(timeout, max(self._bulk_deadline_s, _DELETE_DEADLINE_S)))

    # ----------------------------------------------------------------- use cases

    async def apply_use_case(self, blueprint: blueprint_pb2.Blueprint, validate_only: bool = False,
                             author: str = "", reason: str = "", *,
                             timeout: float | None = None) -> dpb.ApplyUseCaseResponse:
        """See :meth:`Client.apply_use_case`."""
        request = dpb.ApplyUseCaseRequest(request_id=self.clock.new_id(), blueprint=blueprint,
                                          validate_only=validate_only, author=author, reason=reason)
        reply = await self._call("decision", "ApplyUseCase", request, _deadline(timeout, self._bulk_deadline_s))
        if not validate_only:
            self._learn(reply.use_case)
        return reply

    async def set_value_weights(self, use_case: str, weights: Mapping[str, float], author: str = "",
                                reason: str = "", *, timeout: float | None = None) -> dpb.ApplyUseCaseResponse:
        """See :meth:`Client.set_value_weights`."""
        latest = (await self.get_use_case(use_case, timeout=timeout)).blueprint
        return await self.apply_use_case(with_value_weights(latest, weights), author=author,
                                         reason=reason or "value model weights", timeout=timeout)

    async def get_use_case(self, use_case: str, version: int = 0, *,
                           timeout: float | None = None) -> dpb.UseCase:
        """See :meth:`Client.get_use_case`."""
        reply = await self._call("decision", "GetUseCase",
                                 dpb.GetUseCaseRequest(use_case=use_case, version=version),
                                 _deadline(timeout, self._bulk_deadline_s))
        if version == 0:
            self._learn(reply.use_case)
        return reply.use_case

    async def list_use_cases(self, *, timeout: float | None = None) -> list[dpb.UseCase]:
        """See :meth:`Client.list_use_cases`."""
        found: list[dpb.UseCase] = []
        token = ""
        while True:
            reply = await self._call("decision", "ListUseCases", dpb.ListUseCasesRequest(page_token=token),
                                     _deadline(timeout, self._bulk_deadline_s))
            found.extend(reply.use_cases)
            token = reply.next_page_token
            if not token:
                return found

    async def rollback_use_case(self, use_case: str, to_version: int, reason: str = "",
                                author: str = "", *, timeout: float | None = None) -> dpb.UseCase:
        """See :meth:`Client.rollback_use_case`."""
        request = dpb.RollbackUseCaseRequest(request_id=self.clock.new_id(), use_case=use_case,
                                             to_version=to_version, reason=reason, author=author)
        return (await self._call("decision", "RollbackUseCase", request,
                                 _deadline(timeout, self._bulk_deadline_s))).use_case

    async def set_kill_switch(self, use_case: str, enabled: bool, reason: str = "",
                              author: str = "", *, timeout: float | None = None) -> dpb.UseCase:
        """See :meth:`Client.set_kill_switch`."""
        request = dpb.SetKillSwitchRequest(request_id=self.clock.new_id(), use_case=use_case,
                                           enabled=enabled, reason=reason, author=author)
        return (await self._call("decision", "SetKillSwitch", request,
                                 _deadline(timeout, self._bulk_deadline_s))).use_case

    async def archive_use_case(self, use_case: str, archived: bool = True, reason: str = "",
                               author: str = "", *, timeout: float | None = None) -> dpb.UseCase:
        """See :meth:`Client.archive_use_case`."""
        request = dpb.ArchiveUseCaseRequest(request_id=self.clock.new_id(), use_case=use_case,
                                            archived=archived, reason=reason, author=author)
        return (await self._call("decision", "ArchiveUseCase", request,
                                 _deadline(timeout, self._bulk_deadline_s))).use_case

    async def use_case_changes(self, use_case: str, *,
                               timeout: float | None = None) -> list[dpb.UseCaseChange]:
        """See :meth:`Client.use_case_changes`."""
        reply = await self._call("decision", "ListUseCaseChanges",
                                 dpb.ListUseCaseChangesRequest(use_case=use_case),
                                 _deadline(timeout, self._bulk_deadline_s))
        return list(reply.changes)

    # ------------------------------------------------------------------ trainer

    async def start_training(self, use_case: str, *, deploy: bool = False, request_id: str = "",
                             start_time: TimeArg = None, end_time: TimeArg = None,
                             trigger: str = "", timeout: float | None = None) -> op_pb.Operation:
        """See :meth:`Client.start_training`."""
        request = _start_training_request(use_case, request_id or self.clock.new_id(), deploy,
                                          start_time, end_time, trigger)
        reply = await self._call("trainer", "StartTraining", request, _deadline(timeout, self._bulk_deadline_s))
        return reply.operation

    async def get_operation(self, operation: op_pb.Operation | str, use_case: str = "", *,
                            service: Service | None = None,
                            timeout: float | None = None) -> op_pb.Operation:
        """See :meth:`Client.get_operation`."""
        operation_id, scope = _operation_ref(operation, use_case)
        request = op_pb.GetOperationRequest(id=operation_id, use_case=scope)
        services = self._operations_services(operation, service)
        for index, name in enumerate(services):
            try:
                return (await self._call(name, "GetOperation", request,
                                         _deadline(timeout, self._bulk_deadline_s))).operation
            except NotFound:
                if index == len(services) - 1:
                    raise
        raise AssertionError("unreachable")

    async def list_operations(self, use_case: str = "", *, service: Service = "trainer",
                              limit: int = 50, timeout: float | None = None) -> list[op_pb.Operation]:
        """See :meth:`Client.list_operations`."""
        name = _check_service(service) or "trainer"
        found: list[op_pb.Operation] = []
        token = ""
        while len(found) < limit:
            request = op_pb.ListOperationsRequest(use_case=use_case, page_size=min(limit - len(found), 500),
                                                  page_token=token)
            reply = await self._call(name, "ListOperations", request, _deadline(timeout, self._bulk_deadline_s))
            found.extend(reply.operations)
            token = reply.next_page_token
            if not token or not reply.operations:
                break
        return found[:limit]

    async def cancel_operation(self, operation: op_pb.Operation | str, use_case: str = "", *,
                               service: Service | None = None,
                               timeout: float | None = None) -> op_pb.Operation:
        """See :meth:`Client.cancel_operation`."""
        operation_id, scope = _operation_ref(operation, use_case)
        request = op_pb.CancelOperationRequest(id=operation_id, use_case=scope)
        services = self._operations_services(operation, service)
        for index, name in enumerate(services):
            try:
                return (await self._call(name, "CancelOperation", request,
                                         _deadline(timeout, self._bulk_deadline_s))).operation
            except NotFound:
                if index == len(services) - 1:
                    raise
        raise AssertionError("unreachable")

    async def wait_operation(self, operation: op_pb.Operation, timeout: float | None = None,
                             on_progress: Callable[[op_pb.Operation], Any] | None = None,
                             ) -> op_pb.Operation:
        """See :meth:`Client.wait_operation`; ``on_progress`` may also be a coroutine function."""
        service = _service_of(operation, None) or "trainer"
        deadline = None if timeout is None else time.monotonic() + timeout
        seen = b""

        async def report(update: op_pb.Operation) -> None:
            nonlocal seen
            body = update.SerializeToString()
            if body != seen:
                seen = body
                if on_progress is not None:
                    outcome = on_progress(update)
                    if inspect.isawaitable(outcome):
                        await outcome

        while operation.state not in FINAL_STATES:
            remaining = self._remaining(deadline, operation, timeout)
            request = op_pb.WatchOperationRequest(id=operation.id, use_case=operation.use_case)
            try:
                async with contextlib.aclosing(self._stream(service, "WatchOperation", request,
                                                            remaining)) as updates:
                    async for update in updates:
                        operation = update.operation
                        await report(operation)
            except DeadlineExceeded as error:
                if deadline is None:
                    raise
                raise OperationTimeout(operation, timeout or 0.0) from error
            except Unavailable:
                remaining = self._remaining(deadline, operation, timeout)
                await asyncio.sleep(_RESUME_PAUSE_S if remaining is None else min(_RESUME_PAUSE_S, remaining))
                try:  # the service restarted (or is restarting): read the state, then resume
                    reply = await self._call(
                        service, "GetOperation",
                        op_pb.GetOperationRequest(id=operation.id, use_case=operation.use_case),
                        self._bulk_deadline_s)
                    operation = reply.operation
                    await report(operation)
                except (Unavailable, DeadlineExceeded):
                    pass
        return _final(operation)

    async def list_models(self, use_case: str, *, timeout: float | None = None) -> list[tpb.Model]:
        """See :meth:`Client.list_models`."""
        reply = await self._call("trainer", "ListModels", tpb.ListModelsRequest(use_case=use_case),
                                 _deadline(timeout, self._bulk_deadline_s))
        return list(reply.models)

    async def get_model(self, use_case: str, version: int = 0, *, timeout: float | None = None) -> tpb.Model:
        """See :meth:`Client.get_model`."""
        reply = await self._call("trainer", "GetModel", tpb.GetModelRequest(use_case=use_case, version=version),
                                 _deadline(timeout, self._bulk_deadline_s))
        return reply.model

    async def download_model(self, use_case: str, version: int, *,
                             timeout: float | None = None) -> ModelArtifact:
        """See :meth:`Client.download_model`."""
        chunks = [chunk async for chunk in self._stream(
            "trainer", "DownloadModel", tpb.DownloadModelRequest(use_case=use_case, version=version),
            _deadline(timeout, _STREAM_DEADLINE_S))]
        return _artifact(chunks, use_case, version)

    async def register_model(self, model: tpb.Model, onnx: bytes, *, request_id: str = "",
                             timeout: float | None = None) -> tpb.Model:
        """See :meth:`Client.register_model`."""
        request = self._register_request(model, onnx, request_id or self.clock.new_id())
        return (await self._call("trainer", "RegisterModel", request,
                                 _deadline(timeout, max(self._bulk_deadline_s, _STREAM_DEADLINE_S)))).model

    async def set_deployment(self, use_case: str, production_version: int = 0, *,
                             canary_version: int = 0, canary_share: float = 0.0,
                             shadow_versions: Sequence[int] = (), reason: str = "",
                             request_id: str = "", timeout: float | None = None) -> tpb.Deployment:
        """See :meth:`Client.set_deployment`."""
        request = tpb.SetDeploymentRequest(
            request_id=request_id or self.clock.new_id(), use_case=use_case,
            production_version=production_version, canary_version=canary_version,
            canary_share=canary_share, shadow_versions=list(shadow_versions), reason=reason)
        return (await self._call("trainer", "SetDeployment", request,
                                 _deadline(timeout, self._bulk_deadline_s))).deployment

    async def rollback_model(self, use_case: str, reason: str = "", *, request_id: str = "",
                             timeout: float | None = None) -> tpb.Deployment:
        """See :meth:`Client.rollback_model`."""
        request = tpb.RollbackRequest(request_id=request_id or self.clock.new_id(), use_case=use_case,
                                      reason=reason)
        return (await self._call("trainer", "Rollback", request,
                                 _deadline(timeout, self._bulk_deadline_s))).deployment

    async def get_deployment(self, use_case: str, *, timeout: float | None = None) -> tpb.Deployment | None:
        """See :meth:`Client.get_deployment`."""
        if not await self.list_deployment_audit(use_case, timeout=timeout):
            return None
        try:
            async with contextlib.aclosing(self.watch_deployments(
                    [use_case], timeout=_deadline(timeout, _DEPLOYMENT_WAIT_S))) as updates:
                async for update in updates:
                    if update.use_case == use_case:
                        return update
        except DeadlineExceeded:
            pass
        return None

    async def watch_deployments(self, use_cases: Sequence[str] = (), *,
                                timeout: float | None = None) -> AsyncGenerator[tpb.Deployment, None]:
        """See :meth:`Client.watch_deployments`."""
        request = tpb.WatchDeploymentsRequest(use_cases=list(use_cases))
        async for update in self._stream("trainer", "WatchDeployments", request, _seconds(timeout)):
            yield update.deployment

    async def get_rollout(self, use_case: str, *, timeout: float | None = None) -> tpb.Rollout:
        """See :meth:`Client.get_rollout`."""
        reply = await self._call("trainer", "GetRollout", tpb.GetRolloutRequest(use_case=use_case),
                                 _deadline(timeout, self._bulk_deadline_s))
        return reply.rollout

    async def list_deployment_audit(self, use_case: str, *,
                                    timeout: float | None = None) -> list[tpb.DeploymentAuditEntry]:
        """See :meth:`Client.list_deployment_audit`."""
        reply = await self._call("trainer", "ListDeploymentAudit",
                                 tpb.ListDeploymentAuditRequest(use_case=use_case),
                                 _deadline(timeout, self._bulk_deadline_s))
        return list(reply.entries)

    # ---------------------------------------------------------------- evaluator

    async def estimate_effects(self, use_case: str, *, request_id: str = "",
                               start_time: TimeArg = None, end_time: TimeArg = None,
                               estimator: int | str = 0, treatment_action: str = "",
                               control_action: str = "", seed: int = 0,
                               treatment_source: int | str = 0, treatment_arm: str = "",
                               control_arm: str = "", segment_features: Sequence[str] = (),
                               treatment_cost: float = 0.0, register_cate_model: bool = False,
                               forest_trees: int = 0,
                               job_timeout: float | timedelta | duration_pb2.Duration | None = None,
                               timeout: float | None = None) -> op_pb.Operation:
        """See :meth:`Client.estimate_effects`."""
        request = _estimate_effects_request(
            use_case, request_id or self.clock.new_id(), start_time, end_time, estimator,
            treatment_action, control_action, seed, treatment_source, treatment_arm, control_arm,
            segment_features, treatment_cost, register_cate_model, forest_trees, job_timeout)
        reply = await self._call("evaluator", "EstimateEffects", request,
                                 _deadline(timeout, self._bulk_deadline_s))
        return reply.operation

    async def start_tuning(
        self, use_case: str,
        parameters: Mapping[str, epb.ParameterRange | Sequence[float] | Mapping[str, float]]
        | Sequence[epb.TunedParameter], *,
        objective: str = "reward", constraints: Sequence[epb.Constraint | Mapping[str, Any]] = (),
        rounds: int = 0, batch_size: int = 0, min_rows_per_arm: int = 0,
        round_timeout: float | timedelta | duration_pb2.Duration | None = None, apply: bool = False,
        acquisition: int | str = 0, seed: int = 0, seed_from_offline: bool = False,
        suggest_model_version: int = 0, suggest_report_id: ReportArg = "", author: str = "",
        request_id: str = "", timeout: float | None = None,
    ) -> op_pb.Operation:
        """See :meth:`Client.start_tuning`."""
        request = _start_tuning_request(
            use_case, request_id or self.clock.new_id(), parameters, objective, constraints, rounds, batch_size,
            min_rows_per_arm, round_timeout, apply, acquisition, seed, seed_from_offline, suggest_model_version,
            suggest_report_id, author)
        reply = await self._call("evaluator", "StartTuning", request, _deadline(timeout, self._bulk_deadline_s))
        return reply.operation

    async def get_report(self, report: ReportArg, use_case: str = "", *,
                         timeout: float | None = None) -> epb.GetReportResponse:
        """See :meth:`Client.get_report`."""
        reply = await self._call("evaluator", "GetReport", self._report_request(report, use_case),
                                 _deadline(timeout, self._bulk_deadline_s))
        self._remember_report(reply.result)
        return reply

    async def list_reports(self, use_case: str = "", *,
                           timeout: float | None = None) -> list[epb.EstimateEffectsResult]:
        """See :meth:`Client.list_reports`."""
        reply = await self._call("evaluator", "ListReports", epb.ListReportsRequest(use_case=use_case),
                                 _deadline(timeout, self._bulk_deadline_s))
        for result in reply.reports:
            self._remember_report(result)
        return list(reply.reports)

    async def _report_meta(self, report: ReportArg, use_case: str,
                           timeout: float | None) -> tuple[str, str, tuple[str, ...]]:
        report_id, scope, names = self._known_report(report, use_case)
        if names is None:
            result = (await self.get_report(report_id, scope, timeout=timeout)).result
            scope, names = scope or result.use_case, tuple(result.feature_names)
        return report_id, scope, names

    async def predict_effects(self, report: ReportArg, rows: Any, *, use_case: str = "",
                              feature_names: Sequence[str] | None = None,
                              batch_size: int = _PREDICT_BATCH_ROWS,
                              timeout: float | None = None) -> EffectPredictions:
        """See :meth:`Client.predict_effects`."""
        records = _is_records(rows)
        if feature_names is None or records:
            report_id, scope, names = await self._report_meta(report, use_case, timeout)
        else:
            report_id, scope, _ = self._known_report(report, use_case)
            names = tuple(feature_names)
        vocabularies = None
        if records:
            rows = _records(rows)
            if _needs_vocabulary(rows):
                vocabularies = _vocabularies((await self.get_use_case(scope, timeout=timeout)).blueprint)
        matrix = _effect_matrix(rows, names, vocabularies)
        replies = [await self._call("evaluator", "PredictEffects", request,
                                    _deadline(timeout, self._bulk_deadline_s))
                   for request in _predict_requests(report_id, scope, names, matrix, batch_size)]
        return _predictions(replies)

    async def evaluate_policy(self, use_case: str, *, model_version: int = 0,
                              start_time: TimeArg = None, end_time: TimeArg = None,
                              constant_action: str = "", report_id: ReportArg = "",
                              policy_variant: blueprint_pb2.Policy | Mapping[str, Any] | None = None,
                              max_weight: float = 0.0, timeout: float | None = None,
                              deadline_s: float | None = None) -> epb.EvaluatePolicyResponse:
        """See :meth:`Client.evaluate_policy`."""
        request = _evaluate_policy_request(use_case, model_version, start_time, end_time,
                                           constant_action, report_id, policy_variant, max_weight)
        return await self._call("evaluator", "EvaluatePolicy", request,
                                _deadline(_older_deadline(timeout, deadline_s), self._analysis_deadline_s))

    async def suggest_parameters(
        self, use_case: str,
        parameters: Sequence[str] | Mapping[str, epb.ParameterRange | Sequence[float]],
        ranges: Sequence[epb.ParameterRange | Sequence[float]] | None = None, *,
        report_id: ReportArg = "", model_version: int = 0, objective: str = "",
        constraints: Sequence[epb.Constraint | Mapping[str, Any]] = (), iterations: int = 0,
        seed: int = 0, start_time: TimeArg = None, end_time: TimeArg = None,
        net_of_costs: bool = False, timeout: float | None = None, deadline_s: float | None = None,
    ) -> epb.SuggestParametersResponse:
        """See :meth:`Client.suggest_parameters`."""
        request = _suggest_parameters_request(use_case, parameters, ranges, report_id, model_version,
                                              objective, constraints, iterations, seed, start_time,
                                              end_time, net_of_costs)
        return await self._call("evaluator", "SuggestParameters", request,
                                _deadline(_older_deadline(timeout, deadline_s), self._analysis_deadline_s))

    async def get_scorecard(self, use_case: str, *, canary: bool = False, control_arm: str = "",
                            covariates: Sequence[str] = (), start_time: TimeArg = None,
                            end_time: TimeArg = None,
                            look_interval: float | timedelta | duration_pb2.Duration | None = None,
                            mixture_effect_size: float = 0.0, srm_alpha: float = 0.0,
                            include_html: bool = False, timeout: float | None = None,
                            deadline_s: float | None = None) -> epb.GetScorecardResponse:
        """See :meth:`Client.get_scorecard`."""
        request = self._scorecard_request(use_case, canary, control_arm, covariates, start_time, end_time,
                                          look_interval, mixture_effect_size, srm_alpha, include_html)
        return await self._call("evaluator", "GetScorecard", request,
                                _deadline(_older_deadline(timeout, deadline_s), self._analysis_deadline_s))

    async def close(self) -> None:
        """Close the channels (the trainer's and the evaluator's if they were opened)."""
        for channel in self._take_lazy_channels():
            await channel.close()
        await self._decision_channel.close()
        await self._feedback_channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
