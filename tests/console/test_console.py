"""The console in a real browser (Debian's Chromium through Playwright) against a running
loop with mutual TLS and scoped tokens: every page loads without a browser console error
and shows the figures the API gives the SDK; the actions change what the services
serve and are audited with their author; a token scoped to another use case sees none
of this one; sessions, CSRF and headers hold."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
import pytest

from loopwise.client import operation_result
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from tests.console.stack import OTHER, USE_CASE, ConsoleProcess, Loop

pytestmark = pytest.mark.timeout(300)

STAGES = ("reading", "validating", "fitting", "exporting", "blessing", "registering")


@dataclass
class User:
    """One user's browser (its own Chromium and profile) and page, logged in or not."""

    context: Any
    page: Any
    base: str
    errors: list[str] = field(default_factory=list)

    def visit(self, path: str, status: int = 200) -> Any:
        """Open a console path; check its HTTP status; return the page."""
        response = self.page.goto(self.base + path)
        assert response is not None and response.status == status, (
            path, response and response.status, self.page.inner_text("main")[:1500])
        return self.page

    def field(self, name: str, within: Any = None) -> str:
        """The text of the first element marked data-field=<name>."""
        return (within or self.page).locator(f"[data-field='{name}']").first.inner_text().strip()

    def assert_no_console_error(self, expected_status: int | None = None) -> None:
        """No console error since the last check, but the failed-load message of a page
        answered with ``expected_status`` on purpose."""
        unexpected = [e for e in self.errors
                      if not (expected_status and f"status of {expected_status}" in e)]
        self.errors.clear()
        assert not unexpected, unexpected


def open_user(open_browser: Any, console: ConsoleProcess) -> User:
    context = open_browser()
    page = context.pages[0] if context.pages else context.new_page()
    user = User(context, page, console.url)
    page.on("console", lambda m: user.errors.append(f"{page.url}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: user.errors.append(f"{page.url}: {e}"))
    return user


def log_in(user: User, token: str, name: str, use_cases: str = "") -> None:
    user.page.fill("input[name=token]", token)
    user.page.fill("input[name=name]", name)
    if use_cases:
        user.page.fill("input[name=use_cases]", use_cases)
    user.page.click("form[action='/login'] button[type=submit]")


@pytest.fixture(scope="module")
def ada(loop: Loop, console: ConsoleProcess, open_browser: Any) -> Iterator[User]:
    """An operator with an admin token, logged in."""
    user = open_user(open_browser, console)
    user.visit("/login")
    log_in(user, loop.tokens.secrets["admin"], "Ada")
    user.page.wait_for_url(f"{console.url}/use-cases")
    user.assert_no_console_error()
    yield user


def number(text: str) -> float:
    """A number as the console prints it (1401, 79.30%, 0.0433)."""
    return float(text.strip().rstrip("%").replace(",", ""))


def pct(value: float) -> float:
    return 100.0 * value


def test_pages_need_a_login_and_a_refused_token_is_told(loop: Loop, console: ConsoleProcess,
                                                        open_browser: Any) -> None:
    user = open_user(open_browser, console)
    user.visit(f"/use-cases/{USE_CASE}/models")
    assert user.page.url.startswith(f"{console.url}/login?next=")
    log_in(user, "lw_not_a_real_token", "Mallory")
    assert "refused" in user.field("login-message")
    user.assert_no_console_error(expected_status=401)
    # An action without a session changes nothing.
    refused = user.context.request.post(f"{console.url}/use-cases/{USE_CASE}/kill-switch",
                                        form={"enabled": "on", "reason": "x"})
    assert refused.status == 401
    # The right token lands on the page asked for first.
    log_in(user, loop.tokens.secrets["admin"], "Ada")
    user.page.wait_for_url(f"{console.url}/use-cases/{USE_CASE}/models")
    assert user.page.locator("h1").inner_text() == f"{USE_CASE}: models and deployments"
    user.assert_no_console_error()
    with loop.client() as client:
        assert not client.get_use_case(USE_CASE).kill_switch


def test_session_cookie_and_security_headers(loop: Loop, ada: User) -> None:
    cookies = {c["name"]: c for c in ada.context.cookies()}
    session = cookies["loopwise_console"]
    assert session["httpOnly"] is True and session["sameSite"] == "Strict"
    assert loop.tokens.secrets["admin"] not in session["value"]  # encrypted, not readable
    response = ada.context.request.get(f"{ada.base}/use-cases")
    headers = response.headers
    assert "default-src 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff"
    assert headers["cache-control"] == "no-store"
    # A form without the session's CSRF token, or posted from another site, is refused.
    for form, extra in (({"enabled": "on", "reason": "csrf test"}, {}),
                        ({"enabled": "on", "reason": "csrf test", "csrf": "forged"}, {}),
                        ({"enabled": "on", "reason": "csrf test",
                          "csrf": _csrf(ada)}, {"origin": "http://evil.example"})):
        refused = ada.context.request.post(f"{ada.base}/use-cases/{USE_CASE}/kill-switch",
                                           form=form, headers=extra)
        assert refused.status == 403, form
        assert "could not be verified" in refused.text()
    with loop.client() as client:
        assert not client.get_use_case(USE_CASE).kill_switch


def _csrf(user: User) -> str:
    user.visit(f"/use-cases/{USE_CASE}")
    return user.page.locator("form[data-form='kill-switch'] input[name=csrf]").get_attribute("value")


def test_use_cases_page_shows_the_figures_of_the_api(loop: Loop, ada: User) -> None:
    page = ada.visit("/use-cases")
    with loop.client() as client:
        listed = {u.blueprint.use_case: u for u in client.list_use_cases()}
        stats = client.get_stats(USE_CASE)
    rows = page.locator("table[data-table='use-cases'] tbody tr")
    assert sorted(rows.evaluate_all("rows => rows.map(r => r.dataset.useCase)")) == sorted(listed)
    row = page.locator(f"tr[data-use-case='{USE_CASE}']")
    assert ada.field("version", row) == f"v{listed[USE_CASE].version}"
    assert number(ada.field("decisions", row)) == stats.decisions
    assert math.isclose(number(ada.field("join-rate", row)), pct(stats.join_rate), abs_tol=0.051)
    assert number(ada.field("fallbacks", row)) == stats.fallback_decisions
    ada.assert_no_console_error()


def test_use_case_versions_diff_and_audit_trail(loop: Loop, ada: User) -> None:
    page = ada.visit(f"/use-cases/{USE_CASE}")
    with loop.client() as client:
        current = client.get_use_case(USE_CASE)
        changes = client.use_case_changes(USE_CASE)
    assert page.locator("table[data-table='versions'] tbody tr").evaluate_all(
        "rows => rows.map(r => Number(r.dataset.version))") == list(range(current.version, 0, -1))
    assert "policy.epsilon 0.3 → 0.2" in page.locator("tr[data-version='2']").inner_text()
    audit = page.locator("table[data-table='audit'] tbody tr")
    assert audit.count() == len(changes)
    assert [audit.nth(i).locator("[data-field=change]").inner_text() for i in range(audit.count())] == \
        [c.change for c in reversed(changes)]
    assert [audit.nth(i).locator("[data-field=author]").inner_text() for i in range(audit.count())] == \
        [c.author for c in reversed(changes)]
    ada.assert_no_console_error()
    page.click("text=Show the difference")  # v1 against v2 by default
    page.wait_for_url(re.compile(r".*/diff\?from=1&to=2$"))
    changed = page.locator("table[data-table='changes'] tbody tr")
    assert changed.evaluate_all("rows => rows.map(r => r.dataset.path)") == ["policy.epsilon"]
    assert changed.locator("td.old").inner_text() == "0.3" and changed.locator("td.new").inner_text() == "0.2"
    diff = page.locator("pre.diff").inner_text()
    assert "-  epsilon: 0.3" in diff and "+  epsilon: 0.2" in diff
    ada.assert_no_console_error()


def test_live_page_polls_stats_and_draws_charts(loop: Loop, ada: User) -> None:
    page = ada.visit(f"/use-cases/{USE_CASE}/live")
    assert page.locator("meta[http-equiv=refresh]").count() == 1  # reloads by itself
    page = ada.visit(f"/use-cases/{USE_CASE}/live?auto=0")
    with loop.client() as client:
        stats = client.get_stats(USE_CASE)
        assert number(ada.field("decisions")) == stats.decisions
        assert math.isclose(number(ada.field("join-rate")), pct(stats.join_rate), abs_tol=0.006)
        assert number(ada.field("outcomes")) == stats.outcomes
        assert number(ada.field("fallback-decisions")) == stats.fallback_decisions
        assert math.isclose(number(ada.field("fallback-share")),
                            pct(stats.fallback_decisions / stats.decisions), abs_tol=0.006)
        assert ada.field("drift-status") == stats.drift.status.replace("_", " ")
        assert "keeps the last 30 minutes in its memory" in ada.field("history-note")
        charts = page.locator("figure.chart img")
        assert charts.count() == 5
        for i in range(5):
            assert charts.nth(i).get_attribute("src").startswith("data:image/svg+xml;base64,")
            assert charts.nth(i).evaluate("img => img.complete && img.naturalWidth > 0")

        # New traffic: 500 decisions of the model in one batch. The console's next polls
        # count them and sample their exploration flags (the samples recorded since the
        # batch hold its decisions and no other).
        world = loop.world
        version = client.get_use_case(USE_CASE).version
        before, started = stats.decisions, time.time()
        batch = client.decide_batch(USE_CASE, version, list(world.feature_names),
                                    world.sample_units(500).matrix)
        explored = float(np.mean(batch.explored))
        deadline = time.monotonic() + 40
        while True:
            page = ada.visit(f"/use-cases/{USE_CASE}/live?auto=0")
            samples = [(rows, float(share)) for at, rows, share in page.locator(
                "table[data-table='history'] tbody tr").evaluate_all(
                "rows => rows.map(r => [Number(r.dataset.time), Number(r.dataset.sampled), r.dataset.exploration])")
                if at >= started and rows > 0]
            if sum(rows for rows, _ in samples) >= 500:
                break
            assert time.monotonic() < deadline, samples
            page.wait_for_timeout(1000)
        assert sum(rows for rows, _ in samples) == 500
        assert math.isclose(sum(rows * share for rows, share in samples) / 500, explored, abs_tol=1e-9)
        assert math.isclose(number(ada.field("exploration-share")), pct(samples[0][1]), abs_tol=0.051)
        stats = client.get_stats(USE_CASE)
        assert stats.decisions == before + 500
        assert number(ada.field("decisions")) == stats.decisions
    rates = [number(text) for text in page.locator("table[data-table='history'] tbody tr td:nth-child(3)")
             .all_text_contents() if text.strip() not in ("—", "")]
    assert max(rates) > 0
    ada.assert_no_console_error()


def test_models_page_shows_lineage_metrics_and_deployment_audit(loop: Loop, ada: User) -> None:
    page = ada.visit(f"/use-cases/{USE_CASE}/models")
    with loop.client() as client:
        models = client.list_models(USE_CASE)
        audit = client.list_deployment_audit(USE_CASE)
        try:
            rollout = client.get_rollout(USE_CASE)
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.NOT_FOUND
            rollout = None
    assert page.locator("table[data-table='models'] tbody tr").evaluate_all(
        "rows => rows.map(r => Number(r.dataset.model))") == [m.version for m in models]
    for model in models:
        row = page.locator(f"tr[data-model='{model.version}']")
        assert number(ada.field("training-rows", row)) == model.training_rows
        for name, value in model.metrics.items():
            assert math.isclose(number(row.locator(f"[data-metric='{name}']").inner_text()), value,
                                rel_tol=1e-3, abs_tol=1e-4), name
        expected = (f"v{model.version} ← v{model.parent_version}" if model.parent_version else "first model")
        assert ada.field("lineage", row).startswith(expected)
    assert "production" in page.locator(f"tr[data-model='{loop.model_version}']").inner_text()
    assert ada.field("production") == f"model v{loop.model_version}"
    assert number(ada.field("revision")) == audit[-1].revision
    entries = page.locator("table[data-table='deployment-audit'] tbody tr")
    assert entries.count() == len(audit)
    assert entries.first.locator("[data-field=action]").inner_text() == audit[-1].action
    if rollout is None:
        assert "No automatic rollout" in ada.field("rollout-step")
    else:
        assert ada.field("rollout-model").startswith(f"v{rollout.model_version}")
    ada.assert_no_console_error()


def test_decision_page_shows_features_probabilities_outcomes_and_lineage(loop: Loop, ada: User) -> None:
    page = ada.visit(f"/use-cases/{USE_CASE}/decisions?id={loop.decision_id}")
    with loop.client() as client:
        reply = client.feedback_stub.GetDecision(
            fpb.GetDecisionRequest(use_case=USE_CASE, decision_id=loop.decision_id), timeout=10)
        blueprint = client.get_use_case(USE_CASE, reply.decision.blueprint_version).blueprint
    record = reply.decision
    assert ada.field("decision-id") == record.decision_id
    assert ada.field("action") == record.action
    assert ada.field("model-version").startswith(f"v{record.model_version}")
    for action, probability in zip(blueprint.actions, record.action_probabilities, strict=True):
        row = page.locator(f"tr[data-action='{action}']")
        assert math.isclose(number(ada.field("probability", row)), probability, abs_tol=1e-6)
    values = np.frombuffer(record.features, "<f4")
    specs = {f.name: f for f in blueprint.features}
    for name, value in zip(reply.feature_names, values, strict=True):
        shown = ada.field("value", page.locator(f"tr[data-feature='{name}']"))
        if specs[name].vocabulary:
            assert shown == specs[name].vocabulary[int(value)]
        else:
            assert math.isclose(number(shown), float(value), rel_tol=1e-5, abs_tol=1e-5), name
    assert math.isclose(number(ada.field("reward")), reply.reward, abs_tol=1e-6)
    assert ada.field("window") == ("closed" if reply.window_closed else "still open")
    assert [number(t) for t in page.locator("[data-field=outcome-value]").all_inner_texts()] == \
        [o.value for o in reply.outcomes]
    lineage = dict(zip(page.locator("table[data-table='lineage'] th").all_inner_texts(),
                       page.locator("table[data-table='lineage'] td").all_inner_texts(), strict=True))
    assert lineage == dict(reply.model_lineage)
    ada.assert_no_console_error()
    ada.visit(f"/use-cases/{USE_CASE}/decisions?id=not-a-uuid", status=400)
    assert "a decision id is a UUID" in ada.field("problem-details")
    ada.assert_no_console_error(expected_status=400)


def test_reports_gallery_report_frame_and_download(loop: Loop, ada: User) -> None:
    page = ada.visit("/reports")
    with loop.client() as client:
        report = client.get_report(loop.report_id, USE_CASE)
    result = report.result
    card = page.locator(f"article[data-report='{loop.report_id}']")
    assert math.isclose(number(ada.field("ate", card)), result.ate, rel_tol=1e-3, abs_tol=1e-4)
    assert math.isclose(number(ada.field("ate-ci-lower", card)), result.ate_ci_lower, rel_tol=1e-3, abs_tol=1e-4)
    assert math.isclose(number(ada.field("ate-ci-upper", card)), result.ate_ci_upper, rel_tol=1e-3, abs_tol=1e-4)
    assert number(ada.field("rows", card)) == result.rows
    ada.assert_no_console_error()
    card.locator("h2 a").click()
    page.wait_for_url(f"{ada.base}/use-cases/{USE_CASE}/reports/{loop.report_id}")
    frame = page.locator("iframe.report")
    assert frame.get_attribute("sandbox") == ""  # no scripts, no same-origin access
    assert "Treatment effects" in page.frame_locator("iframe.report").locator("h1").inner_text()
    framed = ada.context.request.get(f"{ada.base}/use-cases/{USE_CASE}/reports/{loop.report_id}/page")
    assert framed.body() == report.html
    assert framed.headers["content-security-policy"].startswith("sandbox")
    download = ada.context.request.get(f"{ada.base}/use-cases/{USE_CASE}/reports/{loop.report_id}/download")
    assert download.headers["content-type"] == "application/octet-stream"
    assert download.headers["content-disposition"].startswith("attachment;")
    assert download.body() == report.html
    ada.assert_no_console_error()


def test_operations_pages_show_jobs_with_their_stages(loop: Loop, ada: User) -> None:
    page = ada.visit("/operations")
    with loop.client() as client:
        training = client.get_operation(loop.training_id, USE_CASE, service="trainer")
        effects = client.get_operation(loop.effects_id, USE_CASE, service="evaluator")
    for op in (training, effects):
        row = page.locator(f"tr[data-operation='{op.id}']")
        assert ada.field("state", row) == "succeeded"
        assert ada.field("stage", row).startswith(op.stage)
    ada.assert_no_console_error()
    page = ada.visit(f"/use-cases/{USE_CASE}/operations/trainer/{loop.training_id}")
    trained = operation_result(training)
    stages = page.locator("table[data-table='stages'] tbody tr td:first-child").all_inner_texts()
    assert stages == [s for s in STAGES if s in trained.stage_seconds]
    assert ada.field("model-version") == f"v{trained.model.version}"
    ada.assert_no_console_error()
    page = ada.visit(f"/use-cases/{USE_CASE}/operations/evaluator/{loop.effects_id}")
    page.click("[data-field=report-link]")
    page.wait_for_url(f"{ada.base}/use-cases/{USE_CASE}/reports/{loop.report_id}")
    ada.assert_no_console_error()


def test_kill_switch_from_the_console_makes_decide_answer_the_default(loop: Loop, ada: User) -> None:
    page = ada.visit(f"/use-cases/{USE_CASE}")
    form = page.locator("form[data-form='kill-switch']")
    form.locator("input[name=reason]").fill("checkout incident drill")
    form.locator("button").click()
    page.wait_for_url(f"{ada.base}/use-cases/{USE_CASE}")
    assert ada.field("flash").startswith("Kill switch ON")
    assert ada.field("kill-switch") == "kill switch on"
    units = loop.world.sample_units(5)
    with loop.client() as client:
        default = client.get_use_case(USE_CASE).blueprint.default_decision.action
        for i in range(5):
            decided = client.decide(USE_CASE, units.features(i))
            assert decided.fallback and decided.action == default and decided.model_version == 0
        change = client.use_case_changes(USE_CASE)[-1]
        assert (change.change, change.author, change.reason) == (
            "kill_switch_on", "Ada (console)", "checkout incident drill")
    ada.assert_no_console_error()
    form = page.locator("form[data-form='kill-switch']")
    form.locator("input[name=reason]").fill("drill over")
    form.locator("button").click()
    page.wait_for_url(f"{ada.base}/use-cases/{USE_CASE}")
    assert ada.field("flash").startswith("Kill switch off")
    with loop.client() as client:
        decided = client.decide(USE_CASE, units.features(0))
        assert not decided.fallback and decided.model_version == loop.model_version
        change = client.use_case_changes(USE_CASE)[-1]
        assert (change.change, change.author) == ("kill_switch_off", "Ada (console)")
    ada.assert_no_console_error()


def test_blueprint_and_model_rollbacks_are_audited_with_their_author(loop: Loop, ada: User) -> None:
    page = ada.visit(f"/use-cases/{USE_CASE}")
    form = page.locator("form[data-form='rollback']")
    form.locator("select[name=to_version]").select_option("1")
    form.locator("input[name=reason]").fill("epsilon 0.2 explores too little")
    form.locator("button").click()
    page.wait_for_url(f"{ada.base}/use-cases/{USE_CASE}")
    assert "rolled back to v1" in ada.field("flash")
    with loop.client() as client:
        current = client.get_use_case(USE_CASE)
        assert current.version == 3 and math.isclose(current.blueprint.policy.epsilon, 0.3)
        change = client.use_case_changes(USE_CASE)[-1]
        assert (change.change, change.author) == ("rollback", "Ada (console)")
        assert change.reason.endswith("epsilon 0.2 explores too little")
    ada.assert_no_console_error()

    # The model deployment: refused while there is no earlier revision, with the reason shown.
    page = ada.visit(f"/use-cases/{USE_CASE}/models")
    form = page.locator("form[data-form='model-rollback']")
    form.locator("input[name=reason]").fill("nothing to go back to")
    form.locator("button").click()
    assert ada.field("problem-title") == "Not possible now"
    assert "no previous revision" in ada.field("problem-details")
    ada.assert_no_console_error(expected_status=409)
    with loop.client() as client:
        client.set_deployment(USE_CASE, 0, reason="console test: back to the default decision")
    page = ada.visit(f"/use-cases/{USE_CASE}/models")
    form = page.locator("form[data-form='model-rollback']")
    form.locator("input[name=reason]").fill("the model was better")
    form.locator("button").click()
    page.wait_for_url(f"{ada.base}/use-cases/{USE_CASE}/models")
    assert f"model v{loop.model_version} serves production" in ada.field("flash")
    with loop.client() as client:
        entry = client.list_deployment_audit(USE_CASE)[-1]
        assert entry.action == "rollback" and "the model was better (by Ada (console))" in entry.reason
        assert entry.request_id.startswith("console:Ada:")
    assert ada.field("production") == f"model v{loop.model_version}"
    ada.assert_no_console_error()


def test_training_and_effects_jobs_started_from_the_console(loop: Loop, ada: User) -> None:
    page = ada.visit(f"/use-cases/{USE_CASE}/models")
    page.locator("form[data-form='training'] button").click()
    page.wait_for_url(re.compile(rf".*/use-cases/{USE_CASE}/operations/trainer/[0-9a-f-]+$"))
    training_id = ada.field("operation-id")
    assert ada.field("flash") == f"Training started ({training_id})."
    assert ada.field("started-by") == "Ada"
    ada.assert_no_console_error()
    page = ada.visit(f"/use-cases/{USE_CASE}/reports")
    form = page.locator("form[data-form='effects']")
    form.locator("select[name=treatment]").select_option("offer")
    form.locator("select[name=control]").select_option("no_offer")
    form.locator("button").click()
    page.wait_for_url(re.compile(rf".*/use-cases/{USE_CASE}/operations/evaluator/[0-9a-f-]+$"))
    effects_id = ada.field("operation-id")
    page.goto("about:blank")  # the job pages reload every 3 s while the jobs are cancelled
    with loop.client() as client:
        for service, job in (("trainer", training_id), ("evaluator", effects_id)):
            op = client.get_operation(job, USE_CASE, service=service)
            assert op.request_id.startswith("console:Ada:") and op.use_case == USE_CASE
            client.cancel_operation(job, USE_CASE, service=service)  # spare the machine
    page = ada.visit(f"/use-cases/{USE_CASE}/operations")
    for job in (training_id, effects_id):
        assert ada.field("started-by", page.locator(f"tr[data-operation='{job}']")) == "Ada"
    ada.assert_no_console_error()


def test_a_token_of_another_use_case_sees_none_of_this_one(loop: Loop, console: ConsoleProcess,
                                                          open_browser: Any) -> None:
    bob = open_user(open_browser, console)
    bob.visit("/login")
    log_in(bob, loop.tokens.secrets["other-team"], "Bob", f"{OTHER} {USE_CASE}")
    bob.page.wait_for_url(f"{console.url}/use-cases")
    rows = bob.page.locator("table[data-table='use-cases'] tbody tr")
    assert rows.evaluate_all("rows => rows.map(r => r.dataset.useCase)") == [OTHER]
    assert f"Refused or unknown: {USE_CASE}" in bob.field("scoped-note")
    bob.assert_no_console_error()
    for path in ("/reports", "/operations"):
        page = bob.visit(path)
        assert page.locator(f"[data-report='{loop.report_id}']").count() == 0
        assert page.locator(f"[data-operation='{loop.training_id}']").count() == 0
        assert page.locator(f"[data-operation='{loop.effects_id}']").count() == 0
        assert USE_CASE in page.locator("p.note").inner_text()  # named at login, refused
        bob.assert_no_console_error()
    refused = [f"/use-cases/{USE_CASE}", f"/use-cases/{USE_CASE}/diff?from=1&to=2",
               f"/use-cases/{USE_CASE}/live", f"/use-cases/{USE_CASE}/models",
               f"/use-cases/{USE_CASE}/decisions", f"/use-cases/{USE_CASE}/decisions?id={loop.decision_id}",
               f"/use-cases/{USE_CASE}/reports", f"/use-cases/{USE_CASE}/reports/{loop.report_id}",
               f"/use-cases/{USE_CASE}/reports/{loop.report_id}/page",
               f"/use-cases/{USE_CASE}/reports/{loop.report_id}/download",
               f"/use-cases/{USE_CASE}/operations",
               f"/use-cases/{USE_CASE}/operations/trainer/{loop.training_id}",
               f"/use-cases/{USE_CASE}/operations/evaluator/{loop.effects_id}"]
    for path in refused:
        response = bob.context.request.get(console.url + path)
        assert response.status == 403, path
        assert "Your token is not allowed to do this" in response.text(), path
        assert "PERMISSION_DENIED" in response.text(), path
    page = bob.visit(f"/use-cases/{USE_CASE}/live", status=403)
    assert bob.field("problem-title") == "Your token is not allowed to do this"
    assert page.locator("figure.chart").count() == 0  # no history of this use case
    bob.assert_no_console_error(expected_status=403)
    # Through its own use case, another use case's items are not found.
    for path in (f"/use-cases/{OTHER}/reports/{loop.report_id}",
                 f"/use-cases/{OTHER}/operations/trainer/{loop.training_id}",
                 f"/use-cases/{OTHER}/decisions?id={loop.decision_id}"):
        response = bob.context.request.get(console.url + path)
        assert response.status == 404, path
        assert "NOT_FOUND" in response.text() and "Treatment effects" not in response.text(), path
    # Its own form, posted to this use case: refused by the decision service.
    page = bob.visit(f"/use-cases/{OTHER}")
    csrf = page.locator("form[data-form='kill-switch'] input[name=csrf]").get_attribute("value")
    response = bob.context.request.post(f"{console.url}/use-cases/{USE_CASE}/kill-switch",
                                        form={"csrf": csrf, "enabled": "on", "reason": "not mine"})
    assert response.status == 403 and "PERMISSION_DENIED" in response.text()
    with loop.client() as client:
        assert not client.get_use_case(USE_CASE).kill_switch
        assert "Bob (console)" not in [c.author for c in client.use_case_changes(USE_CASE)]
    bob.assert_no_console_error()


def test_logout_ends_the_session(ada: User) -> None:
    ada.visit("/use-cases")
    ada.page.click("form.logout button")
    ada.page.wait_for_url(f"{ada.base}/login")
    ada.visit("/use-cases")
    assert ada.page.url.startswith(f"{ada.base}/login?next=")
    assert "loopwise_console" not in {c["name"] for c in ada.context.cookies()}
    ada.assert_no_console_error()
