"""ServiceApp end to end on a real grpc.aio server (port 0): errors, identity, health, drain."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import signal
import sys
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2_grpc
from grpc_health.v1.health_pb2 import HealthCheckRequest as Request
from grpc_health.v1.health_pb2 import HealthCheckResponse as Response
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from opentelemetry import trace
from prometheus_client import REGISTRY

from gateway_core.auth import caller_from_context, require_admin
from gateway_core.config import Settings
from gateway_core.errors import NotFound, from_rpc_error, invalid_field
from gateway_core.grpc_client import insecure_channel
from gateway_core.server import ServiceApp
from gateway_core.telemetry import recording, server_interceptors

SERVICE = "paygate.test.v1.Probe"
PAN = "4111111111111111"


class ProbeServicer:
    """A servicer the way services write them: plain async methods that raise domain errors."""

    async def Check(self, request: Request, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        scenario = request.service
        if scenario == "missing":
            raise NotFound("payment PAY_1 not found", reason="PAYMENT_NOT_FOUND")
        if scenario == "bad-amount":
            raise invalid_field("amount_paisa", "must be greater than 0")
        if scenario == "bug":
            raise RuntimeError(f"card {PAN} broke the parser")
        if scenario == "not-built":
            raise NotImplementedError("Method not implemented!")  # what generated bases raise
        if scenario == "whoami":
            caller = caller_from_context(context)
            return Response(status=Response.SERVING if caller.merchant_id == "m_1" else 0)
        if scenario == "admin-only":
            require_admin(context)
        return Response(status=Response.SERVING)

    async def Watch(self, request: Request, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        for _ in range(2):
            yield Response(status=Response.SERVING)
        raise NotFound("stream ended", reason="STREAM_GONE")


def add_probe_to_server(servicer: ProbeServicer, server: grpc.aio.Server) -> None:
    handlers = {
        "Check": grpc.unary_unary_rpc_method_handler(
            servicer.Check, Request.FromString, Response.SerializeToString
        ),
        "Watch": grpc.unary_stream_rpc_method_handler(
            servicer.Watch, Request.FromString, Response.SerializeToString
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


@dataclass
class Running:
    app: ServiceApp
    channel: grpc.aio.Channel
    run: asyncio.Task[None]
    database_up: list[bool]
    background_starts: list[int]
    shutdown_order: list[str] = field(default_factory=list)

    async def check(self, scenario: str, metadata: tuple[tuple[str, str], ...] = ()) -> Response:
        call = self.channel.unary_unary(
            f"/{SERVICE}/Check", Request.SerializeToString, Response.FromString
        )
        response: Response = await call(Request(service=scenario), metadata=metadata)
        return response

    async def health(self, service: str = "") -> int:
        stub = health_pb2_grpc.HealthStub(self.channel)
        status: int = (await stub.Check(Request(service=service))).status
        return status


@pytest_asyncio.fixture(scope="module")
async def running() -> AsyncIterator[Running]:
    settings = Settings.model_validate(
        {
            "server_host": "127.0.0.1",
            "server_port": 0,
            "enable_metrics": True,
            "metrics_port": 0,
            "jaeger_endpoint": "",
            "log_level": "DEBUG",
            "shutdown_grace_seconds": 1,
        }
    )
    app = ServiceApp("probe", settings)
    app.add_service(SERVICE, add_probe_to_server, ProbeServicer())
    database_up = [True]

    async def database() -> None:
        if not database_up[0]:
            raise ConnectionError("database unreachable")

    app.add_dependency_check("database", database)
    background_starts: list[int] = []

    async def flaky_relay() -> None:
        background_starts.append(1)
        if len(background_starts) == 1:
            raise RuntimeError("relay crashed")
        await asyncio.Event().wait()

    app.add_background_task("relay", flaky_relay)
    run = asyncio.create_task(app.run())
    port = await asyncio.wait_for(app.wait_started(), 10)
    channel = insecure_channel(f"http://127.0.0.1:{port}", typed_errors=False)
    state = Running(app, channel, run, database_up, background_starts)

    def hook(name: str) -> Callable[[], Awaitable[None]]:
        async def record() -> None:
            state.shutdown_order.append(name)

        return record

    app.on_shutdown(hook("first registered"))
    app.on_shutdown(hook("last registered"))
    yield state
    await channel.close(grace=None)
    if not run.done():
        app.stop()
        await asyncio.wait_for(run, 10)


@pytest.fixture
def server_log() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    buffer = io.StringIO()
    capture = logging.StreamHandler(buffer)
    capture.setFormatter(root.handlers[0].formatter)
    root.addHandler(capture)
    yield buffer
    root.removeHandler(capture)


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    metadata: Any = error.trailing_metadata()
    (details,) = [value for key, value in metadata if key == "grpc-status-details-bin"]
    info = error_details_pb2.ErrorInfo()
    assert any(d.Unpack(info) for d in status_pb2.Status.FromString(details).details)
    return info


async def test_successful_call_returns_the_response(running: Running) -> None:
    assert (await running.check("ok")).status == Response.SERVING


async def test_raised_not_found_reaches_the_client_with_its_reason(running: Running) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await running.check("missing")

    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert raised.value.details() == "payment PAY_1 not found"
    info = error_info(raised.value)
    assert (info.reason, info.domain) == ("PAYMENT_NOT_FOUND", "paygate")


async def test_field_violations_reach_the_client(running: Running) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await running.check("bad-amount")

    error = from_rpc_error(raised.value)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "INVALID_FIELD"
    assert [(v.field, v.description) for v in error.field_violations] == [
        ("amount_paisa", "must be greater than 0")
    ]


async def test_unexpected_exception_is_internal_and_logged_masked(
    running: Running, server_log: io.StringIO
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await running.check("bug")

    assert raised.value.code() == grpc.StatusCode.INTERNAL
    assert raised.value.details() == "internal error"
    assert error_info(raised.value).reason == "INTERNAL"
    logged = server_log.getvalue()
    assert PAN not in logged
    assert "RuntimeError: card ************1111 broke the parser" in logged


async def test_methods_not_built_yet_answer_unimplemented(running: Running) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await running.check("not-built")

    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert error_info(raised.value).reason == "NOT_IMPLEMENTED"


async def test_errors_raised_by_streaming_handlers_are_mapped_too(running: Running) -> None:
    call = running.channel.unary_stream(
        f"/{SERVICE}/Watch", Request.SerializeToString, Response.FromString
    )
    received: list[int] = []

    async def read_all() -> None:
        async for response in call(Request()):
            received.append(response.status)

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await read_all()

    assert received == [Response.SERVING, Response.SERVING]
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(raised.value).reason == "STREAM_GONE"


async def test_caller_identity_comes_from_envoy_metadata(running: Running) -> None:
    identity = (("x-merchant-id", "m_1"), ("x-caller-role", "merchant"))

    assert (await running.check("whoami", identity)).status == Response.SERVING


@pytest.mark.parametrize(
    ("metadata", "code"),
    [
        ((), grpc.StatusCode.UNAUTHENTICATED),
        ((("x-merchant-id", "m_1"),), grpc.StatusCode.UNAUTHENTICATED),
        ((("x-merchant-id", "m_1"), ("x-caller-role", "root")), grpc.StatusCode.PERMISSION_DENIED),
    ],
)
async def test_missing_or_unknown_identity_is_refused(
    running: Running, metadata: tuple[tuple[str, str], ...], code: grpc.StatusCode
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await running.check("whoami", metadata)

    assert raised.value.code() == code


async def test_admin_operations_refuse_merchants(running: Running) -> None:
    merchant = (("x-merchant-id", "m_1"), ("x-caller-role", "merchant"))
    admin = (("x-merchant-id", "ops"), ("x-caller-role", "admin"))

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await running.check("admin-only", merchant)

    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_info(raised.value).reason == "ADMIN_REQUIRED"
    assert (await running.check("admin-only", admin)).status == Response.SERVING


async def test_calls_are_counted_by_service_method_and_code(running: Running) -> None:
    labels = {"service": SERVICE, "method": "Check", "code": "NOT_FOUND"}
    before = REGISTRY.get_sample_value("grpc_server_handled_total", labels) or 0.0

    with pytest.raises(grpc.aio.AioRpcError):
        await running.check("missing")

    # The server counts a call as it finishes, which may be just after the client has its answer.
    for _ in range(100):
        if REGISTRY.get_sample_value("grpc_server_handled_total", labels) != before:
            break
        await asyncio.sleep(0.02)
    assert REGISTRY.get_sample_value("grpc_server_handled_total", labels) == before + 1
    url = f"http://127.0.0.1:{running.app.metrics_port}/metrics"
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
    assert b"grpc_server_handling_seconds_bucket" in body


async def test_access_log_carries_the_callers_trace_id(
    running: Running, server_log: io.StringIO
) -> None:
    with trace.get_tracer("test").start_as_current_span("client") as span:
        await running.check("ok")

    (line,) = [json.loads(x) for x in server_log.getvalue().splitlines() if '"rpc"' in x]
    assert line["rpc"] == f"/{SERVICE}/Check"
    assert line["code"] == "OK"
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")


async def test_without_an_exporter_no_tracing_interceptor_but_every_call_has_a_trace(
    running: Running, server_log: io.StringIO
) -> None:
    assert not recording()
    assert server_interceptors() == []
    with trace.get_tracer("test").start_as_current_span("client") as span:
        await running.check("ok")
    await running.check("ok")
    await running.check("ok")

    lines = [json.loads(x) for x in server_log.getvalue().splitlines() if '"rpc"' in x]
    caller = span.get_span_context()
    first, second, third = lines
    # The caller's trace continues in a span of the server's own.
    assert first["trace_id"] == format(caller.trace_id, "032x")
    assert first["span_id"] != format(caller.span_id, "016x")
    # A call from outside any trace starts one of its own.
    assert len({first["trace_id"], second["trace_id"], third["trace_id"]}) == 3


async def test_access_log_level_is_debug_for_success_warning_for_refusal_error_for_fault(
    running: Running, server_log: io.StringIO
) -> None:
    await running.check("ok")
    for scenario in ("missing", "bug"):
        with pytest.raises(grpc.aio.AioRpcError):
            await running.check(scenario)

    lines = [json.loads(x) for x in server_log.getvalue().splitlines() if '"rpc"' in x]
    assert [(line["code"], line["level"]) for line in lines if line["event"] == "rpc"] == [
        ("OK", "debug"),
        ("NOT_FOUND", "warning"),
        ("INTERNAL", "error"),
    ]


async def test_successes_write_no_access_log_at_info(
    running: Running, server_log: io.StringIO
) -> None:
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    try:
        await running.check("ok")
        with pytest.raises(grpc.aio.AioRpcError):
            await running.check("missing")
    finally:
        root.setLevel(level)

    lines = [json.loads(x) for x in server_log.getvalue().splitlines() if '"rpc"' in x]
    assert [line["code"] for line in lines if line["event"] == "rpc"] == ["NOT_FOUND"]


async def test_reflection_lists_the_registered_services(running: Running) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(running.channel)

    async def requests() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    names = set()
    async for response in stub.ServerReflectionInfo(requests()):
        names = {s.name for s in response.list_services_response.service}

    assert SERVICE in names
    assert "grpc.health.v1.Health" in names


async def test_crashed_background_task_is_restarted(running: Running) -> None:
    for _ in range(50):
        if len(running.background_starts) >= 2:
            break
        await asyncio.sleep(0.1)

    assert len(running.background_starts) == 2


async def test_health_follows_dependency_checks(running: Running) -> None:
    assert await running.health() == Response.SERVING
    assert await running.health(SERVICE) == Response.SERVING
    watch = health_pb2_grpc.HealthStub(running.channel).Watch(Request())
    assert (await watch.read()).status == Response.SERVING

    running.database_up[0] = False
    await asyncio.sleep(2.5)
    assert await running.health() == Response.NOT_SERVING
    assert await running.health(SERVICE) == Response.NOT_SERVING
    assert (await watch.read()).status == Response.NOT_SERVING
    watch.cancel()

    running.database_up[0] = True
    await asyncio.sleep(2.5)
    assert await running.health() == Response.SERVING


async def test_stop_drains_then_runs_shutdown_hooks_last_registered_first(
    running: Running,
) -> None:
    running.app.stop()
    await asyncio.wait_for(running.run, 10)

    assert running.shutdown_order == ["last registered", "first registered"]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await running.check("ok")
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


SERVICE_MAIN = """
from gateway_core.config import Settings
from gateway_core.server import ServiceApp, run_service


async def main() -> None:
    settings = Settings.model_validate(
        {"server_port": 0, "enable_metrics": False, "jaeger_endpoint": "", "log_level": "INFO"}
    )
    app = ServiceApp("signals", settings)
    await app.run()


run_service(main)
"""


async def test_sigterm_drains_and_exits_zero(tmp_path: Path) -> None:
    script = tmp_path / "service.py"
    script.write_text(SERVICE_MAIN)
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(script), stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    first = json.loads(await asyncio.wait_for(process.stdout.readline(), 30))
    assert first["event"] == "listening"

    process.send_signal(signal.SIGTERM)
    rest, _ = await asyncio.wait_for(process.communicate(), 30)

    assert process.returncode == 0
    assert [json.loads(x)["event"] for x in rest.splitlines()] == ["draining", "stopped"]


async def test_with_an_exporter_opentelemetry_interceptors_trace_every_call(
    tmp_path: Path,
) -> None:
    script = tmp_path / "traced.py"
    script.write_text(
        "from gateway_core.config import Settings\n"
        "from gateway_core.telemetry import (\n"
        "    client_interceptors, configure_tracing, recording, server_interceptors)\n"
        "configure_tracing('traced', Settings.model_validate({'jaeger_endpoint': ''}))\n"
        "print(recording(), [type(i).__name__ for i in server_interceptors()],\n"
        "      [type(i).__module__.split('.')[0] for i in client_interceptors()])\n"
    )
    environment = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(script), stdout=asyncio.subprocess.PIPE, env=environment
    )
    out, _ = await asyncio.wait_for(process.communicate(), 30)

    assert process.returncode == 0
    recorded, server, client = out.decode().strip().split(" ", 2)
    assert recorded == "True"
    assert server == "['_TracingServerInterceptor']"
    assert "opentelemetry" in client


async def test_services_run_on_uvloop(tmp_path: Path) -> None:
    script = tmp_path / "loop.py"
    script.write_text(
        "import asyncio\n"
        "from gateway_core.server import run_service\n"
        "async def main() -> None:\n"
        "    print(type(asyncio.get_running_loop()).__module__, flush=True)\n"
        "run_service(main)\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(script), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(process.communicate(), 30)

    assert process.returncode == 0
    assert out.decode().split() == ["uvloop"]


async def test_crash_exits_one_with_a_masked_log_line(tmp_path: Path) -> None:
    script = tmp_path / "crash.py"
    script.write_text(
        "from gateway_core.server import run_service\n"
        "async def main() -> None:\n"
        f"    raise RuntimeError('bad card {PAN}')\n"
        "run_service(main)\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(script), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(process.communicate(), 30)

    assert process.returncode == 1
    (line,) = [json.loads(x) for x in out.splitlines()]
    assert line["event"] == "service crashed"
    assert "RuntimeError: bad card ************1111" in line["exception"]
    assert PAN.encode() not in out
