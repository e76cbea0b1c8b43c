import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DecisionRecord(_message.Message):
    __slots__ = ("decision_id", "use_case", "blueprint_version", "unit_id", "features", "action_index", "action", "score", "action_probabilities", "model_version", "arm", "explored", "fallback", "shadow", "action_scores", "deployment_role", "serving_latency_ms", "undelivered", "ranked_items", "ranking_probability")
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    USE_CASE_FIELD_NUMBER: _ClassVar[int]
    BLUEPRINT_VERSION_FIELD_NUMBER: _ClassVar[int]
    UNIT_ID_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    ACTION_INDEX_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    ACTION_PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ARM_FIELD_NUMBER: _ClassVar[int]
    EXPLORED_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    ACTION_SCORES_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_ROLE_FIELD_NUMBER: _ClassVar[int]
    SERVING_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    UNDELIVERED_FIELD_NUMBER: _ClassVar[int]
    RANKED_ITEMS_FIELD_NUMBER: _ClassVar[int]
    RANKING_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    decision_id: str
    use_case: str
    blueprint_version: int
    unit_id: str
    features: bytes
    action_index: int
    action: str
    score: float
    action_probabilities: _containers.RepeatedScalarFieldContainer[float]
    model_version: int
    arm: str
    explored: bool
    fallback: bool
    shadow: bool
    action_scores: _containers.RepeatedScalarFieldContainer[float]
    deployment_role: str
    serving_latency_ms: float
    undelivered: bool
    ranked_items: _containers.RepeatedCompositeFieldContainer[RankedItem]
    ranking_probability: float
    def __init__(self, decision_id: _Optional[str] = ..., use_case: _Optional[str] = ..., blueprint_version: _Optional[int] = ..., unit_id: _Optional[str] = ..., features: _Optional[bytes] = ..., action_index: _Optional[int] = ..., action: _Optional[str] = ..., score: _Optional[float] = ..., action_probabilities: _Optional[_Iterable[float]] = ..., model_version: _Optional[int] = ..., arm: _Optional[str] = ..., explored: bool = ..., fallback: bool = ..., shadow: bool = ..., action_scores: _Optional[_Iterable[float]] = ..., deployment_role: _Optional[str] = ..., serving_latency_ms: _Optional[float] = ..., undelivered: bool = ..., ranked_items: _Optional[_Iterable[_Union[RankedItem, _Mapping]]] = ..., ranking_probability: _Optional[float] = ...) -> None: ...

class RankedItem(_message.Message):
    __slots__ = ("item_id", "position", "features", "propensity", "score")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    PROPENSITY_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    position: int
    features: bytes
    propensity: float
    score: float
    def __init__(self, item_id: _Optional[str] = ..., position: _Optional[int] = ..., features: _Optional[bytes] = ..., propensity: _Optional[float] = ..., score: _Optional[float] = ...) -> None: ...

class LogDecisionsRequest(_message.Message):
    __slots__ = ("request_id", "decisions")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    decisions: _containers.RepeatedCompositeFieldContainer[DecisionRecord]
    def __init__(self, request_id: _Optional[str] = ..., decisions: _Optional[_Iterable[_Union[DecisionRecord, _Mapping]]] = ...) -> None: ...

class LogDecisionsResponse(_message.Message):
    __slots__ = ("accepted",)
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    def __init__(self, accepted: _Optional[int] = ...) -> None: ...

class Outcome(_message.Message):
    __slots__ = ("use_case", "decision_id", "outcome_id", "name", "value", "label", "event_time", "item_id")
    USE_CASE_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    use_case: str
    decision_id: str
    outcome_id: str
    name: str
    value: float
    label: str
    event_time: _timestamp_pb2.Timestamp
    item_id: str
    def __init__(self, use_case: _Optional[str] = ..., decision_id: _Optional[str] = ..., outcome_id: _Optional[str] = ..., name: _Optional[str] = ..., value: _Optional[float] = ..., label: _Optional[str] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., item_id: _Optional[str] = ...) -> None: ...

class OutcomeColumns(_message.Message):
    __slots__ = ("use_case", "decision_ids", "outcome_ids", "names", "values", "labels", "event_times_ms", "item_ids")
    USE_CASE_FIELD_NUMBER: _ClassVar[int]
    DECISION_IDS_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_IDS_FIELD_NUMBER: _ClassVar[int]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIMES_MS_FIELD_NUMBER: _ClassVar[int]
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    use_case: str
    decision_ids: _containers.RepeatedScalarFieldContainer[str]
    outcome_ids: _containers.RepeatedScalarFieldContainer[str]
    names: _containers.RepeatedScalarFieldContainer[str]
    values: _containers.RepeatedScalarFieldContainer[float]
    labels: _containers.RepeatedScalarFieldContainer[str]
    event_times_ms: _containers.RepeatedScalarFieldContainer[int]
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, use_case: _Optional[str] = ..., decision_ids: _Optional[_Iterable[str]] = ..., outcome_ids: _Optional[_Iterable[str]] = ..., names: _Optional[_Iterable[str]] = ..., values: _Optional[_Iterable[float]] = ..., labels: _Optional[_Iterable[str]] = ..., event_times_ms: _Optional[_Iterable[int]] = ..., item_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class LogOutcomesRequest(_message.Message):
    __slots__ = ("request_id", "outcomes", "columns")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    outcomes: _containers.RepeatedCompositeFieldContainer[Outcome]
    columns: _containers.RepeatedCompositeFieldContainer[OutcomeColumns]
    def __init__(self, request_id: _Optional[str] = ..., outcomes: _Optional[_Iterable[_Union[Outcome, _Mapping]]] = ..., columns: _Optional[_Iterable[_Union[OutcomeColumns, _Mapping]]] = ...) -> None: ...

class LogOutcomesResponse(_message.Message):
    __slots__ = ("accepted", "duplicates", "orphans")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    ORPHANS_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    duplicates: int
    orphans: int
    def __init__(self, accepted: _Optional[int] = ..., duplicates: _Optional[int] = ..., orphans: _Optional[int] = ...) -> None: ...

class ReadTrainingDataRequest(_message.Message):
    __slots__ = ("use_case", "start_time", "end_time", "batch_rows", "include_open_windows", "include_fallback", "include_unshown_items")
    USE_CASE_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    BATCH_ROWS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_OPEN_WINDOWS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_FALLBACK_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_UNSHOWN_ITEMS_FIELD_NUMBER: _ClassVar[int]
    use_case: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    batch_rows: int
    include_open_windows: bool
    include_fallback: bool
    include_unshown_items: bool
    def __init__(self, use_case: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., batch_rows: _Optional[int] = ..., include_open_windows: bool = ..., include_fallback: bool = ..., include_unshown_items: bool = ...) -> None: ...

class ReadTrainingDataResponse(_message.Message):
    __slots__ = ("blueprint_version", "feature_names", "rows", "features", "decision_ids", "decision_times_ms", "action_indices", "propensities", "action_probabilities", "n_actions", "rewards", "outcome_counts", "labels", "model_versions", "arms", "explored", "serving_latencies_ms", "metric_names", "metric_values", "positions", "item_ids", "prefix_propensities")
    BLUEPRINT_VERSION_FIELD_NUMBER: _ClassVar[int]
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    DECISION_IDS_FIELD_NUMBER: _ClassVar[int]
    DECISION_TIMES_MS_FIELD_NUMBER: _ClassVar[int]
    ACTION_INDICES_FIELD_NUMBER: _ClassVar[int]
    PROPENSITIES_FIELD_NUMBER: _ClassVar[int]
    ACTION_PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    N_ACTIONS_FIELD_NUMBER: _ClassVar[int]
    REWARDS_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_COUNTS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    ARMS_FIELD_NUMBER: _ClassVar[int]
    EXPLORED_FIELD_NUMBER: _ClassVar[int]
    SERVING_LATENCIES_MS_FIELD_NUMBER: _ClassVar[int]
    METRIC_NAMES_FIELD_NUMBER: _ClassVar[int]
    METRIC_VALUES_FIELD_NUMBER: _ClassVar[int]
    POSITIONS_FIELD_NUMBER: _ClassVar[int]
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    PREFIX_PROPENSITIES_FIELD_NUMBER: _ClassVar[int]
    blueprint_version: int
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    rows: int
    features: bytes
    decision_ids: _containers.RepeatedScalarFieldContainer[str]
    decision_times_ms: bytes
    action_indices: bytes
    propensities: bytes
    action_probabilities: bytes
    n_actions: int
    rewards: bytes
    outcome_counts: bytes
    labels: _containers.RepeatedScalarFieldContainer[str]
    model_versions: bytes
    arms: _containers.RepeatedScalarFieldContainer[str]
    explored: bytes
    serving_latencies_ms: bytes
    metric_names: _containers.RepeatedScalarFieldContainer[str]
    metric_values: bytes
    positions: bytes
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    prefix_propensities: bytes
    def __init__(self, blueprint_version: _Optional[int] = ..., feature_names: _Optional[_Iterable[str]] = ..., rows: _Optional[int] = ..., features: _Optional[bytes] = ..., decision_ids: _Optional[_Iterable[str]] = ..., decision_times_ms: _Optional[bytes] = ..., action_indices: _Optional[bytes] = ..., propensities: _Optional[bytes] = ..., action_probabilities: _Optional[bytes] = ..., n_actions: _Optional[int] = ..., rewards: _Optional[bytes] = ..., outcome_counts: _Optional[bytes] = ..., labels: _Optional[_Iterable[str]] = ..., model_versions: _Optional[bytes] = ..., arms: _Optional[_Iterable[str]] = ..., explored: _Optional[bytes] = ..., serving_latencies_ms: _Optional[bytes] = ..., metric_names: _Optional[_Iterable[str]] = ..., metric_values: _Optional[bytes] = ..., positions: _Optional[bytes] = ..., item_ids: _Optional[_Iterable[str]] = ..., prefix_propensities: _Optional[bytes] = ...) -> None: ...

class GetDecisionRequest(_message.Message):
    __slots__ = ("use_case", "decision_id")
    USE_CASE_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    use_case: str
    decision_id: str
    def __init__(self, use_case: _Optional[str] = ..., decision_id: _Optional[str] = ...) -> None: ...

class GetDecisionResponse(_message.Message):
    __slots__ = ("decision", "outcomes", "reward", "window_closed", "feature_names", "model_lineage")
    class ModelLineageEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DECISION_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    WINDOW_CLOSED_FIELD_NUMBER: _ClassVar[int]
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    MODEL_LINEAGE_FIELD_NUMBER: _ClassVar[int]
    decision: DecisionRecord
    outcomes: _containers.RepeatedCompositeFieldContainer[Outcome]
    reward: float
    window_closed: bool
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    model_lineage: _containers.ScalarMap[str, str]
    def __init__(self, decision: _Optional[_Union[DecisionRecord, _Mapping]] = ..., outcomes: _Optional[_Iterable[_Union[Outcome, _Mapping]]] = ..., reward: _Optional[float] = ..., window_closed: bool = ..., feature_names: _Optional[_Iterable[str]] = ..., model_lineage: _Optional[_Mapping[str, str]] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ("use_case",)
    USE_CASE_FIELD_NUMBER: _ClassVar[int]
    use_case: str
    def __init__(self, use_case: _Optional[str] = ...) -> None: ...

class GetStatsResponse(_message.Message):
    __slots__ = ("decisions", "outcomes", "joined_decisions", "join_rate", "orphan_outcomes", "late_outcomes", "unmatched_outcomes", "closed_windows", "open_windows", "spool_depth", "fallback_decisions", "duplicate_outcomes", "spooled_records", "replayed_records", "store_unavailable", "drift", "undelivered_decisions", "invalid_records", "lost_decision_outcomes")
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    JOINED_DECISIONS_FIELD_NUMBER: _ClassVar[int]
    JOIN_RATE_FIELD_NUMBER: _ClassVar[int]
    ORPHAN_OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    LATE_OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    UNMATCHED_OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    CLOSED_WINDOWS_FIELD_NUMBER: _ClassVar[int]
    OPEN_WINDOWS_FIELD_NUMBER: _ClassVar[int]
    SPOOL_DEPTH_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_DECISIONS_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    SPOOLED_RECORDS_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_RECORDS_FIELD_NUMBER: _ClassVar[int]
    STORE_UNAVAILABLE_FIELD_NUMBER: _ClassVar[int]
    DRIFT_FIELD_NUMBER: _ClassVar[int]
    UNDELIVERED_DECISIONS_FIELD_NUMBER: _ClassVar[int]
    INVALID_RECORDS_FIELD_NUMBER: _ClassVar[int]
    LOST_DECISION_OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    decisions: int
    outcomes: int
    joined_decisions: int
    join_rate: float
    orphan_outcomes: int
    late_outcomes: int
    unmatched_outcomes: int
    closed_windows: int
    open_windows: int
    spool_depth: int
    fallback_decisions: int
    duplicate_outcomes: int
    spooled_records: int
    replayed_records: int
    store_unavailable: bool
    drift: DriftReport
    undelivered_decisions: int
    invalid_records: int
    lost_decision_outcomes: int
    def __init__(self, decisions: _Optional[int] = ..., outcomes: _Optional[int] = ..., joined_decisions: _Optional[int] = ..., join_rate: _Optional[float] = ..., orphan_outcomes: _Optional[int] = ..., late_outcomes: _Optional[int] = ..., unmatched_outcomes: _Optional[int] = ..., closed_windows: _Optional[int] = ..., open_windows: _Optional[int] = ..., spool_depth: _Optional[int] = ..., fallback_decisions: _Optional[int] = ..., duplicate_outcomes: _Optional[int] = ..., spooled_records: _Optional[int] = ..., replayed_records: _Optional[int] = ..., store_unavailable: bool = ..., drift: _Optional[_Union[DriftReport, _Mapping]] = ..., undelivered_decisions: _Optional[int] = ..., invalid_records: _Optional[int] = ..., lost_decision_outcomes: _Optional[int] = ...) -> None: ...

class DriftReport(_message.Message):
    __slots__ = ("status", "model_version", "window_decisions", "features", "max_feature_psi", "prediction_psi", "prediction_reference", "feature_psi_threshold", "prediction_psi_threshold", "feature_drift", "prediction_drift", "compute_time")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    WINDOW_DECISIONS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    MAX_FEATURE_PSI_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_PSI_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    FEATURE_PSI_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_PSI_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    FEATURE_DRIFT_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_DRIFT_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_TIME_FIELD_NUMBER: _ClassVar[int]
    status: str
    model_version: int
    window_decisions: float
    features: _containers.RepeatedCompositeFieldContainer[FeatureDrift]
    max_feature_psi: float
    prediction_psi: float
    prediction_reference: str
    feature_psi_threshold: float
    prediction_psi_threshold: float
    feature_drift: bool
    prediction_drift: bool
    compute_time: _timestamp_pb2.Timestamp
    def __init__(self, status: _Optional[str] = ..., model_version: _Optional[int] = ..., window_decisions: _Optional[float] = ..., features: _Optional[_Iterable[_Union[FeatureDrift, _Mapping]]] = ..., max_feature_psi: _Optional[float] = ..., prediction_psi: _Optional[float] = ..., prediction_reference: _Optional[str] = ..., feature_psi_threshold: _Optional[float] = ..., prediction_psi_threshold: _Optional[float] = ..., feature_drift: bool = ..., prediction_drift: bool = ..., compute_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class FeatureDrift(_message.Message):
    __slots__ = ("name", "psi", "drifted", "live_missing_rate", "training_missing_rate")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PSI_FIELD_NUMBER: _ClassVar[int]
    DRIFTED_FIELD_NUMBER: _ClassVar[int]
    LIVE_MISSING_RATE_FIELD_NUMBER: _ClassVar[int]
    TRAINING_MISSING_RATE_FIELD_NUMBER: _ClassVar[int]
    name: str
    psi: float
    drifted: bool
    live_missing_rate: float
    training_missing_rate: float
    def __init__(self, name: _Optional[str] = ..., psi: _Optional[float] = ..., drifted: bool = ..., live_missing_rate: _Optional[float] = ..., training_missing_rate: _Optional[float] = ...) -> None: ...

class DeleteUnitDataRequest(_message.Message):
    __slots__ = ("request_id", "use_case", "unit_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    USE_CASE_FIELD_NUMBER: _ClassVar[int]
    UNIT_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    use_case: str
    unit_id: str
    def __init__(self, request_id: _Optional[str] = ..., use_case: _Optional[str] = ..., unit_id: _Optional[str] = ...) -> None: ...

class DeleteUnitDataResponse(_message.Message):
    __slots__ = ("decisions_deleted", "outcomes_deleted")
    DECISIONS_DELETED_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_DELETED_FIELD_NUMBER: _ClassVar[int]
    decisions_deleted: int
    outcomes_deleted: int
    def __init__(self, decisions_deleted: _Optional[int] = ..., outcomes_deleted: _Optional[int] = ...) -> None: ...
