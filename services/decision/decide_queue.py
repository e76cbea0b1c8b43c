"""Decide calls that reach the event loop together are decided together.

Each unary ``Decide`` call and each ``DecideStream`` message puts its request in the
:class:`DecideQueue` and waits. The queue's turn comes in the event loop's next
iteration; while the loop has other work ready then (other calls being received,
answered or accepted by grpc), the queue lets it go first, up to ``turns`` times, so
that the calls arriving meanwhile join. :meth:`DecisionCore.decide_many` then decides
them one after another in arrival order, and their answers reach grpc in the same
iteration of the loop. The decision code and its data are brought into the CPU caches
once for all of them rather than once per call (between two calls grpc's C core and the
kernel evict them), and grpc writes the answers to the transport together. The
decisions are those the calls would get alone: each row is still scored by its own
session run.

A lone call is not held: with nothing else ready, its turn is the next iteration.
The figures are in docs/benchmarks.md.

Whether other work is ready is read from the loop's queue of ready callbacks
(``_ready`` of asyncio's own event loops); a loop without one is taken as idle, and
each call is decided at its first turn.
"""

from __future__ import annotations

import asyncio
import contextvars

from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.services.decision.core import DecisionCore, Delivery

# Most calls decided in one pass: bounds how long the first of them waits for the rest.
MAX_CALLS = 64


class DecideQueue:
    """The Decide requests waiting to be decided together (``turns``: how many times
    the queue lets the event loop's other ready work go first; 0: never)."""

    def __init__(self, core: DecisionCore, turns: int = 8) -> None:
        self.core = core
        self.turns = turns
        self._waiting: list[tuple[dpb.DecideRequest, float, Delivery, asyncio.Future]] = []
        # Passes made and calls decided in them (their ratio: calls per pass).
        self.passes = 0
        self.decided = 0

    def decide(self, request: dpb.DecideRequest, started: float, delivery: Delivery) -> asyncio.Future:
        """A future of the request's ``DecideResponse`` (or its error); its records wait
        in ``delivery`` as with :meth:`DecisionCore.decide_response`."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if not self._waiting:
            # An empty context: the pass belongs to no one call (its trace, its deadline).
            loop.call_soon(self._turn, 0, context=contextvars.Context())
        self._waiting.append((request, started, delivery, future))
        return future

    def _turn(self, deferred: int) -> None:
        loop = asyncio.get_running_loop()
        if deferred < self.turns and len(self._waiting) < MAX_CALLS and getattr(loop, "_ready", None):
            loop.call_soon(self._turn, deferred + 1, context=contextvars.Context())
            return
        waiting, self._waiting = self._waiting, []
        # A call cancelled while it waited (its client went away) is not decided.
        live = [w for w in waiting if not w[3].done()]
        if not live:
            return
        self.passes += 1
        self.decided += len(live)
        try:
            results = self.core.decide_many([(request, started, delivery) for request, started, delivery, _ in live])
        except Exception as error:  # a fault of decide_many itself: every call gets it
            results = [error] * len(live)
        for (_, _, _, future), result in zip(live, results, strict=True):
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
