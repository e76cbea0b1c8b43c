import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from loopwise.common.v1 import blueprint_pb2 as _blueprint_pb2
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
    ESTIMATOR_CAUSAL_FOREST_DML: _ClassVar[Estimator]
    ESTIMATOR_DR_LEARNER: _ClassVar[Estimator]
    ESTIMATOR_AUTO: _ClassVar[Estimator]

class TreatmentSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TREATMENT_SOURCE_UNSPECIFIED: _ClassVar[TreatmentSource]
    TREATMENT_SOURCE_ACTIONS: _ClassVar[TreatmentSource]
    TREATMENT_SOURCE_ARMS: _ClassVar[TreatmentSource]

class ScorecardComparison(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCORECARD_COMPARISON_UNSPECIFIED: _ClassVar[ScorecardComparison]
    SCORECARD_COMPARISON_ARMS: _ClassVar[ScorecardComparison]
    SCORECARD_COMPARISON_CANARY: _ClassVar[ScorecardComparison]

class Acquisition(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACQUISITION_UNSPECIFIED: _ClassVar[Acquisition]
    ACQUISITION_EXPECTED_IMPROVEMENT: _ClassVar[Acquisition]
    ACQUISITION_UPPER_CONFIDENCE_BOUND: _ClassVar[Acquisition]
ESTIMATOR_UNSPECIFIED: Estimator
ESTIMATOR_LINEAR_DML: Estimator
ESTIMATOR_CAUSAL_FOREST_DML: Estimator
ESTIMATOR_DR_LEARNER: Estimator
ESTIMATOR_AUTO: Estimator
TREATMENT_SOURCE_UNSPECIFIED: TreatmentSource
TREATMENT_SOURCE_ACTIONS: TreatmentSource
TREATMENT_SOURCE_ARMS: TreatmentSource
SCORECARD_COMPARISON_UNSPECIFIED: ScorecardComparison
SCORECARD_COMPARISON_ARMS: ScorecardComparison
SCORECARD_COMPARISON_CANARY: ScorecardComparison
ACQUISITION_UNSPECIFIED: Acquisition
ACQUISITION_EXPECTED_IMPROVEMENT: Acquisition
ACQUISITION_UPPER_CONFIDENCE_BOUND: Acquisition

class EstimateEffectsRequest(_message.Message):
    __slots__ = ("request_id", "use_case", "start_time", "end_time", "estimator", "treatment_action", "control_action", "seed", "treatment_source", "treatment_arm", "control_arm", "segment_features", "treatment_cost", "register_cate_model", "forest_trees", "timeout")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    USE_CASE_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    ESTIMATOR_FIELD_NUMBER: _ClassVar[int]
    TREATMENT_ACTION_FIELD_NUMBER: _ClassVar[int]
    CONTROL_ACTION_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    TREATMENT_SOURCE_FIELD_NUMBER: _ClassVar[int]
    TREATMENT_ARM_FIELD_NUMBER: _ClassVar[int]
    CONTROL_ARM_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_FEATURES_FIELD_NUMBER: _ClassVar[int]
    TREATMENT_COST_FIELD_NUMBER: _ClassVar[int]
    REGISTER_CATE_MODEL_FIELD_NUMBER: _ClassVar[int]
    FOREST_TREES_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    use_case: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    estimator: Estimator
    treatment_action: str
    control_action: str
    seed: int
    treatment_source: TreatmentSource
    treatment_arm: str
    control_arm: str
    segment_features: _containers.RepeatedScalarFieldContainer[str]
    treatment_cost: float
    register_cate_model: bool
    forest_trees: int
    timeout: _duration_pb2.Duration
    def __init__(self, request_id: _Optional[str] = ..., use_case: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., estimator: _Optional[_Union[Estimator, str]] = ..., treatment_action: _Optional[str] = ..., control_action: _Optional[str] = ..., seed: _Optional[int] = ..., treatment_source: _Optional[_Union[TreatmentSource, str]] = ..., treatment_arm: _Optional[str] = ..., control_arm: _Optional[str] = ..., segment_features: _Optional[_Iterable[str]] = ..., treatment_cost: _Optional[float] = ..., register_cate_model: bool = ..., forest_trees: _Optional[int] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

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
    __slots__ = ("report_id", "use_case", "ate", "ate_ci_lower", "ate_ci_upper", "cate_quantiles", "rows", "treated_rows", "treatment_action", "control_action", "feature_names", "estimator", "logged_propensities_used", "min_propensity", "max_propensity", "warnings", "create_time", "overlap", "nuisance_scores", "segments", "validation", "policy", "refutations", "reproducibility", "cate_model", "treatment_source", "estimator_scores", "ate_stderr", "ate_p_value", "verdict", "interval_calibration", "data_quality", "sample_split")
    class EstimatorScoresEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
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
    OVERLAP_FIELD_NUMBER: _ClassVar[int]
    NUISANCE_SCORES_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    REFUTATIONS_FIELD_NUMBER: _ClassVar[int]
    REPRODUCIBILITY_FIELD_NUMBER: _ClassVar[int]
    CATE_MODEL_FIELD_NUMBER: _ClassVar[int]
    TREATMENT_SOURCE_FIELD_NUMBER: _ClassVar[int]
    ESTIMATOR_SCORES_FIELD_NUMBER: _ClassVar[int]
    ATE_STDERR_FIELD_NUMBER: _ClassVar[int]
    ATE_P_VALUE_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_CALIBRATION_FIELD_NUMBER: _ClassVar[int]
    DATA_QUALITY_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_SPLIT_FIELD_NUMBER: _ClassVar[int]
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
    overlap: Overlap
    nuisance_scores: _containers.RepeatedCompositeFieldContainer[NuisanceScore]
    segments: _containers.RepeatedCompositeFieldContainer[Segment]
    validation: Validation
    policy: PolicySummary
    refutations: _containers.RepeatedCompositeFieldContainer[Refutation]
    reproducibility: Reproducibility
    cate_model: CateModel
    treatment_source: TreatmentSource
    estimator_scores: _containers.ScalarMap[str, float]
    ate_stderr: float
    ate_p_value: float
    verdict: Verdict
    interval_calibration: IntervalCalibration
    data_quality: DataQuality
    sample_split: SampleSplit
    def __init__(self, report_id: _Optional[str] = ..., use_case: _Optional[str] = ..., ate: _Optional[float] = ..., ate_ci_lower: _Optional[float] = ..., ate_ci_upper: _Optional[float] = ..., cate_quantiles: _Optional[_Iterable[_Union[Quantile, _Mapping]]] = ..., rows: _Optional[int] = ..., treated_rows: _Optional[int] = ..., treatment_action: _Optional[str] = ..., control_action: _Optional[str] = ..., feature_names: _Optional[_Iterable[str]] = ..., estimator: _Optional[_Union[Estimator, str]] = ..., logged_propensities_used: bool = ..., min_propensity: _Optional[float] = ..., max_propensity: _Optional[float] = ..., warnings: _Optional[_Iterable[str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., overlap: _Optional[_Union[Overlap, _Mapping]] = ..., nuisance_scores: _Optional[_Iterable[_Union[NuisanceScore, _Mapping]]] = ..., segments: _Optional[_Iterable[_Union[Segment, _Mapping]]] = ..., validation: _Optional[_Union[Validation, _Mapping]] = ..., policy: _Optional[_Union[PolicySummary, _Mapping]] = ..., refutations: _Optional[_Iterable[_Union[Refutation, _Mapping]]] = ..., reproducibility: _Optional[_Union[Reproducibility, _Mapping]] = ..., cate_model: _Optional[_Union[CateModel, _Mapping]] = ..., treatment_source: _Optional[_Union[TreatmentSource, str]] = ..., estimator_scores: _Optional[_Mapping[str, float]] = ..., ate_stderr: _Optional[float] = ..., ate_p_value: _Optional[float] = ..., verdict: _Optional[_Union[Verdict, _Mapping]] = ..., interval_calibration: _Optional[_Union[IntervalCalibration, _Mapping]] = ..., data_quality: _Optional[_Union[DataQuality, _Mapping]] = ..., sample_split: _Optional[_Union[SampleSplit, _Mapping]] = ...) -> None: ...

class Overlap(_message.Message):
    __slots__ = ("extreme_share", "effective_sample_size", "poor", "bin_edges", "treated_counts", "control_counts")
    EXTREME_SHARE_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_SAMPLE_SIZE_FIELD_NUMBER: _ClassVar[int]
    POOR_FIELD_NUMBER: _ClassVar[int]
    BIN_EDGES_FIELD_NUMBER: _ClassVar[int]
    TREATED_COUNTS_FIELD_NUMBER: _ClassVar[int]
    CONTROL_COUNTS_FIELD_NUMBER: _ClassVar[int]
    extreme_share: float
    effective_sample_size: float
    poor: bool
    bin_edges: _containers.RepeatedScalarFieldContainer[float]
    treated_counts: _containers.RepeatedScalarFieldContainer[int]
    control_counts: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, extreme_share: _Optional[float] = ..., effective_sample_size: _Optional[float] = ..., poor: bool = ..., bin_edges: _Optional[_Iterable[float]] = ..., treated_counts: _Optional[_Iterable[int]] = ..., control_counts: _Optional[_Iterable[int]] = ...) -> None: ...

class NuisanceScore(_message.Message):
    __slots__ = ("model", "metric", "value")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    model: str
    metric: str
    value: float
    def __init__(self, model: _Optional[str] = ..., metric: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...

class Segment(_message.Message):
    __slots__ = ("source", "rule", "rows", "effect", "ci_lower", "ci_upper", "predicted_effect", "selection_rows")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    EFFECT_FIELD_NUMBER: _ClassVar[int]
    CI_LOWER_FIELD_NUMBER: _ClassVar[int]
    CI_UPPER_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_EFFECT_FIELD_NUMBER: _ClassVar[int]
    SELECTION_ROWS_FIELD_NUMBER: _ClassVar[int]
    source: str
    rule: str
    rows: int
    effect: float
    ci_lower: float
    ci_upper: float
    predicted_effect: float
    selection_rows: int
    def __init__(self, source: _Optional[str] = ..., rule: _Optional[str] = ..., rows: _Optional[int] = ..., effect: _Optional[float] = ..., ci_lower: _Optional[float] = ..., ci_upper: _Optional[float] = ..., predicted_effect: _Optional[float] = ..., selection_rows: _Optional[int] = ...) -> None: ...

class Validation(_message.Message):
    __slots__ = ("rows", "calibration_r2", "qini", "qini_ci_lower", "qini_ci_upper", "autoc", "autoc_ci_lower", "autoc_ci_upper", "blp_slope", "blp_slope_stderr", "blp_p_value")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_R2_FIELD_NUMBER: _ClassVar[int]
    QINI_FIELD_NUMBER: _ClassVar[int]
    QINI_CI_LOWER_FIELD_NUMBER: _ClassVar[int]
    QINI_CI_UPPER_FIELD_NUMBER: _ClassVar[int]
    AUTOC_FIELD_NUMBER: _ClassVar[int]
    AUTOC_CI_LOWER_FIELD_NUMBER: _ClassVar[int]
    AUTOC_CI_UPPER_FIELD_NUMBER: _ClassVar[int]
    BLP_SLOPE_FIELD_NUMBER: _ClassVar[int]
    BLP_SLOPE_STDERR_FIELD_NUMBER: _ClassVar[int]
    BLP_P_VALUE_FIELD_NUMBER: _ClassVar[int]
    rows: int
    calibration_r2: float
    qini: float
    qini_ci_lower: float
    qini_ci_upper: float
    autoc: float
    autoc_ci_lower: float
    autoc_ci_upper: float
    blp_slope: float
    blp_slope_stderr: float
    blp_p_value: float
    def __init__(self, rows: _Optional[int] = ..., calibration_r2: _Optional[float] = ..., qini: _Optional[float] = ..., qini_ci_lower: _Optional[float] = ..., qini_ci_upper: _Optional[float] = ..., autoc: _Optional[float] = ..., autoc_ci_lower: _Optional[float] = ..., autoc_ci_upper: _Optional[float] = ..., blp_slope: _Optional[float] = ..., blp_slope_stderr: _Optional[float] = ..., blp_p_value: _Optional[float] = ...) -> None: ...

class PolicyValue(_message.Message):
    __slots__ = ("name", "value", "ci_lower", "ci_upper")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CI_LOWER_FIELD_NUMBER: _ClassVar[int]
    CI_UPPER_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: float
    ci_lower: float
    ci_upper: float
    def __init__(self, name: _Optional[str] = ..., value: _Optional[float] = ..., ci_lower: _Optional[float] = ..., ci_upper: _Optional[float] = ...) -> None: ...

class PolicySummary(_message.Message):
    __slots__ = ("treatment_cost", "treated_share", "values", "rules", "gain_over_treat_none", "gain_over_treat_all", "rows")
    TREATMENT_COST_FIELD_NUMBER: _ClassVar[int]
    TREATED_SHARE_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    GAIN_OVER_TREAT_NONE_FIELD_NUMBER: _ClassVar[int]
    GAIN_OVER_TREAT_ALL_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    treatment_cost: float
    treated_share: float
    values: _containers.RepeatedCompositeFieldContainer[PolicyValue]
    rules: _containers.RepeatedScalarFieldContainer[str]
    gain_over_treat_none: PolicyValue
    gain_over_treat_all: PolicyValue
    rows: int
    def __init__(self, treatment_cost: _Optional[float] = ..., treated_share: _Optional[float] = ..., values: _Optional[_Iterable[_Union[PolicyValue, _Mapping]]] = ..., rules: _Optional[_Iterable[str]] = ..., gain_over_treat_none: _Optional[_Union[PolicyValue, _Mapping]] = ..., gain_over_treat_all: _Optional[_Union[PolicyValue, _Mapping]] = ..., rows: _Optional[int] = ...) -> None: ...

class Refutation(_message.Message):
    __slots__ = ("method", "original_effect", "new_effect", "ci_lower", "ci_upper", "passed")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_EFFECT_FIELD_NUMBER: _ClassVar[int]
    NEW_EFFECT_FIELD_NUMBER: _ClassVar[int]
    CI_LOWER_FIELD_NUMBER: _ClassVar[int]
    CI_UPPER_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    method: str
    original_effect: float
    new_effect: float
    ci_lower: float
    ci_upper: float
    passed: bool
    def __init__(self, method: _Optional[str] = ..., original_effect: _Optional[float] = ..., new_effect: _Optional[float] = ..., ci_lower: _Optional[float] = ..., ci_upper: _Optional[float] = ..., passed: bool = ...) -> None: ...

class Reproducibility(_message.Message):
    __slots__ = ("data_start_time", "data_end_time", "rows_read", "rows_used", "seed", "estimator_settings", "versions")
    class VersionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DATA_START_TIME_FIELD_NUMBER: _ClassVar[int]
    DATA_END_TIME_FIELD_NUMBER: _ClassVar[int]
    ROWS_READ_FIELD_NUMBER: _ClassVar[int]
    ROWS_USED_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    ESTIMATOR_SETTINGS_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    data_start_time: _timestamp_pb2.Timestamp
    data_end_time: _timestamp_pb2.Timestamp
    rows_read: int
    rows_used: int
    seed: int
    estimator_settings: str
    versions: _containers.ScalarMap[str, str]
    def __init__(self, data_start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., data_end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., rows_read: _Optional[int] = ..., rows_used: _Optional[int] = ..., seed: _Optional[int] = ..., estimator_settings: _Optional[str] = ..., versions: _Optional[_Mapping[str, str]] = ...) -> None: ...

class CateModel(_message.Message):
    __slots__ = ("model_version", "sha256", "family", "fidelity_r2", "input_width")
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    FIDELITY_R2_FIELD_NUMBER: _ClassVar[int]
    INPUT_WIDTH_FIELD_NUMBER: _ClassVar[int]
    model_version: int
    sha256: str
    family: str
    fidelity_r2: float
    input_width: int
    def __init__(self, model_version: _Optional[int] = ..., sha256: _Optional[str] = ..., family: _Optional[str] = ..., fidelity_r2: _Optional[float] = ..., input_width: _Optional[int] = ...) -> None: ...

class Verdict(_message.Message):
    __slots__ = ("outcome_name", "outcome_definition", "control_mean", "control_mean_ci_lower", "control_mean_ci_upper", "relative_lift", "relative_lift_ci_lower", "relative_lift_ci_upper", "relative_lift_defined", "significant", "statement", "recommendation", "recommendation_statement")
    OUTCOME_NAME_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_DEFINITION_FIELD_NUMBER: _ClassVar[int]
    CONTROL_MEAN_FIELD_NUMBER: _ClassVar[int]
    CONTROL_MEAN_CI_LOWER_FIELD_NUMBER: _ClassVar[int]
    CONTROL_MEAN_CI_UPPER_FIELD_NUMBER: _ClassVar[int]
    RELATIVE_LIFT_FIELD_NUMBER: _ClassVar[int]
    RELATIVE_LIFT_CI_LOWER_FIELD_NUMBER: _ClassVar[int]
    RELATIVE_LIFT_CI_UPPER_FIELD_NUMBER: _ClassVar[int]
    RELATIVE_LIFT_DEFINED_FIELD_NUMBER: _ClassVar[int]
    SIGNIFICANT_FIELD_NUMBER: _ClassVar[int]
    STATEMENT_FIELD_NUMBER: _ClassVar[int]
    RECOMMENDATION_FIELD_NUMBER: _ClassVar[int]
    RECOMMENDATION_STATEMENT_FIELD_NUMBER: _ClassVar[int]
    outcome_name: str
    outcome_definition: str
    control_mean: float
    control_mean_ci_lower: float
    control_mean_ci_upper: float
    relative_lift: float
    relative_lift_ci_lower: float
    relative_lift_ci_upper: float
    relative_lift_defined: bool
    significant: bool
    statement: str
    recommendation: str
    recommendation_statement: str
    def __init__(self, outcome_name: _Optional[str] = ..., outcome_definition: _Optional[str] = ..., control_mean: _Optional[float] = ..., control_mean_ci_lower: _Optional[float] = ..., control_mean_ci_upper: _Optional[float] = ..., relative_lift: _Optional[float] = ..., relative_lift_ci_lower: _Optional[float] = ..., relative_lift_ci_upper: _Optional[float] = ..., relative_lift_defined: bool = ..., significant: bool = ..., statement: _Optional[str] = ..., recommendation: _Optional[str] = ..., recommendation_statement: _Optional[str] = ...) -> None: ...

class IntervalCalibration(_message.Message):
    __slots__ = ("rows", "nominal_coverage", "coverage_upper_bound", "interval_mse", "excess_mse", "excess_mse_ci_lower", "excess_mse_ci_upper", "mse_lower_bound", "error_ratio_lower_bound", "reference", "definition", "misspecified", "findings")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    NOMINAL_COVERAGE_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_UPPER_BOUND_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_MSE_FIELD_NUMBER: _ClassVar[int]
    EXCESS_MSE_FIELD_NUMBER: _ClassVar[int]
    EXCESS_MSE_CI_LOWER_FIELD_NUMBER: _ClassVar[int]
    EXCESS_MSE_CI_UPPER_FIELD_NUMBER: _ClassVar[int]
    MSE_LOWER_BOUND_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATIO_LOWER_BOUND_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    DEFINITION_FIELD_NUMBER: _ClassVar[int]
    MISSPECIFIED_FIELD_NUMBER: _ClassVar[int]
    FINDINGS_FIELD_NUMBER: _ClassVar[int]
    rows: int
    nominal_coverage: float
    coverage_upper_bound: float
    interval_mse: float
    excess_mse: float
    excess_mse_ci_lower: float
    excess_mse_ci_upper: float
    mse_lower_bound: float
    error_ratio_lower_bound: float
    reference: str
    definition: str
    misspecified: bool
    findings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, rows: _Optional[int] = ..., nominal_coverage: _Optional[float] = ..., coverage_upper_bound: _Optional[float] = ..., interval_mse: _Optional[float] = ..., excess_mse: _Optional[float] = ..., excess_mse_ci_lower: _Optional[float] = ..., excess_mse_ci_upper: _Optional[float] = ..., mse_lower_bound: _Optional[float] = ..., error_ratio_lower_bound: _Optional[float] = ..., reference: _Optional[str] = ..., definition: _Optional[str] = ..., misspecified: bool = ..., findings: _Optional[_Iterable[str]] = ...) -> None: ...

class VersionCount(_message.Message):
    __slots__ = ("version", "rows")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    version: int
    rows: int
    def __init__(self, version: _Optional[int] = ..., rows: _Optional[int] = ...) -> None: ...

class DataQuality(_message.Message):
    __slots__ = ("rows_with_outcome", "blueprint_versions", "model_versions", "stats_available", "stats_error", "decisions", "outcomes", "join_rate", "orphan_outcomes", "late_outcomes", "unmatched_outcomes", "lost_decision_outcomes", "invalid_records", "fallback_decisions", "open_windows", "notes")
    ROWS_WITH_OUTCOME_FIELD_NUMBER: _ClassVar[int]
    BLUEPRINT_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    STATS_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    STATS_ERROR_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    JOIN_RATE_FIELD_NUMBER: _ClassVar[int]
    ORPHAN_OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    LATE_OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    UNMATCHED_OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    LOST_DECISION_OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    INVALID_RECORDS_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_DECISIONS_FIELD_NUMBER: _ClassVar[int]
    OPEN_WINDOWS_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    rows_with_outcome: int
    blueprint_versions: _containers.RepeatedCompositeFieldContainer[VersionCount]
    model_versions: _containers.RepeatedCompositeFieldContainer[VersionCount]
    stats_available: bool
    stats_error: str
    decisions: int
    outcomes: int
    join_rate: float
    orphan_outcomes: int
    late_outcomes: int
    unmatched_outcomes: int
    lost_decision_outcomes: int
    invalid_records: int
    fallback_decisions: int
    open_windows: int
    notes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, rows_with_outcome: _Optional[int] = ..., blueprint_versions: _Optional[_Iterable[_Union[VersionCount, _Mapping]]] = ..., model_versions: _Optional[_Iterable[_Union[VersionCount, _Mapping]]] = ..., stats_available: bool = ..., stats_error: _Optional[str] = ..., decisions: _Optional[int] = ..., outcomes: _Optional[int] = ..., join_rate: _Optional[float] = ..., orphan_outcomes: _Optional[int] = ..., late_outcomes: _Optional[int] = ..., unmatched_outcomes: _Optional[int] = ..., lost_decision_outcomes: _Optional[int] = ..., invalid_records: _Optional[int] = ..., fallback_decisions: _Optional[int] = ..., open_windows: _Optional[int] = ..., notes: _Optional[_Iterable[str]] = ...) -> None: ...

class SampleSplit(_message.Message):
    __slots__ = ("selection_rows", "estimation_rows", "seed", "selection_digest", "estimation_digest")
    SELECTION_ROWS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATION_ROWS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SELECTION_DIGEST_FIELD_NUMBER: _ClassVar[int]
    ESTIMATION_DIGEST_FIELD_NUMBER: _ClassVar[int]
    selection_rows: int
    estimation_rows: int
    seed: int
    selection_digest: str
    estimation_digest: str
    def __init__(self, selection_rows: _Optional[int] = ..., estimation_rows: _Optional[int] = ..., seed: _Optional[int] = ..., selection_digest: _Optional[str] = ..., estimation_digest: _Optional[str] = ...) -> None: ...

class GetReportRequest(_message.Message):
    __slots__ = ("report_id", "use_case")
    REPORT_ID_FIELD_NUMBER: _ClassVar[int]
    USE_CASE_FIELD_NUMBER: _ClassVar[int]
    report_id: str
    use_case: str
    def __init__(self, report_id: _Optional[str] = ..., use_case: _Optional[str] = ...) -> None: ...

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
    __slots__ = ("report_id", "rows", "feature_names", "features", "use_case")
    REPORT_ID_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    USE_CASE_FIELD_NUMBER: _ClassVar[int]
    report_id: str
    rows: int
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    features: bytes
    use_case: str
    def __init__(self, report_id: _Optional[str] = ..., rows: _Optional[int] = ..., feature_names: _Optional[_Iterable[str]] = ..., features: _Optional[bytes] = ..., use_case: _Optional[str] = ...) -> None: ...

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
    __slots__ = ("use_case", "model_version", "start_time", "end_time", "constant_action", "report_id", "policy_variant", "max_weight")
    USE_CASE_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    CONSTANT_ACTION_FIELD_NUMBER: _ClassVar[int]
    REPORT_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_VARIANT_FIELD_NUMBER: _ClassVar[int]
    MAX_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    use_case: str
    model_version: int
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    constant_action: str
    report_id: str
    policy_variant: _blueprint_pb2.Policy
    max_weight: float
    def __init__(self, use_case: _Optional[str] = ..., model_version: _Optional[int] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., constant_action: _Optional[str] = ..., report_id: _Optional[str] = ..., policy_variant: _Optional[_Union[_blueprint_pb2.Policy, _Mapping]] = ..., max_weight: _Optional[float] = ...) -> None: ...

class PolicyEstimate(_message.Message):
    __slots__ = ("value", "ci_lower", "ci_upper")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CI_LOWER_FIELD_NUMBER: _ClassVar[int]
    CI_UPPER_FIELD_NUMBER: _ClassVar[int]
    value: float
    ci_lower: float
    ci_upper: float
    def __init__(self, value: _Optional[float] = ..., ci_lower: _Optional[float] = ..., ci_upper: _Optional[float] = ...) -> None: ...

class EvaluatePolicyResponse(_message.Message):
    __slots__ = ("ips_value", "ips_ci_lower", "ips_ci_upper", "rows", "snips", "doubly_robust", "effective_sample_size", "max_importance_weight", "warnings", "logged_value", "disagreement")
    IPS_VALUE_FIELD_NUMBER: _ClassVar[int]
    IPS_CI_LOWER_FIELD_NUMBER: _ClassVar[int]
    IPS_CI_UPPER_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    SNIPS_FIELD_NUMBER: _ClassVar[int]
    DOUBLY_ROBUST_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_SAMPLE_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_IMPORTANCE_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    LOGGED_VALUE_FIELD_NUMBER: _ClassVar[int]
    DISAGREEMENT_FIELD_NUMBER: _ClassVar[int]
    ips_value: float
    ips_ci_lower: float
    ips_ci_upper: float
    rows: int
    snips: PolicyEstimate
    doubly_robust: PolicyEstimate
    effective_sample_size: float
    max_importance_weight: float
    warnings: _containers.RepeatedScalarFieldContainer[str]
    logged_value: float
    disagreement: float
    def __init__(self, ips_value: _Optional[float] = ..., ips_ci_lower: _Optional[float] = ..., ips_ci_upper: _Optional[float] = ..., rows: _Optional[int] = ..., snips: _Optional[_Union[PolicyEstimate, _Mapping]] = ..., doubly_robust: _Optional[_Union[PolicyEstimate, _Mapping]] = ..., effective_sample_size: _Optional[float] = ..., max_importance_weight: _Optional[float] = ..., warnings: _Optional[_Iterable[str]] = ..., logged_value: _Optional[float] = ..., disagreement: _Optional[float] = ...) -> None: ...

class SuggestParametersRequest(_message.Message):
    __slots__ = ("use_case", "parameters", "ranges", "report_id", "model_version", "objective", "constraints", "iterations", "seed", "start_time", "end_time", "net_of_costs")
    USE_CASE_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    RANGES_FIELD_NUMBER: _ClassVar[int]
    REPORT_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    NET_OF_COSTS_FIELD_NUMBER: _ClassVar[int]
    use_case: str
    parameters: _containers.RepeatedScalarFieldContainer[str]
    ranges: _containers.RepeatedCompositeFieldContainer[ParameterRange]
    report_id: str
    model_version: int
    objective: str
    constraints: _containers.RepeatedCompositeFieldContainer[Constraint]
    iterations: int
    seed: int
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    net_of_costs: bool
    def __init__(self, use_case: _Optional[str] = ..., parameters: _Optional[_Iterable[str]] = ..., ranges: _Optional[_Iterable[_Union[ParameterRange, _Mapping]]] = ..., report_id: _Optional[str] = ..., model_version: _Optional[int] = ..., objective: _Optional[str] = ..., constraints: _Optional[_Iterable[_Union[Constraint, _Mapping]]] = ..., iterations: _Optional[int] = ..., seed: _Optional[int] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., net_of_costs: bool = ...) -> None: ...

class ParameterRange(_message.Message):
    __slots__ = ("low", "high")
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    low: float
    high: float
    def __init__(self, low: _Optional[float] = ..., high: _Optional[float] = ...) -> None: ...

class Constraint(_message.Message):
    __slots__ = ("metric", "min", "max")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    metric: str
    min: float
    max: float
    def __init__(self, metric: _Optional[str] = ..., min: _Optional[float] = ..., max: _Optional[float] = ...) -> None: ...

class Trial(_message.Message):
    __slots__ = ("parameters", "objective", "metrics", "feasible")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    FEASIBLE_FIELD_NUMBER: _ClassVar[int]
    parameters: _containers.ScalarMap[str, float]
    objective: float
    metrics: _containers.ScalarMap[str, float]
    feasible: bool
    def __init__(self, parameters: _Optional[_Mapping[str, float]] = ..., objective: _Optional[float] = ..., metrics: _Optional[_Mapping[str, float]] = ..., feasible: bool = ...) -> None: ...

class SuggestParametersResponse(_message.Message):
    __slots__ = ("suggestion", "expected_value", "expected_value_stddev", "ci_lower", "ci_upper", "metrics", "history", "warnings")
    class SuggestionEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    SUGGESTION_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VALUE_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VALUE_STDDEV_FIELD_NUMBER: _ClassVar[int]
    CI_LOWER_FIELD_NUMBER: _ClassVar[int]
    CI_UPPER_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    suggestion: _containers.ScalarMap[str, float]
    expected_value: float
    expected_value_stddev: float
    ci_lower: float
    ci_upper: float
    metrics: _containers.ScalarMap[str, float]
    history: _containers.RepeatedCompositeFieldContainer[Trial]
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, suggestion: _Optional[_Mapping[str, float]] = ..., expected_value: _Optional[float] = ..., expected_value_stddev: _Optional[float] = ..., ci_lower: _Optional[float] = ..., ci_upper: _Optional[float] = ..., metrics: _Optional[_Mapping[str, float]] = ..., history: _Optional[_Iterable[_Union[Trial, _Mapping]]] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class GetScorecardRequest(_message.Message):
    __slots__ = ("use_case", "comparison", "start_time", "end_time", "control_arm", "covariates", "look_interval", "mixture_effect_size", "srm_alpha", "include_html")
    USE_CASE_FIELD_NUMBER: _ClassVar[int]
    COMPARISON_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    CONTROL_ARM_FIELD_NUMBER: _ClassVar[int]
    COVARIATES_FIELD_NUMBER: _ClassVar[int]
    LOOK_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    MIXTURE_EFFECT_SIZE_FIELD_NUMBER: _ClassVar[int]
    SRM_ALPHA_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_HTML_FIELD_NUMBER: _ClassVar[int]
    use_case: str
    comparison: ScorecardComparison
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    control_arm: str
    covariates: _containers.RepeatedScalarFieldContainer[str]
    look_interval: _duration_pb2.Duration
    mixture_effect_size: float
    srm_alpha: float
    include_html: bool
    def __init__(self, use_case: _Optional[str] = ..., comparison: _Optional[_Union[ScorecardComparison, str]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., control_arm: _Optional[str] = ..., covariates: _Optional[_Iterable[str]] = ..., look_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., mixture_effect_size: _Optional[float] = ..., srm_alpha: _Optional[float] = ..., include_html: bool = ...) -> None: ...

class GetScorecardResponse(_message.Message):
    __slots__ = ("scorecard", "html")
    SCORECARD_FIELD_NUMBER: _ClassVar[int]
    HTML_FIELD_NUMBER: _ClassVar[int]
    scorecard: Scorecard
    html: bytes
    def __init__(self, scorecard: _Optional[_Union[Scorecard, _Mapping]] = ..., html: _Optional[bytes] = ...) -> None: ...

class Scorecard(_message.Message):
    __slots__ = ("use_case", "comparison", "control", "groups", "group_metrics", "comparisons", "sample_ratio", "covariate_columns", "coefficients", "data_start_time", "data_end_time", "rows", "rows_read", "look_interval", "mixture_effect_size", "alpha", "canary_model_version", "production_model_version", "deployment_revision", "warnings", "create_time")
    USE_CASE_FIELD_NUMBER: _ClassVar[int]
    COMPARISON_FIELD_NUMBER: _ClassVar[int]
    CONTROL_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    GROUP_METRICS_FIELD_NUMBER: _ClassVar[int]
    COMPARISONS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATIO_FIELD_NUMBER: _ClassVar[int]
    COVARIATE_COLUMNS_FIELD_NUMBER: _ClassVar[int]
    COEFFICIENTS_FIELD_NUMBER: _ClassVar[int]
    DATA_START_TIME_FIELD_NUMBER: _ClassVar[int]
    DATA_END_TIME_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    ROWS_READ_FIELD_NUMBER: _ClassVar[int]
    LOOK_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    MIXTURE_EFFECT_SIZE_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    CANARY_MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PRODUCTION_MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_REVISION_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    use_case: str
    comparison: ScorecardComparison
    control: str
    groups: _containers.RepeatedCompositeFieldContainer[ScorecardGroup]
    group_metrics: _containers.RepeatedCompositeFieldContainer[GroupMetric]
    comparisons: _containers.RepeatedCompositeFieldContainer[MetricComparison]
    sample_ratio: SampleRatioTest
    covariate_columns: _containers.RepeatedScalarFieldContainer[str]
    coefficients: _containers.RepeatedCompositeFieldContainer[CupedCoefficients]
    data_start_time: _timestamp_pb2.Timestamp
    data_end_time: _timestamp_pb2.Timestamp
    rows: int
    rows_read: int
    look_interval: _duration_pb2.Duration
    mixture_effect_size: float
    alpha: float
    canary_model_version: int
    production_model_version: int
    deployment_revision: int
    warnings: _containers.RepeatedScalarFieldContainer[str]
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, use_case: _Optional[str] = ..., comparison: _Optional[_Union[ScorecardComparison, str]] = ..., control: _Optional[str] = ..., groups: _Optional[_Iterable[_Union[ScorecardGroup, _Mapping]]] = ..., group_metrics: _Optional[_Iterable[_Union[GroupMetric, _Mapping]]] = ..., comparisons: _Optional[_Iterable[_Union[MetricComparison, _Mapping]]] = ..., sample_ratio: _Optional[_Union[SampleRatioTest, _Mapping]] = ..., covariate_columns: _Optional[_Iterable[str]] = ..., coefficients: _Optional[_Iterable[_Union[CupedCoefficients, _Mapping]]] = ..., data_start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., data_end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., rows: _Optional[int] = ..., rows_read: _Optional[int] = ..., look_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., mixture_effect_size: _Optional[float] = ..., alpha: _Optional[float] = ..., canary_model_version: _Optional[int] = ..., production_model_version: _Optional[int] = ..., deployment_revision: _Optional[int] = ..., warnings: _Optional[_Iterable[str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ScorecardGroup(_message.Message):
    __slots__ = ("name", "rows", "expected_share", "observed_share")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_SHARE_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_SHARE_FIELD_NUMBER: _ClassVar[int]
    name: str
    rows: int
    expected_share: float
    observed_share: float
    def __init__(self, name: _Optional[str] = ..., rows: _Optional[int] = ..., expected_share: _Optional[float] = ..., observed_share: _Optional[float] = ...) -> None: ...

class GroupMetric(_message.Message):
    __slots__ = ("group", "metric", "rows", "mean", "ci_lower", "ci_upper", "std")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    CI_LOWER_FIELD_NUMBER: _ClassVar[int]
    CI_UPPER_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    group: str
    metric: str
    rows: int
    mean: float
    ci_lower: float
    ci_upper: float
    std: float
    def __init__(self, group: _Optional[str] = ..., metric: _Optional[str] = ..., rows: _Optional[int] = ..., mean: _Optional[float] = ..., ci_lower: _Optional[float] = ..., ci_upper: _Optional[float] = ..., std: _Optional[float] = ...) -> None: ...

class MetricComparison(_message.Message):
    __slots__ = ("metric", "group", "control", "rows", "rows_control", "mean", "mean_control", "difference", "difference_ci_lower", "difference_ci_upper", "p_value", "relative_lift", "relative_lift_ci_lower", "relative_lift_ci_upper", "cuped", "variance_reduction", "unadjusted_difference", "unadjusted_difference_ci_lower", "unadjusted_difference_ci_upper", "unadjusted_relative_lift", "unadjusted_relative_lift_ci_lower", "unadjusted_relative_lift_ci_upper", "sequential")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    CONTROL_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    ROWS_CONTROL_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    MEAN_CONTROL_FIELD_NUMBER: _ClassVar[int]
    DIFFERENCE_FIELD_NUMBER: _ClassVar[int]
    DIFFERENCE_CI_LOWER_FIELD_NUMBER: _ClassVar[int]
    DIFFERENCE_CI_UPPER_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    RELATIVE_LIFT_FIELD_NUMBER: _ClassVar[int]
    RELATIVE_LIFT_CI_LOWER_FIELD_NUMBER: _ClassVar[int]
    RELATIVE_LIFT_CI_UPPER_FIELD_NUMBER: _ClassVar[int]
    CUPED_FIELD_NUMBER: _ClassVar[int]
    VARIANCE_REDUCTION_FIELD_NUMBER: _ClassVar[int]
    UNADJUSTED_DIFFERENCE_FIELD_NUMBER: _ClassVar[int]
    UNADJUSTED_DIFFERENCE_CI_LOWER_FIELD_NUMBER: _ClassVar[int]
    UNADJUSTED_DIFFERENCE_CI_UPPER_FIELD_NUMBER: _ClassVar[int]
    UNADJUSTED_RELATIVE_LIFT_FIELD_NUMBER: _ClassVar[int]
    UNADJUSTED_RELATIVE_LIFT_CI_LOWER_FIELD_NUMBER: _ClassVar[int]
    UNADJUSTED_RELATIVE_LIFT_CI_UPPER_FIELD_NUMBER: _ClassVar[int]
    SEQUENTIAL_FIELD_NUMBER: _ClassVar[int]
    metric: str
    group: str
    control: str
    rows: int
    rows_control: int
    mean: float
    mean_control: float
    difference: float
    difference_ci_lower: float
    difference_ci_upper: float
    p_value: float
    relative_lift: float
    relative_lift_ci_lower: float
    relative_lift_ci_upper: float
    cuped: bool
    variance_reduction: float
    unadjusted_difference: float
    unadjusted_difference_ci_lower: float
    unadjusted_difference_ci_upper: float
    unadjusted_relative_lift: float
    unadjusted_relative_lift_ci_lower: float
    unadjusted_relative_lift_ci_upper: float
    sequential: SequentialTest
    def __init__(self, metric: _Optional[str] = ..., group: _Optional[str] = ..., control: _Optional[str] = ..., rows: _Optional[int] = ..., rows_control: _Optional[int] = ..., mean: _Optional[float] = ..., mean_control: _Optional[float] = ..., difference: _Optional[float] = ..., difference_ci_lower: _Optional[float] = ..., difference_ci_upper: _Optional[float] = ..., p_value: _Optional[float] = ..., relative_lift: _Optional[float] = ..., relative_lift_ci_lower: _Optional[float] = ..., relative_lift_ci_upper: _Optional[float] = ..., cuped: bool = ..., variance_reduction: _Optional[float] = ..., unadjusted_difference: _Optional[float] = ..., unadjusted_difference_ci_lower: _Optional[float] = ..., unadjusted_difference_ci_upper: _Optional[float] = ..., unadjusted_relative_lift: _Optional[float] = ..., unadjusted_relative_lift_ci_lower: _Optional[float] = ..., unadjusted_relative_lift_ci_upper: _Optional[float] = ..., sequential: _Optional[_Union[SequentialTest, _Mapping]] = ...) -> None: ...

class SequentialTest(_message.Message):
    __slots__ = ("p_value", "cs_lower", "cs_upper", "significant", "looks")
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    CS_LOWER_FIELD_NUMBER: _ClassVar[int]
    CS_UPPER_FIELD_NUMBER: _ClassVar[int]
    SIGNIFICANT_FIELD_NUMBER: _ClassVar[int]
    LOOKS_FIELD_NUMBER: _ClassVar[int]
    p_value: float
    cs_lower: float
    cs_upper: float
    significant: bool
    looks: _containers.RepeatedCompositeFieldContainer[SequentialLook]
    def __init__(self, p_value: _Optional[float] = ..., cs_lower: _Optional[float] = ..., cs_upper: _Optional[float] = ..., significant: bool = ..., looks: _Optional[_Iterable[_Union[SequentialLook, _Mapping]]] = ...) -> None: ...

class SequentialLook(_message.Message):
    __slots__ = ("time", "rows", "rows_control", "difference", "cs_lower", "cs_upper", "p_value")
    TIME_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    ROWS_CONTROL_FIELD_NUMBER: _ClassVar[int]
    DIFFERENCE_FIELD_NUMBER: _ClassVar[int]
    CS_LOWER_FIELD_NUMBER: _ClassVar[int]
    CS_UPPER_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    rows: int
    rows_control: int
    difference: float
    cs_lower: float
    cs_upper: float
    p_value: float
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., rows: _Optional[int] = ..., rows_control: _Optional[int] = ..., difference: _Optional[float] = ..., cs_lower: _Optional[float] = ..., cs_upper: _Optional[float] = ..., p_value: _Optional[float] = ...) -> None: ...

class SampleRatioTest(_message.Message):
    __slots__ = ("chi_square", "degrees_of_freedom", "p_value", "alpha", "mismatch")
    CHI_SQUARE_FIELD_NUMBER: _ClassVar[int]
    DEGREES_OF_FREEDOM_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    MISMATCH_FIELD_NUMBER: _ClassVar[int]
    chi_square: float
    degrees_of_freedom: int
    p_value: float
    alpha: float
    mismatch: bool
    def __init__(self, chi_square: _Optional[float] = ..., degrees_of_freedom: _Optional[int] = ..., p_value: _Optional[float] = ..., alpha: _Optional[float] = ..., mismatch: bool = ...) -> None: ...

class CupedCoefficients(_message.Message):
    __slots__ = ("metric", "theta")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    THETA_FIELD_NUMBER: _ClassVar[int]
    metric: str
    theta: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, metric: _Optional[str] = ..., theta: _Optional[_Iterable[float]] = ...) -> None: ...

class TunedParameter(_message.Message):
    __slots__ = ("path", "low", "high")
    PATH_FIELD_NUMBER: _ClassVar[int]
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    path: str
    low: float
    high: float
    def __init__(self, path: _Optional[str] = ..., low: _Optional[float] = ..., high: _Optional[float] = ...) -> None: ...

class StartTuningRequest(_message.Message):
    __slots__ = ("request_id", "use_case", "parameters", "objective", "constraints", "rounds", "batch_size", "min_rows_per_arm", "round_timeout", "apply", "acquisition", "seed", "seed_from_offline", "suggest_model_version", "suggest_report_id", "author")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    USE_CASE_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MIN_ROWS_PER_ARM_FIELD_NUMBER: _ClassVar[int]
    ROUND_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    APPLY_FIELD_NUMBER: _ClassVar[int]
    ACQUISITION_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SEED_FROM_OFFLINE_FIELD_NUMBER: _ClassVar[int]
    SUGGEST_MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SUGGEST_REPORT_ID_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    use_case: str
    parameters: _containers.RepeatedCompositeFieldContainer[TunedParameter]
    objective: str
    constraints: _containers.RepeatedCompositeFieldContainer[Constraint]
    rounds: int
    batch_size: int
    min_rows_per_arm: int
    round_timeout: _duration_pb2.Duration
    apply: bool
    acquisition: Acquisition
    seed: int
    seed_from_offline: bool
    suggest_model_version: int
    suggest_report_id: str
    author: str
    def __init__(self, request_id: _Optional[str] = ..., use_case: _Optional[str] = ..., parameters: _Optional[_Iterable[_Union[TunedParameter, _Mapping]]] = ..., objective: _Optional[str] = ..., constraints: _Optional[_Iterable[_Union[Constraint, _Mapping]]] = ..., rounds: _Optional[int] = ..., batch_size: _Optional[int] = ..., min_rows_per_arm: _Optional[int] = ..., round_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., apply: bool = ..., acquisition: _Optional[_Union[Acquisition, str]] = ..., seed: _Optional[int] = ..., seed_from_offline: bool = ..., suggest_model_version: _Optional[int] = ..., suggest_report_id: _Optional[str] = ..., author: _Optional[str] = ...) -> None: ...

class StartTuningResponse(_message.Message):
    __slots__ = ("operation",)
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    operation: _operation_pb2.Operation
    def __init__(self, operation: _Optional[_Union[_operation_pb2.Operation, _Mapping]] = ...) -> None: ...

class TuningMetric(_message.Message):
    __slots__ = ("metric", "mean", "ci_lower", "ci_upper", "rows")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    CI_LOWER_FIELD_NUMBER: _ClassVar[int]
    CI_UPPER_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    metric: str
    mean: float
    ci_lower: float
    ci_upper: float
    rows: int
    def __init__(self, metric: _Optional[str] = ..., mean: _Optional[float] = ..., ci_lower: _Optional[float] = ..., ci_upper: _Optional[float] = ..., rows: _Optional[int] = ...) -> None: ...

class TuningArm(_message.Message):
    __slots__ = ("arm", "parameters", "source", "predicted_mean", "predicted_stddev", "acquisition", "feasibility_probability", "metrics", "feasible")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ARM_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_MEAN_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_STDDEV_FIELD_NUMBER: _ClassVar[int]
    ACQUISITION_FIELD_NUMBER: _ClassVar[int]
    FEASIBILITY_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    FEASIBLE_FIELD_NUMBER: _ClassVar[int]
    arm: str
    parameters: _containers.ScalarMap[str, float]
    source: str
    predicted_mean: float
    predicted_stddev: float
    acquisition: float
    feasibility_probability: float
    metrics: _containers.RepeatedCompositeFieldContainer[TuningMetric]
    feasible: bool
    def __init__(self, arm: _Optional[str] = ..., parameters: _Optional[_Mapping[str, float]] = ..., source: _Optional[str] = ..., predicted_mean: _Optional[float] = ..., predicted_stddev: _Optional[float] = ..., acquisition: _Optional[float] = ..., feasibility_probability: _Optional[float] = ..., metrics: _Optional[_Iterable[_Union[TuningMetric, _Mapping]]] = ..., feasible: bool = ...) -> None: ...

class TuningRound(_message.Message):
    __slots__ = ("round", "blueprint_version", "arms", "start_time", "end_time", "warnings")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    BLUEPRINT_VERSION_FIELD_NUMBER: _ClassVar[int]
    ARMS_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    round: int
    blueprint_version: int
    arms: _containers.RepeatedCompositeFieldContainer[TuningArm]
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, round: _Optional[int] = ..., blueprint_version: _Optional[int] = ..., arms: _Optional[_Iterable[_Union[TuningArm, _Mapping]]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class TuningResult(_message.Message):
    __slots__ = ("use_case", "rounds", "best", "best_round", "best_arm", "best_metrics", "best_predicted_mean", "applied", "final_blueprint_version", "warnings")
    class BestEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    USE_CASE_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    BEST_FIELD_NUMBER: _ClassVar[int]
    BEST_ROUND_FIELD_NUMBER: _ClassVar[int]
    BEST_ARM_FIELD_NUMBER: _ClassVar[int]
    BEST_METRICS_FIELD_NUMBER: _ClassVar[int]
    BEST_PREDICTED_MEAN_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    FINAL_BLUEPRINT_VERSION_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    use_case: str
    rounds: _containers.RepeatedCompositeFieldContainer[TuningRound]
    best: _containers.ScalarMap[str, float]
    best_round: int
    best_arm: str
    best_metrics: _containers.RepeatedCompositeFieldContainer[TuningMetric]
    best_predicted_mean: float
    applied: bool
    final_blueprint_version: int
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, use_case: _Optional[str] = ..., rounds: _Optional[_Iterable[_Union[TuningRound, _Mapping]]] = ..., best: _Optional[_Mapping[str, float]] = ..., best_round: _Optional[int] = ..., best_arm: _Optional[str] = ..., best_metrics: _Optional[_Iterable[_Union[TuningMetric, _Mapping]]] = ..., best_predicted_mean: _Optional[float] = ..., applied: bool = ..., final_blueprint_version: _Optional[int] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...
