"""Real servers shared by the service-level tests in this folder.

One PostgreSQL per test session (started the way the local stack starts it: as an
unprivileged user when we are root), and a fresh role and database per test module, so
modules never see each other's rows.
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from devstack import postgres
from devstack.postgres import ScratchServer
from devstack.process import Child, stop_together
from gateway_core.ids import new_id
from orchestrator.connectors.card import CardDetails
from orchestrator.connectors.upi import UpiDetails
from orchestrator.domain.payment import FraudVerdict, Payment
from orchestrator.domain.states import Status
from orchestrator.repository import NewPayment

START_SECONDS = 30


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScratchServer]:
    state = tmp_path_factory.mktemp("postgres")
    instance = postgres.prepare(state)

    def spawn(name: str, argv: list[str], stop_signal: int = signal.SIGTERM) -> Child:
        return Child.spawn(
            name,
            argv,
            log_path=state / "postgres.log",
            env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"},
            cwd=instance.home,
            run_as=instance.run_as,
            append=True,
            stop_signal=stop_signal,
        )

    initdb = spawn("initdb", instance.initdb_argv(fast=True))
    if initdb.wait(START_SECONDS) != 0:
        instance.discard()
        pytest.fail(f"initdb failed:\n{initdb.log_tail()}", pytrace=False)
    port = free_port()
    # SIGINT is PostgreSQL's fast shutdown.
    server = spawn("postgres", instance.server_argv(port, fast=True), stop_signal=signal.SIGINT)
    try:
        yield ScratchServer(instance, port, server)
    finally:
        stop_together([server], timeout=10)
        instance.discard()


@pytest.fixture(scope="session")
def in_process_server() -> dict[str, Any]:
    """Settings for a service's own server run in the test's process: any free port, no
    metrics port, no tracing, a short shutdown. A test merges its service's settings over it."""
    return {
        "server_host": "127.0.0.1",
        "server_port": 0,
        "enable_metrics": False,
        "jaeger_endpoint": "",
        "shutdown_grace_seconds": 1,
    }


@pytest.fixture
def make_payment() -> Callable[..., Payment]:
    """A stored payment, built in memory (for tests of code that only reads one)."""

    def make(**overrides: Any) -> Payment:
        now = datetime.now(UTC)
        values: dict[str, Any] = {
            "payment_id": "PAY_TEST1",
            "merchant_id": "MER_TEST1",
            "user_id": "user-1",
            "amount_paisa": 20_000,
            "currency": "INR",
            "payment_method": "CARD",
            "status": Status.CREATED,
            "fees_paisa": 400,
            "tax_paisa": 72,
            "description": "",
            "callback_url": "",
            "metadata": {},
            "payment_details": CardDetails(card_token=""),
            "payment_url": "",
            "capture_method": "AUTOMATIC",
            "provider": "razorpay",
            "external_txn_id": "",
            "gateway_response": {},
            "failure_reason": "",
            "version": 1,
            "fraud": FraudVerdict(0, "ALLOW"),
            "expires_at": now + timedelta(minutes=15),
            "processed_at": None,
            "created_at": now,
            "updated_at": now,
            "operation": None,
            "operation_from": None,
            "job_failures": 0,
        }
        values.update(overrides)
        return Payment(**values)

    return make


@pytest.fixture
def new_payment() -> Callable[..., NewPayment]:
    """A payment to store (`Repository.create_payment`) for a merchant: a ₹200 UPI payment
    unless `overrides` say otherwise (field by field), with an id of its own."""

    def make(merchant_id: str, **overrides: Any) -> NewPayment:
        values: dict[str, Any] = {
            "payment_id": new_id("PAY"),
            "merchant_id": merchant_id,
            "user_id": "u",
            "amount_paisa": 20_000,
            "currency": "INR",
            "payment_method": "UPI",
            "description": "",
            "callback_url": "",
            "metadata": {},
            "payment_details": UpiDetails(vpa="success@upi"),
            "capture_method": "AUTOMATIC",
            "payment_url": "",
            "provider": "upi",
            "expires_at": None,
        }
        values.update(overrides)
        return NewPayment(**values)

    return make
