import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from loopwise.common.v1 import operation_pb2 as _operation_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Model(_message.Message):
    __slots__ = ("use_case", "version", "family", "blueprint_version", "metrics", "baseline_metrics", "artifact_sha256", "artifact_size", "training_rows", "holdout_rows", "data_start_time", "data_end_time", "create_time", "source", "input_width", "score_output", "operation_id", "description")
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
    def __init__(self, use_case: _Optional[str] = ..., version: _Optional[int] = ..., family: _Optional[str] = ..., blueprint_version: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ..., baseline_metrics: _Optional[_Mapping[str, float]] = ..., artifact_sha256: _Optional[str] = ..., artifact_size: _Optional[int] = ..., training_rows: _Optional[int] = ..., holdout_rows: _Optional[int] = ..., data_start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., data_end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., source: _Optional[str] = ..., input_width: _Optional[int] = ..., score_output: _Optional[str] = ..., operation_id: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class StartTrainingRequest(_message.Message):
    __slots__ = ("request_id", "use_case", "start_time", "end_time", "deploy")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    USE_CASE_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    DEPLOY_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    use_case: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    deploy: bool
    def __init__(self, request_id: _Optional[str] = ..., use_case: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., deploy: bool = ...) -> None: ...

class StartTrainingResponse(_message.Message):
    __slots__ = ("operation",)
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    operation: _operation_pb2.Operation
    def __init__(self, operation: _Optional[_Union[_operation_pb2.Operation, _Mapping]] = ...) -> None: ...

class Candidate(_message.Message):
    __slots__ = ("family", "score", "metric", "fit_seconds")
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    FIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    family: str
    score: float
    metric: str
    fit_seconds: float
    def __init__(self, family: _Optional[str] = ..., score: _Optional[float] = ..., metric: _Optional[str] = ..., fit_seconds: _Optional[float] = ...) -> None: ...

class TrainingResult(_message.Message):
    __slots__ = ("model", "candidates", "deployed", "deployment_reason", "rows")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    DEPLOYED_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_REASON_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    model: Model
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    deployed: bool
    deployment_reason: str
    rows: int
    def __init__(self, model: _Optional[_Union[Model, _Mapping]] = ..., candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ..., deployed: bool = ..., deployment_reason: _Optional[str] = ..., rows: _Optional[int] = ...) -> None: ...

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
