import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from loopwise.common.v1 import operation_pb2 as _operation_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RolloutStep(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLLOUT_STEP_UNSPECIFIED: _ClassVar[RolloutStep]
    ROLLOUT_STEP_SHADOW: _ClassVar[RolloutStep]
    ROLLOUT_STEP_CANARY: _ClassVar[RolloutStep]
    ROLLOUT_STEP_PROMOTED: _ClassVar[RolloutStep]
    ROLLOUT_STEP_ROLLED_BACK: _ClassVar[RolloutStep]
    ROLLOUT_STEP_SUPERSEDED: _ClassVar[RolloutStep]
ROLLOUT_STEP_UNSPECIFIED: RolloutStep
ROLLOUT_STEP_SHADOW: RolloutStep
ROLLOUT_STEP_CANARY: RolloutStep
ROLLOUT_STEP_PROMOTED: RolloutStep
ROLLOUT_STEP_ROLLED_BACK: RolloutStep
ROLLOUT_STEP_SUPERSEDED: RolloutStep

class FeatureProfile(_message.Message):
    __slots__ = ("name", "categorical", "bin_edges", "bin_counts", "missing_count", "count", "mean", "std", "quantile_levels", "quantiles", "vocabulary")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CATEGORICAL_FIELD_NUMBER: _ClassVar[int]
    BIN_EDGES_FIELD_NUMBER: _ClassVar[int]
    BIN_COUNTS_FIELD_NUMBER: _ClassVar[int]
    MISSING_COUNT_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    QUANTILE_LEVELS_FIELD_NUMBER: _ClassVar[int]
    QUANTILES_FIELD_NUMBER: _ClassVar[int]
    VOCABULARY_FIELD_NUMBER: _ClassVar[int]
    name: str
    categorical: bool
    bin_edges: _containers.RepeatedScalarFieldContainer[float]
    bin_counts: _containers.RepeatedScalarFieldContainer[int]
    missing_count: int
    count: int
    mean: float
    std: float
    quantile_levels: _containers.RepeatedScalarFieldContainer[float]
    quantiles: _containers.RepeatedScalarFieldContainer[float]
    vocabulary: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., categorical: bool = ..., bin_edges: _Optional[_Iterable[float]] = ..., bin_counts: _Optional[_Iterable[int]] = ..., missing_count: _Optional[int] = ..., count: _Optional[int] = ..., mean: _Optional[float] = ..., std: _Optional[float] = ..., quantile_levels: _Optional[_Iterable[float]] = ..., quantiles: _Optional[_Iterable[float]] = ..., vocabulary: _Optional[_Iterable[str]] = ...) -> None: ...

class ValidationCheck(_message.Message):
    __slots__ = ("check", "feature", "passed", "value", "threshold", "detail")
    CHECK_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    check: str
    feature: str
    passed: bool
    value: float
    threshold: float
    detail: str
    def __init__(self, check: _Optional[str] = ..., feature: _Optional[str] = ..., passed: bool = ..., value: _Optional[float] = ..., threshold: _Optional[float] = ..., detail: _Optional[str] = ...) -> None: ...

class SliceComparison(_message.Message):
    __slots__ = ("slice", "rows", "candidate", "serving", "passed")
    SLICE_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    SERVING_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    slice: str
    rows: int
    candidate: float
    serving: float
    passed: bool
    def __init__(self, slice: _Optional[str] = ..., rows: _Optional[int] = ..., candidate: _Optional[float] = ..., serving: _Optional[float] = ..., passed: bool = ...) -> None: ...

class Blessing(_message.Message):
    __slots__ = ("blessed", "compared_with", "metric", "higher_is_better", "tolerance", "slices", "reason", "guardrails")
    BLESSED_FIELD_NUMBER: _ClassVar[int]
    COMPARED_WITH_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    HIGHER_IS_BETTER_FIELD_NUMBER: _ClassVar[int]
    TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    SLICES_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    GUARDRAILS_FIELD_NUMBER: _ClassVar[int]
    blessed: bool
    compared_with: str
    metric: str
    higher_is_better: bool
    tolerance: float
    slices: _containers.RepeatedCompositeFieldContainer[SliceComparison]
    reason: str
    guardrails: _containers.RepeatedCompositeFieldContainer[Guardrail]
    def __init__(self, blessed: bool = ..., compared_with: _Optional[str] = ..., metric: _Optional[str] = ..., higher_is_better: bool = ..., tolerance: _Optional[float] = ..., slices: _Optional[_Iterable[_Union[SliceComparison, _Mapping]]] = ..., reason: _Optional[str] = ..., guardrails: _Optional[_Iterable[_Union[Guardrail, _Mapping]]] = ...) -> None: ...

class Guardrail(_message.Message):
    __slots__ = ("name", "passed", "value", "threshold", "detail")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    name: str
    passed: bool
    value: float
    threshold: float
    detail: str
    def __init__(self, name: _Optional[str] = ..., passed: bool = ..., value: _Optional[float] = ..., threshold: _Optional[float] = ..., detail: _Optional[str] = ...) -> None: ...

class Rollout(_message.Message):
    __slots__ = ("use_case", "model_version", "production_version", "step", "step_start_time", "guardrails", "decisions", "joined_outcomes", "canary_reward", "production_reward", "reward_diff_lower", "reward_diff_upper", "message", "update_time")
    USE_CASE_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PRODUCTION_VERSION_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    STEP_START_TIME_FIELD_NUMBER: _ClassVar[int]
    GUARDRAILS_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    JOINED_OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    CANARY_REWARD_FIELD_NUMBER: _ClassVar[int]
    PRODUCTION_REWARD_FIELD_NUMBER: _ClassVar[int]
    REWARD_DIFF_LOWER_FIELD_NUMBER: _ClassVar[int]
    REWARD_DIFF_UPPER_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    use_case: str
    model_version: int
    production_version: int
    step: RolloutStep
    step_start_time: _timestamp_pb2.Timestamp
    guardrails: _containers.RepeatedCompositeFieldContainer[Guardrail]
    decisions: int
    joined_outcomes: int
    canary_reward: float
    production_reward: float
    reward_diff_lower: float
    reward_diff_upper: float
    message: str
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, use_case: _Optional[str] = ..., model_version: _Optional[int] = ..., production_version: _Optional[int] = ..., step: _Optional[_Union[RolloutStep, str]] = ..., step_start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., guardrails: _Optional[_Iterable[_Union[Guardrail, _Mapping]]] = ..., decisions: _Optional[int] = ..., joined_outcomes: _Optional[int] = ..., canary_reward: _Optional[float] = ..., production_reward: _Optional[float] = ..., reward_diff_lower: _Optional[float] = ..., reward_diff_upper: _Optional[float] = ..., message: _Optional[str] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class DeploymentAuditEntry(_message.Message):
    __slots__ = ("use_case", "revision", "action", "reason", "time", "request_id")
    USE_CASE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    use_case: str
    revision: int
    action: str
    reason: str
    time: _timestamp_pb2.Timestamp
    request_id: str
    def __init__(self, use_case: _Optional[str] = ..., revision: _Optional[int] = ..., action: _Optional[str] = ..., reason: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class ListDeploymentAuditRequest(_message.Message):
    __slots__ = ("use_case",)
    USE_CASE_FIELD_NUMBER: _ClassVar[int]
    use_case: str
    def __init__(self, use_case: _Optional[str] = ...) -> None: ...

class ListDeploymentAuditResponse(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[DeploymentAuditEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[DeploymentAuditEntry, _Mapping]]] = ...) -> None: ...

class GetRolloutRequest(_message.Message):
    __slots__ = ("use_case",)
    USE_CASE_FIELD_NUMBER: _ClassVar[int]
    use_case: str
    def __init__(self, use_case: _Optional[str] = ...) -> None: ...

class GetRolloutResponse(_message.Message):
    __slots__ = ("rollout",)
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    rollout: Rollout
    def __init__(self, rollout: _Optional[_Union[Rollout, _Mapping]] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("use_case", "version", "family", "blueprint_version", "metrics", "baseline_metrics", "artifact_sha256", "artifact_size", "training_rows", "holdout_rows", "data_start_time", "data_end_time", "create_time", "source", "input_width", "score_output", "operation_id", "description", "feature_profiles", "code_version", "parent_version", "labelled_rows", "blessing", "latency_p99_ms", "prediction_profile")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class BaselineMetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    USE_CASE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    BLUEPRINT_VERSION_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    BASELINE_METRICS_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_SHA256_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_SIZE_FIELD_NUMBER: _ClassVar[int]
    TRAINING_ROWS_FIELD_NUMBER: _ClassVar[int]
    HOLDOUT_ROWS_FIELD_NUMBER: _ClassVar[int]
    DATA_START_TIME_FIELD_NUMBER: _ClassVar[int]
    DATA_END_TIME_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    INPUT_WIDTH_FIELD_NUMBER: _ClassVar[int]
    SCORE_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    FEATURE_PROFILES_FIELD_NUMBER: _ClassVar[int]
    CODE_VERSION_FIELD_NUMBER: _ClassVar[int]
    PARENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    LABELLED_ROWS_FIELD_NUMBER: _ClassVar[int]
    BLESSING_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P99_MS_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_PROFILE_FIELD_NUMBER: _ClassVar[int]
    use_case: str
    version: int
    family: str
    blueprint_version: int
    metrics: _containers.ScalarMap[str, float]
    baseline_metrics: _containers.ScalarMap[str, float]
    artifact_sha256: str
    artifact_size: int
    training_rows: int
    holdout_rows: int
    data_start_time: _timestamp_pb2.Timestamp
    data_end_time: _timestamp_pb2.Timestamp
    create_time: _timestamp_pb2.Timestamp
    source: str
    input_width: int
    score_output: str
    operation_id: str
    description: str
    feature_profiles: _containers.RepeatedCompositeFieldContainer[FeatureProfile]
    code_version: str
    parent_version: int
    labelled_rows: int
    blessing: Blessing
    latency_p99_ms: float
    prediction_profile: FeatureProfile
    def __init__(self, use_case: _Optional[str] = ..., version: _Optional[int] = ..., family: _Optional[str] = ..., blueprint_version: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ..., baseline_metrics: _Optional[_Mapping[str, float]] = ..., artifact_sha256: _Optional[str] = ..., artifact_size: _Optional[int] = ..., training_rows: _Optional[int] = ..., holdout_rows: _Optional[int] = ..., data_start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., data_end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., source: _Optional[str] = ..., input_width: _Optional[int] = ..., score_output: _Optional[str] = ..., operation_id: _Optional[str] = ..., description: _Optional[str] = ..., feature_profiles: _Optional[_Iterable[_Union[FeatureProfile, _Mapping]]] = ..., code_version: _Optional[str] = ..., parent_version: _Optional[int] = ..., labelled_rows: _Optional[int] = ..., blessing: _Optional[_Union[Blessing, _Mapping]] = ..., latency_p99_ms: _Optional[float] = ..., prediction_profile: _Optional[_Union[FeatureProfile, _Mapping]] = ...) -> None: ...

class StartTrainingRequest(_message.Message):
    __slots__ = ("request_id", "use_case", "start_time", "end_time", "deploy", "trigger")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    USE_CASE_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    DEPLOY_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    use_case: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    deploy: bool
    trigger: str
    def __init__(self, request_id: _Optional[str] = ..., use_case: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., deploy: bool = ..., trigger: _Optional[str] = ...) -> None: ...

class StartTrainingResponse(_message.Message):
    __slots__ = ("operation",)
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    operation: _operation_pb2.Operation
    def __init__(self, operation: _Optional[_Union[_operation_pb2.Operation, _Mapping]] = ...) -> None: ...

class Candidate(_message.Message):
    __slots__ = ("family", "score", "metric", "fit_seconds", "latency_p99_ms", "within_budget", "params", "configurations", "error", "chosen")
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    FIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P99_MS_FIELD_NUMBER: _ClassVar[int]
    WITHIN_BUDGET_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    CONFIGURATIONS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CHOSEN_FIELD_NUMBER: _ClassVar[int]
    family: str
    score: float
    metric: str
    fit_seconds: float
    latency_p99_ms: float
    within_budget: bool
    params: str
    configurations: int
    error: str
    chosen: bool
    def __init__(self, family: _Optional[str] = ..., score: _Optional[float] = ..., metric: _Optional[str] = ..., fit_seconds: _Optional[float] = ..., latency_p99_ms: _Optional[float] = ..., within_budget: bool = ..., params: _Optional[str] = ..., configurations: _Optional[int] = ..., error: _Optional[str] = ..., chosen: bool = ...) -> None: ...

class TrainingResult(_message.Message):
    __slots__ = ("model", "candidates", "deployed", "deployment_reason", "rows", "validation", "blessing", "rollout", "stage_seconds", "closed_windows_at_start", "trigger")
    class StageSecondsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    DEPLOYED_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_REASON_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_FIELD_NUMBER: _ClassVar[int]
    BLESSING_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    STAGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CLOSED_WINDOWS_AT_START_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    model: Model
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    deployed: bool
    deployment_reason: str
    rows: int
    validation: _containers.RepeatedCompositeFieldContainer[ValidationCheck]
    blessing: Blessing
    rollout: Rollout
    stage_seconds: _containers.ScalarMap[str, float]
    closed_windows_at_start: int
    trigger: str
    def __init__(self, model: _Optional[_Union[Model, _Mapping]] = ..., candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ..., deployed: bool = ..., deployment_reason: _Optional[str] = ..., rows: _Optional[int] = ..., validation: _Optional[_Iterable[_Union[ValidationCheck, _Mapping]]] = ..., blessing: _Optional[_Union[Blessing, _Mapping]] = ..., rollout: _Optional[_Union[Rollout, _Mapping]] = ..., stage_seconds: _Optional[_Mapping[str, float]] = ..., closed_windows_at_start: _Optional[int] = ..., trigger: _Optional[str] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("use_case",)
    USE_CASE_FIELD_NUMBER: _ClassVar[int]
    use_case: str
    def __init__(self, use_case: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[Model]
    def __init__(self, models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("use_case", "version")
    USE_CASE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    use_case: str
    version: int
    def __init__(self, use_case: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class GetModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: Model
    def __init__(self, model: _Optional[_Union[Model, _Mapping]] = ...) -> None: ...

class DownloadModelRequest(_message.Message):
    __slots__ = ("use_case", "version")
    USE_CASE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    use_case: str
    version: int
    def __init__(self, use_case: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class DownloadModelResponse(_message.Message):
    __slots__ = ("offset", "data", "total_size", "sha256", "model")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    offset: int
    data: bytes
    total_size: int
    sha256: str
    model: Model
    def __init__(self, offset: _Optional[int] = ..., data: _Optional[bytes] = ..., total_size: _Optional[int] = ..., sha256: _Optional[str] = ..., model: _Optional[_Union[Model, _Mapping]] = ...) -> None: ...

class RegisterModelRequest(_message.Message):
    __slots__ = ("request_id", "model", "onnx", "sha256")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ONNX_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    model: Model
    onnx: bytes
    sha256: str
    def __init__(self, request_id: _Optional[str] = ..., model: _Optional[_Union[Model, _Mapping]] = ..., onnx: _Optional[bytes] = ..., sha256: _Optional[str] = ...) -> None: ...

class RegisterModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: Model
    def __init__(self, model: _Optional[_Union[Model, _Mapping]] = ...) -> None: ...

class ModelRef(_message.Message):
    __slots__ = ("version", "sha256", "input_width", "score_output", "blueprint_version")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    INPUT_WIDTH_FIELD_NUMBER: _ClassVar[int]
    SCORE_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    BLUEPRINT_VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    sha256: str
    input_width: int
    score_output: str
    blueprint_version: int
    def __init__(self, version: _Optional[int] = ..., sha256: _Optional[str] = ..., input_width: _Optional[int] = ..., score_output: _Optional[str] = ..., blueprint_version: _Optional[int] = ...) -> None: ...

class Deployment(_message.Message):
    __slots__ = ("use_case", "revision", "production", "canary", "canary_share", "shadows", "update_time", "reason")
    USE_CASE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    PRODUCTION_FIELD_NUMBER: _ClassVar[int]
    CANARY_FIELD_NUMBER: _ClassVar[int]
    CANARY_SHARE_FIELD_NUMBER: _ClassVar[int]
    SHADOWS_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    use_case: str
    revision: int
    production: ModelRef
    canary: ModelRef
    canary_share: float
    shadows: _containers.RepeatedCompositeFieldContainer[ModelRef]
    update_time: _timestamp_pb2.Timestamp
    reason: str
    def __init__(self, use_case: _Optional[str] = ..., revision: _Optional[int] = ..., production: _Optional[_Union[ModelRef, _Mapping]] = ..., canary: _Optional[_Union[ModelRef, _Mapping]] = ..., canary_share: _Optional[float] = ..., shadows: _Optional[_Iterable[_Union[ModelRef, _Mapping]]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class SetDeploymentRequest(_message.Message):
    __slots__ = ("request_id", "use_case", "production_version", "canary_version", "canary_share", "shadow_versions", "reason")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    USE_CASE_FIELD_NUMBER: _ClassVar[int]
    PRODUCTION_VERSION_FIELD_NUMBER: _ClassVar[int]
    CANARY_VERSION_FIELD_NUMBER: _ClassVar[int]
    CANARY_SHARE_FIELD_NUMBER: _ClassVar[int]
    SHADOW_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    use_case: str
    production_version: int
    canary_version: int
    canary_share: float
    shadow_versions: _containers.RepeatedScalarFieldContainer[int]
    reason: str
    def __init__(self, request_id: _Optional[str] = ..., use_case: _Optional[str] = ..., production_version: _Optional[int] = ..., canary_version: _Optional[int] = ..., canary_share: _Optional[float] = ..., shadow_versions: _Optional[_Iterable[int]] = ..., reason: _Optional[str] = ...) -> None: ...

class SetDeploymentResponse(_message.Message):
    __slots__ = ("deployment",)
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    deployment: Deployment
    def __init__(self, deployment: _Optional[_Union[Deployment, _Mapping]] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("request_id", "use_case", "reason")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    USE_CASE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    use_case: str
    reason: str
    def __init__(self, request_id: _Optional[str] = ..., use_case: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RollbackResponse(_message.Message):
    __slots__ = ("deployment",)
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    deployment: Deployment
    def __init__(self, deployment: _Optional[_Union[Deployment, _Mapping]] = ...) -> None: ...

class WatchDeploymentsRequest(_message.Message):
    __slots__ = ("use_cases",)
    USE_CASES_FIELD_NUMBER: _ClassVar[int]
    use_cases: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, use_cases: _Optional[_Iterable[str]] = ...) -> None: ...

class WatchDeploymentsResponse(_message.Message):
    __slots__ = ("deployment",)
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    deployment: Deployment
    def __init__(self, deployment: _Optional[_Union[Deployment, _Mapping]] = ...) -> None: ...
