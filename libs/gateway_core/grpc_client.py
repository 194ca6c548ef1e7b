"""Channels to other services of the mesh, traced, kept alive and failing the same way everywhere.

A call on these channels that fails raises the typed `gateway_core.errors.GatewayError` the
server raised (its class, reason, field violations and metadata read back from the status
details), never a bare `grpc.aio.AioRpcError`: callers catch `NotFound`, `Unavailable` or
`DeadlineExceeded` (with `.grpc_code` when they sort by code), and one interceptor here does the
translating that each client used to do by hand. The original `AioRpcError` is the exception's
`__cause__`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import grpc

from gateway_core.errors import from_rpc_error
from gateway_core.services import grpc_target
from gateway_core.telemetry import client_interceptors

# Round robin spreads calls over every address a name resolves to (a headless Kubernetes
# service); locally there is one address and it changes nothing.
_SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})

CHANNEL_OPTIONS: tuple[tuple[str, int | str], ...] = (
    ("grpc.service_config", _SERVICE_CONFIG),
    # Pings detect a dead peer behind a silent network (NAT, a killed pod) within ~40 s. The
    # servers of this mesh accept pings this frequent (see server.SERVER_OPTIONS).
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # A restarted peer is found again within about a second: gRPC's default backoff grows to
    # two minutes, during which a fail-open caller (fraud) would quietly skip the peer.
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 1_000),
)


if TYPE_CHECKING:
    _UnaryUnary = grpc.aio.UnaryUnaryClientInterceptor[Any, Any]
    _UnaryStream = grpc.aio.UnaryStreamClientInterceptor[Any, Any]
else:
    _UnaryUnary = grpc.aio.UnaryUnaryClientInterceptor
    _UnaryStream = grpc.aio.UnaryStreamClientInterceptor


class UnaryErrorTranslation(_UnaryUnary):
    """Raises the server's typed error (`errors.from_rpc_error`) instead of `AioRpcError`.

    It is the outermost interceptor of a channel, so tracing still records the gRPC status.
    """

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        call = await continuation(client_call_details, request)
        try:
            return await call
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from exc


class StreamErrorTranslation(_UnaryStream):
    """The same for server-streaming calls: the messages first, then the typed error.

    (A grpc.aio channel files each interceptor under one call kind, hence two classes.)
    """

    async def intercept_unary_stream(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        call = await continuation(client_call_details, request)
        return _translated(call)


async def _translated(call: AsyncIterator[Any]) -> AsyncIterator[Any]:
    try:
        async for response in call:
            yield response
    except grpc.aio.AioRpcError as exc:
        raise from_rpc_error(exc) from exc


def channel_interceptors(
    *extra: grpc.aio.ClientInterceptor, typed_errors: bool = True
) -> Sequence[grpc.aio.ClientInterceptor]:
    """The interceptors of every mesh channel: error translation, tracing, then `extra`."""
    first: list[grpc.aio.ClientInterceptor] = (
        [
            cast(grpc.aio.ClientInterceptor, UnaryErrorTranslation()),
            cast(grpc.aio.ClientInterceptor, StreamErrorTranslation()),
        ]
        if typed_errors
        else []
    )
    return [*first, *client_interceptors(), *extra]


def insecure_channel(address: str, *, typed_errors: bool = True) -> grpc.aio.Channel:
    """A channel to `host:port` (a leading `http://` is accepted, as the seed writes addresses).

    Plaintext because the mesh runs inside one network boundary; mTLS belongs to the platform
    (service mesh sidecars), not to each service. `typed_errors=False` keeps gRPC's own
    `AioRpcError` (for tests that inspect the wire status itself).
    """
    return grpc.aio.insecure_channel(
        grpc_target(address),
        options=CHANNEL_OPTIONS,
        interceptors=channel_interceptors(typed_errors=typed_errors),
    )
