"""Effects by segment: declared features and the leaves of a shallow interpretable tree.

Segments are chosen and estimated on different rows (sample splitting): the rules (the
quartile edges of a declared numeric feature, the leaves of a depth-2 tree fitted on the
CATE) come from the selection rows — the rows the estimator was fitted on — and each
segment's effect is the mean doubly robust pseudo-outcome of its held-out rows, with a
normal 95% CI. Choosing where the effect looks largest and measuring it on the same rows
would overstate the differences.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from loopwise.evaluator.v1 import evaluator_service_pb2 as epb

MAX_DISTINCT_AS_VALUES = 6
TREE_DEPTH = 2
MIN_SEGMENT_ROWS = 20
Z95 = 1.959963984540054

# rows x [n, F] -> row mask [n]
Rule = Callable[[np.ndarray], np.ndarray]


def _label(name: str, value: float, categories: dict[str, list[str]]) -> str:
    vocabulary = categories.get(name)
    if vocabulary is not None and 0 <= int(value) < len(vocabulary):
        return vocabulary[int(value)]
    return f"{value:g}"


def declared_rules(x: np.ndarray, feature_names: list[str], segment_features: list[str],
                   categories: dict[str, list[str]]) -> list[tuple[str, Rule]]:
    """(rule, row predicate) per value of a categorical or few-valued feature, per quartile
    of a numeric one; the values and quartile edges are those of ``x``."""
    out: list[tuple[str, Rule]] = []
    for name in segment_features:
        j = feature_names.index(name)
        column = x[:, j]
        values = np.unique(column)
        if name in categories or values.size <= MAX_DISTINCT_AS_VALUES:
            for value in values:
                out.append((f"{name} = {_label(name, value, categories)}",
                            lambda rows, j=j, value=value: rows[:, j] == value))
            continue
        edges = np.unique(np.quantile(column, [0.0, 0.25, 0.5, 0.75, 1.0]))
        for i in range(edges.size - 1):
            low, high = float(edges[i]), float(edges[i + 1])
            last = i == edges.size - 2
            if i == 0:
                rule = f"{name} <= {high:.4g}"
                out.append((rule, lambda rows, j=j, high=high: rows[:, j] <= high))
            elif last:  # the top quartile is open above: held-out rows may exceed the edge
                rule = f"{name} > {low:.4g}"
                out.append((rule, lambda rows, j=j, low=low: rows[:, j] > low))
            else:
                rule = f"{low:.4g} < {name} <= {high:.4g}"
                out.append((rule, lambda rows, j=j, low=low, high=high: (rows[:, j] > low) & (rows[:, j] <= high)))
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


def _tree(x: np.ndarray, target: np.ndarray, seed: int, classify: bool):
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    leaf = max(MIN_SEGMENT_ROWS, int(0.05 * x.shape[0]))
    model_class = DecisionTreeClassifier if classify else DecisionTreeRegressor
    return model_class(max_depth=TREE_DEPTH, min_samples_leaf=leaf, random_state=seed).fit(x, target)


def tree_masks(x: np.ndarray, target: np.ndarray, feature_names: list[str], categories: dict[str, list[str]],
               seed: int, classify: bool = False) -> list[tuple[str, np.ndarray, float]]:
    """(rule, row mask, leaf value) of the leaves of a depth-2 tree fitted on ``target``
    (a regression tree on the CATE, or a classification tree on "treat or not")."""
    tree = _tree(x, target, seed, classify)
    rules = tree_rules(tree, feature_names, categories)
    leaves = tree.apply(x)
    out = []
    for node, rule in rules.items():
        value = tree.tree_.value[node].reshape(-1)
        out.append((rule, leaves == node, float(value[-1] if classify else value[0])))
    return out


def segment_effects(x_select: np.ndarray, cate_select: np.ndarray, x_estimate: np.ndarray,
                    pseudo_outcome: np.ndarray, cate_estimate: np.ndarray, feature_names: list[str],
                    segment_features: list[str], categories: dict[str, list[str]], seed: int) -> list[epb.Segment]:
    """Declared-feature segments then tree leaves: rules chosen on the selection rows
    (``x_select`` and their CATE), effects estimated on the estimation rows
    (``x_estimate``, their doubly robust pseudo-outcomes and, for comparison, their
    CATE); a segment with fewer than MIN_SEGMENT_ROWS estimation rows is left out."""
    rules = [("feature", rule, predicate(x_select), predicate(x_estimate))
             for rule, predicate in declared_rules(x_select, feature_names, segment_features, categories)]
    tree = _tree(x_select, cate_select, seed, classify=False)
    leaves_select, leaves_estimate = tree.apply(x_select), tree.apply(x_estimate)
    rules += [("tree", rule, leaves_select == node, leaves_estimate == node)
              for node, rule in tree_rules(tree, feature_names, categories).items()]
    segments = []
    for source, rule, selected, estimated in rules:
        rows = np.flatnonzero(estimated)
        if rows.size < MIN_SEGMENT_ROWS:
            continue
        terms = pseudo_outcome[rows]
        effect = float(terms.mean())
        half = Z95 * float(terms.std(ddof=1)) / np.sqrt(rows.size)
        segments.append(epb.Segment(source=source, rule=rule, rows=int(rows.size), effect=effect,
                                    ci_lower=effect - half, ci_upper=effect + half,
                                    predicted_effect=float(cate_estimate[rows].mean()),
                                    selection_rows=int(selected.sum())))
    return segments
