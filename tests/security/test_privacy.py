"""Personal data rules, deletion of a unit's data (RPC and CLI) and retention per use
case, on real decision, feedback and trainer processes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.decision.v1 import decision_service_pb2_grpc as dgrpc
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.feedback.v1 import feedback_service_pb2_grpc as fgrpc
from loopwise.launcher import Launcher
from loopwise.privacy import feature_pseudonym, hash_unit_id
from tests.decision.helpers import blueprint, features
from tests.security.helpers import wait_for
from tests.support import CLOCK_SPEED, new_launcher

KEY = "pii-test-key"


@pytest.fixture(scope="module")
def privacy_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    launcher = new_launcher(tmp_path_factory.mktemp("privacy"), LOOPWISE_PII_HASH_KEY=KEY,
                            LOOPWISE_RETENTION_SWEEP_INTERVAL_S="0.5")
    try:
        launcher.start_all(["feedback", "trainer", "decision"])
        yield launcher
    finally:
        launcher.stop_all(["feedback", "trainer", "decision"])


class Stubs:
    """Decision and feedback stubs of the privacy stack."""

    def __init__(self, launcher: Launcher) -> None:
        self.channels = [grpc.aio.insecure_channel(launcher.address(s)) for s in ("decision", "feedback")]
        self.decision = dgrpc.DecisionServiceStub(self.channels[0])
        self.feedback = fgrpc.FeedbackServiceStub(self.channels[1])

    async def decide(self, use_case: str, unit_id: str, x: float) -> str:
        reply = await self.decision.Decide(dpb.DecideRequest(use_case=use_case, unit_id=unit_id,
                                                             features=features(x=x)), timeout=30)
        return reply.decision.decision_id

    async def stored(self, use_case: str, decision_id: str) -> fpb.GetDecisionResponse | None:
        try:
            return await self.feedback.GetDecision(
                fpb.GetDecisionRequest(use_case=use_case, decision_id=decision_id), timeout=30)
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.NOT_FOUND, error
            return None

    async def wait_stored(self, use_case: str, ids: list[str]) -> None:
        async def all_there() -> bool:
            return all([await self.stored(use_case, i) is not None for i in ids])

        assert await wait_for(all_there, timeout=60)

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()


async def test_pii_rules_apply_before_storage_and_a_unit_can_be_deleted(privacy_stack) -> None:
    stubs = Stubs(privacy_stack)
    uc = "pii_case"
    b = blueprint(uc)
    b.features[0].pii = bp.PII_RULE_HASH      # x
    b.features[2].pii = bp.PII_RULE_DROP      # country
    b.unit_id_pii = bp.PII_RULE_HASH
    try:
        await stubs.decision.ApplyUseCase(dpb.ApplyUseCaseRequest(blueprint=b), timeout=30)
        alice = [await stubs.decide(uc, "alice", x) for x in (1.5, 1.5, 2.5)]
        bob = [await stubs.decide(uc, "bob", 1.5) for _ in range(2)]
        await stubs.wait_stored(uc, alice + bob)

        first = (await stubs.stored(uc, alice[0])).decision
        second = (await stubs.stored(uc, alice[1])).decision
        x, y, country = np.frombuffer(first.features, "<f4")
        assert first.unit_id == hash_unit_id(KEY, uc, "alice") and "alice" not in first.unit_id
        assert x == np.float32(feature_pseudonym(KEY, uc, 1.5)) and x != np.float32(1.5)
        assert np.frombuffer(second.features, "<f4")[0] == x  # equal values, equal pseudonyms
        assert np.isnan(country)  # dropped: stored as missing
        assert y == np.float32(2.0)  # no rule: stored as seen

        outcomes = [fpb.Outcome(use_case=uc, decision_id=d, outcome_id=f"o-{i}", name="purchase", value=1.0)
                    for i, d in enumerate([alice[0], alice[2], bob[0]])]
        await stubs.feedback.LogOutcomes(fpb.LogOutcomesRequest(outcomes=outcomes), timeout=30)

        env = {**os.environ, "LOOPWISE_FEEDBACK_ADDRESS": privacy_stack.address("feedback"),
               "LOOPWISE_ALLOW_PLAINTEXT": "true"}
        done = subprocess.run([sys.executable, "-m", "loopwise.cli", "delete-unit", "-u", uc, "--unit", "alice"],
                              env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "deleted 3 decision(s) and 2 outcome(s)" in " ".join(done.stdout.split())
        assert [await stubs.stored(uc, d) for d in alice] == [None, None, None]
        kept = await stubs.stored(uc, bob[0])
        assert kept is not None and [o.outcome_id for o in kept.outcomes] == ["o-2"]
        # The decision service delivers a deleted decision again (from its spool): it is
        # acknowledged, and stays deleted. Alice's decisions from now on are stored.
        redelivered = await stubs.feedback.LogDecisions(fpb.LogDecisionsRequest(decisions=[first]), timeout=30)
        assert redelivered.accepted == 1
        assert await stubs.stored(uc, alice[0]) is None
        later = await stubs.decide(uc, "alice", 1.5)
        await stubs.wait_stored(uc, [later])
        again = await stubs.feedback.DeleteUnitData(
            fpb.DeleteUnitDataRequest(use_case=uc, unit_id="alice"), timeout=30)
        assert (again.decisions_deleted, again.outcomes_deleted) == (1, 0)  # the later one
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stubs.feedback.DeleteUnitData(fpb.DeleteUnitDataRequest(use_case=uc), timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await stubs.close()


async def test_retention_is_set_per_use_case(privacy_stack) -> None:
    stubs = Stubs(privacy_stack)
    short, long = blueprint("short_lived"), blueprint("long_lived")
    # 600 simulated seconds: about 10 real seconds at the test clock's speed.
    short.retention.seconds = 600
    assert CLOCK_SPEED >= 60
    try:
        for b in (short, long):
            await stubs.decision.ApplyUseCase(dpb.ApplyUseCaseRequest(blueprint=b), timeout=30)
        short_id = await stubs.decide("short_lived", "u", 1.0)
        long_id = await stubs.decide("long_lived", "u", 1.0)
        await stubs.wait_stored("short_lived", [short_id])
        await stubs.wait_stored("long_lived", [long_id])

        async def purged() -> bool:
            return await stubs.stored("short_lived", short_id) is None

        assert await wait_for(purged, timeout=90)
        assert await stubs.stored("long_lived", long_id) is not None
    finally:
        await stubs.close()
