"""The console's web application: routes, sessions, CSRF, security headers, pages.

Every page is rendered on the server from the answers of the services' gRPC API, read
through :class:`loopwise.AsyncClient` with the token of the logged-in user
(:mod:`loopwise.console.gateway`); a refused call becomes a page that says why. The
actions are POST forms with a CSRF token; each names its author (the user's name) and
reason in the request fields the API has for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import secrets
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import quote, urlsplit

import grpc
import jinja2
import numpy as np
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from loopwise.client import AsyncClient, operation_result
from loopwise.clock import Clock, uuid7_time_ms
from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.common.v1 import operation_pb2 as op_pb
from loopwise.console import blueprints, charts
from loopwise.console.gateway import Clients, Problem, problem_of
from loopwise.console.live import POLL_INTERVAL_S, LiveMonitor, Sample
from loopwise.console.sessions import (
    FLASH_COOKIE,
    FLASH_TTL_S,
    LOGIN_COOKIE,
    LOGIN_TTL_S,
    MAX_USE_CASES,
    SESSION_COOKIE,
    SESSION_TTL_S,
    Codec,
    Session,
    clean_name,
    name_slug,
)
from loopwise.evaluator.v1 import evaluator_service_pb2 as epb
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.names import USE_CASE_RE
from loopwise.settings import Settings
from loopwise.trainer.v1 import trainer_service_pb2 as tpb

log = logging.getLogger("loopwise.console")

PACKAGE = resources.files("loopwise.console")
ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
DECISION_ID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
MAX_REASON = 500
VERSIONS_SHOWN = 30
ESTIMATORS = ("linear_dml", "causal_forest_dml", "dr_learner", "auto")
SERVICES_OF_JOBS = {"trainer": "training", "evaluator": "effects"}
# The deployment a page shows is read from WatchDeployments' first message.
DEPLOYMENT_WAIT_S = 5.0
PARALLEL_CALLS = 8

CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:; frame-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
# An effect report is a self-contained page (inline style, data: images, no script),
# shown in a sandboxed frame of the console.
REPORT_CSP = ("sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
              "frame-ancestors 'self'; base-uri 'none'; form-action 'none'")
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
}


class BadInput(ValueError):
    """A request the console refuses before calling any service (HTTP 400)."""


# ---------------------------------------------------------------- formatting


def _ts(value: Any) -> str:
    """A protobuf Timestamp (or epoch seconds) as UTC text; "—" when unset."""
    if value is None:
        return "—"
    if isinstance(value, int | float):
        seconds = float(value)
    elif value.seconds or value.nanos:
        seconds = value.seconds + value.nanos / 1e9
    else:
        return "—"
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _pct(value: float | None, digits: int = 1) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return f"{100 * value:.{digits}f}%"


def _num(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 1e15):
        return str(int(value))
    if not math.isfinite(value):
        return str(value)
    if abs(value) < 1e-3 or abs(value) >= 1e6:
        return f"{value:.{digits}g}"
    return f"{value:.{digits}f}".rstrip("0").rstrip(".")


def _op_state(value: int) -> str:
    return op_pb.OperationState.Name(value).removeprefix("OPERATION_STATE_").lower()


def _enum_name(enum: Any, value: int, prefix: str) -> str:
    try:
        return enum.Name(value).removeprefix(prefix).lower()
    except ValueError:
        return str(value)


def _started_by(request_id: str) -> str:
    """Who started a job from the console (its request id is console:<name>:<id>)."""
    parts = request_id.split(":")
    return parts[1] if len(parts) == 3 and parts[0] == "console" else ""


def _duration_s(value: Any) -> str:
    seconds = value.seconds + value.nanos / 1e9
    if not seconds:
        return "—"
    if seconds % 3600 == 0:
        return f"{int(seconds // 3600)} h"
    if seconds % 60 == 0:
        return f"{int(seconds // 60)} min"
    return f"{seconds:g} s"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(PACKAGE / "templates")),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters.update(ts=_ts, pct=_pct, num=_num, state=_op_state, q=lambda v: quote(str(v), safe=""),
                       duration=_duration_s, started_by=_started_by)
    env.globals.update(
        kind_name=lambda v: _enum_name(bp.DecisionKind, v, "DECISION_KIND_"),
        feature_type=lambda v: _enum_name(bp.FeatureType, v, "FEATURE_TYPE_"),
        policy_type=lambda v: _enum_name(bp.PolicyType, v, "POLICY_TYPE_"),
        aggregation=lambda v: _enum_name(bp.RewardAggregation, v, "REWARD_AGGREGATION_"),
        rollout_step=lambda v: _enum_name(tpb.RolloutStep, v, "ROLLOUT_STEP_"),
        estimator_name=lambda v: _enum_name(epb.Estimator, v, "ESTIMATOR_"),
    )
    return env


# ---------------------------------------------------------------- the application


class SecurityHeaders:
    """Adds the console's security headers to every response that does not set its own."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.decode().lower() for k, _ in headers}
                for key, value in SECURITY_HEADERS.items():
                    if key not in present:
                        headers.append((key.encode(), value.encode()))
                if "cache-control" not in present and not scope["path"].startswith("/static/"):
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


@dataclass
class ConsoleState:
    """What the process keeps: settings, SDK clients by token, sessions, live history."""

    settings: Settings
    clients: Clients = field(init=False)
    codec: Codec = field(init=False)
    monitor: LiveMonitor = field(init=False)
    templates: Jinja2Templates = field(init=False)
    clock: Clock = field(init=False)

    def __post_init__(self) -> None:
        self.clients = Clients(self.settings)
        self.codec = Codec(self.settings.console_session_key.get_secret_value())
        self.monitor = LiveMonitor(self.clients.for_token)
        self.templates = Jinja2Templates(env=_environment())
        self.clock = Clock.from_settings(self.settings)

    def session(self, request: Request) -> Session | None:
        """The logged-in user of a request, if any."""
        return self.codec.load_session(request.cookies.get(SESSION_COOKIE))

    def set_cookie(self, response: Response, name: str, value: str, max_age: int) -> None:
        """An HttpOnly, SameSite=Strict cookie (Secure with console_secure_cookies)."""
        response.set_cookie(name, value, max_age=max_age, path="/", httponly=True,
                            samesite="strict", secure=self.settings.console_secure_cookies)

    def delete_cookie(self, response: Response, name: str) -> None:
        """Remove a cookie set by :meth:`set_cookie`."""
        response.delete_cookie(name, path="/", httponly=True, samesite="strict",
                               secure=self.settings.console_secure_cookies)


@dataclass
class Ctx:
    """One request of a logged-in user: the SDK client with their token, the form."""

    request: Request
    state: ConsoleState
    session: Session
    client: AsyncClient
    form: FormData | None = None

    def render(self, name: str, status: int = 200, **context: Any) -> Response:
        """A page with the base context (user, CSRF token, flash message)."""
        flash = self.state.codec.load(self.request.cookies.get(FLASH_COOKIE), FLASH_TTL_S)
        context.setdefault("uc", None)
        context.setdefault("section", "")
        response = self.state.templates.TemplateResponse(
            self.request, name, {"user": self.session.name, "csrf": self.session.csrf,
                                 "flash": flash, **context},
            status_code=status)
        if FLASH_COOKIE in self.request.cookies:
            self.state.delete_cookie(response, FLASH_COOKIE)
        return response

    def redirect(self, url: str, message: str = "", kind: str = "ok") -> Response:
        """303 to ``url``, with a message shown once on the next page."""
        response = RedirectResponse(url, status_code=303)
        if message:
            self.state.set_cookie(response, FLASH_COOKIE,
                                  self.state.codec.dump({"text": message, "kind": kind}), FLASH_TTL_S)
        return response

    def problem(self, problem: Problem, uc: str | None = None) -> Response:
        """An error page for a refused or failed call."""
        return self.render("error.html", status=problem.status, problem=problem, uc=uc)

    def field(self, name: str, required: bool = True, limit: int = MAX_REASON) -> str:
        """A trimmed text field of the form."""
        value = str((self.form or {}).get(name) or "").strip()
        if required and not value:
            raise BadInput(f"'{name}' is required")
        if len(value) > limit:
            raise BadInput(f"'{name}' is longer than {limit} characters")
        return value

    def request_id(self) -> str:
        """A request id naming the user: console:<name>:<uuid7>."""
        return f"console:{name_slug(self.session.name)}:{self.client.clock.new_id()}"


Handler = Callable[[Ctx], Awaitable[Response]]


def _state(request: Request) -> ConsoleState:
    return request.app.state.console


def _safe_next(value: str | None) -> str:
    """A local path to go to after login (never another site)."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/use-cases"


def _same_origin(request: Request) -> bool:
    """The form was posted from a page of this console (Origin, else Referer, matches)."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source:
        return True  # old clients send neither; the CSRF token still has to match
    return urlsplit(source).netloc == request.headers.get("host", "")


def _use_case(request: Request) -> str:
    name = request.path_params.get("uc", "")
    if not USE_CASE_RE.fullmatch(name):
        raise BadInput("not a use case name")
    return name


def page(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A page for logged-in users; RPC errors become error pages."""

    async def endpoint(request: Request) -> Response:
        state = _state(request)
        session = state.session(request)
        if session is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
        ctx = Ctx(request, state, session, state.clients.for_token(session.token))
        return await _run(ctx, handler)

    return endpoint


def action(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A POST action of a logged-in user, with the CSRF check."""

    async def endpoint(request: Request) -> Response:
        state = _state(request)
        session = state.session(request)
        if session is None:
            return PlainTextResponse("log in first", status_code=401)
        form = await request.form()
        ctx = Ctx(request, state, session, state.clients.for_token(session.token), form)
        if not session.csrf_ok(str(form.get("csrf") or "")) or not _same_origin(request):
            log.warning("console: a form of %r failed the CSRF check (%s)", session.name, request.url.path)
            return ctx.problem(Problem(403, "The form could not be verified", "CSRF",
                                       "Reload the page and submit the form again."))
        return await _run(ctx, handler)

    return endpoint


async def _run(ctx: Ctx, handler: Handler) -> Response:
    uc = ctx.request.path_params.get("uc")
    try:
        return await handler(ctx)
    except BadInput as error:
        return ctx.problem(Problem(400, "Bad request", "INVALID_INPUT", str(error)), None)
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.UNAUTHENTICATED:
            ctx.state.clients.forget(ctx.session.token)
            response = RedirectResponse("/login?expired=1", status_code=303)
            ctx.state.delete_cookie(response, SESSION_COOKIE)
            return response
        problem = problem_of(error)
        if ctx.request.method == "POST":
            log.warning("console action %s by %r refused: %s %s", ctx.request.url.path,
                        ctx.session.name, problem.code, problem.details)
        elif problem.status >= 500:
            log.warning("console page %s: %s %s", ctx.request.url.path, problem.code, problem.details)
        return ctx.problem(problem, uc if isinstance(uc, str) and USE_CASE_RE.fullmatch(uc) else None)


async def _gather_limited(calls: list[Awaitable[Any]]) -> list[Any]:
    """Await calls at most PARALLEL_CALLS at a time; exceptions are returned."""
    semaphore = asyncio.Semaphore(PARALLEL_CALLS)

    async def one(call: Awaitable[Any]) -> Any:
        async with semaphore:
            return await call

    return await asyncio.gather(*(one(c) for c in calls), return_exceptions=True)


def _refused(error: BaseException) -> bool:
    return isinstance(error, grpc.RpcError) and error.code() in (
        grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND)


async def _optional(call: Awaitable[Any]) -> tuple[Any, str]:
    """(answer, "") or (None, why) when the call was refused or found nothing."""
    try:
        return await call, ""
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.PERMISSION_DENIED:
            return None, "Your token has no scope to read this."
        if error.code() == grpc.StatusCode.NOT_FOUND:
            return None, ""
        raise


# ---------------------------------------------------------------- login


def _login_page(request: Request, message: str, status: int, next_url: str, name: str = "",
                use_cases: str = "") -> Response:
    """The login form, with a fresh nonce in a short-lived cookie (login CSRF)."""
    state = _state(request)
    nonce = secrets.token_urlsafe(24)
    response = state.templates.TemplateResponse(
        request, "login.html",
        {"nonce": nonce, "next": next_url, "message": message, "name": name, "use_cases": use_cases,
         "services": {s: state.settings.address_of(s) for s in ("decision", "feedback", "trainer", "evaluator")},
         "user": None, "csrf": "", "flash": None, "uc": None, "section": ""},
        status_code=status)
    state.set_cookie(response, LOGIN_COOKIE, state.codec.dump({"n": nonce}), LOGIN_TTL_S)
    return response


async def login_form(request: Request) -> Response:
    message = ("Your token was refused (unknown or revoked). Log in again."
               if request.query_params.get("expired") else "")
    return _login_page(request, message, 200, _safe_next(request.query_params.get("next")))


async def login(request: Request) -> Response:
    state = _state(request)
    form = await request.form()
    cookie = state.codec.load(request.cookies.get(LOGIN_COOKIE), LOGIN_TTL_S) or {}
    nonce = str(form.get("nonce") or "")
    next_url = _safe_next(str(form.get("next") or ""))
    token = str(form.get("token") or "").strip()
    name = clean_name(str(form.get("name") or ""))
    named = [u for u in re.split(r"[\s,]+", str(form.get("use_cases") or "")) if u]

    def again(message: str, status: int) -> Response:
        return _login_page(request, message, status, next_url, name, " ".join(named))

    if not nonce or not secrets.compare_digest(nonce, str(cookie.get("n") or "")) or not _same_origin(request):
        return again("The login form expired; try again.", 403)
    if not token or not name:
        return again("Enter your token and your name.", 400)
    bad = [u for u in named if not USE_CASE_RE.fullmatch(u)]
    if bad:
        return again(f"Not a use case name: {bad[0]}", 400)
    if len(named) > MAX_USE_CASES:
        return again(f"Name at most {MAX_USE_CASES} use cases.", 400)
    client = state.clients.for_token(token)
    try:
        await client.list_use_cases()
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.UNAUTHENTICATED:
            state.clients.forget(token)
            log.warning("console: a login as %r with a refused token", name)
            return again("This token was refused: it is unknown or revoked.", 401)
        if error.code() != grpc.StatusCode.PERMISSION_DENIED:  # a token scoped to some use cases
            state.clients.forget(token)
            return again(f"The decision service could not be asked ({error.code().name}: "
                         f"{error.details()}).", 503)
    session = Session(token=token, name=name, use_cases=list(dict.fromkeys(named)))
    log.info("console: %r logged in", name)
    response = RedirectResponse(next_url, status_code=303)
    state.set_cookie(response, SESSION_COOKIE, state.codec.dump_session(session), SESSION_TTL_S)
    state.delete_cookie(response, LOGIN_COOKIE)
    return response


@action
async def logout(ctx: Ctx) -> Response:
    ctx.state.monitor.forget_token(ctx.session.token)
    ctx.state.clients.forget(ctx.session.token)
    response = RedirectResponse("/login", status_code=303)
    ctx.state.delete_cookie(response, SESSION_COOKIE)
    log.info("console: %r logged out", ctx.session.name)
    return response


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


async def home(request: Request) -> Response:
    return RedirectResponse("/use-cases", status_code=303)


# ---------------------------------------------------------------- use cases


async def _visible_use_cases(ctx: Ctx) -> tuple[list[Any], bool, list[str]]:
    """(use cases, listed with ListUseCases, names refused) for the user's token."""
    try:
        return await ctx.client.list_use_cases(), True, []
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.PERMISSION_DENIED:
            raise
    answers = await _gather_limited([ctx.client.get_use_case(n) for n in ctx.session.use_cases])
    found, refused = [], []
    for name, answer in zip(ctx.session.use_cases, answers, strict=True):
        if isinstance(answer, BaseException):
            if not _refused(answer):
                raise answer
            refused.append(name)
        else:
            found.append(answer)
    return found, False, refused


@page
async def use_cases(ctx: Ctx) -> Response:
    found, listed, refused = await _visible_use_cases(ctx)
    found.sort(key=lambda u: u.blueprint.use_case)
    stats = await _gather_limited([ctx.client.get_stats(u.blueprint.use_case) for u in found])
    rows = [{"uc": u, "stats": None if isinstance(s, BaseException) else s} for u, s in zip(found, stats, strict=True)]
    return ctx.render("use_cases.html", rows=rows, listed=listed, refused=refused, section="use-cases")


@page
async def open_use_case(ctx: Ctx) -> Response:
    name = ctx.request.query_params.get("name", "").strip()
    if not USE_CASE_RE.fullmatch(name):
        raise BadInput("not a use case name")
    return RedirectResponse(f"/use-cases/{name}", status_code=303)


def _version_rows(versions: list[Any]) -> list[dict[str, Any]]:
    """Versions newest first, each with what changed from the one before."""
    rows = []
    by_number = {v.version: v for v in versions}
    for version in sorted(versions, key=lambda v: -v.version):
        before = by_number.get(version.version - 1)
        changed = blueprints.changes(before.blueprint, version.blueprint) if before else None
        rows.append({"v": version, "changes": changed})
    return rows


@page
async def use_case(ctx: Ctx) -> Response:
    name = _use_case(ctx.request)
    current = await ctx.client.get_use_case(name)
    latest = current.latest_version or current.version
    numbers = list(range(max(1, latest - VERSIONS_SHOWN + 1), latest + 1))
    answers = await _gather_limited([ctx.client.get_use_case(name, n) for n in numbers])
    versions = [a for a in answers if not isinstance(a, BaseException)]
    changes, changes_note = await _optional(ctx.client.use_case_changes(name))
    return ctx.render("use_case.html", uc=name, current=current, blueprint=current.blueprint,
                      versions=_version_rows(versions), changes=list(reversed(changes or [])),
                      changes_note=changes_note, yaml=blueprints.blueprint_yaml(current.blueprint),
                      section="overview")


def _int_param(ctx: Ctx, name: str, default: int | None = None) -> int:
    value = ctx.request.query_params.get(name)
    if value is None and default is not None:
        return default
    try:
        return int(value or "")
    except ValueError:
        raise BadInput(f"'{name}' must be a version number") from None


@page
async def diff(ctx: Ctx) -> Response:
    name = _use_case(ctx.request)
    current = await ctx.client.get_use_case(name)
    latest = current.latest_version or current.version
    new = _int_param(ctx, "to", latest)
    old = _int_param(ctx, "from", max(1, new - 1))
    if not (1 <= old <= latest and 1 <= new <= latest):
        raise BadInput(f"versions go from 1 to {latest}")
    first, second = await asyncio.gather(ctx.client.get_use_case(name, old),
                                         ctx.client.get_use_case(name, new))
    return ctx.render("diff.html", uc=name, old=first, new=second, latest=latest,
                      changes=blueprints.changes(first.blueprint, second.blueprint),
                      lines=blueprints.unified(first.blueprint, second.blueprint, f"v{old}", f"v{new}"),
                      section="overview")


# ---------------------------------------------------------------- live


def _live_charts(history: list[Sample], stats: fpb.GetStatsResponse) -> list[dict[str, str]]:
    now = time.time()
    x = [(s.time - now) / 60.0 for s in history]
    drift = stats.drift if stats.HasField("drift") else None
    latest = history[-1] if history else None
    top = sorted((latest.feature_psi if latest else {}).items(), key=lambda kv: -kv[1])[:4]
    feature_thresholds = [("threshold", drift.feature_psi_threshold)] if drift and drift.feature_psi_threshold else []
    prediction_thresholds = ([("threshold", drift.prediction_psi_threshold)]
                             if drift and drift.prediction_psi_threshold else [])
    line = charts.Line
    return [
        {"id": "decisions", "title": "Decisions per second",
         "src": charts.line_chart("Decisions per second", x, [line("decisions/s", [s.decisions_per_s for s in history])])},
        {"id": "join-rate", "title": "Join rate",
         "src": charts.line_chart("Join rate (decisions with an outcome)", x,
                                  [line("join rate", [s.join_rate for s in history])], percent=True)},
        {"id": "shares", "title": "Fallback and exploration shares",
         "src": charts.line_chart("Fallback and exploration shares", x,
                                  [line("fallback", [s.fallback_share for s in history]),
                                   line("exploration", [s.exploration_share for s in history])],
                                  percent=True)},
        {"id": "feature-drift", "title": "Feature drift (PSI)",
         "src": charts.line_chart("Feature drift (PSI)", x,
                                  [line("max over features", [s.max_feature_psi for s in history])]
                                  + [line(n, [s.feature_psi.get(n) for s in history]) for n, _ in top],
                                  thresholds=feature_thresholds)},
        {"id": "prediction-drift", "title": "Prediction drift (PSI)",
         "src": charts.line_chart("Prediction drift (PSI)", x,
                                  [line("prediction PSI", [s.prediction_psi for s in history])],
                                  thresholds=prediction_thresholds)},
    ]


@page
async def live(ctx: Ctx) -> Response:
    name = _use_case(ctx.request)
    stats = await ctx.client.get_stats(name)  # the user's own call authorises the history
    await ctx.state.monitor.viewed(name, ctx.session.token, stats)
    history = ctx.state.monitor.history(name)
    chart_list = await asyncio.to_thread(_live_charts, history, stats)
    latest = history[-1] if history else None
    explored = next((s for s in reversed(history) if s.exploration_share is not None), None)
    auto = ctx.request.query_params.get("auto", "1") != "0"
    return ctx.render("live.html", uc=name, stats=stats, history=list(reversed(history[-20:])),
                      points=len(history), charts=chart_list, latest=latest, explored=explored,
                      drift=stats.drift if stats.HasField("drift") else None, auto=auto,
                      interval=int(POLL_INTERVAL_S), refresh=int(2 * POLL_INTERVAL_S),
                      section="live")


# ---------------------------------------------------------------- models and deployments


async def _current_deployment(client: AsyncClient, name: str) -> tuple[tpb.Deployment | None, str]:
    """The deployment in force (WatchDeployments' first message), or why it is unknown."""
    call = client.trainer_stub.WatchDeployments(tpb.WatchDeploymentsRequest(use_cases=[name]),
                                                timeout=DEPLOYMENT_WAIT_S)
    try:
        async for update in call:
            if update.deployment.use_case == name:
                return update.deployment, ""
        return None, ""
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.PERMISSION_DENIED:
            return None, ("Reading the deployment in force needs a token with the decide or train "
                          "scope on every use case; the audit below shows each change.")
        if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            return None, ""
        raise
    finally:
        call.cancel()


def _lineage(models: list[tpb.Model]) -> dict[int, list[int]]:
    """Each model version's ancestors through parent_version, nearest first."""
    parents = {m.version: m.parent_version for m in models}
    out = {}
    for model in models:
        chain, seen, parent = [], {model.version}, model.parent_version
        while parent and parent not in seen:
            chain.append(parent)
            seen.add(parent)
            parent = parents.get(parent, 0)
        out[model.version] = chain
    return out


@page
async def models(ctx: Ctx) -> Response:
    name = _use_case(ctx.request)
    await ctx.client.get_use_case(name)
    found = await ctx.client.list_models(name)
    audit = await ctx.client.list_deployment_audit(name)
    rollout, rollout_note = await _optional(ctx.client.get_rollout(name))
    deployment, deployment_note = (None, "")
    if audit:
        deployment, deployment_note = await _current_deployment(ctx.client, name)
    roles: dict[int, list[str]] = {}
    if deployment is not None:
        if deployment.HasField("production"):
            roles.setdefault(deployment.production.version, []).append("production")
        if deployment.HasField("canary"):
            roles.setdefault(deployment.canary.version, []).append(
                f"canary {_pct(deployment.canary_share, 0)}")
        for shadow in deployment.shadows:
            roles.setdefault(shadow.version, []).append("shadow")
    return ctx.render("models.html", uc=name, models=found, audit=list(reversed(audit)),
                      rollout=rollout, rollout_note=rollout_note, deployment=deployment,
                      deployment_note=deployment_note, roles=roles, lineage=_lineage(found),
                      section="models")


# ---------------------------------------------------------------- decisions


def _features(record: fpb.DecisionRecord, names: list[str], blueprint: bp.Blueprint | None) -> list[dict[str, Any]]:
    count = len(record.features) // 4
    values = struct.unpack(f"<{count}f", record.features[:4 * count]) if count else ()
    specs = {f.name: f for f in blueprint.features} if blueprint is not None else {}
    rows = []
    for index, name in enumerate(names):
        value = values[index] if index < len(values) else math.nan
        spec = specs.get(name)
        categorical = spec is not None and spec.type == bp.FEATURE_TYPE_CATEGORICAL
        if math.isnan(value):
            shown = "missing"
        elif categorical:
            code = int(value)
            shown = spec.vocabulary[code] if 0 <= code < len(spec.vocabulary) else f"unknown (code {code})"
        else:
            shown = _num(float(np.float32(value)), 6)
        rows.append({"name": name, "value": shown, "type": "categorical" if categorical else "numeric",
                     "raw": value})
    return rows


@page
async def decision(ctx: Ctx) -> Response:
    name = _use_case(ctx.request)
    current = await ctx.client.get_use_case(name)
    decision_id = ctx.request.query_params.get("id", "").strip()
    context: dict[str, Any] = {"uc": name, "decision_id": decision_id, "found": None,
                               "recent": ctx.state.monitor.recent_decisions(name), "section": "decisions"}
    if decision_id:
        if not DECISION_ID_RE.fullmatch(decision_id):
            raise BadInput("a decision id is a UUID (e.g. 0190c0de-…)")
        reply = await ctx.client.feedback_stub.GetDecision(
            fpb.GetDecisionRequest(use_case=name, decision_id=decision_id), timeout=30)
        record = reply.decision
        version = current if record.blueprint_version == current.version else (
            await _optional(ctx.client.get_use_case(name, record.blueprint_version)))[0]
        blueprint = version.blueprint if version is not None else None
        actions = list(blueprint.actions) if blueprint is not None else []
        probabilities = [{"action": actions[i] if i < len(actions) else f"#{i}", "p": p,
                          "chosen": i == record.action_index}
                         for i, p in enumerate(record.action_probabilities)]
        time_ms = uuid7_time_ms(record.decision_id)
        context.update(found=record, reply=reply, probabilities=probabilities,
                       features=_features(record, list(reply.feature_names), blueprint),
                       decision_time=time_ms / 1000 if time_ms else None,
                       lineage=sorted(reply.model_lineage.items()))
    return ctx.render("decision.html", **context)


# ---------------------------------------------------------------- reports


async def _reports_of(ctx: Ctx, names: list[str] | None) -> tuple[list[epb.EstimateEffectsResult], list[str]]:
    """Reports of the named use cases (None: every use case, when the token may)."""
    if names is None:
        try:
            return await ctx.client.list_reports(""), []
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.PERMISSION_DENIED:
                raise
            names = ctx.session.use_cases
    answers = await _gather_limited([ctx.client.list_reports(n) for n in names])
    found, refused = [], []
    for name, answer in zip(names, answers, strict=True):
        if isinstance(answer, BaseException):
            if not _refused(answer):
                raise answer
            refused.append(name)
        else:
            found.extend(answer)
    found.sort(key=lambda r: (r.create_time.seconds, r.create_time.nanos), reverse=True)
    return found, refused


@page
async def reports(ctx: Ctx) -> Response:
    found, refused = await _reports_of(ctx, None)
    return ctx.render("reports.html", reports=found, refused=refused, section="reports", actions=None)


@page
async def use_case_reports(ctx: Ctx) -> Response:
    name = _use_case(ctx.request)
    current = await ctx.client.get_use_case(name)
    found = await ctx.client.list_reports(name)
    return ctx.render("reports.html", uc=name, reports=found, refused=[], section="reports",
                      actions=list(current.blueprint.actions), estimators=ESTIMATORS)


def _report_id(ctx: Ctx) -> str:
    value = ctx.request.path_params.get("report_id", "")
    if not ID_RE.fullmatch(value):
        raise BadInput("not a report id")
    return value


@page
async def report(ctx: Ctx) -> Response:
    name, report_id = _use_case(ctx.request), _report_id(ctx)
    reply = await ctx.client.get_report(report_id, name)
    return ctx.render("report.html", uc=name, report=reply.result, size=len(reply.html),
                      section="reports")


@page
async def report_page(ctx: Ctx) -> Response:
    name, report_id = _use_case(ctx.request), _report_id(ctx)
    reply = await ctx.client.get_report(report_id, name)
    return Response(reply.html, media_type="text/html; charset=utf-8",
                    headers={"content-security-policy": REPORT_CSP, "x-frame-options": "SAMEORIGIN"})


@page
async def report_download(ctx: Ctx) -> Response:
    name, report_id = _use_case(ctx.request), _report_id(ctx)
    reply = await ctx.client.get_report(report_id, name)
    filename = re.sub(r"[^A-Za-z0-9._-]", "_", f"{name}-report-{report_id}.html")
    return Response(reply.html, media_type="application/octet-stream",
                    headers={"content-disposition": f'attachment; filename="{filename}"',
                             "content-security-policy": REPORT_CSP})


# ---------------------------------------------------------------- operations


def _summary(operation: op_pb.Operation) -> dict[str, Any]:
    """What a finished job produced, for the tables."""
    if operation.state != op_pb.OPERATION_STATE_SUCCEEDED or not operation.HasField("result"):
        return {}
    try:
        result = operation_result(operation)
    except (ValueError, TypeError):
        return {}
    if isinstance(result, tpb.TrainingResult):
        return {"kind": "training", "result": result}
    return {"kind": "effects", "result": result}


async def _operations_of(ctx: Ctx) -> tuple[dict[str, list[op_pb.Operation]], list[str]]:
    """The jobs of every use case (when the token may list them all), else of the use
    cases named at login; and the names refused."""
    jobs: dict[str, list[op_pb.Operation]] = {"trainer": [], "evaluator": []}
    refused: list[str] = []
    for service in jobs:
        try:
            jobs[service] = await ctx.client.list_operations("", service=service, limit=50)  # type: ignore[arg-type]
            continue
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.PERMISSION_DENIED:
                raise
        names = ctx.session.use_cases
        answers = await _gather_limited([ctx.client.list_operations(n, service=service, limit=50)  # type: ignore[arg-type]
                                         for n in names])
        for name, answer in zip(names, answers, strict=True):
            if isinstance(answer, BaseException):
                if not _refused(answer):
                    raise answer
                if name not in refused:
                    refused.append(name)
            else:
                jobs[service].extend(answer)
        jobs[service].sort(key=lambda o: (o.create_time.seconds, o.create_time.nanos), reverse=True)
    return jobs, refused


def _operation_rows(jobs: dict[str, list[op_pb.Operation]]) -> dict[str, list[dict[str, Any]]]:
    return {service: [{"op": o, "service": service, "kind": "", "result": None, **_summary(o)}
                      for o in ops]
            for service, ops in jobs.items()}


def _running(jobs: dict[str, list[op_pb.Operation]]) -> bool:
    return any(o.state in (op_pb.OPERATION_STATE_PENDING, op_pb.OPERATION_STATE_RUNNING)
               for ops in jobs.values() for o in ops)


@page
async def operations(ctx: Ctx) -> Response:
    jobs, refused = await _operations_of(ctx)
    return ctx.render("operations.html", jobs=_operation_rows(jobs), refused=refused,
                      running=_running(jobs), section="operations")


@page
async def use_case_operations(ctx: Ctx) -> Response:
    name = _use_case(ctx.request)
    await ctx.client.get_use_case(name)
    training, effects = await asyncio.gather(
        ctx.client.list_operations(name, service="trainer", limit=50),
        ctx.client.list_operations(name, service="evaluator", limit=50))
    jobs = {"trainer": training, "evaluator": effects}
    return ctx.render("operations.html", uc=name, jobs=_operation_rows(jobs), refused=[],
                      running=_running(jobs), section="operations")


@page
async def operation(ctx: Ctx) -> Response:
    name = _use_case(ctx.request)
    service = ctx.request.path_params.get("service", "")
    if service not in SERVICES_OF_JOBS:
        raise BadInput("jobs are the trainer's or the evaluator's")
    operation_id = ctx.request.path_params.get("operation_id", "")
    if not ID_RE.fullmatch(operation_id):
        raise BadInput("not an operation id")
    found = await ctx.client.get_operation(operation_id, name, service=service)  # type: ignore[arg-type]
    final = found.state not in (op_pb.OPERATION_STATE_PENDING, op_pb.OPERATION_STATE_RUNNING)
    return ctx.render("operation.html", uc=name, op=found, service=service, final=final,
                      **_summary(found), section="operations")


# ---------------------------------------------------------------- actions


@action
async def kill_switch(ctx: Ctx) -> Response:
    name = _use_case(ctx.request)
    enabled = ctx.field("enabled") == "on"
    reason = ctx.field("reason")
    updated = await ctx.client.set_kill_switch(name, enabled, reason=reason, author=ctx.session.author)
    log.warning("console: kill switch of %s %s by %r (%s)", name, "ON" if enabled else "off",
                ctx.session.name, reason)
    default = updated.blueprint.default_decision.action
    text = (f"Kill switch ON: every decision of {name} now answers the default ({default})."
            if enabled else f"Kill switch off: {name} decides with its policy again.")
    return ctx.redirect(f"/use-cases/{name}", text, "warn" if enabled else "ok")


@action
async def rollback_blueprint(ctx: Ctx) -> Response:
    name = _use_case(ctx.request)
    try:
        version = int(ctx.field("to_version", limit=20))
    except ValueError:
        raise BadInput("'to_version' must be a version number") from None
    reason = ctx.field("reason")
    updated = await ctx.client.rollback_use_case(name, version, reason=reason, author=ctx.session.author)
    log.warning("console: %s rolled back to blueprint v%d by %r (%s)", name, version, ctx.session.name, reason)
    return ctx.redirect(f"/use-cases/{name}",
                        f"Blueprint rolled back to v{version}: it is now current as v{updated.version}.")


@action
async def rollback_model(ctx: Ctx) -> Response:
    name = _use_case(ctx.request)
    reason = ctx.field("reason")
    deployment = await ctx.client.rollback_model(name, reason=f"{reason} (by {ctx.session.author})",
                                                 request_id=ctx.request_id())
    serving = (f"model v{deployment.production.version}" if deployment.HasField("production")
               else "the default decision")
    log.warning("console: model deployment of %s rolled back by %r (%s)", name, ctx.session.name, reason)
    return ctx.redirect(f"/use-cases/{name}/models",
                        f"Deployment rolled back (revision {deployment.revision}): {serving} serves production.")


@action
async def start_training(ctx: Ctx) -> Response:
    name = _use_case(ctx.request)
    deploy = ctx.field("deploy", required=False) == "on"
    started = await ctx.client.start_training(name, deploy=deploy, request_id=ctx.request_id())
    log.info("console: training of %s started by %r (%s)", name, ctx.session.name, started.id)
    return ctx.redirect(f"/use-cases/{name}/operations/trainer/{started.id}",
                        f"Training started ({started.id}).")


@action
async def start_effects(ctx: Ctx) -> Response:
    name = _use_case(ctx.request)
    estimator = ctx.field("estimator", required=False) or "linear_dml"
    if estimator not in ESTIMATORS:
        raise BadInput(f"unknown estimator {estimator!r}")
    started = await ctx.client.estimate_effects(
        name, request_id=ctx.request_id(), estimator=estimator,
        treatment_action=ctx.field("treatment", required=False, limit=200),
        control_action=ctx.field("control", required=False, limit=200))
    log.info("console: effects job of %s started by %r (%s)", name, ctx.session.name, started.id)
    return ctx.redirect(f"/use-cases/{name}/operations/evaluator/{started.id}",
                        f"Effect estimation started ({started.id}).")


# ---------------------------------------------------------------- wiring


async def not_found(request: Request, exc: Exception) -> Response:
    state = _state(request)
    session = state.session(request)
    problem = Problem(404, "No such page", "NOT_FOUND", request.url.path)
    if session is None:
        return PlainTextResponse("not found", status_code=404)
    ctx = Ctx(request, state, session, state.clients.for_token(session.token))
    return ctx.problem(problem)


def create_app(settings: Settings | None = None) -> Starlette:
    """The console application (its settings: ``Settings()`` by default)."""
    state = ConsoleState(settings or Settings())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async def janitor() -> None:
            while True:
                await asyncio.sleep(60)
                await state.clients.close_idle()

        task = asyncio.get_running_loop().create_task(janitor())
        try:
            yield
        finally:
            task.cancel()
            await state.monitor.close()
            await state.clients.close()

    uc = "/use-cases/{uc}"
    routes = [
        Route("/healthz", healthz),
        Route("/", home),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/use-cases", use_cases),
        Route("/use-cases/open", open_use_case),
        Route(uc, use_case),
        Route(f"{uc}/diff", diff),
        Route(f"{uc}/live", live),
        Route(f"{uc}/models", models),
        Route(f"{uc}/decisions", decision),
        Route(f"{uc}/reports", use_case_reports),
        Route(f"{uc}/reports/{{report_id}}", report),
        Route(f"{uc}/reports/{{report_id}}/page", report_page),
        Route(f"{uc}/reports/{{report_id}}/download", report_download),
        Route(f"{uc}/operations", use_case_operations),
        Route(f"{uc}/operations/{{service}}/{{operation_id}}", operation),
        Route(f"{uc}/kill-switch", kill_switch, methods=["POST"]),
        Route(f"{uc}/rollback", rollback_blueprint, methods=["POST"]),
        Route(f"{uc}/models/rollback", rollback_model, methods=["POST"]),
        Route(f"{uc}/training", start_training, methods=["POST"]),
        Route(f"{uc}/effects", start_effects, methods=["POST"]),
        Route("/reports", reports),
        Route("/operations", operations),
        Mount("/static", StaticFiles(directory=str(PACKAGE / "static")), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: not_found},
                    middleware=[Middleware(SecurityHeaders)], max_body_size=64 * 1024)
    app.state.console = state
    return app


def serve(host: str | None = None, port: int | None = None, settings: Settings | None = None) -> None:
    """Run the console with uvicorn until SIGINT/SIGTERM."""
    import uvicorn

    settings = settings or Settings()
    host = host or settings.console_host
    port = port or settings.console_port
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if host not in ("127.0.0.1", "localhost", "::1") and not settings.console_secure_cookies:
        log.warning("console: listening on %s without LOOPWISE_CONSOLE_SECURE_COOKIES; serve it "
                    "through HTTPS and set it", host)
    if not settings.console_session_key.get_secret_value():
        log.info("console: no LOOPWISE_CONSOLE_SESSION_KEY: sessions end when this process stops")
    log.info("console: http://%s:%d/ (services: decision %s, feedback %s, trainer %s, evaluator %s)",
             host, port, settings.decision_address, settings.feedback_address,
             settings.trainer_address, settings.evaluator_address)
    uvicorn.run(create_app(settings), host=host, port=port, log_level=settings.log_level.lower(),
                server_header=False, proxy_headers=False, access_log=True)
