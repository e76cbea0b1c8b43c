"""The call pipeline (one wrapper per method, built when the method is added) decides and
logs exactly what the grpc interceptor chain it replaces did: two decision services with
the same seed, one built the previous way (RpcObserver → Admission → CallGuard →
RequestProbe as grpc.aio interceptors), get the same seeded random requests; their
answers, probabilities, status codes and logged records must be equal."""

from __future__ import annotations

import time

import grpc
import numpy as np
import pytest

from loopwise import security
from loopwise.admission import Admission
from loopwise.clock import Clock
from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.feedback.v1 import feedback_service_pb2_grpc as fgrpc
from loopwise.grpc_options import channel_options
from loopwise.server import (
    RequestProbe,
    RpcObserver,
    ServiceHost,
    _Capture,
    connection_options,
)
from loopwise.services.decision.core import DecisionCore
from loopwise.services.decision.decision_log import DecisionLog
from loopwise.services.decision.models import Serving, build_scorer, rows_score_alike
from loopwise.services.decision.use_cases import UseCases
from loopwise.store.decision import open_decision_store
from tests.decision.helpers import (
    RecordingFeedback,
    blueprint,
    features,
    linear_onnx,
    model_ref,
    onnx_model,
    serve,
    start_decider,
    wait_until,
)

ROWS = 60
# Fields that differ between two runs whatever the path: ids and times.
VARYING = ("decision_id", "_time", "_at", "latency", "timestamp")


class _Table(grpc.GenericRpcHandler):
    def __init__(self, table: dict) -> None:
        self.table = table

    def service(self, details):
        return self.table.get(details.method)


def _admission_options(settings) -> list:
    try:
        return Admission.server_options(settings)  # type: ignore[call-arg]
    except TypeError:
        return Admission.server_options()  # type: ignore[call-arg]


def _interceptor_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ServiceHost build its server the previous way: unwrapped handlers behind the
    grpc.aio interceptor chain."""
    original = ServiceHost.__post_init__

    def post_init(self: ServiceHost) -> None:
        original(self)
        options = [("grpc.so_reuseport", 0), *channel_options(self.settings), *_admission_options(self.settings),
                   *connection_options(self.settings, self.max_connection_age)]
        self.server = grpc.aio.server(options=options, interceptors=[
            RpcObserver(self.rpc_metrics), self.admission, *security.server_interceptors(self.settings),
            RequestProbe()])
        self.server.add_generic_rpc_handlers((_Table(self.__dict__.setdefault("_raw", {})),))

    def register(self: ServiceHost, add_to) -> None:
        capture = _Capture()
        add_to(capture)
        self.__dict__.setdefault("_raw", {}).update(capture.handlers)

    monkeypatch.setattr(ServiceHost, "__post_init__", post_init)
    monkeypatch.setattr(ServiceHost, "_register", register)


def _plain(message) -> dict:
    """A message's fields as a dict, without ids and times."""
    out = {}
    for field, value in message.ListFields():
        if any(v in field.name for v in VARYING):
            continue
        if field.message_type is not None and not field.is_repeated:
            out[field.name] = _plain(value)
        elif field.message_type is not None and not field.message_type.GetOptions().map_entry:
            out[field.name] = [_plain(v) for v in value]
        elif field.message_type is not None:
            out[field.name] = {k: (_plain(v) if hasattr(v, "ListFields") else v) for k, v in value.items()}
        else:
            out[field.name] = list(value) if field.is_repeated else value
    return out


async def _run(make_settings, tmp_path, name: str, old_way: bool, monkeypatch) -> tuple[list, list]:
    settings = make_settings(data_dir=tmp_path / name, decision_log_flush_interval_s=0.05,
                             decision_log_batch_size=50)
    feedback = RecordingFeedback()
    server = await serve(feedback, fgrpc.add_FeedbackServiceServicer_to_server, settings.feedback_address)
    with monkeypatch.context() as patch:
        if old_way:
            _interceptor_chain(patch)
        d = await start_decider(settings)
    answers: list = []
    try:
        await d.apply(blueprint(kind="action_value", explore_without_model=True))
        rng = np.random.default_rng(11)
        for _ in range(ROWS):
            x, y = (float(v) for v in rng.normal(size=2))
            country = ["fr", "de", "it", None][int(rng.integers(4))]
            decision = await d.decide(unit_id=f"u{rng.integers(1000)}", x=x, y=y, country=country)
            answers.append(("decide", _plain(decision)))
        stream = d.stub.DecideStream(iter([dpb.DecideRequest(use_case="offer", unit_id=f"s{i}",
                                                            features=features(x=float(i)))
                                           for i in range(10)]))
        answers += [("stream", _plain(reply.decision)) async for reply in stream]
        rows = rng.normal(size=(20, 3)).astype(np.float32)
        rows[:, 2] = 1
        batch = await d.stub.DecideBatch(dpb.DecideBatchRequest(
            use_case="offer", blueprint_version=1, rows=20, feature_names=["x", "y", "country"],
            features=rows.tobytes(), unit_ids=[f"b{i}" for i in range(20)]))
        answers.append(("batch", _plain(batch)))
        for bad in (dpb.DecideRequest(use_case="nope"), dpb.DecideRequest(use_case="offer", candidates=[{}])):
            try:
                await d.stub.Decide(bad)
            except grpc.aio.AioRpcError as error:
                answers.append(("refused", error.code()))
        raw = d.channel.unary_unary("/loopwise.decision.v1.DecisionService/Decide")
        try:
            await raw(b"\xff\xff\xff")
        except grpc.aio.AioRpcError as error:
            answers.append(("unparseable", error.code()))
        served = ROWS + 10 + 20
        await wait_until(lambda: len(feedback.records) >= served)
        records = sorted((_plain(r) for r in feedback.records), key=lambda r: (r.get("unit_id", ""), repr(r)))
        return answers, records
    finally:
        await d.stop()
        await server.stop(0)


async def test_the_call_pipeline_decides_and_logs_as_the_interceptor_chain(make_settings, tmp_path,
                                                                           monkeypatch) -> None:
    old_answers, old_records = await _run(make_settings, tmp_path, "old", True, monkeypatch)
    new_answers, new_records = await _run(make_settings, tmp_path, "new", False, monkeypatch)
    assert len(new_answers) == ROWS + 10 + 1 + 3
    assert [a for a in new_answers if a[0] in ("refused", "unparseable")] == [
        ("refused", grpc.StatusCode.NOT_FOUND), ("refused", grpc.StatusCode.INVALID_ARGUMENT),
        ("unparseable", grpc.StatusCode.INVALID_ARGUMENT)]
    assert any(a[1].get("action_probabilities") or a[1].get("probabilities") for a in new_answers
               if isinstance(a[1], dict)), "the answers carry probabilities"
    assert new_answers == old_answers
    assert len(new_records) == ROWS + 10 + 20
    assert all(r.get("action_probabilities") and r.get("features") for r in new_records)
    assert new_records == old_records


# -- the one-row path of Decide against the general path ------------------------------
def _scorer(tmp_path, uc, onnx: bytes, score_output: str, version: int = 1):
    path = tmp_path / f"{uc.use_case}-{version}.onnx"
    path.write_bytes(onnx)
    return build_scorer(uc.use_case, model_ref(version, onnx, 3, score_output), path, uc)


async def _cores(tmp_path, make_settings, seed: int):
    """Two decision cores with the same seed, use cases and models; the second never
    takes the one-row path. Each logs into its own decision log (never started: the
    records are built by ``_materialize`` as its committer would)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    cores = []
    for name in ("lean", "general"):
        settings = make_settings(data_dir=tmp_path / name)
        clock = Clock.from_settings(settings)
        use_cases = UseCases(open_decision_store(settings), clock)
        await use_cases.load()
        await use_cases.apply(blueprint("lr", kind="binary", type=bp.POLICY_TYPE_EPSILON_GREEDY, epsilon=0.3,
                                        exploration_floor=0.05))
        await use_cases.apply(blueprint("lin", kind="binary", threshold=0.2))
        await use_cases.apply(blueprint("reg", kind="regression", type=bp.POLICY_TYPE_EPSILON_GREEDY, epsilon=0.1))
        await use_cases.apply(blueprint("tree", kind="binary", type=bp.POLICY_TYPE_EPSILON_GREEDY, epsilon=0.2))
        data = np.random.default_rng(5)
        x = data.normal(size=(400, 3)).astype(np.float32)
        lr = LogisticRegression().fit(x, (x[:, 0] + x[:, 1] > 0).astype(int))
        tree = HistGradientBoostingClassifier(max_iter=20, early_stopping=False).fit(
            x, (x[:, 0] * x[:, 1] > 0).astype(int))
        scorers = {
            "lr": _scorer(tmp_path / name, use_cases.get("lr"), onnx_model(lr, 3), "probabilities"),
            "lin": _scorer(tmp_path / name, use_cases.get("lin"),
                           linear_onnx([np.array([10.0, 0.5, 0.0])], [np.zeros(1)]), "variable"),
            "reg": _scorer(tmp_path / name, use_cases.get("reg"),
                           linear_onnx([np.array([1.0, -2.0, 0.3])], [np.ones(1)]), "variable"),
            "tree": _scorer(tmp_path / name, use_cases.get("tree"), onnx_model(tree, 3), "probabilities"),
        }
        (tmp_path / name).mkdir(exist_ok=True)
        # A channel that is never used: the log is not started.
        log = DecisionLog(grpc.aio.insecure_channel("127.0.0.1:9"), tmp_path / name / "spool", clock, enabled=True)
        core = DecisionCore(use_cases, clock, seed, log, {k: Serving(production=s) for k, s in scorers.items()}, 1024)
        if name == "general":
            core._plan = lambda uc: None  # type: ignore[method-assign]
        cores.append(core)
    return cores


async def test_the_one_row_path_decides_and_logs_what_the_general_path_does(tmp_path, make_settings) -> None:
    lean, general = await _cores(tmp_path, make_settings, seed=23)
    draw = np.random.default_rng(29)
    taken = 0
    for i in range(600):
        use_case = ["lr", "lin", "reg"][int(draw.integers(3))]
        x = float(draw.normal()) if draw.random() > 0.05 else 3.0e38  # 10 x 3e38 overflows: a non-finite score
        y = None if draw.random() < 0.2 else float(draw.normal())
        request = dpb.DecideRequest(use_case=use_case, unit_id=f"u{draw.integers(50)}" if draw.random() < 0.8 else "",
                                    features=features(x=x, y=y, country=["fr", "de", "it"][int(draw.integers(3))]),
                                    disable_exploration=bool(draw.random() < 0.2),
                                    blueprint_version=int(draw.integers(2)))
        a = lean.decide_response(request, time.perf_counter())
        b = general.decide_response(request, time.perf_counter())
        taken += lean._plans[(use_case, 1)][1] is not None  # the version's one-row plan
        assert _plain(a) == _plain(b), (i, request)
        assert a.decision.decision_time.ToMilliseconds() > 0
    records = [[_plain(r) for r in core.log._materialize()] for core in (lean, general)]
    assert len(records[0]) == 600
    assert records[0] == records[1]
    assert taken == 600  # every request was eligible for the one-row path
    fallbacks = sum(r.get("fallback", False) for r in records[0])
    explored = sum(r.get("explored", False) for r in records[0])
    assert fallbacks > 0 and explored > 0, (fallbacks, explored)


async def test_a_row_scores_the_same_alone_and_among_others(tmp_path, make_settings) -> None:
    """onnxruntime's kernels for one row can round differently from those for several
    (on this machine raw runs of this logistic regression give some rows other bits
    alone than in a batch); the scorer runs a lone row beside a copy of itself, so a row
    gets the same score alone, in a batch and at any place in it: from Decide, from a
    pass of the Decide queue and from DecideBatch."""
    core, _ = await _cores(tmp_path, make_settings, seed=1)
    scorer, uc = core.scorers["lr"].production, core.use_cases.get("lr")
    rows = np.random.default_rng(7).normal(size=(64, 3)).astype(np.float32)
    rows[:, 2] = np.arange(len(rows)) % 3  # country: a vocabulary code
    raw_alone = np.concatenate([scorer.session.run(["probabilities"], {"features": rows[i:i + 1]})[0]
                                for i in range(len(rows))])
    differing = int((raw_alone != scorer.session.run(["probabilities"], {"features": rows})[0]).any(axis=1).sum())
    together = scorer.score_rows(uc, rows)
    assert [scorer.score_one(uc, rows[i:i + 1]) for i in range(len(rows))] == together, differing
    assert scorer.score_rows(uc, rows[::-1].copy()) == together[::-1]
    assert scorer.score(uc, rows[:1]).tolist() == together[:1]  # the general path's run
    assert scorer.rows_score_alike

    # Decide and DecideBatch score a row alike.
    request = dpb.DecideRequest(use_case="lr", features=features(x=0.3, y=-1.2, country="de"))
    decided = core.decide_response(request).decision.score
    row = np.array([[0.3, -1.2, 1.0]], dtype=np.float32)  # "de" is the vocabulary's code 1
    batch = core.decide_batch(dpb.DecideBatchRequest(
        use_case="lr", blueprint_version=1, rows=2, feature_names=list(uc.feature_names),
        features=np.vstack([row, rows[:1]]).astype("<f4").tobytes()))
    assert np.float32(decided) == np.frombuffer(batch.scores, "<f4")[0]

    # A model whose rows score otherwise among others is not scored a pass at a time.
    run = scorer.run
    scorer.run = lambda output, x: run(output, x) + (1e-6 if len(x) > 1 else 0.0)  # type: ignore[method-assign]
    assert not rows_score_alike(scorer)
