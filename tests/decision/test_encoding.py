"""Named features → one row (encode_named): the quick path for ordinary values must give
what the blueprint's rules give, value for value and error for error. The reference
below applies the rules one column at a time, as the documentation states them."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.errors import InvalidArgument, quote
from loopwise.services.decision.encoding import UseCaseVersion, encode_named
from loopwise.store.decision import BlueprintVersion
from tests.decision.helpers import blueprint


def _version() -> UseCaseVersion:
    b = blueprint("enc")
    del b.features[:]
    b.features.extend([
        bp.Feature(name="a", type=bp.FEATURE_TYPE_NUMERIC),
        bp.Feature(name="b", type=bp.FEATURE_TYPE_NUMERIC, on_missing=bp.MISSING_RULE_IMPUTE, impute_value=5.0),
        bp.Feature(name="c", type=bp.FEATURE_TYPE_NUMERIC, on_missing=bp.MISSING_RULE_REJECT),
        bp.Feature(name="d", type=bp.FEATURE_TYPE_CATEGORICAL, vocabulary=["fr", "de", "it"]),
        bp.Feature(name="e", type=bp.FEATURE_TYPE_CATEGORICAL, vocabulary=["x", "y"],
                   on_unknown=bp.UNKNOWN_RULE_REJECT),
        bp.Feature(name="f", type=bp.FEATURE_TYPE_CATEGORICAL, vocabulary=["p", "q"],
                   on_missing=bp.MISSING_RULE_IMPUTE, impute_value=1.0),
    ])
    return UseCaseVersion(BlueprintVersion("enc", 1, b, 0))


def _reference(uc: UseCaseVersion, features) -> list[float]:
    """The rules, column by column (INVALID_ARGUMENT as (field, message))."""
    extra = sorted(n for n in features if n not in uc.feature_index)
    if extra:
        raise InvalidArgument(f"features.{extra[0]}", "not a feature of the use case")
    out = []
    for f in uc.blueprint.features:
        field = f"features.{f.name}"
        value = features.get(f.name)
        kind = value.WhichOneof("value") if value is not None else None
        categorical = f.type == bp.FEATURE_TYPE_CATEGORICAL
        if kind == "category":
            if not categorical:
                raise InvalidArgument(field, "numeric feature: send a number, not a category")
            if value.category in f.vocabulary:
                out.append(float(list(f.vocabulary).index(value.category)))
            elif f.on_unknown == bp.UNKNOWN_RULE_REJECT:
                raise InvalidArgument(field, f"{quote(value.category)} is not in the vocabulary")
            else:
                out.append(-1.0)
            continue
        number = math.nan
        if kind == "number":
            if categorical:
                raise InvalidArgument(field, "categorical feature: send a category, not a number")
            if math.isinf(value.number):
                raise InvalidArgument(field, "must be finite (NaN means missing)")
            number = value.number
        if math.isnan(number):
            if f.on_missing == bp.MISSING_RULE_REJECT:
                raise InvalidArgument(field, "missing, and the blueprint rejects missing values")
            number = f.impute_value if f.on_missing == bp.MISSING_RULE_IMPUTE else math.nan
        out.append(number)
    return out


NUMBERS = [0.0, -0.0, 1.5, -3.25, 1e-300, 7.0, math.nan, math.inf, -math.inf, 2.0 ** 70]
CATEGORIES = ["fr", "de", "it", "x", "y", "p", "q", "", "zz", "FR"]


def _random_value(rng: random.Random, name: str) -> dpb.FeatureValue | None:
    """Mostly a valid value of the column's kind, else anything."""
    if rng.random() < 0.9:
        if name in "abc":
            return dpb.FeatureValue(number=rng.choice([0.0, 1.5, -3.25, 7.0, 1e-300]))
        return dpb.FeatureValue(category=rng.choice({"d": ["fr", "it", "zz"], "e": ["x", "y"], "f": ["p", "q", ""]}[name]))
    pick = rng.random()
    if pick < 0.25:
        return None  # the name is left out
    if pick < 0.35:
        return dpb.FeatureValue()  # neither field set
    if pick < 0.7:
        return dpb.FeatureValue(number=rng.choice(NUMBERS))
    return dpb.FeatureValue(category=rng.choice(CATEGORIES))


def _outcome(fn, uc, features):
    try:
        return "ok", np.asarray(fn(uc, features), dtype=np.float32).tolist()
    except InvalidArgument as error:
        return "error", error.violations[0]


def test_quick_path_gives_what_the_rules_give() -> None:
    uc = _version()
    rng = random.Random(11)
    seen = {"ok": 0, "error": 0}
    for _ in range(3000):
        values = {name: _random_value(rng, name) for name in "abcdef"}
        if rng.random() < 0.05:
            values["zzz"] = dpb.FeatureValue(number=1.0)
        request = dpb.DecideRequest(features={k: v for k, v in values.items() if v is not None})
        parsed = dpb.DecideRequest.FromString(request.SerializeToString())
        got = _outcome(encode_named, uc, parsed.features)
        want = _outcome(lambda u, f: _reference(u, f), uc, parsed.features)
        seen[got[0]] += 1
        if got[0] == "ok" and want[0] == "ok":
            assert np.allclose(got[1], want[1], equal_nan=True), (values, got, want)
        else:
            assert got == want, values
    assert seen["ok"] > 100 and seen["error"] > 100, seen


@pytest.mark.parametrize(("value", "want"), [
    (dpb.FeatureValue(number=0.0), "a"),  # a zero number is a number
    (dpb.FeatureValue(category=""), "d"),  # an empty category is not a known one
])
def test_default_values_take_the_general_rules(value, want) -> None:
    uc = _version()
    request = dpb.DecideRequest(features={"a": dpb.FeatureValue(number=1.0), "b": dpb.FeatureValue(number=1.0),
                                          "c": dpb.FeatureValue(number=1.0), "d": dpb.FeatureValue(category="fr"),
                                          "e": dpb.FeatureValue(category="x"), want: value})
    parsed = dpb.DecideRequest.FromString(request.SerializeToString())
    if want == "a":
        assert encode_named(uc, parsed.features)[0] == 0.0
    else:
        assert encode_named(uc, parsed.features)[3] == -1.0  # an unknown category: code -1
