import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from loopwise.common.v1 import blueprint_pb2 as _blueprint_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Candidate(_message.Message):
    __slots__ = ("id", "features")
    class FeaturesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: FeatureValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[FeatureValue, _Mapping]] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    id: str
    features: _containers.MessageMap[str, FeatureValue]
    def __init__(self, id: _Optional[str] = ..., features: _Optional[_Mapping[str, FeatureValue]] = ...) -> None: ...

class FeatureValue(_message.Message):
    __slots__ = ("number", "category")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    number: float
    category: str
    def __init__(self, number: _Optional[float] = ..., category: _Optional[str] = ...) -> None: ...

class DecideRequest(_message.Message):
    __slots__ = ("use_case", "unit_id", "features", "disable_exploration", "blueprint_version", "candidates", "arm", "top_k")
    class FeaturesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: FeatureValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[FeatureValue, _Mapping]] = ...) -> None: ...
    USE_CASE_FIELD_NUMBER: _ClassVar[int]
    UNIT_ID_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    DISABLE_EXPLORATION_FIELD_NUMBER: _ClassVar[int]
    BLUEPRINT_VERSION_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    ARM_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    use_case: str
    unit_id: str
    features: _containers.MessageMap[str, FeatureValue]
    disable_exploration: bool
    blueprint_version: int
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    arm: str
    top_k: int
    def __init__(self, use_case: _Optional[str] = ..., unit_id: _Optional[str] = ..., features: _Optional[_Mapping[str, FeatureValue]] = ..., disable_exploration: bool = ..., blueprint_version: _Optional[int] = ..., candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ..., arm: _Optional[str] = ..., top_k: _Optional[int] = ...) -> None: ...

class Decision(_message.Message):
    __slots__ = ("decision_id", "use_case", "action", "action_index", "score", "action_scores", "action_probabilities", "model_version", "blueprint_version", "arm", "explored", "fallback", "decision_time", "ranked_candidate_ids", "deployment_role", "position_propensities", "ranking_probability")
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    USE_CASE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    ACTION_INDEX_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    ACTION_SCORES_FIELD_NUMBER: _ClassVar[int]
    ACTION_PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    BLUEPRINT_VERSION_FIELD_NUMBER: _ClassVar[int]
    ARM_FIELD_NUMBER: _ClassVar[int]
    EXPLORED_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FIELD_NUMBER: _ClassVar[int]
    DECISION_TIME_FIELD_NUMBER: _ClassVar[int]
    RANKED_CANDIDATE_IDS_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_ROLE_FIELD_NUMBER: _ClassVar[int]
    POSITION_PROPENSITIES_FIELD_NUMBER: _ClassVar[int]
    RANKING_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    decision_id: str
    use_case: str
    action: str
    action_index: int
    score: float
    action_scores: _containers.RepeatedScalarFieldContainer[float]
    action_probabilities: _containers.RepeatedScalarFieldContainer[float]
    model_version: int
    blueprint_version: int
    arm: str
    explored: bool
    fallback: bool
    decision_time: _timestamp_pb2.Timestamp
    ranked_candidate_ids: _containers.RepeatedScalarFieldContainer[str]
    deployment_role: str
    position_propensities: _containers.RepeatedScalarFieldContainer[float]
    ranking_probability: float
    def __init__(self, decision_id: _Optional[str] = ..., use_case: _Optional[str] = ..., action: _Optional[str] = ..., action_index: _Optional[int] = ..., score: _Optional[float] = ..., action_scores: _Optional[_Iterable[float]] = ..., action_probabilities: _Optional[_Iterable[float]] = ..., model_version: _Optional[int] = ..., blueprint_version: _Optional[int] = ..., arm: _Optional[str] = ..., explored: bool = ..., fallback: bool = ..., decision_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ranked_candidate_ids: _Optional[_Iterable[str]] = ..., deployment_role: _Optional[str] = ..., position_propensities: _Optional[_Iterable[float]] = ..., ranking_probability: _Optional[float] = ...) -> None: ...

class DecideResponse(_message.Message):
    __slots__ = ("decision",)
    DECISION_FIELD_NUMBER: _ClassVar[int]
    decision: Decision
    def __init__(self, decision: _Optional[_Union[Decision, _Mapping]] = ...) -> None: ...

class DecideBatchRequest(_message.Message):
    __slots__ = ("use_case", "blueprint_version", "rows", "feature_names", "features", "unit_ids", "disable_exploration", "candidate_counts", "candidate_ids", "top_k")
    USE_CASE_FIELD_NUMBER: _ClassVar[int]
    BLUEPRINT_VERSION_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    UNIT_IDS_FIELD_NUMBER: _ClassVar[int]
    DISABLE_EXPLORATION_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_COUNTS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_IDS_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    use_case: str
    blueprint_version: int
    rows: int
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    features: bytes
    unit_ids: _containers.RepeatedScalarFieldContainer[str]
    disable_exploration: bool
    candidate_counts: _containers.RepeatedScalarFieldContainer[int]
    candidate_ids: _containers.RepeatedScalarFieldContainer[str]
    top_k: int
    def __init__(self, use_case: _Optional[str] = ..., blueprint_version: _Optional[int] = ..., rows: _Optional[int] = ..., feature_names: _Optional[_Iterable[str]] = ..., features: _Optional[bytes] = ..., unit_ids: _Optional[_Iterable[str]] = ..., disable_exploration: bool = ..., candidate_counts: _Optional[_Iterable[int]] = ..., candidate_ids: _Optional[_Iterable[str]] = ..., top_k: _Optional[int] = ...) -> None: ...

class DecideBatchResponse(_message.Message):
    __slots__ = ("decision_ids", "action_indices", "scores", "action_probabilities", "explored", "fallback", "actions", "model_version", "blueprint_version", "arms", "deployment_roles", "model_versions", "ranked_indices", "position_propensities", "shown_counts")
    DECISION_IDS_FIELD_NUMBER: _ClassVar[int]
    ACTION_INDICES_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    ACTION_PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    EXPLORED_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    BLUEPRINT_VERSION_FIELD_NUMBER: _ClassVar[int]
    ARMS_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_ROLES_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    RANKED_INDICES_FIELD_NUMBER: _ClassVar[int]
    POSITION_PROPENSITIES_FIELD_NUMBER: _ClassVar[int]
    SHOWN_COUNTS_FIELD_NUMBER: _ClassVar[int]
    decision_ids: _containers.RepeatedScalarFieldContainer[str]
    action_indices: bytes
    scores: bytes
    action_probabilities: bytes
    explored: bytes
    fallback: bytes
    actions: _containers.RepeatedScalarFieldContainer[str]
    model_version: int
    blueprint_version: int
    arms: _containers.RepeatedScalarFieldContainer[str]
    deployment_roles: _containers.RepeatedScalarFieldContainer[str]
    model_versions: bytes
    ranked_indices: bytes
    position_propensities: bytes
    shown_counts: bytes
    def __init__(self, decision_ids: _Optional[_Iterable[str]] = ..., action_indices: _Optional[bytes] = ..., scores: _Optional[bytes] = ..., action_probabilities: _Optional[bytes] = ..., explored: _Optional[bytes] = ..., fallback: _Optional[bytes] = ..., actions: _Optional[_Iterable[str]] = ..., model_version: _Optional[int] = ..., blueprint_version: _Optional[int] = ..., arms: _Optional[_Iterable[str]] = ..., deployment_roles: _Optional[_Iterable[str]] = ..., model_versions: _Optional[bytes] = ..., ranked_indices: _Optional[bytes] = ..., position_propensities: _Optional[bytes] = ..., shown_counts: _Optional[bytes] = ...) -> None: ...

class UseCase(_message.Message):
    __slots__ = ("blueprint", "version", "create_time", "author", "reason", "kill_switch", "latest_version", "archived")
    BLUEPRINT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    KILL_SWITCH_FIELD_NUMBER: _ClassVar[int]
    LATEST_VERSION_FIELD_NUMBER: _ClassVar[int]
    ARCHIVED_FIELD_NUMBER: _ClassVar[int]
    blueprint: _blueprint_pb2.Blueprint
    version: int
    create_time: _timestamp_pb2.Timestamp
    author: str
    reason: str
    kill_switch: bool
    latest_version: int
    archived: bool
    def __init__(self, blueprint: _Optional[_Union[_blueprint_pb2.Blueprint, _Mapping]] = ..., version: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., author: _Optional[str] = ..., reason: _Optional[str] = ..., kill_switch: bool = ..., latest_version: _Optional[int] = ..., archived: bool = ...) -> None: ...

class FieldChange(_message.Message):
    __slots__ = ("path", "old_value", "new_value")
    PATH_FIELD_NUMBER: _ClassVar[int]
    OLD_VALUE_FIELD_NUMBER: _ClassVar[int]
    NEW_VALUE_FIELD_NUMBER: _ClassVar[int]
    path: str
    old_value: str
    new_value: str
    def __init__(self, path: _Optional[str] = ..., old_value: _Optional[str] = ..., new_value: _Optional[str] = ...) -> None: ...

class ApplyUseCaseRequest(_message.Message):
    __slots__ = ("request_id", "blueprint", "validate_only", "author", "reason")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    BLUEPRINT_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    blueprint: _blueprint_pb2.Blueprint
    validate_only: bool
    author: str
    reason: str
    def __init__(self, request_id: _Optional[str] = ..., blueprint: _Optional[_Union[_blueprint_pb2.Blueprint, _Mapping]] = ..., validate_only: bool = ..., author: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ApplyUseCaseResponse(_message.Message):
    __slots__ = ("use_case", "created", "changed_fields", "diff")
    USE_CASE_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELDS_FIELD_NUMBER: _ClassVar[int]
    DIFF_FIELD_NUMBER: _ClassVar[int]
    use_case: UseCase
    created: bool
    changed_fields: _containers.RepeatedScalarFieldContainer[str]
    diff: _containers.RepeatedCompositeFieldContainer[FieldChange]
    def __init__(self, use_case: _Optional[_Union[UseCase, _Mapping]] = ..., created: bool = ..., changed_fields: _Optional[_Iterable[str]] = ..., diff: _Optional[_Iterable[_Union[FieldChange, _Mapping]]] = ...) -> None: ...

class GetUseCaseRequest(_message.Message):
    __slots__ = ("use_case", "version")
    USE_CASE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    use_case: str
    version: int
    def __init__(self, use_case: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class GetUseCaseResponse(_message.Message):
    __slots__ = ("use_case",)
    USE_CASE_FIELD_NUMBER: _ClassVar[int]
    use_case: UseCase
    def __init__(self, use_case: _Optional[_Union[UseCase, _Mapping]] = ...) -> None: ...

class ListUseCasesRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "include_archived")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_ARCHIVED_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    include_archived: bool
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., include_archived: bool = ...) -> None: ...

class ListUseCasesResponse(_message.Message):
    __slots__ = ("use_cases", "next_page_token")
    USE_CASES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    use_cases: _containers.RepeatedCompositeFieldContainer[UseCase]
    next_page_token: str
    def __init__(self, use_cases: _Optional[_Iterable[_Union[UseCase, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class RollbackUseCaseRequest(_message.Message):
    __slots__ = ("request_id", "use_case", "to_version", "reason", "author")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    USE_CASE_FIELD_NUMBER: _ClassVar[int]
    TO_VERSION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    use_case: str
    to_version: int
    reason: str
    author: str
    def __init__(self, request_id: _Optional[str] = ..., use_case: _Optional[str] = ..., to_version: _Optional[int] = ..., reason: _Optional[str] = ..., author: _Optional[str] = ...) -> None: ...

class RollbackUseCaseResponse(_message.Message):
    __slots__ = ("use_case",)
    USE_CASE_FIELD_NUMBER: _ClassVar[int]
    use_case: UseCase
    def __init__(self, use_case: _Optional[_Union[UseCase, _Mapping]] = ...) -> None: ...

class SetKillSwitchRequest(_message.Message):
    __slots__ = ("request_id", "use_case", "enabled", "reason", "author")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    USE_CASE_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    use_case: str
    enabled: bool
    reason: str
    author: str
    def __init__(self, request_id: _Optional[str] = ..., use_case: _Optional[str] = ..., enabled: bool = ..., reason: _Optional[str] = ..., author: _Optional[str] = ...) -> None: ...

class SetKillSwitchResponse(_message.Message):
    __slots__ = ("use_case",)
    USE_CASE_FIELD_NUMBER: _ClassVar[int]
    use_case: UseCase
    def __init__(self, use_case: _Optional[_Union[UseCase, _Mapping]] = ...) -> None: ...

class ArchiveUseCaseRequest(_message.Message):
    __slots__ = ("request_id", "use_case", "archived", "reason", "author")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    USE_CASE_FIELD_NUMBER: _ClassVar[int]
    ARCHIVED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    use_case: str
    archived: bool
    reason: str
    author: str
    def __init__(self, request_id: _Optional[str] = ..., use_case: _Optional[str] = ..., archived: bool = ..., reason: _Optional[str] = ..., author: _Optional[str] = ...) -> None: ...

class ArchiveUseCaseResponse(_message.Message):
    __slots__ = ("use_case",)
    USE_CASE_FIELD_NUMBER: _ClassVar[int]
    use_case: UseCase
    def __init__(self, use_case: _Optional[_Union[UseCase, _Mapping]] = ...) -> None: ...

class ListUseCaseChangesRequest(_message.Message):
    __slots__ = ("use_case",)
    USE_CASE_FIELD_NUMBER: _ClassVar[int]
    use_case: str
    def __init__(self, use_case: _Optional[str] = ...) -> None: ...

class UseCaseChange(_message.Message):
    __slots__ = ("use_case", "version", "change", "change_time", "author", "reason", "request_id")
    USE_CASE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    CHANGE_TIME_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    use_case: str
    version: int
    change: str
    change_time: _timestamp_pb2.Timestamp
    author: str
    reason: str
    request_id: str
    def __init__(self, use_case: _Optional[str] = ..., version: _Optional[int] = ..., change: _Optional[str] = ..., change_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., author: _Optional[str] = ..., reason: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class ListUseCaseChangesResponse(_message.Message):
    __slots__ = ("changes",)
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[UseCaseChange]
    def __init__(self, changes: _Optional[_Iterable[_Union[UseCaseChange, _Mapping]]] = ...) -> None: ...
