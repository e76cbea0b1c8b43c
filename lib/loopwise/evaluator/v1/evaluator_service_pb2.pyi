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

class Estimator(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ESTIMATOR_UNSPECIFIED: _ClassVar[Estimator]
    ESTIMATOR_LINEAR_DML: _ClassVar[Estimator]
ESTIMATOR_UNSPECIFIED: Estimator
ESTIMATOR_LINEAR_DML: Estimator

class EstimateEffectsRequest(_message.Message):
    __slots__ = ("request_id", "use_case", "start_time", "end_time", "estimator", "treatment_action", "control_action", "seed")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    USE_CASE_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    ESTIMATOR_FIELD_NUMBER: _ClassVar[int]
    TREATMENT_ACTION_FIELD_NUMBER: _ClassVar[int]
    CONTROL_ACTION_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    use_case: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    estimator: Estimator
    treatment_action: str
    control_action: str
    seed: int
    def __init__(self, request_id: _Optional[str] = ..., use_case: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., estimator: _Optional[_Union[Estimator, str]] = ..., treatment_action: _Optional[str] = ..., control_action: _Optional[str] = ..., seed: _Optional[int] = ...) -> None: ...

class EstimateEffectsResponse(_message.Message):
    __slots__ = ("operation",)
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    operation: _operation_pb2.Operation
    def __init__(self, operation: _Optional[_Union[_operation_pb2.Operation, _Mapping]] = ...) -> None: ...

class Quantile(_message.Message):
    __slots__ = ("level", "value")
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    level: float
    value: float
    def __init__(self, level: _Optional[float] = ..., value: _Optional[float] = ...) -> None: ...

class EstimateEffectsResult(_message.Message):
    __slots__ = ("report_id", "use_case", "ate", "ate_ci_lower", "ate_ci_upper", "cate_quantiles", "rows", "treated_rows", "treatment_action", "control_action", "feature_names", "estimator", "logged_propensities_used", "min_propensity", "max_propensity", "warnings", "create_time")
    REPORT_ID_FIELD_NUMBER: _ClassVar[int]
    USE_CASE_FIELD_NUMBER: _ClassVar[int]
    ATE_FIELD_NUMBER: _ClassVar[int]
    ATE_CI_LOWER_FIELD_NUMBER: _ClassVar[int]
    ATE_CI_UPPER_FIELD_NUMBER: _ClassVar[int]
    CATE_QUANTILES_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    TREATED_ROWS_FIELD_NUMBER: _ClassVar[int]
    TREATMENT_ACTION_FIELD_NUMBER: _ClassVar[int]
    CONTROL_ACTION_FIELD_NUMBER: _ClassVar[int]
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    ESTIMATOR_FIELD_NUMBER: _ClassVar[int]
    LOGGED_PROPENSITIES_USED_FIELD_NUMBER: _ClassVar[int]
    MIN_PROPENSITY_FIELD_NUMBER: _ClassVar[int]
    MAX_PROPENSITY_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    report_id: str
    use_case: str
    ate: float
    ate_ci_lower: float
    ate_ci_upper: float
    cate_quantiles: _containers.RepeatedCompositeFieldContainer[Quantile]
    rows: int
    treated_rows: int
    treatment_action: str
    control_action: str
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    estimator: Estimator
    logged_propensities_used: bool
    min_propensity: float
    max_propensity: float
    warnings: _containers.RepeatedScalarFieldContainer[str]
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, report_id: _Optional[str] = ..., use_case: _Optional[str] = ..., ate: _Optional[float] = ..., ate_ci_lower: _Optional[float] = ..., ate_ci_upper: _Optional[float] = ..., cate_quantiles: _Optional[_Iterable[_Union[Quantile, _Mapping]]] = ..., rows: _Optional[int] = ..., treated_rows: _Optional[int] = ..., treatment_action: _Optional[str] = ..., control_action: _Optional[str] = ..., feature_names: _Optional[_Iterable[str]] = ..., estimator: _Optional[_Union[Estimator, str]] = ..., logged_propensities_used: bool = ..., min_propensity: _Optional[float] = ..., max_propensity: _Optional[float] = ..., warnings: _Optional[_Iterable[str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetReportRequest(_message.Message):
    __slots__ = ("report_id",)
    REPORT_ID_FIELD_NUMBER: _ClassVar[int]
    report_id: str
    def __init__(self, report_id: _Optional[str] = ...) -> None: ...

class GetReportResponse(_message.Message):
    __slots__ = ("result", "html")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    HTML_FIELD_NUMBER: _ClassVar[int]
    result: EstimateEffectsResult
    html: bytes
    def __init__(self, result: _Optional[_Union[EstimateEffectsResult, _Mapping]] = ..., html: _Optional[bytes] = ...) -> None: ...

class ListReportsRequest(_message.Message):
    __slots__ = ("use_case",)
    USE_CASE_FIELD_NUMBER: _ClassVar[int]
    use_case: str
    def __init__(self, use_case: _Optional[str] = ...) -> None: ...

class ListReportsResponse(_message.Message):
    __slots__ = ("reports",)
    REPORTS_FIELD_NUMBER: _ClassVar[int]
    reports: _containers.RepeatedCompositeFieldContainer[EstimateEffectsResult]
    def __init__(self, reports: _Optional[_Iterable[_Union[EstimateEffectsResult, _Mapping]]] = ...) -> None: ...

class PredictEffectsRequest(_message.Message):
    __slots__ = ("report_id", "rows", "feature_names", "features")
    REPORT_ID_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    report_id: str
    rows: int
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    features: bytes
    def __init__(self, report_id: _Optional[str] = ..., rows: _Optional[int] = ..., feature_names: _Optional[_Iterable[str]] = ..., features: _Optional[bytes] = ...) -> None: ...

class PredictEffectsResponse(_message.Message):
    __slots__ = ("effects", "effects_lower", "effects_upper")
    EFFECTS_FIELD_NUMBER: _ClassVar[int]
    EFFECTS_LOWER_FIELD_NUMBER: _ClassVar[int]
    EFFECTS_UPPER_FIELD_NUMBER: _ClassVar[int]
    effects: bytes
    effects_lower: bytes
    effects_upper: bytes
    def __init__(self, effects: _Optional[bytes] = ..., effects_lower: _Optional[bytes] = ..., effects_upper: _Optional[bytes] = ...) -> None: ...

class EvaluatePolicyRequest(_message.Message):
    __slots__ = ("use_case", "model_version", "start_time", "end_time")
    USE_CASE_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    use_case: str
    model_version: int
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    def __init__(self, use_case: _Optional[str] = ..., model_version: _Optional[int] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class EvaluatePolicyResponse(_message.Message):
    __slots__ = ("ips_value", "ips_ci_lower", "ips_ci_upper", "rows")
    IPS_VALUE_FIELD_NUMBER: _ClassVar[int]
    IPS_CI_LOWER_FIELD_NUMBER: _ClassVar[int]
    IPS_CI_UPPER_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    ips_value: float
    ips_ci_lower: float
    ips_ci_upper: float
    rows: int
    def __init__(self, ips_value: _Optional[float] = ..., ips_ci_lower: _Optional[float] = ..., ips_ci_upper: _Optional[float] = ..., rows: _Optional[int] = ...) -> None: ...

class SuggestParametersRequest(_message.Message):
    __slots__ = ("use_case", "parameters")
    USE_CASE_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    use_case: str
    parameters: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, use_case: _Optional[str] = ..., parameters: _Optional[_Iterable[str]] = ...) -> None: ...

class SuggestParametersResponse(_message.Message):
    __slots__ = ("suggestion", "expected_value")
    class SuggestionEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    SUGGESTION_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VALUE_FIELD_NUMBER: _ClassVar[int]
    suggestion: _containers.ScalarMap[str, float]
    expected_value: float
    def __init__(self, suggestion: _Optional[_Mapping[str, float]] = ..., expected_value: _Optional[float] = ...) -> None: ...
