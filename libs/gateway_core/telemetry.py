"""Tracing: one TracerProvider per process and the gRPC interceptors that propagate context.

Spans are exported over OTLP/HTTP only when an endpoint is configured (JAEGER_ENDPOINT, or the
standard OTEL_EXPORTER_OTLP_* variables); otherwise spans still exist, so log lines carry
trace ids that correlate across services, but nothing is sent anywhere.
"""

from __future__ import annotations

import inspect
import os
from typing import TYPE_CHECKING, Any

import grpc
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from gateway_core.config import Settings

# grpc-stubs makes interceptors generic; at runtime grpc's classes are not subscriptable.
if TYPE_CHECKING:
    AioServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    AioServerInterceptor = grpc.aio.ServerInterceptor

# Probes poll these every few seconds: spans for them would drown the real traffic.
_UNTRACED_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
_OTLP_ENV = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def configure_tracing(service: str, settings: Settings) -> TracerProvider:
    """Install the process's TracerProvider (once: OpenTelemetry allows a single global one)."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    provider = TracerProvider(
        resource=Resource.create({"service.name": service, "service.namespace": "paygate"})
    )
    if settings.jaeger_endpoint or any(os.environ.get(name) for name in _OTLP_ENV):
        # Imported only when exporting, so a stale opentelemetry-proto (xds-protos overwrites
        # its files; the Makefile reinstalls it) cannot stop a service that exports nothing.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        # Without JAEGER_ENDPOINT the exporter reads the OTEL_EXPORTER_OTLP_* variables itself.
        exporter = OTLPSpanExporter(endpoint=settings.jaeger_endpoint or None)
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider


def server_interceptors() -> list[AioServerInterceptor]:
    return [_TracingServerInterceptor()]


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    interceptors: list[grpc.aio.ClientInterceptor] = aio_client_interceptors()  # type: ignore[no-untyped-call]
    return interceptors


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
