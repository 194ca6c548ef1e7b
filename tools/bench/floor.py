"""The benchmark's floor: a trivial grpc.aio server behind the gateway's own Envoy.

`python -m bench.floor` serves `paygate.payments.v1.PaymentService/GetPayment` with one
constant SUCCESS payment and nothing else (no interceptors, no database, no logging per call).
The benchmark's stack starts it and renders Envoy with a bench-only route
(`devstack.envoy`, BENCH_FLOOR_ADDR) that sends a `GET /api/v1/payments/{id}` carrying the
`x-bench-floor` header here instead of to the orchestrator, after the same JWT check, RBAC,
rate limits and JSON transcoding as every request. What it sustains is the most any REST call
could reach on this machine: the journeys' rate divided by it says how much of the machine
the payment logic itself costs.
"""

from __future__ import annotations

import asyncio
import os
import signal

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from devstack.envoy import BENCH_FLOOR_HEADER
from gateway_core.server import run_service
from paygate.payments.v1 import payments_pb2, payments_pb2_grpc

# The header that selects the floor's route.
HEADER = BENCH_FLOOR_HEADER
PAYMENT_ID = "pay_benchfloor"


def constant_payment() -> payments_pb2.Payment:
    """A finished UPI payment, about the size of the ones the journeys poll."""
    return payments_pb2.Payment(
        payment_id=PAYMENT_ID,
        merchant_id="m_benchfloor",
        user_id="bench-user",
        amount_paisa=10000,
        currency="INR",
        payment_method=payments_pb2.PaymentMethod.UPI,
        status=payments_pb2.Payment.Status.SUCCESS,
        description="bench floor",
    )


class FloorServicer(payments_pb2_grpc.PaymentServiceServicer):
    def __init__(self) -> None:
        self._payment = constant_payment()

    async def GetPayment(
        self,
        request: payments_pb2.GetPaymentRequest,
        context: grpc.aio.ServicerContext[payments_pb2.GetPaymentRequest, payments_pb2.Payment],
    ) -> payments_pb2.Payment:
        return self._payment


async def serve(address: str) -> None:
    server = grpc.aio.server()
    payments_pb2_grpc.add_PaymentServiceServicer_to_server(FloorServicer(), server)
    # Envoy health-checks every cluster over gRPC before it routes to it.
    checker = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    server.add_insecure_port(address)
    await server.start()
    await checker.set("", health_pb2.HealthCheckResponse.SERVING)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(grace=1)


def main() -> None:
    host = os.environ.get("SERVER_HOST", "127.0.0.1")
    port = os.environ.get("SERVER_PORT", "50069")
    # The services' own bootstrap (and so their event loop), for a like-for-like floor.
    run_service(lambda: serve(f"{host}:{port}"))


if __name__ == "__main__":
    main()
