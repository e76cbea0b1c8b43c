"""A product whose tuning objective is known exactly, for the online-tuning tests.

Units have x0, x1 ~ U(0, 1). The action-value model predicts ``discount`` = x0,
``gift`` = x1 and ``none`` = 0; the greedy policy takes the action with the highest
value net of its cost ``policy.action_costs[a]`` (``c_d``, ``c_g``), ``none`` when both
net values are <= 0. A treated unit reports one outcome ``value`` worth its predicted
value minus the action's true cost (KAPPA) plus N(0, NOISE²); untreated units report
nothing (reward 0). So, per decision:

* reward mean = ∫_{c_d}^1 (x − κ_d)·clip(x − c_d + c_g, 0, 1) dx
  + ∫_{c_g}^1 (x − κ_g)·clip(x − c_g + c_d, 0, 1) dx (one-dimensional integrals of a
  closed-form integrand, evaluated by quadrature);
* outcome_count mean (the treated share) = 1 − c_d·c_g for costs in [0, 1].

The constraint outcome_count <= SHARE_MAX binds: the unconstrained optimum (the true
costs) treats 93% of the units.
"""

from __future__ import annotations

import numpy as np

ACTIONS = ["none", "discount", "gift"]
PATHS = ["policy.action_costs[discount]", "policy.action_costs[gift]"]
KAPPA = (0.2, 0.35)
NOISE = 0.3
SHARE_MAX = 0.5
LOW, HIGH = np.zeros(2), np.ones(2)


def true_reward(c_d: float, c_g: float) -> float:
    """The reward mean per decision at costs (c_d, c_g) in [0, 1]²."""
    from scipy.integrate import quad

    def part(c_own: float, c_other: float, kappa: float) -> float:
        if c_own >= 1.0:
            return 0.0
        value, _ = quad(lambda x: (x - kappa) * min(1.0, max(0.0, x - c_own + c_other)), max(c_own, 0.0), 1.0,
                        limit=200, points=[min(max(c_own - c_other, 0), 1), min(max(c_own - c_other + 1, 0), 1)])
        return value

    return part(c_d, c_g, KAPPA[0]) + part(c_g, c_d, KAPPA[1])


def true_share(c_d: float, c_g: float) -> float:
    """The treated share (outcome_count mean) at costs in [0, 1]²."""
    return 1.0 - min(max(c_d, 0.0), 1.0) * min(max(c_g, 0.0), 1.0)


def constrained_optimum(steps: int = 201) -> tuple[float, float, float]:
    """(c_d, c_g, reward) maximising the reward with the treated share <= SHARE_MAX, on
    a grid of the box refined around its best point."""
    best = (0.0, 0.0, -np.inf)
    centre, half = (0.5, 0.5), 0.5
    for _ in range(3):
        for c_d in np.linspace(centre[0] - half, centre[0] + half, steps // 4):
            for c_g in np.linspace(centre[1] - half, centre[1] + half, steps // 4):
                if not (0 <= c_d <= 1 and 0 <= c_g <= 1) or true_share(c_d, c_g) > SHARE_MAX:
                    continue
                value = true_reward(c_d, c_g)
                if value > best[2]:
                    best = (float(c_d), float(c_g), value)
        centre, half = (best[0], best[1]), half / 8
    return best


def simulate(costs: np.ndarray, rows: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(reward, outcome_count) of ``rows`` decisions at ``costs``."""
    x = rng.random((rows, 2))
    net = np.column_stack([np.zeros(rows), x[:, 0] - costs[0], x[:, 1] - costs[1]])
    action = np.argmax(net, axis=1)
    treated = action > 0
    value = np.where(action == 1, x[:, 0] - KAPPA[0], x[:, 1] - KAPPA[1]) + rng.normal(scale=NOISE, size=rows)
    return np.where(treated, value, 0.0), treated.astype(np.float64)


def outcome_value(action: int, x: np.ndarray, rng: np.random.Generator) -> float | None:
    """The outcome a unit reports after ``action`` (None: no outcome)."""
    if action == 0:
        return None
    return float(x[action - 1] - KAPPA[action - 1] + rng.normal(scale=NOISE))
