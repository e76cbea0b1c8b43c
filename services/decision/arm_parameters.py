"""Experiment arms that override blueprint numbers (``ExperimentArm.parameters``).

An arm's ``parameters`` map a path (:mod:`loopwise.parameters`) to a value; the arm's
rows are decided with a view of the blueprint version in which those values are set,
so every rule that reads the blueprint (threshold, action costs, temperature, and any
number added later) follows the arm without knowing about arms. Arms without
parameters use the version itself, and a version whose arms override nothing is
decided exactly as before.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from loopwise import parameters as P
from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.errors import InvalidArgument, quote
from loopwise.services.decision.encoding import UseCaseVersion
from loopwise.services.decision.policy import Choices, decide_rows, merge

# Views of versions whose arms override parameters, by (use case, version), kept with
# the blueprint they were made from (a version is immutable, so its views are built
# once; another store's version of the same number is told apart by its blueprint).
_VIEWS: dict[tuple[str, int], tuple[bp.Blueprint, dict[str, UseCaseVersion]]] = {}
MAX_CACHED_VERSIONS = 4096


def overridden(blueprint: bp.Blueprint, arm: bp.ExperimentArm, field_prefix: str = "") -> bp.Blueprint:
    """The blueprint as ``arm`` changes it (its arms left as they are)."""
    values = {P.parse(path, bp.Blueprint.DESCRIPTOR, f"{field_prefix}parameters[{path}]"): value
              for path, value in arm.parameters.items()}
    return P.with_values(blueprint, values)  # type: ignore[return-value]


def check_arm_parameters(blueprint: bp.Blueprint) -> None:
    """INVALID_ARGUMENT naming ``blueprint.arms[i].parameters[<path>]`` when an arm's
    override is not a number of the blueprint, not finite, names an unknown action, or
    makes a blueprint that breaks a rule."""
    from loopwise.services.decision.blueprints import validate_blueprint

    actions = list(blueprint.actions)
    for i, arm in enumerate(blueprint.arms):
        if arm.parameters and blueprint.kind == bp.DECISION_KIND_RANKING:
            raise InvalidArgument(f"blueprint.arms[{i}].parameters", "arms of a ranking use case cannot override "
                                  "parameters yet (rankings are drawn with the version's own settings)")
        for path, value in sorted(arm.parameters.items()):
            field = f"blueprint.arms[{i}].parameters[{path}]"
            parsed = P.parse(path, bp.Blueprint.DESCRIPTOR, field)
            if parsed.fields[0] == "arms":
                raise InvalidArgument(field, "an arm cannot override the arms")
            if str(parsed) == "policy.epsilon":
                raise InvalidArgument(field, f"set the arm's exploration rate as blueprint.arms[{i}].epsilon")
            if not math.isfinite(value):
                raise InvalidArgument(field, "must be a finite number")
            if parsed.fields == ("policy", "action_costs") and parsed.key not in actions:
                raise InvalidArgument(field, f"{quote(parsed.key or '')} is not an action of the use case")
        if not arm.parameters:
            continue
        changed = overridden(blueprint, arm, f"blueprint.arms[{i}].")
        del changed.arms[:]
        try:
            validate_blueprint(changed)
        except InvalidArgument as exc:
            inner, why = exc.violations[0]
            raise InvalidArgument(f"blueprint.arms[{i}].parameters",
                                  f"the blueprint with this arm's values breaks a rule: {inner}: {why}") from exc


def arm_views(uc: UseCaseVersion) -> dict[str, UseCaseVersion]:
    """The version as each overriding arm sees it (arms without parameters are absent)."""
    blueprint = uc.blueprint
    if not any(arm.parameters for arm in blueprint.arms):
        return {}
    key = (uc.use_case, uc.version)
    entry = _VIEWS.get(key)
    if entry is None or entry[0] is not blueprint:
        views = {}
        for arm in blueprint.arms:
            if arm.parameters:
                views[arm.name] = UseCaseVersion(dataclasses.replace(uc.stored, blueprint=overridden(blueprint, arm)))
        if len(_VIEWS) >= MAX_CACHED_VERSIONS:
            _VIEWS.clear()
        entry = _VIEWS[key] = (blueprint, views)
    return entry[1]


def decide_by_arm(uc: UseCaseVersion, rows: np.ndarray, arms: list[str], eps: np.ndarray, scorer, rng,
                  disable_exploration: bool = False, force_default: bool = False, role: str = "production"
                  ) -> Choices:
    """:func:`~.policy.decide_rows`, each arm's rows with that arm's view of the version."""
    views = arm_views(uc)
    if not views or not any(a in views for a in arms):
        return decide_rows(uc, rows, arms, eps, scorer, rng, disable_exploration, force_default, role)
    groups: dict[str, list[int]] = {}
    for i, arm in enumerate(arms):
        groups.setdefault(arm if arm in views else "", []).append(i)
    parts = []
    for arm, members in groups.items():
        index = np.array(members, dtype=np.int64)
        parts.append((index, decide_rows(views.get(arm, uc), rows[index], [arms[i] for i in index], eps[index],
                                         scorer, rng, disable_exploration, force_default, role)))
    return merge(parts, rows.shape[0], len(uc.actions), list(arms))
