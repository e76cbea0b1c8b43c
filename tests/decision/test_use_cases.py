"""ApplyUseCase, GetUseCase and ListUseCases against a real in-process server; and how a
process looks up a use case written through another one."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from loopwise.clock import Clock
from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.errors import InvalidArgument, NotFound, Unavailable, field_violations
from loopwise.services.decision.use_cases import UseCases
from loopwise.settings import Settings
from loopwise.store.decision import open_decision_store
from tests.decision.helpers import blueprint, start_decider


async def test_create_unchanged_changed(decider) -> None:
    first = await decider.apply(blueprint())
    assert first.created and first.use_case.version == 1 and first.use_case.latest_version == 1
    assert first.use_case.create_time.seconds > 0

    same = await decider.apply(blueprint())
    assert not same.created and same.use_case.version == 1 and not same.changed_fields

    changed = blueprint(type=bp.POLICY_TYPE_EPSILON_GREEDY, epsilon=0.1)
    changed.description = "with exploration"
    second = await decider.apply(changed)
    assert second.created and second.use_case.version == 2
    assert list(second.changed_fields) == ["description", "policy"]

    old = await decider.stub.GetUseCase(dpb.GetUseCaseRequest(use_case="offer", version=1))
    assert old.use_case.blueprint == blueprint() and old.use_case.latest_version == 2
    latest = await decider.stub.GetUseCase(dpb.GetUseCaseRequest(use_case="offer"))
    assert latest.use_case.version == 2 and latest.use_case.blueprint.policy.epsilon == 0.1


async def test_validate_only_stores_nothing(decider) -> None:
    reply = await decider.stub.ApplyUseCase(dpb.ApplyUseCaseRequest(blueprint=blueprint(), validate_only=True))
    assert not reply.created and reply.use_case.version == 1
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await decider.stub.GetUseCase(dpb.GetUseCaseRequest(use_case="offer"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_request_id_makes_retries_idempotent(decider) -> None:
    await decider.apply(blueprint())
    changed = blueprint(epsilon=0.2, type=bp.POLICY_TYPE_EPSILON_GREEDY)
    request = dpb.ApplyUseCaseRequest(request_id="r-1", blueprint=changed)
    first = await decider.stub.ApplyUseCase(request)
    retry = await decider.stub.ApplyUseCase(request)
    assert first.created and retry.created and retry.use_case.version == first.use_case.version == 2
    assert list(retry.changed_fields) == ["policy"]
    listed = await decider.stub.ListUseCases(dpb.ListUseCasesRequest())
    assert [u.version for u in listed.use_cases] == [2]


async def test_versions_survive_a_restart(make_settings) -> None:
    settings = make_settings(decision_log_enabled=False)
    d = await start_decider(settings)
    await d.apply(blueprint())
    await d.apply(blueprint(type=bp.POLICY_TYPE_EPSILON_GREEDY, epsilon=0.3))
    await d.stop()
    d = await start_decider(settings)
    try:
        reply = await d.stub.GetUseCase(dpb.GetUseCaseRequest(use_case="offer", version=1))
        assert reply.use_case.blueprint == blueprint() and reply.use_case.latest_version == 2
    finally:
        await d.stop()


def _broken(mutate) -> bp.Blueprint:
    b = blueprint("broken", "multiclass")
    mutate(b)
    return b


def _set_window(b: bp.Blueprint) -> None:
    b.reward.window.seconds = 0


def _arms(b: bp.Blueprint) -> None:
    b.arms.add(name="a", traffic_share=0.5)
    b.arms.add(name="b", traffic_share=0.4)


def _bad_share(b: bp.Blueprint) -> None:
    b.arms.add(name="a", traffic_share=0.0)
    b.arms.add(name="b", traffic_share=1.0)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b: b.features[2].ClearField("vocabulary"), "blueprint.features[2].vocabulary"),
        (lambda b: b.ClearField("actions") or b.actions.append("red"), "blueprint.actions"),
        (lambda b: setattr(b.policy, "epsilon", 1.5), "blueprint.policy.epsilon"),
        (lambda b: setattr(b.default_decision, "action", "purple"), "blueprint.default_decision.action"),
        (_set_window, "blueprint.reward.window"),
        (_bad_share, "blueprint.arms[0].traffic_share"),
        (_arms, "blueprint.arms"),
        (lambda b: setattr(b, "use_case", "Bad-Name"), "blueprint.use_case"),
        (lambda b: b.ClearField("features"), "blueprint.features"),
        (lambda b: setattr(b.features[1], "name", "x"), "blueprint.features[1].name"),
        (lambda b: setattr(b.features[0], "type", bp.FEATURE_TYPE_UNSPECIFIED), "blueprint.features[0].type"),
        (lambda b: setattr(b, "kind", bp.DECISION_KIND_UNSPECIFIED), "blueprint.kind"),
        (lambda b: setattr(b.policy, "exploration_floor", 0.5), "blueprint.policy.exploration_floor"),
    ],
)
async def test_invalid_blueprints_name_the_field(decider, mutate, field) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await decider.apply(_broken(mutate))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in [f for f, _ in field_violations(err.value)]


async def test_kind_specific_action_counts(decider) -> None:
    binary = blueprint("three_way", "binary")
    binary.actions.append("maybe")
    regression = blueprint("two_preds", "regression")
    regression.actions.extend(["p", "q"])
    regression.default_decision.action = "p"
    for b in (binary, regression):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await decider.apply(b)
        assert "blueprint.actions" in [f for f, _ in field_violations(err.value)]
    ok = blueprint("one_pred", "regression")
    ok.actions.append("price")
    assert (await decider.apply(ok)).created


async def test_get_and_list(decider) -> None:
    for name in ["c_case", "a_case", "b_case"]:
        await decider.apply(blueprint(name))
    page = await decider.stub.ListUseCases(dpb.ListUseCasesRequest(page_size=2))
    assert [u.blueprint.use_case for u in page.use_cases] == ["a_case", "b_case"]
    rest = await decider.stub.ListUseCases(dpb.ListUseCasesRequest(page_size=2, page_token=page.next_page_token))
    assert [u.blueprint.use_case for u in rest.use_cases] == ["c_case"] and not rest.next_page_token

    for request in (dpb.GetUseCaseRequest(use_case="nope"), dpb.GetUseCaseRequest(use_case="a_case", version=2)):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await decider.stub.GetUseCase(request)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await decider.stub.GetUseCase(dpb.GetUseCaseRequest(use_case="a_case", version=-1))
    assert field_violations(err.value)[0][0] == "version"


class CountedStore:
    """A use-case store that counts its full reads and can be made to fail them."""

    def __init__(self, store) -> None:
        self.store = store
        self.loads = 0
        self.failing = False
        self.returned: list[list[tuple[str, int]]] = []  # the versions each read returned

    async def load(self, held=None):
        self.loads += 1
        if self.failing:
            raise OSError("the store cannot be read")
        stored = await self.store.load(held)
        self.returned.append([(v.use_case, v.version) for v in stored.versions])
        return stored

    def __getattr__(self, name: str):
        return getattr(self.store, name)


async def test_a_name_not_held_is_looked_up_in_the_store_once_for_concurrent_callers(tmp_path) -> None:
    """Two processes' views of one store: what one applies, the other finds by looking
    in the store when asked for it; concurrent misses share one read, held and malformed
    names cost none; when the read fails, every caller sharing it gets UNAVAILABLE."""
    store = open_decision_store(Settings(decision_store_url=f"sqlite:///{tmp_path / 'decision.db'}"))
    try:
        writer, reader = UseCases(store, Clock()), UseCases(counted := CountedStore(store), Clock())
        await writer.load()
        await reader.load()
        await writer.apply(blueprint("offer"))
        assert reader.find("offer", 1) is None and counted.loads == 1

        await asyncio.gather(*(reader.catch_up("offer") for _ in range(20)))
        assert reader.get("offer").version == 1 and counted.loads == 2
        await reader.catch_up("offer", 1)  # held: no read
        await reader.catch_up("not a name!")  # malformed: the caller's check refuses it
        await reader.catch_up("offer", -1)
        assert counted.loads == 2

        await writer.apply(blueprint("other"))
        counted.failing = True  # one failed read, shared: whether "other" exists is not known
        looked = await asyncio.gather(*(reader.catch_up("other") for _ in range(10)), return_exceptions=True)
        assert all(isinstance(result, Unavailable) for result in looked) and counted.loads == 3
        with pytest.raises(NotFound):
            reader.get("other")
        counted.failing = False
        await reader.catch_up("other", 1)
        assert reader.get("other", 1).use_case == "other" and counted.loads == 4
    finally:
        store.close()


async def test_a_process_re_reading_the_store_gets_only_the_versions_it_does_not_hold(tmp_path) -> None:
    """The periodic re-read returns (and parses) only new versions, yet the reader ends
    with every version, kill switch and archive flag the writer made."""
    store = open_decision_store(Settings(decision_store_url=f"sqlite:///{tmp_path / 'decision.db'}"))
    try:
        writer, reader = UseCases(store, Clock()), UseCases(counted := CountedStore(store), Clock())
        await writer.load()
        await writer.apply(blueprint("offer"))
        await writer.apply(blueprint("offer", epsilon=0.2, type=bp.POLICY_TYPE_EPSILON_GREEDY))
        await writer.apply(blueprint("other"))
        await reader.load()
        assert counted.returned[-1] == [("offer", 1), ("offer", 2), ("other", 1)]
        assert not await reader.refresh() and counted.returned[-1] == []

        await writer.apply(blueprint("offer", epsilon=0.3, type=bp.POLICY_TYPE_EPSILON_GREEDY))
        await writer.set_kill_switch("other", True)
        await writer.set_archived("offer", True)
        assert await reader.refresh() and counted.returned[-1] == [("offer", 3)]
        assert [reader.get("offer", n).blueprint for n in (1, 2, 3)] == [writer.get("offer", n).blueprint
                                                                      for n in (1, 2, 3)]
        assert reader.kill_switch("other") and reader.archived("offer") and not reader.kill_switch("offer")
        assert not await reader.refresh() and counted.returned[-1] == []
    finally:
        store.close()


async def test_a_rollback_retried_through_another_process_makes_no_second_version(tmp_path) -> None:
    """The request id of a rollback is kept in the store: a retry through another
    process, after a newer version was applied, answers the first call's version."""
    store = open_decision_store(Settings(decision_store_url=f"sqlite:///{tmp_path / 'decision.db'}"))
    try:
        first, second = UseCases(store, Clock()), UseCases(store, Clock())
        await first.load()
        await first.apply(blueprint("offer"))
        await first.apply(blueprint("offer", epsilon=0.2, type=bp.POLICY_TYPE_EPSILON_GREEDY))
        back = await first.rollback("offer", to_version=1, request_id="rb-1")
        assert back.version == 3 and back.blueprint == blueprint("offer")
        await second.load()
        await second.apply(blueprint("offer", epsilon=0.4, type=bp.POLICY_TYPE_EPSILON_GREEDY))  # v4

        again = await second.rollback("offer", to_version=1, request_id="rb-1")
        assert again.version == 3 and second.latest_version("offer") == 4
        assert (await first.rollback("offer", to_version=1, request_id="rb-1")).version == 3
        await second.apply(blueprint("other"))
        await second.apply(blueprint("other", epsilon=0.1, type=bp.POLICY_TYPE_EPSILON_GREEDY))
        with pytest.raises(InvalidArgument) as error:
            await second.rollback("other", to_version=1, request_id="rb-1")
        assert error.value.violations[0][0] == "request_id" and "'offer'" in error.value.violations[0][1]
        changes = [c.change for c in await second.changes("offer")]
        assert changes == ["create", "apply", "rollback", "apply"]

        # A rollback to the current blueprint makes no version, and its retry, after
        # another version, answers the same one.
        await first.refresh()
        await first.apply(blueprint("offer"))  # v5: v1's blueprint again
        same = await first.rollback("offer", to_version=1, request_id="rb-2")
        assert same.version == 5
        await second.apply(blueprint("offer", epsilon=0.5, type=bp.POLICY_TYPE_EPSILON_GREEDY))  # v6
        assert (await second.rollback("offer", to_version=1, request_id="rb-2")).version == 5
        assert second.latest_version("offer") == 6
    finally:
        store.close()


class RacedStore(CountedStore):
    """A store where another process's write lands just before this process's first
    version write (after this process has read the store)."""

    def __init__(self, store, other: UseCases, blueprint_of_other: bp.Blueprint) -> None:
        super().__init__(store)
        self.other, self.blueprint_of_other, self.raced = other, blueprint_of_other, False

    async def add_version(self, *args, **kwargs):
        if not self.raced:
            self.raced = True
            await self.other.apply(self.blueprint_of_other)
        return await self.store.add_version(*args, **kwargs)


async def test_a_change_that_loses_a_race_is_written_again_on_the_latest_version(tmp_path) -> None:
    """Another process adds a version between this one's read and its write: the store
    refuses the write, this process reads the store and writes on top of the new
    version (an apply, then a rollback)."""
    store = open_decision_store(Settings(decision_store_url=f"sqlite:///{tmp_path / 'decision.db'}"))
    try:
        other = UseCases(store, Clock())
        await other.load()
        await other.apply(blueprint("offer"))
        mine = UseCases(raced := RacedStore(store, other, blueprint("offer", epsilon=0.3,
                                                                      type=bp.POLICY_TYPE_EPSILON_GREEDY)),
                        Clock())
        await mine.load()
        applied = await mine.apply(blueprint("offer", epsilon=0.6, type=bp.POLICY_TYPE_EPSILON_GREEDY))
        assert raced.raced and applied.created and applied.version.version == 3
        assert [mine.get("offer", v).blueprint.policy.epsilon for v in (1, 2, 3)] == pytest.approx([0.0, 0.3, 0.6])

        raced.raced = False
        raced.blueprint_of_other = blueprint("offer", epsilon=0.9, type=bp.POLICY_TYPE_EPSILON_GREEDY)
        back = await mine.rollback("offer", to_version=1)
        assert raced.raced and back.version == 5 and back.blueprint.policy.epsilon == 0.0
        assert other.latest_version("offer") == 4  # its own write, before the rollback
    finally:
        store.close()
