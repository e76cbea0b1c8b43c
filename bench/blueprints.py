"""The fixed benchmark setup (docs/architecture.md §10): 20 numeric features, binary decisions."""

from __future__ import annotations

import numpy as np

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.decision.v1 import decision_service_pb2 as dpb

N_FEATURES = 20
FEATURE_NAMES = [f"f{i:02d}" for i in range(N_FEATURES)]


def blueprint(name: str) -> bp.Blueprint:
    """A binary use case on the 20 benchmark features, greedy policy, no exploration."""
    b = bp.Blueprint(
        use_case=name,
        features=[bp.Feature(name=f, type=bp.FEATURE_TYPE_NUMERIC) for f in FEATURE_NAMES],
        kind=bp.DECISION_KIND_BINARY,
        actions=["no", "yes"],
        policy=bp.Policy(),
        default_decision=bp.DefaultDecision(action="no", score=0.0),
    )
    b.reward.window.seconds = 600
    return b


def decide_request(use_case: str, seed: int = 0) -> dpb.DecideRequest:
    """One Decide request with 20 named numeric features."""
    rng = np.random.default_rng(seed)
    values = rng.normal(size=N_FEATURES)
    return dpb.DecideRequest(
        use_case=use_case, unit_id="unit-000001",
        features={f: dpb.FeatureValue(number=float(v)) for f, v in zip(FEATURE_NAMES, values, strict=True)},
    )
