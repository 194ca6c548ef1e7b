"""Tracing: one TracerProvider per process and the gRPC interceptors that propagate context.

Spans are recorded and exported over OTLP/HTTP only when an endpoint is configured
(JAEGER_ENDPOINT, or the standard OTEL_EXPORTER_OTLP_* variables), and only then do
OpenTelemetry's gRPC interceptors wrap every call: with nowhere to send them they cost a fifth
of the orchestrator's CPU (issue 13's profile). Without an exporter the trace context still
travels: every RPC continues the caller's W3C `traceparent` (or starts a trace) as a
non-recording span (`continue_trace`), and outgoing calls carry it (`client_interceptors`), so
log lines, outbox events and webhooks keep trace ids that correlate across services.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway_core.config import Settings

# grpc-stubs makes interceptors generic; at runtime grpc's classes are not subscriptable.
if TYPE_CHECKING:
    AioServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
    _UnaryUnary = grpc.aio.UnaryUnaryClientInterceptor[Any, Any]
    _UnaryStream = grpc.aio.UnaryStreamClientInterceptor[Any, Any]
else:
    AioServerInterceptor = grpc.aio.ServerInterceptor
    _UnaryUnary = grpc.aio.UnaryUnaryClientInterceptor
    _UnaryStream = grpc.aio.UnaryStreamClientInterceptor

# Probes poll these every few seconds: spans for them would drown the real traffic.
_UNTRACED_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
_OTLP_ENV = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def configure_tracing(service: str, settings: Settings) -> TracerProvider:
    """Install the process's TracerProvider (once: OpenTelemetry allows a single global one)."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    exporting = bool(settings.jaeger_endpoint or any(os.environ.get(n) for n in _OTLP_ENV))
    provider = TracerProvider(
        resource=Resource.create({"service.name": service, "service.namespace": "paygate"}),
        # Nothing to export to: spans keep their ids (logs, traceparent) but record nothing.
        sampler=None if exporting else ALWAYS_OFF,
    )
    if exporting:
        # Imported only when exporting, so a stale opentelemetry-proto (xds-protos overwrites
        # its files; the Makefile reinstalls it) cannot stop a service that exports nothing.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        # Without JAEGER_ENDPOINT the exporter reads the OTEL_EXPORTER_OTLP_* variables itself.
        exporter = OTLPSpanExporter(endpoint=settings.jaeger_endpoint or None)
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider


def recording() -> bool:
    """Whether this process records spans (configure_tracing found an exporter)."""
    provider = trace.get_tracer_provider()
    return isinstance(provider, TracerProvider) and provider.sampler is not ALWAYS_OFF


def server_interceptors() -> list[AioServerInterceptor]:
    """OpenTelemetry's server interceptor when spans are recorded; none otherwise (each call
    then continues its caller's trace through `continue_trace`)."""
    return [_TracingServerInterceptor()] if recording() else []


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """OpenTelemetry's client interceptors when spans are recorded; otherwise ones that only
    send the current trace context along."""
    if recording():
        interceptors: list[grpc.aio.ClientInterceptor] = aio_client_interceptors()  # type: ignore[no-untyped-call]
        return interceptors
    return [_PropagatingUnaryUnary(), _PropagatingUnaryStream()]  # type: ignore[list-item]


_PROPAGATOR = TraceContextTextMapPropagator()
_tracer = trace.get_tracer(__name__)


def continue_trace(metadata: Sequence[tuple[str, str | bytes]] | None, name: str) -> None:
    """Without an exporter: make the current context (this call's task's) a non-recording span
    of the caller's trace, from its `traceparent` metadata, or of a new trace. With one, the
    tracing interceptor does this (and the calls it leaves untraced stay so)."""
    if recording() or trace.get_current_span().get_span_context().is_valid:
        return
    carrier = {key: value for key, value in metadata or () if key == "traceparent"}
    parent = _PROPAGATOR.extract(carrier) if carrier else None
    span = _tracer.start_span(name, context=parent)
    otel_context.attach(trace.set_span_in_context(span))


def _with_trace_context(details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    if not carrier:
        return details
    metadata = grpc.aio.Metadata(*(details.metadata or ()), *carrier.items())
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


class _PropagatingUnaryUnary(_UnaryUnary):
    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        return await continuation(_with_trace_context(client_call_details), request)


class _PropagatingUnaryStream(_UnaryStream):
    async def intercept_unary_stream(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        return await continuation(_with_trace_context(client_call_details), request)


class _TracingServerInterceptor(AioServerInterceptor):
    """OpenTelemetry's aio server interceptor, applied only where it works.

    It iterates a streaming handler's result with `async for`, which breaks handlers that stream
    by awaiting `context.write()` (grpc.health's Watch does): those are served untraced.
    """

    def __init__(self) -> None:
        self._otel = aio_server_interceptor()  # type: ignore[no-untyped-call]

    # grpc-stubs says a handler is always returned; grpc returns None for unknown methods.
    async def intercept_service(  # type: ignore[override]
        self,
        continuation: Any,
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler: grpc.RpcMethodHandler[Any, Any] | None = await continuation(handler_call_details)
        if (
            handler is None
            or handler_call_details.method.startswith(_UNTRACED_PREFIXES)
            or _writes_to_context(handler)
        ):
            return handler

        async def resolved(_: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any]:
            return handler

        traced: grpc.RpcMethodHandler[Any, Any] = await self._otel.intercept_service(
            resolved, handler_call_details
        )
        return traced


def _writes_to_context(handler: grpc.RpcMethodHandler[Any, Any]) -> bool:
    if not handler.response_streaming:
        return False
    behavior = handler.stream_stream if handler.request_streaming else handler.unary_stream
    return not inspect.isasyncgenfunction(behavior)
