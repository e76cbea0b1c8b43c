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

class Feature(_message.Message):
    __slots__ = ("name", "type", "vocabulary", "on_missing", "impute_value", "on_unknown", "description")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    VOCABULARY_FIELD_NUMBER: _ClassVar[int]
    ON_MISSING_FIELD_NUMBER: _ClassVar[int]
    IMPUTE_VALUE_FIELD_NUMBER: _ClassVar[int]
    ON_UNKNOWN_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: FeatureType
    vocabulary: _containers.RepeatedScalarFieldContainer[str]
    on_missing: MissingRule
    impute_value: float
    on_unknown: UnknownRule
    description: str
    def __init__(self, name: _Optional[str] = ..., type: _Optional[_Union[FeatureType, str]] = ..., vocabulary: _Optional[_Iterable[str]] = ..., on_missing: _Optional[_Union[MissingRule, str]] = ..., impute_value: _Optional[float] = ..., on_unknown: _Optional[_Union[UnknownRule, str]] = ..., description: _Optional[str] = ...) -> None: ...

class Policy(_message.Message):
    __slots__ = ("type", "epsilon", "threshold", "exploration_floor", "explore_without_model", "temperature")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    EXPLORATION_FLOOR_FIELD_NUMBER: _ClassVar[int]
    EXPLORE_WITHOUT_MODEL_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    type: PolicyType
    epsilon: float
    threshold: float
    exploration_floor: float
    explore_without_model: bool
    temperature: float
    def __init__(self, type: _Optional[_Union[PolicyType, str]] = ..., epsilon: _Optional[float] = ..., threshold: _Optional[float] = ..., exploration_floor: _Optional[float] = ..., explore_without_model: bool = ..., temperature: _Optional[float] = ...) -> None: ...

class DefaultDecision(_message.Message):
    __slots__ = ("action", "score")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    action: str
    score: float
    def __init__(self, action: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class ExperimentArm(_message.Message):
    __slots__ = ("name", "traffic_share", "epsilon")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TRAFFIC_SHARE_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    name: str
    traffic_share: float
    epsilon: float
    def __init__(self, name: _Optional[str] = ..., traffic_share: _Optional[float] = ..., epsilon: _Optional[float] = ...) -> None: ...

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
    __slots__ = ("min_rows", "holdout_fraction")
    MIN_ROWS_FIELD_NUMBER: _ClassVar[int]
    HOLDOUT_FRACTION_FIELD_NUMBER: _ClassVar[int]
    min_rows: int
    holdout_fraction: float
    def __init__(self, min_rows: _Optional[int] = ..., holdout_fraction: _Optional[float] = ...) -> None: ...

class RolloutSpec(_message.Message):
    __slots__ = ("hold_first_model",)
    HOLD_FIRST_MODEL_FIELD_NUMBER: _ClassVar[int]
    hold_first_model: bool
    def __init__(self, hold_first_model: bool = ...) -> None: ...

class Blueprint(_message.Message):
    __slots__ = ("use_case", "description", "features", "kind", "actions", "policy", "default_decision", "arms", "reward", "training", "rollout", "latency_budget_ms", "slices")
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
    def __init__(self, use_case: _Optional[str] = ..., description: _Optional[str] = ..., features: _Optional[_Iterable[_Union[Feature, _Mapping]]] = ..., kind: _Optional[_Union[DecisionKind, str]] = ..., actions: _Optional[_Iterable[str]] = ..., policy: _Optional[_Union[Policy, _Mapping]] = ..., default_decision: _Optional[_Union[DefaultDecision, _Mapping]] = ..., arms: _Optional[_Iterable[_Union[ExperimentArm, _Mapping]]] = ..., reward: _Optional[_Union[RewardSpec, _Mapping]] = ..., training: _Optional[_Union[TrainingSpec, _Mapping]] = ..., rollout: _Optional[_Union[RolloutSpec, _Mapping]] = ..., latency_budget_ms: _Optional[float] = ..., slices: _Optional[_Iterable[str]] = ...) -> None: ...
