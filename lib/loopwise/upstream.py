"""What a service reads from the other services, through their protos only.

``DecisionUseCases`` reads blueprints (decision ``GetUseCase``; versions are immutable,
so they are cached), ``FeedbackTrainingData`` streams joined rows (feedback
``ReadTrainingData``) and ``TrainerModels`` reads registered models (trainer
``GetModel``, best effort). gRPC errors become loopwise errors, so cores never see gRPC.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from loopwise.channels import ServiceChannels
from loopwise.common.v1 import blueprint_pb2
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.errors import (
    FailedPrecondition,
    InvalidArgument,
    LoopwiseError,
    NotFound,
    Unavailable,
)
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.trainer.v1 import trainer_service_pb2 as tpb

CALL_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 600.0
LINEAGE_TIMEOUT_S = 2.0


def translate_rpc_error(service: str, error: grpc.aio.AioRpcError) -> LoopwiseError:
    """The loopwise error for a failed call to another service."""
    code = error.code()
    text = f"{service}: {error.details()}"
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound(text)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument("use_case", text)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return FailedPrecondition(text)
    return Unavailable(f"{service} cannot be reached or failed ({code.name}): {error.details()}")


class DecisionUseCases:
    """Blueprints from the decision service, cached by (use case, version).

    Versions are immutable, so a fetched version is kept for good, and so is the fact
    that a use case exists (use cases are archived, never deleted). Unknown use cases
    and versions are not cached: they may be created later. ``timeout_s`` bounds each
    call; the write path passes a shorter one."""

    def __init__(self, channels: ServiceChannels, timeout_s: float = CALL_TIMEOUT_S) -> None:
        self.channels = channels
        self.timeout_s = timeout_s
        self._versions: dict[tuple[str, int], blueprint_pb2.Blueprint] = {}
        self._known: set[str] = set()

    def cached(self, use_case: str, version: int) -> blueprint_pb2.Blueprint | None:
        """A version already fetched, or None."""
        return self._versions.get((use_case, version))

    def known(self, use_case: str) -> bool:
        """The use case was seen to exist (no call)."""
        return use_case in self._known

    async def latest(self, use_case: str, timeout_s: float | None = None) -> tuple[blueprint_pb2.Blueprint, int]:
        """The current blueprint of a use case and its version; NOT_FOUND if unknown."""
        found = await self._get(use_case, 0, timeout_s)
        self._versions[(use_case, found.version)] = found.blueprint
        return found.blueprint, found.version

    async def latest_version(self, use_case: str) -> int:
        """The current version of a use case (checks that it exists)."""
        return (await self.latest(use_case))[1]

    async def version(self, use_case: str, version: int, timeout_s: float | None = None) -> blueprint_pb2.Blueprint:
        """One blueprint version; NOT_FOUND if unknown, UNAVAILABLE if decision is unreachable."""
        key = (use_case, version)
        if key not in self._versions:
            self._versions[key] = (await self._get(use_case, version, timeout_s)).blueprint
        return self._versions[key]

    async def exists(self, use_case: str, timeout_s: float | None = None) -> bool:
        """Whether the decision service knows the use case (True is cached); UNAVAILABLE
        if it cannot be reached. A name the decision service refuses as invalid does
        not exist."""
        if use_case in self._known:
            return True
        try:
            await self.latest(use_case, timeout_s)
        except (NotFound, InvalidArgument):
            return False
        return True

    async def names(self) -> list[str]:
        """The names of every (non-archived) use case."""
        names: list[str] = []
        token = ""
        while True:
            try:
                response = await self.channels.decision().ListUseCases(
                    dpb.ListUseCasesRequest(page_size=100, page_token=token), timeout=self.timeout_s)
            except grpc.aio.AioRpcError as exc:
                raise translate_rpc_error("decision", exc) from exc
            names += [u.blueprint.use_case for u in response.use_cases]
            token = response.next_page_token
            if not token:
                return names

    async def _get(self, use_case: str, version: int, timeout_s: float | None = None) -> dpb.UseCase:
        try:
            response = await self.channels.decision().GetUseCase(
                dpb.GetUseCaseRequest(use_case=use_case, version=version),
                timeout=self.timeout_s if timeout_s is None else timeout_s,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                what = f"use case {use_case!r}" + (f" version {version}" if version else "")
                raise NotFound(f"{what} is not known to the decision service") from exc
            raise translate_rpc_error("decision", exc) from exc
        self._known.add(use_case)
        return response.use_case


class FeedbackTrainingData:
    """Joined training rows from the feedback service."""

    def __init__(self, channels: ServiceChannels, batch_rows: int = 0) -> None:
        self.channels = channels
        self.batch_rows = batch_rows

    async def read(self, use_case: str, start_ms: int | None, end_ms: int | None,
                   include_open_windows: bool = False,
                   include_fallback: bool = False,
                   include_unshown_items: bool = False) -> AsyncIterator[fpb.ReadTrainingDataResponse]:
        """Stream the use case's rows whose reward window has closed (no fallbacks),
        or also those still open / the fallbacks when asked (rollout guardrails);
        ``include_unshown_items``: a ranking's candidates that were not shown too."""
        request = fpb.ReadTrainingDataRequest(use_case=use_case, batch_rows=self.batch_rows,
                                              include_open_windows=include_open_windows,
                                              include_fallback=include_fallback,
                                              include_unshown_items=include_unshown_items)
        if start_ms is not None:
            request.start_time.FromMilliseconds(start_ms)
        if end_ms is not None:
            request.end_time.FromMilliseconds(end_ms)
        try:
            async for batch in self.channels.feedback().ReadTrainingData(request, timeout=READ_TIMEOUT_S):
                yield batch
        except grpc.aio.AioRpcError as exc:
            raise translate_rpc_error("feedback", exc) from exc


class FeedbackStats:
    """Counts of a use case from the feedback service (GetStats)."""

    def __init__(self, channels: ServiceChannels, timeout_s: float = CALL_TIMEOUT_S) -> None:
        self.channels = channels
        self.timeout_s = timeout_s

    async def get(self, use_case: str) -> fpb.GetStatsResponse:
        """The use case's counts; UNAVAILABLE when feedback cannot be reached."""
        try:
            return await self.channels.feedback().GetStats(fpb.GetStatsRequest(use_case=use_case),
                                                           timeout=self.timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise translate_rpc_error("feedback", exc) from exc


class TrainerModels:
    """Registered models from the trainer, for lineage (best effort)."""

    def __init__(self, channels: ServiceChannels) -> None:
        self.channels = channels

    async def model(self, use_case: str, version: int) -> tpb.Model | None:
        """The model, or None when the trainer does not know it or cannot be reached."""
        try:
            response = await self.channels.trainer().GetModel(
                tpb.GetModelRequest(use_case=use_case, version=version), timeout=LINEAGE_TIMEOUT_S
            )
        except grpc.aio.AioRpcError:
            return None
        return response.model
