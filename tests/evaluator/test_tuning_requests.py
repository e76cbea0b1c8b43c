"""StartTuning refuses bad requests at once, naming the field, through the AsyncClient
(the in-process evaluator of the package with its test decision and feedback servers);
nothing is applied and no operation starts."""

from __future__ import annotations

import grpc
import pytest

from loopwise.client import AsyncClient
from loopwise.errors import field_violations
from tests.evaluator.service import Evaluator
from tests.evaluator.simulation import ACTIONS_V2

COST = f"policy.action_costs[{ACTIONS_V2[1]}]"
GOOD = {COST: (0.0, 1.0)}

CASES = [
    ({"parameters": {}}, "parameters"),
    ({"parameters": {"policy.nope": (0, 1)}}, "parameters[0].path"),
    ({"parameters": {"policy.action_costs[nope]": (0, 1)}}, "parameters[0].path"),
    ({"parameters": {"value_model.weights[nope]": (0, 1)}}, "parameters[0].path"),
    ({"parameters": {"arms": (0, 1)}}, "parameters[0].path"),
    ({"parameters": {COST: (1, 0)}}, "parameters[0].high"),
    ({"parameters": {"policy.epsilon": (0, 2)}}, "parameters[0].low"),
    ({"rounds": 21}, "rounds"),
    ({"batch_size": 1}, "batch_size"),
    ({"min_rows_per_arm": -1}, "min_rows_per_arm"),
    ({"objective": "share:treat"}, "objective"),
    ({"constraints": [{"metric": "nope", "max": 1}]}, "constraints[0].metric"),
    ({"constraints": [{"metric": "outcome_count"}]}, "constraints[0]"),
    ({"seed_from_offline": True}, "suggest_model_version"),
    ({"suggest_model_version": 3}, "seed_from_offline"),
]


@pytest.mark.parametrize(("change", "field"), CASES, ids=[c[1] + "-" + str(i) for i, c in enumerate(CASES)])
async def test_start_tuning_refuses_bad_requests_naming_the_field(evaluator: Evaluator, change, field) -> None:
    arguments = {"parameters": GOOD, **change}
    parameters = arguments.pop("parameters")
    async with AsyncClient(evaluator_address=evaluator.address) as client:
        with pytest.raises(grpc.RpcError) as refused:
            await client.start_tuning("hte", parameters, **arguments)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in field_violations(refused.value)] == [field]


async def test_start_tuning_of_an_unknown_use_case_is_not_found(evaluator: Evaluator) -> None:
    async with AsyncClient(evaluator_address=evaluator.address) as client:
        with pytest.raises(grpc.RpcError) as refused:
            await client.start_tuning("nope", GOOD)
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
        assert not [op for op in await client.list_operations(service="evaluator") if op.kind == "tuning"]
