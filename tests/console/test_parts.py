"""The console's parts without a browser or services: session cookies (encrypted,
signed, expiring), names fit for audit fields, local redirects only, RPC errors as
pages, blueprint differences, feature decoding."""

from __future__ import annotations

import json
import struct
import time

import grpc
import pytest

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.console import blueprints
from loopwise.console.app import _features, _num, _safe_next, _started_by
from loopwise.console.gateway import base_settings, problem_of
from loopwise.console.sessions import SESSION_TTL_S, Codec, Session, clean_name, name_slug
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.settings import Settings


def test_session_cookie_round_trips_and_refuses_tampering_other_keys_and_age() -> None:
    codec = Codec("a shared secret")
    session = Session(token="lw_secret-token", name="Ada", use_cases=["checkout_upsell"])
    cookie = codec.dump_session(session)
    assert "lw_secret-token" not in cookie and "Ada" not in cookie  # encrypted
    loaded = codec.load_session(cookie)
    assert loaded is not None and (loaded.token, loaded.name, loaded.csrf, loaded.use_cases) == (
        session.token, "Ada", session.csrf, ["checkout_upsell"])
    assert Codec("a shared secret").load_session(cookie) is not None  # another replica, same key
    assert Codec("another secret").load_session(cookie) is None
    assert Codec("").load_session(cookie) is None  # a random key per process
    tampered = cookie[:-6] + ("A" if cookie[-6] != "A" else "B") + cookie[-5:]
    assert codec.load_session(tampered) is None
    assert codec.load_session("") is None and codec.load_session("not a cookie") is None
    old = codec._fernet.encrypt_at_time(json.dumps({"t": "lw_x", "n": "Ada", "c": "c"}).encode(),
                                        int(time.time()) - SESSION_TTL_S - 10)
    assert codec.load_session(old.decode()) is None


def test_csrf_tokens_differ_per_session_and_are_compared_whole() -> None:
    first, second = Session(token="a", name="x"), Session(token="a", name="x")
    assert first.csrf != second.csrf and len(first.csrf) >= 40
    assert first.csrf_ok(first.csrf)
    assert not first.csrf_ok(second.csrf) and not first.csrf_ok("") and not first.csrf_ok(None)
    assert not first.csrf_ok(first.csrf[:-1])


def test_names_in_audit_fields_and_request_ids() -> None:
    assert clean_name("  Ada   Lovelace ") == "Ada Lovelace"
    assert clean_name("<script>alert(1)</script>") == "scriptalert1script"
    assert len(clean_name("x" * 200)) == 64
    assert Session(token="t", name="Ada").author == "Ada (console)"
    assert name_slug("Ada Lovelace:ops") == "Ada-Lovelace-ops"
    assert _started_by("console:Ada-Lovelace:01900000-0000-7000-8000-000000000000") == "Ada-Lovelace"
    assert _started_by("training-deploy:01900000") == "" and _started_by("") == ""


@pytest.mark.parametrize("target, expected", [
    ("/use-cases/checkout_upsell/models", "/use-cases/checkout_upsell/models"),
    ("//evil.example/x", "/use-cases"),
    ("https://evil.example/", "/use-cases"),
    ("/\\evil.example", "/use-cases"),
    ("", "/use-cases"),
    (None, "/use-cases"),
])
def test_after_login_only_local_paths(target: str | None, expected: str) -> None:
    assert _safe_next(target) == expected


def test_the_console_never_calls_with_a_token_of_its_own() -> None:
    settings = Settings(token="lw_profile_admin", allow_plaintext=True)
    assert base_settings(settings).token.get_secret_value() == ""
    assert settings.token.get_secret_value() == "lw_profile_admin"  # the original is untouched


class _Refused(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple:
        return ()


def test_rpc_errors_become_pages_that_say_why() -> None:
    denied = problem_of(_Refused(grpc.StatusCode.PERMISSION_DENIED, "token 'team-b' lacks scope report"))
    assert (denied.status, denied.title, denied.code) == (
        403, "Your token is not allowed to do this", "PERMISSION_DENIED")
    assert denied.details.startswith("token 'team-b' lacks scope report")
    assert problem_of(_Refused(grpc.StatusCode.NOT_FOUND, "no such report")).status == 404
    assert problem_of(_Refused(grpc.StatusCode.FAILED_PRECONDITION, "no previous revision")).status == 409
    assert problem_of(_Refused(grpc.StatusCode.UNAVAILABLE, "")).status == 503
    assert problem_of(_Refused(grpc.StatusCode.INTERNAL, "boom")).status == 502


def test_blueprint_changes_name_fields_lists_and_removals() -> None:
    old = bp.Blueprint(use_case="u", actions=["a", "b"], policy=bp.Policy(epsilon=0.3),
                       features=[bp.Feature(name="region", type=bp.FEATURE_TYPE_CATEGORICAL,
                                            vocabulary=["north", "south"])])
    new = bp.Blueprint()
    new.CopyFrom(old)
    new.policy.epsilon = 0.2
    new.features[0].vocabulary.append("east")
    new.description = "added"
    new.ClearField("actions")
    found = {c.path: (c.old, c.new, c.kind) for c in blueprints.changes(old, new)}
    assert found == {
        "description": ("", "added", "added"),
        "policy.epsilon": ("0.3", "0.2", "changed"),
        "features[0].vocabulary": ("[north, south]", "[north, south, east]", "changed"),
        "actions": ("[a, b]", "", "removed"),
    }
    assert blueprints.changes(old, old) == []
    lines = blueprints.unified(old, new, "v1", "v2")
    assert ("remove", "-  epsilon: 0.3") in [(line.kind, line.text) for line in lines]
    assert ("add", "+  epsilon: 0.2") in [(line.kind, line.text) for line in lines]


def test_features_are_shown_as_the_decision_saw_them() -> None:
    blueprint = bp.Blueprint(features=[
        bp.Feature(name="basket", type=bp.FEATURE_TYPE_NUMERIC),
        bp.Feature(name="region", type=bp.FEATURE_TYPE_CATEGORICAL, vocabulary=["north", "south"]),
        bp.Feature(name="tier", type=bp.FEATURE_TYPE_CATEGORICAL, vocabulary=["gold"]),
        bp.Feature(name="visits", type=bp.FEATURE_TYPE_NUMERIC)])
    record = fpb.DecisionRecord(features=struct.pack("<4f", 42.5, 1.0, -1.0, float("nan")))
    rows = _features(record, ["basket", "region", "tier", "visits"], blueprint)
    assert [r["value"] for r in rows] == ["42.5", "south", "unknown (code -1)", "missing"]
    assert [r["type"] for r in rows] == ["numeric", "categorical", "categorical", "numeric"]


def test_numbers_are_printed_short_and_exact_enough() -> None:
    assert _num(1401) == "1401" and _num(2.0) == "2" and _num(0.2) == "0.2"
    assert _num(0.30000001) == "0.3" and _num(25.569280274) == "25.5693"
    assert _num(0.0000123) == "1.23e-05" and _num(None) == "—"
