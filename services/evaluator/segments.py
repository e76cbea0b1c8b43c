"""Effects by segment: declared features and the leaves of a shallow interpretable tree.

Each segment's effect is the mean CATE of its rows, with the estimator's 95% CI of the
average effect over (a seeded sample of at most ``CI_ROWS`` of) those rows.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from loopwise.evaluator.v1 import evaluator_service_pb2 as epb

CI_ROWS = 5000
MAX_DISTINCT_AS_VALUES = 6
TREE_DEPTH = 2
MIN_SEGMENT_ROWS = 20

# (rows x) -> (ate, lower, upper)
AteInterval = Callable[[np.ndarray], tuple[float, float, float]]


def _label(name: str, value: float, categories: dict[str, list[str]]) -> str:
    vocabulary = categories.get(name)
    if vocabulary is not None and 0 <= int(value) < len(vocabulary):
        return vocabulary[int(value)]
    return f"{value:g}"


def declared_masks(x: np.ndarray, feature_names: list[str], segment_features: list[str],
                   categories: dict[str, list[str]]) -> list[tuple[str, np.ndarray]]:
    """(rule, row mask) per value of a categorical or few-valued feature, per quartile of
    a numeric one."""
    out: list[tuple[str, np.ndarray]] = []
    for name in segment_features:
        column = x[:, feature_names.index(name)]
        values = np.unique(column)
        if name in categories or values.size <= MAX_DISTINCT_AS_VALUES:
            for value in values:
                out.append((f"{name} = {_label(name, value, categories)}", column == value))
            continue
        edges = np.unique(np.quantile(column, [0.0, 0.25, 0.5, 0.75, 1.0]))
        for i in range(edges.size - 1):
            low, high = edges[i], edges[i + 1]
            mask = (column <= high) if i == 0 else (column > low) & (column <= high)
            rule = f"{name} <= {high:.4g}" if i == 0 else f"{low:.4g} < {name} <= {high:.4g}"
            out.append((rule, mask))
    return out


def tree_rules(tree, feature_names: list[str], categories: dict[str, list[str]]) -> dict[int, str]:
    """Readable rule of every leaf of a fitted scikit-learn tree, by leaf id: one
    condition per feature (the tightest bounds on its path)."""
    t = tree.tree_
    rules: dict[int, str] = {}

    def describe(bounds: dict[int, tuple[float, float]]) -> str:
        parts = []
        for feature, (low, high) in bounds.items():
            name = feature_names[feature]
            vocabulary = categories.get(name)
            if vocabulary is not None:
                chosen = [v for code, v in enumerate(vocabulary) if low < code <= high]
                parts.append(f"{name} in {{{', '.join(chosen)}}}")
            elif np.isfinite(low) and np.isfinite(high):
                parts.append(f"{low:.4g} < {name} <= {high:.4g}")
            elif np.isfinite(high):
                parts.append(f"{name} <= {high:.4g}")
            else:
                parts.append(f"{name} > {low:.4g}")
        return " and ".join(parts) or "all rows"

    def walk(node: int, bounds: dict[int, tuple[float, float]]) -> None:
        if t.children_left[node] == -1:
            rules[node] = describe(bounds)
            return
        feature, threshold = int(t.feature[node]), float(t.threshold[node])
        low, high = bounds.get(feature, (-np.inf, np.inf))
        walk(int(t.children_left[node]), {**bounds, feature: (low, min(high, threshold))})
        walk(int(t.children_right[node]), {**bounds, feature: (max(low, threshold), high)})

    walk(0, {})
    return rules


def tree_masks(x: np.ndarray, target: np.ndarray, feature_names: list[str], categories: dict[str, list[str]],
               seed: int, classify: bool = False) -> list[tuple[str, np.ndarray, float]]:
    """(rule, row mask, leaf value) of the leaves of a depth-2 tree fitted on ``target``
    (a regression tree on the CATE, or a classification tree on "treat or not")."""
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    leaf = max(MIN_SEGMENT_ROWS, int(0.05 * x.shape[0]))
    model_class = DecisionTreeClassifier if classify else DecisionTreeRegressor
    tree = model_class(max_depth=TREE_DEPTH, min_samples_leaf=leaf, random_state=seed).fit(x, target)
    rules = tree_rules(tree, feature_names, categories)
    leaves = tree.apply(x)
    out = []
    for node, rule in rules.items():
        value = tree.tree_.value[node].reshape(-1)
        out.append((rule, leaves == node, float(value[-1] if classify else value[0])))
    return out


def segment_effects(x: np.ndarray, cate: np.ndarray, feature_names: list[str], segment_features: list[str],
                    categories: dict[str, list[str]], ate_interval: AteInterval, seed: int) -> list[epb.Segment]:
    """Declared-feature segments then tree leaves, each with its mean CATE and 95% CI."""
    rng = np.random.default_rng(seed)
    segments = []
    declared = [("feature", rule, mask) for rule, mask in declared_masks(x, feature_names, segment_features, categories)]
    leaves = [("tree", rule, mask) for rule, mask, _ in tree_masks(x, cate, feature_names, categories, seed)]
    for source, rule, mask in declared + leaves:
        rows = np.flatnonzero(mask)
        if rows.size < MIN_SEGMENT_ROWS:
            continue
        sample = rows if rows.size <= CI_ROWS else rng.choice(rows, CI_ROWS, replace=False)
        _, lower, upper = ate_interval(x[sample])
        effect = float(cate[rows].mean())
        # The CI is of the sample's average; centre it on the segment's mean CATE.
        shift = effect - float(cate[sample].mean())
        segments.append(epb.Segment(source=source, rule=rule, rows=int(rows.size), effect=effect,
                                    ci_lower=lower + shift, ci_upper=upper + shift))
    return segments
