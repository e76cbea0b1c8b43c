"""Feature encoding (docs/internals.md): named features or a packed batch → one float32
row per unit, in the blueprint version's feature order, with the blueprint's
``on_missing`` / ``on_unknown`` rules applied. Categoricals become vocabulary codes
(-1 unknown); NaN means missing."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.errors import InvalidArgument, quote
from loopwise.services.decision.blueprints import action_names, default_action_index
from loopwise.store.decision import BlueprintVersion


@dataclass(frozen=True)
class UseCaseVersion:
    """A blueprint version prepared for serving (immutable, cached in memory)."""

    stored: BlueprintVersion
    feature_names: tuple[str, ...] = field(init=False)
    feature_index: dict[str, int] = field(init=False)
    vocabularies: tuple[dict[str, int] | None, ...] = field(init=False)
    actions: tuple[str, ...] = field(init=False)
    default_index: int = field(init=False)
    impute: np.ndarray = field(init=False)  # per column: impute value or NaN
    reject_missing: np.ndarray = field(init=False)  # per column: bool
    categorical: np.ndarray = field(init=False)  # per column: bool
    vocab_sizes: np.ndarray = field(init=False)  # per column: len(vocabulary), 0 numeric
    # Per column, as plain Python values for the one-row path (encode_named):
    # (name, vocabulary or None, impute value or NaN, reject missing, reject unknown).
    columns: tuple[tuple[str, dict[str, int] | None, float, bool, bool], ...] = field(init=False)

    def __post_init__(self) -> None:
        b = self.stored.blueprint
        s = object.__setattr__
        s(self, "feature_names", tuple(f.name for f in b.features))
        s(self, "feature_index", {name: i for i, name in enumerate(self.feature_names)})
        s(self, "vocabularies", tuple(
            {v: i for i, v in enumerate(f.vocabulary)} if f.type == bp.FEATURE_TYPE_CATEGORICAL else None
            for f in b.features
        ))
        s(self, "actions", tuple(action_names(b)))
        s(self, "default_index", default_action_index(b))
        s(self, "impute", np.array(
            [f.impute_value if f.on_missing == bp.MISSING_RULE_IMPUTE else np.nan for f in b.features],
            dtype=np.float32,
        ))
        s(self, "reject_missing", np.array([f.on_missing == bp.MISSING_RULE_REJECT for f in b.features]))
        s(self, "categorical", np.array([v is not None for v in self.vocabularies]))
        s(self, "vocab_sizes", np.array([len(v) if v else 0 for v in self.vocabularies]))
        s(self, "columns", tuple(
            (f.name, vocab, float(impute), bool(reject), f.on_unknown == bp.UNKNOWN_RULE_REJECT)
            for f, vocab, impute, reject in zip(b.features, self.vocabularies, self.impute, self.reject_missing,
                                                strict=True)
        ))

    @property
    def blueprint(self) -> bp.Blueprint:
        """The blueprint of this version."""
        return self.stored.blueprint

    @property
    def use_case(self) -> str:
        """The use case name."""
        return self.stored.use_case

    @property
    def version(self) -> int:
        """The blueprint version number."""
        return self.stored.version


def encode_named(uc: UseCaseVersion, features: Mapping[str, dpb.FeatureValue],
                 prefix: str = "features") -> np.ndarray:
    """One float32 row from named features (Decide); INVALID_ARGUMENT names
    ``<prefix>.<name>`` (``features.x``, ``candidates[2].features.x``).

    This runs on every Decide: one pass over the version's precomputed columns, plain
    Python values, one array at the end; field paths are built only for errors. Names
    that are not features of the use case are reported before any other error."""
    try:
        values, found = _named_values(uc, features, prefix)
    except InvalidArgument:
        _refuse_unknown_names(uc, features, prefix)
        raise
    if found < len(features):
        _refuse_unknown_names(uc, features, prefix)
    return np.array(values, dtype=np.float32)


def named_values(uc: UseCaseVersion, features: Mapping[str, dpb.FeatureValue]) -> list[float] | None:
    """The row :func:`encode_named` makes of ``features``, as plain Python floats; None
    when it would refuse them (it then names the error)."""
    try:
        values, found = _named_values(uc, features, "features")
    except InvalidArgument:
        return None
    return values if found == len(features) else None


def _refuse_unknown_names(uc: UseCaseVersion, features: Mapping[str, dpb.FeatureValue], prefix: str) -> None:
    extra = sorted(name for name in features if name not in uc.feature_index)
    if extra:
        raise InvalidArgument(
            f"{prefix}.{extra[0]}", "not a feature of the use case",
            [(f"{prefix}.{name}", "not a feature of the use case") for name in extra[1:]],
        )


def _named_values(uc: UseCaseVersion, features: Mapping[str, dpb.FeatureValue],
                  prefix: str) -> tuple[list[float], int]:
    """The row's values in column order, and how many of the names were features.

    A non-zero finite number sent for a numeric feature, or a known category for a
    categorical one, is taken as it is (oneof semantics: a non-default value of one
    field is the field that is set); anything else (zero, NaN, a missing or empty
    value, the wrong kind) goes through :func:`_column_value`."""
    values: list[float] = []
    append = values.append
    get = features.get
    found = 0
    for column in uc.columns:
        value = get(column[0])
        if value is not None:
            found += 1
            vocab = column[1]
            if vocab is None:
                number = value.number
                if number and -math.inf < number < math.inf:
                    append(number)
                    continue
            else:
                category = value.category
                code = vocab.get(category) if category else None
                if code is not None:
                    append(code)
                    continue
        append(_column_value(column, value, prefix))
    return values, found


def _column_value(column: tuple[str, dict[str, int] | None, float, bool, bool], value: dpb.FeatureValue | None,
                  prefix: str) -> float:
    """One column's value by the blueprint's rules (the general case of
    :func:`_named_values`)."""
    name, vocab, impute, reject_missing, reject_unknown = column
    kind = None if value is None else value.WhichOneof("value")
    if kind == "category":
        if vocab is None:
            raise InvalidArgument(f"{prefix}.{name}", "numeric feature: send a number, not a category")
        code = vocab.get(value.category)  # type: ignore[union-attr]
        if code is None:
            if reject_unknown:
                raise InvalidArgument(f"{prefix}.{name}", f"{quote(value.category)} is not in the vocabulary")  # type: ignore[union-attr]
            code = -1
        return code
    number = math.nan  # absent, or a FeatureValue with neither field set: missing
    if kind == "number":
        if vocab is not None:
            raise InvalidArgument(f"{prefix}.{name}", "categorical feature: send a category, not a number")
        number = value.number  # type: ignore[union-attr]
        if math.isinf(number):
            raise InvalidArgument(f"{prefix}.{name}", "must be finite (NaN means missing)")
    if number != number:  # missing (NaN)
        if reject_missing:
            raise InvalidArgument(f"{prefix}.{name}", "missing, and the blueprint rejects missing values")
        number = impute
    return number


def check_batch(uc: UseCaseVersion, matrix: np.ndarray) -> np.ndarray:
    """Validate a [rows, F] batch (DecideBatch) and apply the missing rules; returns a
    new array. INVALID_ARGUMENT names ``features`` with the row and column."""
    if np.isinf(matrix).any():
        r, c = np.argwhere(np.isinf(matrix))[0]
        raise InvalidArgument("features", f"row {r}, {uc.feature_names[c]}: infinite value")
    out = np.array(matrix, dtype=np.float32, copy=True)
    missing = np.isnan(out)
    if missing.any():
        rejected = missing & uc.reject_missing
        if rejected.any():
            r, c = np.argwhere(rejected)[0]
            raise InvalidArgument("features", f"row {r}, {uc.feature_names[c]}: missing, and the blueprint rejects missing values")
        out = np.where(missing, uc.impute, out)
    if uc.categorical.any():
        codes = out[:, uc.categorical]
        sizes = uc.vocab_sizes[uc.categorical]
        known = ~np.isnan(codes)
        bad = known & ((codes != np.floor(codes)) | (codes < -1) | (codes >= sizes))
        if bad.any():
            r, c = np.argwhere(bad)[0]
            name = np.array(uc.feature_names)[uc.categorical][c]
            raise InvalidArgument("features", f"row {r}, {name}: categorical codes are integers in [-1, {sizes[c]})")
    return out


def column_map(source: UseCaseVersion, target: UseCaseVersion) -> tuple[np.ndarray, list[np.ndarray | None]] | None:
    """How to turn rows of ``source``'s encoding into ``target``'s (for a model trained
    on another blueprint version): per target column the source column (-1: missing)
    and, for categoricals, a code translation table. None when they are identical."""
    if source.feature_names == target.feature_names and source.vocabularies == target.vocabularies:
        return None
    src_index = {name: i for i, name in enumerate(source.feature_names)}
    columns = np.array([src_index.get(name, -1) for name in target.feature_names])
    tables: list[np.ndarray | None] = []
    for t in range(len(target.feature_names)):
        s = columns[t]
        t_vocab, s_vocab = target.vocabularies[t], source.vocabularies[s] if s >= 0 else None
        if s >= 0 and (t_vocab is None) != (s_vocab is None):
            columns[t] = -1  # the type changed: the value means nothing to the model
            tables.append(None)
        elif t_vocab is not None and s_vocab is not None and t_vocab != s_vocab:
            # index k+1 holds the target code of source code k; index 0 is source code -1
            by_code = sorted(s_vocab, key=s_vocab.__getitem__)
            tables.append(np.array([-1] + [t_vocab.get(v, -1) for v in by_code], dtype=np.float32))
        else:
            tables.append(None)
    return columns, tables


def remap(rows: np.ndarray, mapping: tuple[np.ndarray, list[np.ndarray | None]]) -> np.ndarray:
    """Apply a :func:`column_map` to a [n, F_source] array."""
    columns, tables = mapping
    out = np.full((rows.shape[0], len(columns)), np.nan, dtype=np.float32)
    for t, s in enumerate(columns):
        if s < 0:
            continue
        col = rows[:, s]
        table = tables[t]
        if table is not None:
            known = ~np.isnan(col)
            translated = np.full_like(col, np.nan)
            translated[known] = table[col[known].astype(np.int64) + 1]
            col = translated
        out[:, t] = col
    return out
