import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DecisionKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DECISION_KIND_UNSPECIFIED: _ClassVar[DecisionKind]
    DECISION_KIND_BINARY: _ClassVar[DecisionKind]
    DECISION_KIND_MULTICLASS: _ClassVar[DecisionKind]
    DECISION_KIND_REGRESSION: _ClassVar[DecisionKind]
    DECISION_KIND_ACTION_VALUE: _ClassVar[DecisionKind]
    DECISION_KIND_RANKING: _ClassVar[DecisionKind]

class FeatureType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FEATURE_TYPE_UNSPECIFIED: _ClassVar[FeatureType]
    FEATURE_TYPE_NUMERIC: _ClassVar[FeatureType]
    FEATURE_TYPE_CATEGORICAL: _ClassVar[FeatureType]

class MissingRule(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MISSING_RULE_UNSPECIFIED: _ClassVar[MissingRule]
    MISSING_RULE_REJECT: _ClassVar[MissingRule]
    MISSING_RULE_NAN: _ClassVar[MissingRule]
    MISSING_RULE_IMPUTE: _ClassVar[MissingRule]

class UnknownRule(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UNKNOWN_RULE_UNSPECIFIED: _ClassVar[UnknownRule]
    UNKNOWN_RULE_REJECT: _ClassVar[UnknownRule]
    UNKNOWN_RULE_CODE: _ClassVar[UnknownRule]

class PiiRule(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PII_RULE_UNSPECIFIED: _ClassVar[PiiRule]
    PII_RULE_HASH: _ClassVar[PiiRule]
    PII_RULE_DROP: _ClassVar[PiiRule]

class PolicyType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POLICY_TYPE_UNSPECIFIED: _ClassVar[PolicyType]
    POLICY_TYPE_GREEDY: _ClassVar[PolicyType]
    POLICY_TYPE_EPSILON_GREEDY: _ClassVar[PolicyType]
    POLICY_TYPE_SOFTMAX: _ClassVar[PolicyType]
    POLICY_TYPE_THOMPSON: _ClassVar[PolicyType]

class RewardAggregation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REWARD_AGGREGATION_UNSPECIFIED: _ClassVar[RewardAggregation]
    REWARD_AGGREGATION_SUM: _ClassVar[RewardAggregation]
    REWARD_AGGREGATION_MAX: _ClassVar[RewardAggregation]
    REWARD_AGGREGATION_FIRST: _ClassVar[RewardAggregation]
    REWARD_AGGREGATION_LAST: _ClassVar[RewardAggregation]
    REWARD_AGGREGATION_COUNT: _ClassVar[RewardAggregation]
DECISION_KIND_UNSPECIFIED: DecisionKind
DECISION_KIND_BINARY: DecisionKind
DECISION_KIND_MULTICLASS: DecisionKind
DECISION_KIND_REGRESSION: DecisionKind
DECISION_KIND_ACTION_VALUE: DecisionKind
DECISION_KIND_RANKING: DecisionKind
FEATURE_TYPE_UNSPECIFIED: FeatureType
FEATURE_TYPE_NUMERIC: FeatureType
FEATURE_TYPE_CATEGORICAL: FeatureType
MISSING_RULE_UNSPECIFIED: MissingRule
MISSING_RULE_REJECT: MissingRule
MISSING_RULE_NAN: MissingRule
MISSING_RULE_IMPUTE: MissingRule
UNKNOWN_RULE_UNSPECIFIED: UnknownRule
UNKNOWN_RULE_REJECT: UnknownRule
UNKNOWN_RULE_CODE: UnknownRule
PII_RULE_UNSPECIFIED: PiiRule
PII_RULE_HASH: PiiRule
PII_RULE_DROP: PiiRule
POLICY_TYPE_UNSPECIFIED: PolicyType
POLICY_TYPE_GREEDY: PolicyType
POLICY_TYPE_EPSILON_GREEDY: PolicyType
POLICY_TYPE_SOFTMAX: PolicyType
POLICY_TYPE_THOMPSON: PolicyType
REWARD_AGGREGATION_UNSPECIFIED: RewardAggregation
REWARD_AGGREGATION_SUM: RewardAggregation
REWARD_AGGREGATION_MAX: RewardAggregation
REWARD_AGGREGATION_FIRST: RewardAggregation
REWARD_AGGREGATION_LAST: RewardAggregation
REWARD_AGGREGATION_COUNT: RewardAggregation

class Feature(_message.Message):
    __slots__ = ("name", "type", "vocabulary", "on_missing", "impute_value", "on_unknown", "description", "pii")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    VOCABULARY_FIELD_NUMBER: _ClassVar[int]
    ON_MISSING_FIELD_NUMBER: _ClassVar[int]
    IMPUTE_VALUE_FIELD_NUMBER: _ClassVar[int]
    ON_UNKNOWN_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PII_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: FeatureType
    vocabulary: _containers.RepeatedScalarFieldContainer[str]
    on_missing: MissingRule
    impute_value: float
    on_unknown: UnknownRule
    description: str
    pii: PiiRule
    def __init__(self, name: _Optional[str] = ..., type: _Optional[_Union[FeatureType, str]] = ..., vocabulary: _Optional[_Iterable[str]] = ..., on_missing: _Optional[_Union[MissingRule, str]] = ..., impute_value: _Optional[float] = ..., on_unknown: _Optional[_Union[UnknownRule, str]] = ..., description: _Optional[str] = ..., pii: _Optional[_Union[PiiRule, str]] = ...) -> None: ...

class Policy(_message.Message):
    __slots__ = ("type", "epsilon", "threshold", "exploration_floor", "explore_without_model", "temperature", "action_costs", "thompson_members", "ranking_top_k")
    class ActionCostsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    TYPE_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    EXPLORATION_FLOOR_FIELD_NUMBER: _ClassVar[int]
    EXPLORE_WITHOUT_MODEL_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    ACTION_COSTS_FIELD_NUMBER: _ClassVar[int]
    THOMPSON_MEMBERS_FIELD_NUMBER: _ClassVar[int]
    RANKING_TOP_K_FIELD_NUMBER: _ClassVar[int]
    type: PolicyType
    epsilon: float
    threshold: float
    exploration_floor: float
    explore_without_model: bool
    temperature: float
    action_costs: _containers.ScalarMap[str, float]
    thompson_members: int
    ranking_top_k: int
    def __init__(self, type: _Optional[_Union[PolicyType, str]] = ..., epsilon: _Optional[float] = ..., threshold: _Optional[float] = ..., exploration_floor: _Optional[float] = ..., explore_without_model: bool = ..., temperature: _Optional[float] = ..., action_costs: _Optional[_Mapping[str, float]] = ..., thompson_members: _Optional[int] = ..., ranking_top_k: _Optional[int] = ...) -> None: ...

class DefaultDecision(_message.Message):
    __slots__ = ("action", "score")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    action: str
    score: float
    def __init__(self, action: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class ExperimentArm(_message.Message):
    __slots__ = ("name", "traffic_share", "epsilon", "parameters")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    TRAFFIC_SHARE_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    name: str
    traffic_share: float
    epsilon: float
    parameters: _containers.ScalarMap[str, float]
    def __init__(self, name: _Optional[str] = ..., traffic_share: _Optional[float] = ..., epsilon: _Optional[float] = ..., parameters: _Optional[_Mapping[str, float]] = ...) -> None: ...

class RewardSpec(_message.Message):
    __slots__ = ("outcome_names", "aggregation", "window", "default_reward")
    OUTCOME_NAMES_FIELD_NUMBER: _ClassVar[int]
    AGGREGATION_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_REWARD_FIELD_NUMBER: _ClassVar[int]
    outcome_names: _containers.RepeatedScalarFieldContainer[str]
    aggregation: RewardAggregation
    window: _duration_pb2.Duration
    default_reward: float
    def __init__(self, outcome_names: _Optional[_Iterable[str]] = ..., aggregation: _Optional[_Union[RewardAggregation, str]] = ..., window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., default_reward: _Optional[float] = ...) -> None: ...

class TrainingSpec(_message.Message):
    __slots__ = ("min_rows", "holdout_fraction", "max_missing_rate", "min_label_rate", "max_label_rate", "max_psi", "candidate_budget_seconds", "blessing_tolerance", "retrain_every", "retrain_after_labelled", "candidate_families", "min_distinct_values")
    MIN_ROWS_FIELD_NUMBER: _ClassVar[int]
    HOLDOUT_FRACTION_FIELD_NUMBER: _ClassVar[int]
    MAX_MISSING_RATE_FIELD_NUMBER: _ClassVar[int]
    MIN_LABEL_RATE_FIELD_NUMBER: _ClassVar[int]
    MAX_LABEL_RATE_FIELD_NUMBER: _ClassVar[int]
    MAX_PSI_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_BUDGET_SECONDS_FIELD_NUMBER: _ClassVar[int]
    BLESSING_TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    RETRAIN_EVERY_FIELD_NUMBER: _ClassVar[int]
    RETRAIN_AFTER_LABELLED_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FAMILIES_FIELD_NUMBER: _ClassVar[int]
    MIN_DISTINCT_VALUES_FIELD_NUMBER: _ClassVar[int]
    min_rows: int
    holdout_fraction: float
    max_missing_rate: float
    min_label_rate: float
    max_label_rate: float
    max_psi: float
    candidate_budget_seconds: float
    blessing_tolerance: float
    retrain_every: _duration_pb2.Duration
    retrain_after_labelled: int
    candidate_families: _containers.RepeatedScalarFieldContainer[str]
    min_distinct_values: int
    def __init__(self, min_rows: _Optional[int] = ..., holdout_fraction: _Optional[float] = ..., max_missing_rate: _Optional[float] = ..., min_label_rate: _Optional[float] = ..., max_label_rate: _Optional[float] = ..., max_psi: _Optional[float] = ..., candidate_budget_seconds: _Optional[float] = ..., blessing_tolerance: _Optional[float] = ..., retrain_every: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., retrain_after_labelled: _Optional[int] = ..., candidate_families: _Optional[_Iterable[str]] = ..., min_distinct_values: _Optional[int] = ...) -> None: ...

class RolloutSpec(_message.Message):
    __slots__ = ("hold_first_model", "shadow_min_decisions", "shadow_min_agreement", "shadow_max_score_shift", "canary_share", "canary_min_outcomes", "canary_alpha", "canary_max_fallback_rate", "manual", "canary_max_latency_ratio")
    HOLD_FIRST_MODEL_FIELD_NUMBER: _ClassVar[int]
    SHADOW_MIN_DECISIONS_FIELD_NUMBER: _ClassVar[int]
    SHADOW_MIN_AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    SHADOW_MAX_SCORE_SHIFT_FIELD_NUMBER: _ClassVar[int]
    CANARY_SHARE_FIELD_NUMBER: _ClassVar[int]
    CANARY_MIN_OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    CANARY_ALPHA_FIELD_NUMBER: _ClassVar[int]
    CANARY_MAX_FALLBACK_RATE_FIELD_NUMBER: _ClassVar[int]
    MANUAL_FIELD_NUMBER: _ClassVar[int]
    CANARY_MAX_LATENCY_RATIO_FIELD_NUMBER: _ClassVar[int]
    hold_first_model: bool
    shadow_min_decisions: int
    shadow_min_agreement: float
    shadow_max_score_shift: float
    canary_share: float
    canary_min_outcomes: int
    canary_alpha: float
    canary_max_fallback_rate: float
    manual: bool
    canary_max_latency_ratio: float
    def __init__(self, hold_first_model: bool = ..., shadow_min_decisions: _Optional[int] = ..., shadow_min_agreement: _Optional[float] = ..., shadow_max_score_shift: _Optional[float] = ..., canary_share: _Optional[float] = ..., canary_min_outcomes: _Optional[int] = ..., canary_alpha: _Optional[float] = ..., canary_max_fallback_rate: _Optional[float] = ..., manual: bool = ..., canary_max_latency_ratio: _Optional[float] = ...) -> None: ...

class Blueprint(_message.Message):
    __slots__ = ("use_case", "description", "features", "kind", "actions", "policy", "default_decision", "arms", "reward", "training", "rollout", "latency_budget_ms", "slices", "drift", "unit_id_pii", "retention", "metrics", "value_model", "guardrails")
    USE_CASE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_DECISION_FIELD_NUMBER: _ClassVar[int]
    ARMS_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    LATENCY_BUDGET_MS_FIELD_NUMBER: _ClassVar[int]
    SLICES_FIELD_NUMBER: _ClassVar[int]
    DRIFT_FIELD_NUMBER: _ClassVar[int]
    UNIT_ID_PII_FIELD_NUMBER: _ClassVar[int]
    RETENTION_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    VALUE_MODEL_FIELD_NUMBER: _ClassVar[int]
    GUARDRAILS_FIELD_NUMBER: _ClassVar[int]
    use_case: str
    description: str
    features: _containers.RepeatedCompositeFieldContainer[Feature]
    kind: DecisionKind
    actions: _containers.RepeatedScalarFieldContainer[str]
    policy: Policy
    default_decision: DefaultDecision
    arms: _containers.RepeatedCompositeFieldContainer[ExperimentArm]
    reward: RewardSpec
    training: TrainingSpec
    rollout: RolloutSpec
    latency_budget_ms: float
    slices: _containers.RepeatedScalarFieldContainer[str]
    drift: DriftSpec
    unit_id_pii: PiiRule
    retention: _duration_pb2.Duration
    metrics: _containers.RepeatedCompositeFieldContainer[Metric]
    value_model: ValueModel
    guardrails: _containers.RepeatedCompositeFieldContainer[Guardrail]
    def __init__(self, use_case: _Optional[str] = ..., description: _Optional[str] = ..., features: _Optional[_Iterable[_Union[Feature, _Mapping]]] = ..., kind: _Optional[_Union[DecisionKind, str]] = ..., actions: _Optional[_Iterable[str]] = ..., policy: _Optional[_Union[Policy, _Mapping]] = ..., default_decision: _Optional[_Union[DefaultDecision, _Mapping]] = ..., arms: _Optional[_Iterable[_Union[ExperimentArm, _Mapping]]] = ..., reward: _Optional[_Union[RewardSpec, _Mapping]] = ..., training: _Optional[_Union[TrainingSpec, _Mapping]] = ..., rollout: _Optional[_Union[RolloutSpec, _Mapping]] = ..., latency_budget_ms: _Optional[float] = ..., slices: _Optional[_Iterable[str]] = ..., drift: _Optional[_Union[DriftSpec, _Mapping]] = ..., unit_id_pii: _Optional[_Union[PiiRule, str]] = ..., retention: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., metrics: _Optional[_Iterable[_Union[Metric, _Mapping]]] = ..., value_model: _Optional[_Union[ValueModel, _Mapping]] = ..., guardrails: _Optional[_Iterable[_Union[Guardrail, _Mapping]]] = ...) -> None: ...

class Metric(_message.Message):
    __slots__ = ("name", "outcome_names", "aggregation", "window", "default_value", "description")
    NAME_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_NAMES_FIELD_NUMBER: _ClassVar[int]
    AGGREGATION_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_VALUE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    outcome_names: _containers.RepeatedScalarFieldContainer[str]
    aggregation: RewardAggregation
    window: _duration_pb2.Duration
    default_value: float
    description: str
    def __init__(self, name: _Optional[str] = ..., outcome_names: _Optional[_Iterable[str]] = ..., aggregation: _Optional[_Union[RewardAggregation, str]] = ..., window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., default_value: _Optional[float] = ..., description: _Optional[str] = ...) -> None: ...

class ValueModel(_message.Message):
    __slots__ = ("weights",)
    class WeightsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    weights: _containers.ScalarMap[str, float]
    def __init__(self, weights: _Optional[_Mapping[str, float]] = ...) -> None: ...

class Guardrail(_message.Message):
    __slots__ = ("metric", "tolerance", "lower_is_better")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    LOWER_IS_BETTER_FIELD_NUMBER: _ClassVar[int]
    metric: str
    tolerance: float
    lower_is_better: bool
    def __init__(self, metric: _Optional[str] = ..., tolerance: _Optional[float] = ..., lower_is_better: bool = ...) -> None: ...

class DriftSpec(_message.Message):
    __slots__ = ("feature_psi_threshold", "prediction_psi_threshold", "min_decisions")
    FEATURE_PSI_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_PSI_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MIN_DECISIONS_FIELD_NUMBER: _ClassVar[int]
    feature_psi_threshold: float
    prediction_psi_threshold: float
    min_decisions: int
    def __init__(self, feature_psi_threshold: _Optional[float] = ..., prediction_psi_threshold: _Optional[float] = ..., min_decisions: _Optional[int] = ...) -> None: ...
