"""The decision store's contract, on SQLite and on Cassandra: versions, races, kill
switch, archive, rollback-labelled versions, request ids, audit, and the decision
service running on the backend (its whole lifecycle on Cassandra)."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.services.decision import use_cases as use_cases_module
from loopwise.store.decision import (
    AppliedRequest,
    BlueprintVersion,
    VersionConflict,
    open_decision_store,
)
from tests.contract.backends import BACKENDS, backend_url, store_settings, unique
from tests.decision import helpers
from tests.decision.helpers import start_decider


@pytest.fixture(scope="module", params=BACKENDS)
def url(request, tmp_path_factory) -> str:
    return backend_url(request, tmp_path_factory, "decision")


@pytest.fixture(scope="module")
def store(url, tmp_path_factory):
    opened = open_decision_store(store_settings("decision", url, tmp_path_factory))
    yield opened
    opened.close()


def version(use_case: str, number: int, t: int = 1000, **kw) -> BlueprintVersion:
    blueprint = helpers.blueprint(use_case)
    blueprint.description = f"v{number}"
    return BlueprintVersion(use_case, number, blueprint, t + number, kw.get("author", "ann"), kw.get("reason", ""))


async def test_versions_are_stored_and_loaded_in_order(store) -> None:
    uc = unique()
    await store.add_version(version(uc, 1, reason="first"), 0, None)
    await store.add_version(version(uc, 2), 1, AppliedRequest("r-" + uc, uc, 2, True, ("description",)))
    loaded = await store.load()
    mine = [v for v in loaded.versions if v.use_case == uc]
    assert [(v.version, v.blueprint.description, v.reason) for v in mine] == [(1, "v1", "first"), (2, "v2", "")]
    assert mine[0].create_time_ms == 1001 and mine[0].author == "ann"
    requests = {r.request_id: r for r in loaded.requests}
    assert requests["r-" + uc] == AppliedRequest("r-" + uc, uc, 2, True, ("description",))
    assert loaded.kill_switches.get(uc, False) is False


async def test_a_load_after_held_versions_returns_only_later_ones(store) -> None:
    uc, other = unique(), unique()
    await store.add_version(version(uc, 1), 0, None)
    await store.add_version(version(uc, 2), 1, AppliedRequest("r2-" + uc, uc, 2, True, ("description",)))
    await store.add_version(version(uc, 3), 2, None)
    await store.add_version(version(other, 1), 0, AppliedRequest("r1-" + other, other, 1, True))
    await store.set_kill_switch(other, True, 5000)
    await store.set_archived(uc, True, 5000)

    loaded = await store.load({uc: 2, other: 1})
    assert [(v.use_case, v.version, v.blueprint.description) for v in loaded.versions
            if v.use_case in (uc, other)] == [(uc, 3, "v3")]
    # Flags and requests come whole, whatever is held.
    assert loaded.kill_switches[other] is True and loaded.archived[uc] is True
    requests = {r.request_id for r in loaded.requests}
    assert {"r2-" + uc, "r1-" + other} <= requests
    # A use case not held at all comes with every version.
    assert [v.version for v in (await store.load({uc: 3})).versions if v.use_case == other] == [1]
    assert not [v for v in (await store.load({uc: 3, other: 1})).versions if v.use_case in (uc, other)]


async def test_version_check_on_write(store) -> None:
    uc = unique()
    with pytest.raises(VersionConflict):
        await store.add_version(version(uc, 2), 1, None)  # the use case does not exist
    await store.add_version(version(uc, 1), 0, None)
    with pytest.raises(VersionConflict):
        await store.add_version(version(uc, 1), 0, None)  # it exists now
    await store.add_version(version(uc, 2), 1, None)
    with pytest.raises(VersionConflict):
        await store.add_version(version(uc, 2), 1, None)  # stale expectation
    loaded = await store.load()
    assert [v.version for v in loaded.versions if v.use_case == uc] == [1, 2]


async def test_concurrent_appliers_exactly_one_creates_each_version(store, url, tmp_path_factory) -> None:
    other = open_decision_store(store_settings("decision", url, tmp_path_factory))
    try:
        uc = unique()
        for number in (1, 2, 3):
            outcomes = await asyncio.gather(
                *(s.add_version(version(uc, number, author=f"w{i}"), number - 1, None)
                  for i, s in enumerate([store, other, store, other])),
                return_exceptions=True)
            assert sum(o is None for o in outcomes) == 1, outcomes
            assert all(isinstance(o, VersionConflict) for o in outcomes if o is not None)
        loaded = await other.load()
        assert [v.version for v in loaded.versions if v.use_case == uc] == [1, 2, 3]
    finally:
        other.close()


async def test_remembered_requests_keep_the_first(store) -> None:
    uc = unique()
    await store.add_version(version(uc, 1), 0, None)
    await store.remember_request(AppliedRequest("same-" + uc, uc, 1, False), 5)
    await store.remember_request(AppliedRequest("same-" + uc, uc, 7, False), 6)
    loaded = await store.load()
    found = [r for r in loaded.requests if r.request_id == "same-" + uc]
    assert found == [AppliedRequest("same-" + uc, uc, 1, False)]


async def test_kill_switch_and_audit(store) -> None:
    uc = unique()
    assert await store.set_kill_switch(uc, True, 2000) is False  # unknown use case
    await store.add_version(version(uc, 1, t=1000, reason="new"), 0, None)
    await store.add_version(version(uc, 2, t=2000), 1, AppliedRequest("a-" + uc, uc, 2, True))
    assert await store.set_kill_switch(uc, True, 3000, "bob", "incident") is True
    assert (await store.load()).kill_switches[uc] is True
    assert await store.set_kill_switch(uc, False, 4000, "bob", "fixed") is True
    assert (await store.load()).kill_switches[uc] is False
    audit = await store.audit(uc)
    assert [(a.version, a.change, a.time_ms, a.author, a.reason, a.request_id) for a in audit] == [
        (1, "create", 1001, "ann", "new", ""),
        (2, "apply", 2002, "ann", "", "a-" + uc),
        (2, "kill_switch_on", 3000, "bob", "incident", ""),
        (2, "kill_switch_off", 4000, "bob", "fixed", ""),
    ]
    assert await store.audit(unique()) == []


async def test_archive_and_unarchive_with_audit(store) -> None:
    uc = unique()
    assert await store.set_archived(uc, True, 2000, "eve", "retired") is False  # unknown use case
    assert uc not in (await store.load()).archived
    await store.add_version(version(uc, 1, t=1000), 0, None)
    assert (await store.load()).archived.get(uc, False) is False
    assert await store.set_archived(uc, True, 3000, "eve", "retired") is True
    loaded = await store.load()
    assert loaded.archived[uc] is True
    assert loaded.kill_switches.get(uc, False) is False  # the switch is a separate flag
    assert [v.version for v in loaded.versions if v.use_case == uc] == [1]  # versions untouched
    await store.add_version(version(uc, 2, t=3000), 1, None)
    assert await store.set_archived(uc, False, 4000, "fay", "back") is True
    assert (await store.load()).archived[uc] is False
    assert await store.set_archived(uc, True, 5000) is True
    assert (await store.load()).archived[uc] is True
    audit = await store.audit(uc)
    assert [(a.version, a.change, a.time_ms, a.author, a.reason, a.request_id) for a in audit] == [
        (1, "create", 1001, "ann", "", ""),
        (1, "archive", 3000, "eve", "retired", ""),
        (2, "apply", 3002, "ann", "", ""),
        (2, "unarchive", 4000, "fay", "back", ""),
        (2, "archive", 5000, "", "", ""),
    ]


async def test_rollback_labelled_versions(store) -> None:
    uc = unique()
    await store.add_version(version(uc, 1, t=1000), 0, None)
    await store.add_version(version(uc, 2, t=2000), 1, AppliedRequest("p-" + uc, uc, 2, True, ("policy",)))
    back = BlueprintVersion(uc, 3, version(uc, 1).blueprint, 3000, "cy", "rollback to v1: bad")
    await store.add_version(back, 2, None, change="rollback")
    with pytest.raises(VersionConflict):  # the label does not bypass the version check
        await store.add_version(BlueprintVersion(uc, 3, back.blueprint, 3001, "cy"), 2, None, change="rollback")
    await store.add_version(version(uc, 4, t=4000), 3, None)  # no label: an apply again
    loaded = await store.load()
    mine = [v for v in loaded.versions if v.use_case == uc]
    assert [(v.version, v.blueprint.description) for v in mine] == [(1, "v1"), (2, "v2"), (3, "v1"), (4, "v4")]
    assert mine[2].reason == "rollback to v1: bad" and mine[2].author == "cy"
    audit = await store.audit(uc)
    assert [(a.version, a.change, a.time_ms, a.author, a.reason, a.request_id) for a in audit] == [
        (1, "create", 1001, "ann", "", ""),
        (2, "apply", 2002, "ann", "", "p-" + uc),
        (3, "rollback", 3000, "cy", "rollback to v1: bad", ""),
        (4, "apply", 4004, "ann", "", ""),
    ]


async def test_audit_keeps_the_order_of_changes_in_one_millisecond(store) -> None:
    uc = unique()
    await store.add_version(version(uc, 1, t=999), 0, None)  # at 1000
    assert await store.set_kill_switch(uc, True, 1000, "a")
    assert await store.set_archived(uc, True, 1000, "b")
    assert await store.set_archived(uc, False, 1000, "c")
    await store.add_version(BlueprintVersion(uc, 2, version(uc, 1).blueprint, 1000, "d"), 1, None, change="rollback")
    assert await store.set_kill_switch(uc, False, 1000, "e")
    audit = await store.audit(uc)
    assert [(a.change, a.version, a.author) for a in audit] == [
        ("create", 1, "ann"), ("kill_switch_on", 1, "a"), ("archive", 1, "b"), ("unarchive", 1, "c"),
        ("rollback", 2, "d"), ("kill_switch_off", 2, "e"),
    ]


async def test_decision_service_runs_on_the_backend(url, make_settings) -> None:
    """Smoke: apply a use case through the real service, restart it, read it back."""
    from loopwise.decision.v1 import decision_service_pb2 as dpb
    from loopwise.decision.v1 import decision_service_pb2_grpc as dgrpc
    from loopwise.services.decision.server import start_server

    settings = make_settings(decision_store_url=url)
    uc = unique("smoke")
    blueprint = helpers.blueprint(uc)
    host = await start_server(settings)
    try:
        async with grpc.aio.insecure_channel(settings.decision_address) as channel:
            stub = dgrpc.DecisionServiceStub(channel)
            applied = await stub.ApplyUseCase(dpb.ApplyUseCaseRequest(blueprint=blueprint, request_id="s-" + uc))
            assert applied.created and applied.use_case.latest_version == 1
    finally:
        await host.stop(0)
    host = await start_server(settings)
    try:
        async with grpc.aio.insecure_channel(settings.decision_address) as channel:
            stub = dgrpc.DecisionServiceStub(channel)
            got = await stub.GetUseCase(dpb.GetUseCaseRequest(use_case=uc))
            assert got.use_case.latest_version == 1
            again = await stub.ApplyUseCase(dpb.ApplyUseCaseRequest(blueprint=blueprint, request_id="s-" + uc))
            assert again.use_case.latest_version == 1
    finally:
        await host.stop(0)


async def test_decision_service_lifecycle_on_cassandra(make_settings, cassandra_url_factory) -> None:
    """Smoke: apply twice, roll back, kill switch, archive and the audit trail through
    the real service on Cassandra; the state and the trail survive a restart."""
    settings = make_settings(decision_store_url=cassandra_url_factory("decision"), decision_log_enabled=False)
    uc = unique("life")
    d = await start_decider(settings)
    try:
        first = await d.stub.ApplyUseCase(dpb.ApplyUseCaseRequest(
            blueprint=helpers.blueprint(uc, kind="action_value"), author="ana", reason="launch"))
        assert first.created and first.use_case.version == 1
        explore = helpers.blueprint(uc, kind="action_value", type=bp.POLICY_TYPE_EPSILON_GREEDY, epsilon=0.5)
        second = await d.stub.ApplyUseCase(dpb.ApplyUseCaseRequest(blueprint=explore, author="bo", reason="explore"))
        assert second.created and second.use_case.version == 2
        back = await d.stub.RollbackUseCase(dpb.RollbackUseCaseRequest(
            use_case=uc, to_version=1, author="cy", reason="too much", request_id="rb-" + uc))
        assert back.use_case.version == 3 and back.use_case.blueprint.policy.epsilon == 0.0
        ks = await d.stub.SetKillSwitch(dpb.SetKillSwitchRequest(use_case=uc, enabled=True, author="dee",
                                                                 reason="incident"))
        assert ks.use_case.kill_switch
        archived = await d.stub.ArchiveUseCase(dpb.ArchiveUseCaseRequest(use_case=uc, archived=True, author="eve",
                                                                         reason="retired"))
        assert archived.use_case.archived and archived.use_case.latest_version == 3
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await d.decide(uc)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        await d.stop()

    expected = [("create", 1, "ana", "launch"), ("apply", 2, "bo", "explore"),
                ("rollback", 3, "cy", "rollback to v1: too much"), ("kill_switch_on", 3, "dee", "incident"),
                ("archive", 3, "eve", "retired")]
    d = await start_decider(settings)  # a fresh process state, read back from Cassandra
    try:
        got = (await d.stub.GetUseCase(dpb.GetUseCaseRequest(use_case=uc))).use_case
        assert (got.version, got.kill_switch, got.archived) == (3, True, True)
        listed = await d.stub.ListUseCases(dpb.ListUseCasesRequest())
        assert uc not in [u.blueprint.use_case for u in listed.use_cases]
        changes = (await d.stub.ListUseCaseChanges(dpb.ListUseCaseChangesRequest(use_case=uc))).changes
        assert [(c.change, c.version, c.author, c.reason) for c in changes] == expected
        assert all(c.change_time.seconds > 0 for c in changes)
        await d.stub.ArchiveUseCase(dpb.ArchiveUseCaseRequest(use_case=uc, archived=False, author="eve"))
        await d.stub.SetKillSwitch(dpb.SetKillSwitchRequest(use_case=uc, enabled=False, author="dee"))
        assert (await d.decide(uc)).blueprint_version == 3
        changes = (await d.stub.ListUseCaseChanges(dpb.ListUseCaseChangesRequest(use_case=uc))).changes
        assert [c.change for c in changes][-2:] == ["unarchive", "kill_switch_off"]
    finally:
        await d.stop()


async def _replicas(url, make_settings, tmp_path, monkeypatch, sync_s: float):
    """Two decision services on one store, as two pods (each a single process), each
    re-reading the store every ``sync_s``."""
    monkeypatch.setattr(use_cases_module, "SYNC_INTERVAL_S", sync_s)
    a = await start_decider(make_settings(decision_store_url=url, decision_log_enabled=False))
    b = await start_decider(make_settings(decision_store_url=url, decision_log_enabled=False,
                                          data_dir=tmp_path / "b"))
    return a, b


async def test_replicas_on_one_store_serve_what_the_other_wrote(url, make_settings, tmp_path, monkeypatch) -> None:
    """What is applied through one replica is read, decided on (Decide, DecideBatch,
    DecideStream) and changed (apply, rollback) through the other at once: with no
    periodic re-read during the test, B finds what A wrote by looking in the store."""
    a, b = await _replicas(url, make_settings, tmp_path, monkeypatch, sync_s=3600.0)
    try:
        read, decided, streamed, batched, changed = (unique("replica") for _ in range(5))
        for uc in (read, decided, streamed, batched, changed):
            await a.apply(helpers.blueprint(uc, type=bp.POLICY_TYPE_EPSILON_GREEDY, epsilon=1.0))

        got = await b.stub.GetUseCase(dpb.GetUseCaseRequest(use_case=read, version=1))
        assert got.use_case.version == 1 and got.use_case.blueprint.use_case == read
        assert (await b.decide(decided)).blueprint_version == 1

        async def requests():
            for _ in range(3):
                yield dpb.DecideRequest(use_case=streamed, features=helpers.features())
        assert [r.decision.blueprint_version async for r in b.stub.DecideStream(requests())] == [1, 1, 1]
        batch = await b.stub.DecideBatch(dpb.DecideBatchRequest(
            use_case=batched, blueprint_version=1, rows=2, feature_names=["x", "y", "country"],
            features=np.zeros((2, 3), "<f4").tobytes()))
        assert len(batch.decision_ids) == 2

        # Changes through B start from the latest version, though A wrote it: a new
        # blueprint is v2; the v1 blueprint again after A's v2 is a new version (not
        # "unchanged"); a rollback to v1 after A's v2 is one (not "already current"),
        # and the same rollback through A, which never saw it, changes nothing.
        applied = await b.apply(helpers.blueprint(changed, type=bp.POLICY_TYPE_EPSILON_GREEDY, epsilon=0.5))
        assert applied.created and applied.use_case.version == 2
        await a.apply(helpers.blueprint(streamed, type=bp.POLICY_TYPE_EPSILON_GREEDY, epsilon=0.25))
        again = await b.apply(helpers.blueprint(streamed, type=bp.POLICY_TYPE_EPSILON_GREEDY, epsilon=1.0))
        assert again.created and again.use_case.version == 3 and list(again.changed_fields) == ["policy"]
        await a.apply(helpers.blueprint(batched, type=bp.POLICY_TYPE_EPSILON_GREEDY, epsilon=0.25))
        back = await b.stub.RollbackUseCase(dpb.RollbackUseCaseRequest(use_case=batched, to_version=1))
        assert back.use_case.version == 3 and back.use_case.blueprint.policy.epsilon == 1.0
        retried = await a.stub.RollbackUseCase(dpb.RollbackUseCaseRequest(use_case=batched, to_version=1))
        assert retried.use_case.version == 3 and retried.use_case.latest_version == 3

        missing = await asyncio.gather(*(b.decide(unique("never")) for _ in range(2)), return_exceptions=True)
        assert [e.code() for e in missing] == [grpc.StatusCode.NOT_FOUND] * 2
    finally:
        await a.stop()
        await b.stop()


async def test_kill_switches_and_archive_flags_reach_the_other_replica(url, make_settings, tmp_path,
                                                                       monkeypatch) -> None:
    """Flags set through one replica reach the other through its periodic re-read: it
    shows the kill switch and refuses decisions of the archived use case."""
    a, b = await _replicas(url, make_settings, tmp_path, monkeypatch, sync_s=0.1)
    try:
        switched, archived = unique("switched"), unique("archived")
        for uc in (switched, archived):
            await a.apply(helpers.blueprint(uc))
            await b.decide(uc)  # B holds both
        await a.stub.SetKillSwitch(dpb.SetKillSwitchRequest(use_case=switched, enabled=True, reason="incident"))
        await a.stub.ArchiveUseCase(dpb.ArchiveUseCaseRequest(use_case=archived, archived=True, reason="retired"))
        await helpers.wait_until(lambda: b.core.use_cases.archived(archived), timeout=10.0)
        assert (await b.stub.GetUseCase(dpb.GetUseCaseRequest(use_case=switched))).use_case.kill_switch
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await b.decide(archived)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        await a.stop()
        await b.stop()
