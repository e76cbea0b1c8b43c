"""Decide calls that reach the event loop together are decided together.

Each unary ``Decide`` call and each ``DecideStream`` message puts its request in the
:class:`DecideQueue` and waits. The queue's turn comes in the event loop's next
iteration; while the loop has other work ready then (other calls being received,
answered or accepted by grpc), the queue lets it go first, up to ``turns`` times and
only while its calls would not fill a pass (from the recent time per decision), so that
the calls arriving meanwhile join. A pass first scores the one-row requests of each
model in one session run (:meth:`DecisionCore.score_together`: a run on several rows
costs about what a run on one does), then decides them one after another in arrival
order with :meth:`DecisionCore.decide_response`, for up to ``PASS_BUDGET_S``, and their
calls resume together in the loop's next iteration. The decision code and
its data are brought into the CPU caches once per pass rather than once per call
(between two calls grpc's C core and the kernel evict them), and the event loop makes
fewer iterations per call. Each call gets the decision it would get alone.

A lone call is not held: with nothing else ready, its turn is the next iteration. Nor is
a slow one: a decision that takes milliseconds (a ranking of hundreds of candidates)
fills a pass alone, and gains nothing from company.
The figures are in docs/benchmarks.md.

Whether other work is ready is read from the loop's queue of ready callbacks
(``_ready`` of asyncio's own event loops); a loop without one is taken as idle, and
each call is decided at its first turn.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time

from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.services.decision.core import DecisionCore, Delivery, Scored

log = logging.getLogger("loopwise.decision")

# Most calls waiting before a pass starts, whatever the turns left.
MAX_CALLS = 64
# A pass stops deciding after this long and leaves the rest to the next turn, so that
# the answers already decided go out first (slow decisions, e.g. rankings of hundreds
# of candidates, are then decided one per pass, as without the queue).
PASS_BUDGET_S = 0.002
# Weight of the last pass in the moving average of a decision's time.
DECISION_TIME_WEIGHT = 0.1


class DecideQueue:
    """The Decide requests waiting to be decided together (``turns``: how many times
    the queue lets the event loop's other ready work go first; 0: never)."""

    def __init__(self, core: DecisionCore, turns: int = 8) -> None:
        self.core = core
        self.turns = turns
        self._waiting: list[tuple[dpb.DecideRequest, float, Delivery | None, asyncio.Future]] = []
        # Recent seconds per decision (a moving average over passes): the queue stops
        # waiting for company once its calls would fill a pass.
        self.decision_s = 0.0
        # Passes made and calls decided in them (their ratio: calls per pass).
        self.passes = 0
        self.decided = 0

    def decide(self, request: dpb.DecideRequest, started: float, delivery: Delivery | None,
               future: asyncio.Future | None = None) -> asyncio.Future:
        """A future of the request's ``DecideResponse`` (or its error): ``future`` when
        given (someone's own wait), else a new one; its records wait in ``delivery`` as
        with :meth:`DecisionCore.decide_response`."""
        loop = asyncio.get_running_loop()
        if future is None:
            future = loop.create_future()
        if not self._waiting:
            # An empty context: the pass belongs to no one call (its trace, its deadline).
            loop.call_soon(self._turn, 0, context=contextvars.Context())
        self._waiting.append((request, started, delivery, future))
        return future

    def _turn(self, deferred: int) -> None:
        loop = asyncio.get_running_loop()
        if deferred < self.turns and len(self._waiting) < MAX_CALLS \
                and len(self._waiting) * self.decision_s < PASS_BUDGET_S and getattr(loop, "_ready", None):
            loop.call_soon(self._turn, deferred + 1, context=contextvars.Context())
            return
        waiting, self._waiting = self._waiting, []
        began = time.perf_counter()
        ends = began + PASS_BUDGET_S
        decided = 0
        scored = self._scored(waiting)
        for i, (request, started, delivery, future) in enumerate(waiting):
            if decided and time.perf_counter() > ends:
                # The rest at the next turn: the answers decided so far leave first.
                if not self._waiting:
                    loop.call_soon(self._turn, self.turns, context=contextvars.Context())
                self._waiting[:0] = waiting[i:]
                break
            if future.done():  # cancelled while it waited (its client went away): not decided
                continue
            decided += 1
            try:
                future.set_result(self.core.decide_response(request, started, delivery, scored[i]))
            except Exception as error:  # the call's own error: it does not stop the others
                future.set_exception(error)
        if decided:
            self.passes += 1
            self.decided += decided
            took = (time.perf_counter() - began) / decided
            self.decision_s += DECISION_TIME_WEIGHT * (took - self.decision_s)

    def _scored(self, waiting: list[tuple[dpb.DecideRequest, float, Delivery | None, asyncio.Future]]
                ) -> list[Scored | None]:
        """The one-row requests of each model scored in one session run
        (:meth:`DecisionCore.score_together`), among the calls not cancelled that the
        pass is likely to decide within its budget (from the recent time per decision;
        the rest are scored when their turn comes); None for the others."""
        scored: list[Scored | None] = [None] * len(waiting)
        likely = len(waiting) if self.decision_s <= 0 else max(1, int(PASS_BUDGET_S / self.decision_s))
        index = [i for i in range(min(likely, len(waiting))) if not waiting[i][3].done()]
        if len(index) < 2:
            return scored
        try:
            together = self.core.score_together([waiting[i][0] for i in index])
        except Exception:  # never strands the pass: each call is then scored alone
            log.exception("scoring a pass of the Decide queue together failed; scoring its calls one by one")
            return scored
        for i, one in zip(index, together, strict=True):
            scored[i] = one
        return scored
