"""The one bootstrap every service uses: serve, observe, report health, drain on SIGTERM.

A service builds a `ServiceApp`, registers its servicers, dependency checks, background tasks and
shutdown hooks, and awaits `run()`. Every RPC then goes through the same interceptors: tracing,
then one that maps domain errors to statuses, logs the call and records Prometheus metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, NoReturn

import grpc
import structlog
import uvloop
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import Counter, Histogram, start_http_server

from gateway_core.admission import LoopLag
from gateway_core.config import ConfigError, Settings
from gateway_core.errors import (
    GatewayError,
    Internal,
    InvalidArgument,
    Unimplemented,
    invalid_field,
    to_rpc_status,
)
from gateway_core.logging import configure_logging, get_logger
from gateway_core.services import BY_NAME
from gateway_core.telemetry import (
    AioServerInterceptor,
    configure_tracing,
    continue_trace,
    server_interceptors,
)

log = get_logger(__name__)
_stdlib_log = logging.getLogger(__name__)

# The largest file a request may carry (a settlement CSV uploaded through Envoy, whose own limit
# for every other request is far lower): gRPC's default 4 MiB message would refuse it.
MAX_UPLOAD_BYTES = 32 << 20
SERVER_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_receive_message_length", MAX_UPLOAD_BYTES + (64 << 10)),
    # A second copy of a service on the same port must fail to start, not silently share it.
    ("grpc.so_reuseport", 0),
    # Accept the keepalive pings that gateway_core.grpc_client channels send every 30 s.
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    # Callers balance over the pods a headless name resolves to, but resolve it again only when
    # a connection ends: asking clients to reconnect every few minutes (calls in flight finish
    # first) lets a scale-out's new pods take their share.
    ("grpc.max_connection_age_ms", 300_000),
)
# sysexits.h: the process exits because its configuration is wrong (os.EX_CONFIG, POSIX only).
EX_CONFIG = 78
HEALTH_INTERVAL_SECONDS = 2.0
CHECK_TIMEOUT_SECONDS = 5.0
# A background task that ran this long before crashing starts over from the shortest backoff.
_BACKOFF_RESET_SECONDS = 60.0
_BACKOFF_MAX_SECONDS = 30.0
_FLUSH_TIMEOUT_MS = 5_000
_QUIET_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
_SERVER_FAULTS = frozenset(
    {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS}
)

# Module-level because prometheus_client registers metrics once per process.
RPCS_HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed by the server, by final status code.",
    ["service", "method", "code"],
)
RPC_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Time from receiving an RPC to its final status.",
    ["service", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

Check = Callable[[], Awaitable[None]]


class ServiceApp:
    """One gRPC service process. Construct it inside the running event loop (in `main()`).

    A service of the registry (gateway_core.services) refuses to be built, with a ConfigError
    naming each variable and its rule, unless every secret it holds passes the rules
    (Settings.secrets): it fails closed before it opens a port or a connection.
    """

    def __init__(self, name: str, settings: Settings) -> None:
        self.name = name
        self.settings = settings
        configure_logging(name, settings.log_level)
        if name in BY_NAME:
            settings.secrets(*(variable.lower() for variable in BY_NAME[name].secrets))
        self._tracer_provider = configure_tracing(name, settings)
        self.server: grpc.aio.Server = grpc.aio.server(
            interceptors=[*server_interceptors(), _ObservingInterceptor()],
            options=SERVER_OPTIONS,
        )
        # grpc_health exports its asyncio servicer as `health.aio` at runtime only.
        self._health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self.server)
        self._service_names: list[str] = []
        # The servicer behind each registered gRPC service, by full name: the benchmarks drive
        # a service's own servicer in process, built by its build_app() as it serves.
        self.servicers: dict[str, Any] = {}
        self._checks: dict[str, Check] = {}
        self._failing: set[str] = set()
        self._background: dict[str, Callable[[], Awaitable[None]]] = {}
        self._shutdown_hooks: list[Callable[[], Awaitable[None]]] = []
        self._stop_requested = asyncio.Event()
        self._started = asyncio.Event()
        # How far behind its event loop runs: exported as a metric, and what a service's
        # admission control (gateway_core.admission) reads.
        self.loop_lag = LoopLag()
        self.port: int | None = None
        self.metrics_port: int | None = None

    def add_service(
        self,
        full_name: str,
        add_to_server: Callable[[Any, grpc.aio.Server], None],
        servicer: Any,
    ) -> None:
        """Serve `servicer` (generated `add_XServicer_to_server`); health and reflection list it."""
        if full_name in self._service_names:
            raise ValueError(f"service {full_name} registered twice")
        add_to_server(servicer, self.server)
        self._service_names.append(full_name)
        self.servicers[full_name] = servicer

    def add_dependency_check(self, name: str, check: Check) -> None:
        """`check()` raises while the dependency is unusable; the service is NOT_SERVING then."""
        self._checks[name] = check

    def add_background_task(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        """A coroutine that runs while serving, restarted with backoff if it raises."""
        self._background[name] = run

    def on_shutdown(self, fn: Callable[[], Awaitable[None]]) -> None:
        """Run `fn` after the server drained; hooks run last-registered first."""
        self._shutdown_hooks.append(fn)

    def stop(self) -> None:
        """Begin a graceful shutdown, exactly as SIGTERM does."""
        self._stop_requested.set()

    async def wait_started(self) -> int:
        """The bound gRPC port, once the server accepts calls (port 0 binds an ephemeral one)."""
        await self._started.wait()
        assert self.port is not None
        return self.port

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        signals = (signal.SIGTERM, signal.SIGINT)
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
            for sig in signals:
                loop.add_signal_handler(sig, self._stop_requested.set)
        try:
            await self._serve()
        finally:
            for sig in signals:
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)

    async def _serve(self) -> None:
        names = [*self._service_names, health.SERVICE_NAME, reflection.SERVICE_NAME]
        reflection.enable_server_reflection(names, self.server)
        address = f"{self.settings.server_host}:{self.settings.server_port}"
        self.port = self.server.add_insecure_port(address)
        metrics = None
        if self.settings.enable_metrics:
            metrics, _ = start_http_server(
                self.settings.metrics_port, addr=self.settings.server_host
            )
            self.metrics_port = metrics.server_port
        background: list[asyncio.Task[None]] = []
        try:
            # NOT_SERVING until the first round of dependency checks passes.
            await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
            await self.server.start()
            await self._check_dependencies()
            background.append(asyncio.create_task(self._watch_dependencies()))
            background.append(asyncio.create_task(self.loop_lag.run(), name="loop-lag"))
            background.extend(
                asyncio.create_task(self._supervise(name, run), name=name)
                for name, run in self._background.items()
            )
            log.info(
                "listening",
                address=f"{self.settings.server_host}:{self.port}",
                port=self.port,
                metrics_port=self.metrics_port,
                services=self._service_names,
            )
            self._started.set()
            await self._stop_requested.wait()
            log.info("draining", grace_seconds=self.settings.shutdown_grace_seconds)
            await self._health.enter_graceful_shutdown()
            await self.server.stop(grace=self.settings.shutdown_grace_seconds)
        finally:
            # Stopping twice is harmless; this covers a failed start and a cancelled run().
            await self.server.stop(grace=None)
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await self.close()
            # Both block (a polling thread, an HTTP export): keep them off the event loop.
            if metrics is not None:
                await asyncio.to_thread(metrics.shutdown)
                metrics.server_close()
            await asyncio.to_thread(self._tracer_provider.force_flush, _FLUSH_TIMEOUT_MS)
            log.info("stopped")

    async def close(self) -> None:
        """Run the shutdown hooks (last registered first): `run()` does it after draining; a
        caller that built the app only to drive its servicers in process calls it itself."""
        hooks, self._shutdown_hooks = self._shutdown_hooks, []
        for hook in reversed(hooks):
            try:
                await hook()
            except Exception:
                log.exception("shutdown hook failed", hook=getattr(hook, "__qualname__", hook))

    async def _set_health(self, status: int) -> None:
        for service in ("", *self._service_names):
            await self._health.set(service, status)

    async def _watch_dependencies(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_INTERVAL_SECONDS)
            await self._check_dependencies()

    async def _check_dependencies(self) -> None:
        names = list(self._checks)
        results = await asyncio.gather(
            *(asyncio.wait_for(self._checks[n](), CHECK_TIMEOUT_SECONDS) for n in names),
            return_exceptions=True,
        )
        failing: set[str] = set()
        for name, result in zip(names, results, strict=True):
            if isinstance(result, asyncio.CancelledError):
                raise result
            if isinstance(result, BaseException):
                failing.add(name)
                if name not in self._failing:
                    log.warning("dependency unhealthy", dependency=name, error=repr(result))
            elif name in self._failing:
                log.info("dependency recovered", dependency=name)
        self._failing = failing
        await self._set_health(
            health_pb2.HealthCheckResponse.NOT_SERVING
            if failing
            else health_pb2.HealthCheckResponse.SERVING
        )

    async def _supervise(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        delay = 1.0
        while True:
            started = time.monotonic()
            try:
                await run()
                log.info("background task finished", task=name)
                return
            except Exception:
                if time.monotonic() - started > _BACKOFF_RESET_SECONDS:
                    delay = 1.0
                log.exception("background task crashed", task=name, restart_in_seconds=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _BACKOFF_MAX_SECONDS)


def run_service(main: Callable[[], Awaitable[None]]) -> None:
    """`run_service(main)` from a service's `__main__`: exit 0 on a signal, EX_CONFIG (78) on a
    configuration it refuses, 1 on a crash."""

    async def entry() -> None:
        await main()

    try:
        # uvloop: the same asyncio API on libuv, with less CPU per socket event and per
        # callback (issue 13); every service runs on it through this one bootstrap.
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(entry())
    except KeyboardInterrupt:
        pass
    except ConfigError as exc:
        # Not a crash: one line that names the variables and the rules, no traceback.
        _ensure_logging()
        log.error("refusing to start: invalid configuration", error=str(exc))
        sys.exit(EX_CONFIG)
    except Exception:
        _ensure_logging()
        log.exception("service crashed")
        sys.exit(1)


def _ensure_logging() -> None:
    # A failure before ServiceApp configured logging must still go through the masking pipeline.
    if not structlog.is_configured():
        configure_logging("paygate", "INFO")


class _ObservingInterceptor(AioServerInterceptor):
    """Maps raised errors to statuses, writes the access log and records metrics, per RPC.

    One interceptor does all three because all three need the call's final status code, which
    only exists where the handler's outcome is turned into a status.
    """

    # grpc-stubs says a handler is always returned; grpc returns None for unknown methods.
    async def intercept_service(  # type: ignore[override]
        self,
        continuation: Any,
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler: grpc.RpcMethodHandler[Any, Any] | None = await continuation(handler_call_details)
        if handler is None:
            return None
        call = _Call(handler_call_details)
        if handler.request_streaming and handler.response_streaming:
            behavior, factory = handler.stream_stream, grpc.stream_stream_rpc_method_handler
        elif handler.request_streaming:
            behavior, factory = handler.stream_unary, grpc.stream_unary_rpc_method_handler
        elif handler.response_streaming:
            behavior, factory = handler.unary_stream, grpc.unary_stream_rpc_method_handler
        else:
            behavior, factory = handler.unary_unary, grpc.unary_unary_rpc_method_handler
        wrapped = (
            call.wrap_generator(behavior)
            if inspect.isasyncgenfunction(behavior)
            else call.wrap_coroutine(behavior)
        )
        deserializer = handler.request_deserializer
        if not handler.request_streaming and deserializer is not None:
            deserializer = _tolerant(deserializer)
        result: grpc.RpcMethodHandler[Any, Any] = factory(
            wrapped,
            request_deserializer=deserializer,
            response_serializer=handler.response_serializer,
        )
        return result


# No text field of any request is longer (fields with tighter rules check those too): larger
# input is a mistake or an attack, and is refused before any handler reads it.
MAX_TEXT_CHARS = 10_000


class _Undecodable:
    """A request body that is not the method's message, or holds text no service can store
    (see `_tolerant`)."""

    def __init__(self, field: str = "", problem: str = "") -> None:
        self.field = field
        self.problem = problem

    def error(self) -> InvalidArgument:
        if self.field:
            return invalid_field(self.field, self.problem)
        return InvalidArgument(
            "the request does not match this method's message: check each field's type (a map "
            "of text wants text values, a list wants a list)",
            reason="MALFORMED_REQUEST",
        )


def _tolerant(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """A request that does not decode reaches the handler wrapper as `_Undecodable`, which
    answers INVALID_ARGUMENT: grpc would answer UNKNOWN (HTTP 500) for a client's mistake.
    (Envoy's transcoder can emit such bytes, e.g. for a JSON object where a map wants text.)"""

    def decode(data: bytes) -> Any:
        try:
            request = deserialize(data)
        except DecodeError:
            return _Undecodable()
        if isinstance(request, Message) and (refused := _unstorable_text(request)):
            return _Undecodable(*refused)
        return request

    return decode


def _unstorable_text(message: Message, prefix: str = "") -> tuple[str, str] | None:
    """The first text field no service accepts, and why: a NUL character (PostgreSQL cannot
    store one, so every service refuses it up front rather than failing with a 500 at its
    first query) or more than MAX_TEXT_CHARS characters."""
    for descriptor, value in message.ListFields():
        name = f"{prefix}{descriptor.name}"
        if descriptor.message_type and descriptor.message_type.GetOptions().map_entry:
            values = [*value.keys(), *value.values()]
        elif isinstance(value, Sequence) and not isinstance(value, str):
            values = list(value)
        else:
            values = [value]
        for item in values:
            if isinstance(item, str):
                if "\x00" in item:
                    return name, "must not contain a NUL character (\\u0000)"
                if len(item) > MAX_TEXT_CHARS:
                    return name, f"must be at most {MAX_TEXT_CHARS:,} characters"
            if isinstance(item, Message) and (inner := _unstorable_text(item, f"{name}.")):
                return inner
    return None


class _Call:
    """What the interceptor knows about one method, and the per-call bookkeeping around it."""

    def __init__(self, details: grpc.HandlerCallDetails) -> None:
        self.method = details.method
        _, _, path = details.method.partition("/")
        self.service, _, self.method_name = path.partition("/")
        self.quiet = details.method.startswith(_QUIET_PREFIXES)
        self.metadata = details.invocation_metadata
        self.request_id = next((v for k, v in self.metadata or () if k == "x-request-id"), None)

    def wrap_coroutine(self, behavior: Any) -> Callable[[Any, Any], Awaitable[Any]]:
        async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = self._begin()
            outcome = _Outcome()
            try:
                if isinstance(request, _Undecodable):
                    raise request.error()
                result = behavior(request, context)
                # Also covers handlers that stream by awaiting context.write() and return None.
                if inspect.isawaitable(result):
                    result = await result
                outcome.code = _code_of(context)
                return result
            except BaseException as exc:
                await _fail(context, exc, outcome)
            finally:
                self._finish(started, outcome)

        return handle

    def wrap_generator(self, behavior: Any) -> Callable[[Any, Any], AsyncIterator[Any]]:
        async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = self._begin()
            outcome = _Outcome()
            try:
                if isinstance(request, _Undecodable):
                    raise request.error()
                async for response in behavior(request, context):
                    yield response
                outcome.code = _code_of(context)
            except BaseException as exc:
                await _fail(context, exc, outcome)
            finally:
                self._finish(started, outcome)

        return handle

    def _begin(self) -> float:
        # Each RPC runs in its own task with a copy of the server's context: these bindings
        # (and any a handler adds) last exactly as long as the call.
        continue_trace(self.metadata, self.method)
        structlog.contextvars.bind_contextvars(rpc=self.method)
        if self.request_id:
            structlog.contextvars.bind_contextvars(request_id=self.request_id)
        return time.perf_counter()

    def _finish(self, started: float, outcome: _Outcome) -> None:
        elapsed = time.perf_counter() - started
        code = outcome.code.name
        RPCS_HANDLED.labels(self.service, self.method_name, code).inc()
        RPC_SECONDS.labels(self.service, self.method_name).observe(elapsed)
        # A success is routine (DEBUG: at INFO, one line per RPC in every service cost more
        # CPU than many handlers); a refused call says what the caller got wrong (WARNING); a
        # fault is ours (ERROR).
        if outcome.code in _SERVER_FAULTS:
            level = logging.ERROR
        elif outcome.code is grpc.StatusCode.OK or self.quiet:
            level = logging.DEBUG
        else:
            level = logging.WARNING
        if not _stdlib_log.isEnabledFor(level):
            return
        fields: dict[str, Any] = {"code": code, "duration_ms": round(elapsed * 1000, 2)}
        if outcome.error is not None:
            fields.update(reason=outcome.error.reason, error=outcome.error.message)
        log.log(level, "rpc", **fields)


class _Outcome:
    def __init__(self) -> None:
        self.code = grpc.StatusCode.UNKNOWN
        self.error: GatewayError | None = None


async def _fail(
    context: grpc.aio.ServicerContext[Any, Any],
    exc: BaseException,
    outcome: _Outcome,
) -> NoReturn:
    """End the call for `exc`: domain errors become their status, anything else INTERNAL."""
    if isinstance(exc, grpc.aio.AbortError):
        # The handler called context.abort() itself; the status is already decided.
        outcome.code = _code_of(context)
        raise exc
    if isinstance(exc, asyncio.CancelledError):
        outcome.code = grpc.StatusCode.CANCELLED
        raise exc
    if not isinstance(exc, Exception):
        raise exc
    if isinstance(exc, GatewayError):
        error = exc
    elif isinstance(exc, NotImplementedError):
        # Generated servicer bases raise it for methods no issue has built yet: that is the
        # API's honest UNIMPLEMENTED (HTTP 501), not a server fault.
        error = Unimplemented("this method is not implemented yet", reason="NOT_IMPLEMENTED")
    else:
        # Details of unexpected failures stay in the (masked) log; the caller learns nothing
        # about internals.
        log.error("unhandled error in rpc", exc_info=exc)
        error = Internal("internal error")
    outcome.code, outcome.error = error.grpc_code, error
    status = to_rpc_status(error)
    await context.abort(status.code, status.details, status.trailing_metadata)


def _code_of(context: grpc.aio.ServicerContext[Any, Any]) -> grpc.StatusCode:
    code = context.code()
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.OK
