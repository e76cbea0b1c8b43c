"""Thompson sampling in a closed loop: a real decision service on loopback decides
with the current model (DecideBatch), a linear bandit answers with rewards, and the
trainer's own code (``prepare``, the single-model export and parity check, the
bootstrap ensemble) retrains after every round; the new model is deployed through
WatchDeployments/DownloadModel. Against epsilon-greedy on the same contexts and noise:

- Thompson keeps exploring after its first model (explored share > 0 in every round);
- its logged propensities match the served actions (chi-square over decisions grouped
  by their logged probability vector, p > 0.001, over 100,000 model decisions);
- its cumulative regret is lower than epsilon-greedy's in at least 4 of 5 seeds.

Run with ``-s`` to see the figures (docs/policies.md quotes them).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest_asyncio
from scipy.stats import chi2

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.services.trainer.candidates import package_candidate
from loopwise.services.trainer.data import Rows, prepare
from loopwise.services.trainer.ensemble import MEMBER_OUTPUT, package_ensemble
from loopwise.services.trainer.models import fit_model, score_output
from loopwise.trainer.v1 import trainer_service_pb2_grpc as tgrpc
from tests.decision.helpers import LoopbackTrainer, model_ref, serve, start_decider, wait_until

SEEDS = (1, 2, 3, 4, 5)
N_FEATURES = 3
N_ACTIONS = 4
FIRST_ROWS = 1_000  # decided uniformly before any model (explore_without_model)
ROUND_ROWS = 2_000  # decisions between retrains
ROUNDS = 10  # model rounds: 20,000 decisions with a model per run
EPSILON = 0.1
MEMBERS = 8
NOISE = 1.0


@dataclass
class Bandit:
    """A linear contextual bandit: E[reward | x, a] = x·θ_a + b_a, Gaussian noise."""

    theta: np.ndarray  # [F, A]
    bias: np.ndarray  # [A]
    x: np.ndarray  # [T, F] contexts, the same for every policy of a seed
    noise: np.ndarray  # [T, A] reward noise, the same for every policy of a seed

    @classmethod
    def of_seed(cls, seed: int) -> Bandit:
        rng = np.random.default_rng(seed)
        total = FIRST_ROWS + ROUNDS * ROUND_ROWS
        return cls(rng.normal(size=(N_FEATURES, N_ACTIONS)), rng.normal(scale=0.5, size=N_ACTIONS),
                   rng.normal(size=(total, N_FEATURES)).astype(np.float32),
                   rng.normal(scale=NOISE, size=(total, N_ACTIONS)))

    def means(self, rows: slice) -> np.ndarray:
        """Expected rewards [n, A] of the contexts in ``rows``."""
        return self.x[rows].astype(np.float64) @ self.theta + self.bias


@dataclass
class Run:
    """What one policy did on one seed's bandit."""

    name: str
    regret: float = 0.0
    model_regret: float = 0.0  # the part after the first model (the uniform first round left out)
    features: list[np.ndarray] = field(default_factory=list)
    actions: list[np.ndarray] = field(default_factory=list)
    propensities: list[np.ndarray] = field(default_factory=list)
    rewards: list[np.ndarray] = field(default_factory=list)
    model_probabilities: list[np.ndarray] = field(default_factory=list)  # [n, A] of model rounds
    model_actions: list[np.ndarray] = field(default_factory=list)
    explored_share: list[float] = field(default_factory=list)  # per model round


def loop_blueprint(use_case: str, policy: bp.Policy) -> bp.Blueprint:
    """An action-value use case with N_FEATURES numeric features and N_ACTIONS actions."""
    b = bp.Blueprint(use_case=use_case, kind=bp.DECISION_KIND_ACTION_VALUE,
                     actions=[f"a{i}" for i in range(N_ACTIONS)],
                     features=[bp.Feature(name=f"f{i}", type=bp.FEATURE_TYPE_NUMERIC) for i in range(N_FEATURES)],
                     policy=policy, default_decision=bp.DefaultDecision(action="a0"))
    b.policy.explore_without_model = True
    b.reward.window.seconds = 600
    return b


@pytest_asyncio.fixture
async def served(make_settings):
    settings = make_settings(decision_log_enabled=False, max_batch_rows=ROUND_ROWS)
    trainer = LoopbackTrainer()
    server = await serve(trainer, tgrpc.add_TrainerServiceServicer_to_server, settings.trainer_address)
    d = await start_decider(settings)
    try:
        yield d, trainer
    finally:
        await d.stop()
        await server.stop(0)


def retrain(run: Run, blueprint: bp.Blueprint, seed: int) -> tuple[bytes, str]:
    """The trainer's data preparation on every row so far, then the model the policy
    needs: a bootstrap ensemble for Thompson, the single linear model otherwise."""
    n = sum(a.size for a in run.actions)
    rows = Rows(features=np.vstack(run.features), times_ms=np.arange(n, dtype=np.int64),
                actions=np.concatenate(run.actions), propensities=np.concatenate(run.propensities),
                rewards=np.concatenate(run.rewards), labels=[], read=n)
    training = prepare(rows, blueprint).training
    if blueprint.policy.type == bp.POLICY_TYPE_THOMPSON:
        _, onnx, parity = package_ensemble(training, "linear", {}, MEMBERS, seed)
        output = MEMBER_OUTPUT
    else:
        onnx, parity = package_candidate(fit_model(training, "linear", seed), training)
        output = score_output(training.kind)
    assert parity.ok, parity.reason
    return onnx, output


async def decide(d, use_case: str, x: np.ndarray) -> dpb.DecideBatchResponse:
    """DecideBatch over the rows ``x``."""
    return await d.stub.DecideBatch(dpb.DecideBatchRequest(
        use_case=use_case, blueprint_version=1, rows=x.shape[0], feature_names=[f"f{i}" for i in range(N_FEATURES)],
        features=np.ascontiguousarray(x, dtype="<f4").tobytes()))


async def run_policy(d, trainer: LoopbackTrainer, bandit: Bandit, name: str, policy: bp.Policy,
                     seed: int) -> Run:
    """Decide, observe, retrain every ROUND_ROWS decisions; returns the run's record."""
    use_case = f"{name}_{seed}"
    blueprint = loop_blueprint(use_case, policy)
    await d.apply(blueprint)
    run = Run(name)
    start = 0
    for round_index in range(ROUNDS + 1):
        size = FIRST_ROWS if round_index == 0 else ROUND_ROWS
        rows = slice(start, start + size)
        reply = await decide(d, use_case, bandit.x[rows])
        actions = np.frombuffer(reply.action_indices, "<i4").astype(np.int64)
        probabilities = np.frombuffer(reply.action_probabilities, "<f4").reshape(size, N_ACTIONS).astype(np.float64)
        assert reply.model_version == round_index and not np.frombuffer(reply.fallback, np.uint8).any()
        means = bandit.means(rows)
        regret = float(np.sum(means.max(axis=1) - means[np.arange(size), actions]))
        run.regret += regret
        if round_index > 0:
            run.model_regret += regret
        run.features.append(bandit.x[rows])
        run.actions.append(actions)
        run.propensities.append(probabilities[np.arange(size), actions])
        run.rewards.append(means[np.arange(size), actions] + bandit.noise[rows][np.arange(size), actions])
        if round_index > 0:
            run.model_probabilities.append(probabilities)
            run.model_actions.append(actions)
            run.explored_share.append(float(np.frombuffer(reply.explored, np.uint8).mean()))
        start += size
        if round_index == ROUNDS:
            break
        onnx, output = retrain(run, blueprint, seed)
        version = round_index + 1
        trainer.set_deployment(use_case, {version: onnx},
                               production=model_ref(version, onnx, N_FEATURES + N_ACTIONS, score_output=output))
        await wait_until(lambda v=version: use_case in d.watcher.scorers and d.watcher.scorers[use_case].version == v,
                         timeout=30)
        scorer = d.watcher.scorers[use_case].production
        # One session run per request scores every member: the served output is [N, K].
        assert (scorer.score_output, scorer.members) == ((MEMBER_OUTPUT, MEMBERS) if output == MEMBER_OUTPUT
                                                         else ("variable", 1))
    return run


def chi_square_of(probabilities: np.ndarray, actions: np.ndarray) -> tuple[float, int, float, float]:
    """Goodness of fit of served actions to logged propensities: decisions grouped by
    their logged probability vector; groups whose every positive cell expects ≥ 5 are
    tested. Returns (statistic, degrees of freedom, p-value, share of decisions tested)."""
    keys, inverse = np.unique(np.round(probabilities, 5), axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    statistic, dof, tested = 0.0, 0, 0
    for g in range(keys.shape[0]):
        members = inverse == g
        positive = keys[g] > 0
        expected = members.sum() * keys[g][positive]
        expected *= members.sum() / expected.sum()
        if positive.sum() < 2:
            tested += int(members.sum())
            continue
        if expected.min() < 5:
            continue
        observed = np.bincount(actions[members], minlength=keys.shape[1])[positive]
        statistic += float(np.sum((observed - expected) ** 2 / expected))
        dof += int(positive.sum()) - 1
        tested += int(members.sum())
    return statistic, dof, float(chi2.sf(statistic, dof)) if dof else 1.0, tested / actions.size


async def test_thompson_explores_logs_true_propensities_and_beats_epsilon_greedy(served) -> None:
    d, trainer = served
    thompson_policy = bp.Policy(type=bp.POLICY_TYPE_THOMPSON, thompson_members=MEMBERS)
    epsilon_policy = bp.Policy(type=bp.POLICY_TYPE_EPSILON_GREEDY, epsilon=EPSILON)
    results = []
    for seed in SEEDS:
        bandit = Bandit.of_seed(seed)
        thompson = await run_policy(d, trainer, bandit, "thompson", thompson_policy, seed)
        greedy = await run_policy(d, trainer, bandit, "epsilon", epsilon_policy, seed)
        results.append((seed, thompson, greedy))
        print(f"seed {seed}: cumulative regret over {FIRST_ROWS + ROUNDS * ROUND_ROWS} decisions: "
              f"Thompson (K={MEMBERS}) {thompson.regret:.1f}, epsilon-greedy (epsilon={EPSILON}) "
              f"{greedy.regret:.1f} (after the first model: {thompson.model_regret:.1f} and "
              f"{greedy.model_regret:.1f}); Thompson explored share first model round "
              f"{thompson.explored_share[0]:.3f}, last {thompson.explored_share[-1]:.3f}")
        # Thompson keeps exploring after its first model, in every round.
        assert min(thompson.explored_share) > 0, thompson.explored_share

    probabilities = np.vstack([p for _, t, _ in results for p in t.model_probabilities])
    actions = np.concatenate([a for _, t, _ in results for a in t.model_actions])
    assert actions.size >= 20_000
    # Never an action whose logged probability is 0.
    assert (probabilities[np.arange(actions.size), actions] > 0).all()
    statistic, dof, p, tested = chi_square_of(probabilities, actions)
    print(f"chi-square of served actions vs logged propensities over {actions.size} Thompson decisions: "
          f"statistic {statistic:.1f}, {dof} degrees of freedom, p = {p:.3f}, {tested:.1%} of decisions tested")
    assert dof >= 20 and tested > 0.9
    assert p > 0.001

    wins = sum(t.regret < g.regret for _, t, g in results)
    total_t = sum(t.regret for _, t, _ in results)
    total_g = sum(g.regret for _, _, g in results)
    print(f"Thompson has the lower regret in {wins} of {len(SEEDS)} seeds; mean regret Thompson "
          f"{total_t / len(SEEDS):.1f}, epsilon-greedy {total_g / len(SEEDS):.1f}")
    assert wins >= 4
