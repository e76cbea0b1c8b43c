"""Every scope boundary of every RPC of the four services, on real servers.

For each RPC: no token and an unknown token are UNAUTHENTICATED; an admin token of
another use case is PERMISSION_DENIED; for each of the five scopes, a token holding
only that scope passes the guard exactly when the RPC accepts that scope (admin
always), and is PERMISSION_DENIED otherwise. An RPC that names no use case needs the
scope on every use case, so a token scoped to one use case is refused there too.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from loopwise.auth import METHOD_SCOPES, SCOPES
from tests.security.helpers import all_rpcs, bearer, call_code, minimal_request, names_use_case

RPCS = list(all_rpcs())
REFUSED = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}


def test_every_rpc_is_classified() -> None:
    """New RPCs must be given their scopes (unclassified ones need admin)."""
    missing = sorted({rpc.name for rpc in RPCS} - set(METHOD_SCOPES))
    assert missing == []


@pytest.mark.parametrize("rpc", RPCS, ids=[f"{r.area}.{r.name}" for r in RPCS])
async def test_scope_boundaries(auth_stack, rpc) -> None:
    channel = auth_stack.channel(rpc.area)
    request = minimal_request(rpc, "team_a")
    per_use_case = names_use_case(rpc.method.input_type)
    needed = METHOD_SCOPES[rpc.name]
    # Watches stream until cancelled: a short deadline ends them once past the guard.
    timeout = 3.0 if rpc.method.server_streaming else 30.0

    async def code(secret: str | None) -> grpc.StatusCode:
        metadata = bearer(secret) if secret is not None else ()
        return await call_code(channel, rpc, request, metadata, timeout)

    cases: list[tuple[str, str | None, str]] = [
        ("no token", None, "unauthenticated"),
        ("unknown token", "lw_not-a-token", "unauthenticated"),
        ("malformed", "", "unauthenticated"),
        ("admin of another use case", auth_stack.secret("admin-team-b"), "denied"),
    ]
    for scope in SCOPES:
        allowed = scope in needed or scope == "admin"
        holder = f"{scope}-team-a" if per_use_case else f"{scope}-all"
        cases.append((f"{holder} only", auth_stack.secret(holder), "allowed" if allowed else "denied"))
        if not per_use_case and allowed:
            cases.append((f"{scope}-team-a on an RPC without use case",
                          auth_stack.secret(f"{scope}-team-a"), "denied"))
    codes = list(await asyncio.gather(*(code(secret) for _, secret, _ in cases)))
    if "use_case" in rpc.method.input_type.fields_by_name:
        # Where the use case is optional (listings, operations by id), leaving it out
        # needs the scope on every use case: a token of one use case is refused.
        unnamed = minimal_request(rpc, "team_a")
        unnamed.ClearField("use_case")
        for scope in needed:
            label = f"{scope}-team-a without the use case"
            cases.append((label, None, "denied"))
            metadata = bearer(auth_stack.secret(f"{scope}-team-a"))
            codes.append(await call_code(channel, rpc, unnamed, metadata, timeout))
    for (label, _, expected), got in zip(cases, codes, strict=True):
        if expected == "unauthenticated":
            assert got == grpc.StatusCode.UNAUTHENTICATED, (label, got)
        elif expected == "denied":
            assert got == grpc.StatusCode.PERMISSION_DENIED, (label, got)
        else:
            assert got not in REFUSED, (label, got)


@pytest.mark.parametrize("client_stall_s", [0.0, 0.5], ids=["steady", "client-stalls"])
async def test_refused_streams_end_with_their_status_while_clients_write(auth_stack, client_stall_s) -> None:
    """Streams refused by the guard while their clients are still writing (many
    requests each, many at once; and lockstep clients that never half-close) end
    with the guard's status, never INTERNAL: the server reads what the client still
    sends before it answers (grpcio's asyncio client otherwise reports its failed
    write as INTERNAL in place of the status). With ``client-stalls`` the client
    process freezes mid-flood (as in a long garbage collection), which must not be
    taken for the end of its writing."""
    rpc = next(r for r in RPCS if r.name == "DecideStream")
    channel = auth_stack.channel(rpc.area)
    request = minimal_request(rpc, "team_a")
    path, serialize = rpc.path, type(request).SerializeToString

    async def flood(metadata: tuple[tuple[str, str], ...]) -> grpc.StatusCode:
        async def requests():
            for _ in range(50):
                yield request

        try:
            async for _ in channel.stream_stream(path, serialize, lambda raw: raw)(
                    requests(), metadata=metadata, timeout=30):
                pass
        except grpc.aio.AioRpcError as error:
            return error.code()
        return grpc.StatusCode.OK

    async def lockstep(metadata: tuple[tuple[str, str], ...]) -> grpc.StatusCode:
        call = channel.stream_stream(path, serialize, lambda raw: raw)(metadata=metadata, timeout=30)
        try:
            await call.write(request)
            await call.read()
        except grpc.aio.AioRpcError as error:
            return error.code()
        return await call.code()

    other_team = bearer(auth_stack.secret("admin-team-b"))
    # 15 + 15 + 2 streams, within LOOPWISE_MAX_STREAMS_PER_CONNECTION: more calls at once on
    # one connection are refused by grpc's core before the guard sees them.
    async def stall() -> None:
        if client_stall_s:
            await asyncio.sleep(0.01)
            time.sleep(client_stall_s)  # blocks the client's event loop, writers included

    codes = await asyncio.gather(*(flood(()) for _ in range(15)), *(flood(other_team) for _ in range(15)),
                                 lockstep(()), lockstep(other_team), stall())
    codes = codes[:32]
    assert codes[:15] == [grpc.StatusCode.UNAUTHENTICATED] * 15, codes[:15]
    assert codes[15:30] == [grpc.StatusCode.PERMISSION_DENIED] * 15, codes[15:30]
    assert codes[30:] == [grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED]
