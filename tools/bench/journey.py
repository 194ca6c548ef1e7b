"""One iteration of the benchmark, the UPI payment journey, and what it records.

    POST /api/v1/payments  (UPI, VPA success@upi, a fresh Idempotency-Key)
    ... the customer approves in the sandbox, which calls the gateway back (about 1 s) ...
    GET /api/v1/payments/{id}  every poll interval, until SUCCESS or the success timeout

Latency is measured from when a request was *due*, not from when it was sent: the payment's
creation is due at the iteration's arrival time, a poll at its slot on the poll cadence (or as
soon as the previous poll answered, if that was later). A generator that falls behind thus
shows up in the numbers instead of hiding them (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench.client import Gateway, PoolTimeout
from gateway_core.ids import new_id

CREATE = "create"
GET = "get"
JOURNEY = "time_to_success"

SUCCESS = "SUCCESS"
# Statuses a fresh UPI payment never leaves: polling further is pointless.
TERMINAL_FAILURES = frozenset({"FAILED", "EXPIRED", "CANCELLED", "REFUNDED", "PARTIALLY_REFUNDED"})
EXAMPLE_CHARS = 300
UNFINISHED = "unfinished when the run ended"


class SetupError(RuntimeError):
    """The benchmark cannot run against this gateway (not ready, merchants not created)."""


@dataclass(frozen=True)
class RequestRecord:
    op: str  # CREATE or GET
    measured: bool  # started after the warm-up
    due: float  # clock time the request should have been sent
    end: float  # clock time the answer (or the failure) came
    error: str | None


@dataclass(frozen=True)
class JourneyRecord:
    index: int
    measured: bool
    due: float  # the arrival time
    end: float  # SUCCESS seen, or gave up
    error: str | None  # None: reached SUCCESS
    polls: int
    last_status: str | None
    payment_id: str | None = None  # once created


UNSCORED = "UNAVAILABLE"  # the fraud verdict of a payment let through unscored


@dataclass
class Recorder:
    """Everything the run observed, plus live counters for the progress display."""

    requests: list[RequestRecord] = field(default_factory=list)
    journeys: list[JourneyRecord] = field(default_factory=list)
    examples: dict[str, str] = field(default_factory=dict)  # first answer body per error kind
    started: int = 0
    dropped: int = 0
    in_flight: int = 0
    request_errors: int = 0
    # Measured creations answered with a payment the fraud check did not score (its verdict
    # UNAVAILABLE: the fail-open policy let it through). Overload must never cause one.
    unscored: int = 0

    def request(
        self, op: str, measured: bool, due: float, end: float, error: str | None, example: str
    ) -> None:
        self.requests.append(RequestRecord(op, measured, due, end, error))
        if error is not None:
            self.request_errors += 1
            self.examples.setdefault(f"{op}: {error}", example[:EXAMPLE_CHARS])

    def journey(self, record: JourneyRecord) -> None:
        self.journeys.append(record)

    @property
    def succeeded(self) -> int:
        return sum(1 for j in self.journeys if j.error is None)

    @property
    def failed(self) -> int:
        return len(self.journeys) - self.succeeded


@dataclass(frozen=True)
class Merchant:
    merchant_id: str
    headers: Mapping[str, str]  # its Authorization header


@dataclass(frozen=True)
class JourneySettings:
    poll_interval: float = 0.25
    success_timeout: float = 10.0
    amount_paisa: int = 10000
    vpa: str = "success@upi"


@dataclass
class Journeys:
    """Runs journeys through `gateway`, recording into `recorder`."""

    gateway: Gateway
    merchants: list[Merchant]
    recorder: Recorder
    settings: JourneySettings
    run_id: str
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    async def run(self, index: int, due: float, measured: bool) -> None:
        """The whole journey of arrival `index`, due at clock time `due`."""
        merchant = self.merchant_of(index)
        polls = 0
        status: str | None = None
        payment_id: str | None = None
        error: str | None
        try:
            created = await self.call(
                CREATE,
                measured,
                due,
                "POST",
                "/api/v1/payments",
                payload=self._payment(index),
                headers={**merchant.headers, "Idempotency-Key": f"bench-{self.run_id}-{index}"},
            )
            if created is None:
                error = "create failed"
            elif not isinstance(created.get("payment_id"), str):
                error = "create answered without payment_id"
            else:
                payment_id = created["payment_id"]
                status = str(created.get("status"))
                fraud = created.get("fraud")
                if measured and isinstance(fraud, dict) and fraud.get("decision") == UNSCORED:
                    self.recorder.unscored += 1
                polls, status, error = await self._poll(payment_id, merchant, measured, status)
        except Exception as exc:  # a bug in the generator must not kill the run
            error = f"generator error ({type(exc).__name__})"
        self.recorder.journey(
            JourneyRecord(index, measured, due, self.clock(), error, polls, status, payment_id)
        )

    def merchant_of(self, index: int) -> Merchant:
        """The merchant iteration `index` acts as (round robin): it owns the payment."""
        return self.merchants[index % len(self.merchants)]

    async def _poll(
        self,
        payment_id: str,
        merchant: Merchant,
        measured: bool,
        status: str,
    ) -> tuple[int, str, str | None]:
        """Poll on a fixed cadence from the creation answer; (polls, last status, error)."""
        settings = self.settings
        polls = 0
        began = self.clock()
        deadline = began + settings.success_timeout
        slot = 1
        while status != SUCCESS:
            if status in TERMINAL_FAILURES:
                return polls, status, f"ended {status}"
            due = began + slot * settings.poll_interval
            if due > deadline + 1e-9:
                timeout = f"{settings.success_timeout:g} s"
                return polls, status, f"never succeeded (still {status} after {timeout})"
            # A slot always lies after the previous answer, so waking late (a busy event loop)
            # counts against the poll's latency, as it should.
            now = self.clock()
            if due > now:
                await self.sleep(due - now)
            polls += 1
            payment = await self.call(
                GET,
                measured,
                due,
                "GET",
                f"/api/v1/payments/{payment_id}",
                headers=merchant.headers,
            )
            if payment is not None:
                status = str(payment.get("status"))
            # Next free slot on the cadence; slots missed while a poll overran are skipped.
            slot = max(slot + 1, int((self.clock() - began) / settings.poll_interval) + 1)
        return polls, status, None

    def _payment(self, index: int) -> dict[str, Any]:
        return {
            # A ULID, not a UUID: a UUID's dashed digit groups now and then read as a card
            # number, which the gateway refuses in free text (HTTP 400).
            "user_id": new_id("USR"),
            "amount_paisa": self.settings.amount_paisa,
            "currency": "INR",
            "payment_method": "UPI",
            "payment_details": {"vpa": self.settings.vpa},
            "description": f"bench {self.run_id} #{index}",
            "metadata": {"bench_run": self.run_id, "iteration": str(index)},
        }

    async def call(
        self,
        op: str,
        measured: bool,
        due: float,
        method: str,
        path: str,
        *,
        payload: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any] | None:
        """One request; its JSON object on 200, else None (the failure is recorded)."""
        error: str | None = None
        example = ""
        body: dict[str, Any] | None = None
        try:
            reply = await self.gateway.request(method, path, json=payload, headers=headers)
        except PoolTimeout:
            error = "client pool timeout"
        except TimeoutError:
            error = "timeout"
        except aiohttp.ClientError as exc:
            error = f"connection error ({type(exc).__name__})"
        except asyncio.CancelledError:
            # The run ended with this request in flight: it counts, as unanswered.
            self.recorder.request(op, measured, due, self.clock(), UNFINISHED, "")
            raise
        else:
            if reply.status != 200:
                error = f"HTTP {reply.status}{_cause(reply.body)}"
                example = reply.text
            else:
                try:
                    parsed = json.loads(reply.body)
                except ValueError:
                    parsed = None
                if isinstance(parsed, dict):
                    body = parsed
                else:
                    error = "bad response (not a JSON object)"
                    example = reply.text
        self.recorder.request(op, measured, due, self.clock(), error, example)
        return body


def _cause(body: bytes) -> str:
    """ " (admission.loop_lag)" for a refusal whose error names the bound that refused it (the
    gateway's load shedding: gateway_core.admission, the fraud check); "" otherwise."""
    try:
        error = json.loads(body)
        causes = [
            detail["metadata"]["cause"]
            for detail in error["details"]
            if detail.get("@type", "").endswith("ErrorInfo")
        ]
    except (ValueError, TypeError, KeyError, AttributeError):
        return ""
    return f" ({causes[0]})" if causes and isinstance(causes[0], str) else ""


async def wait_ready(gateway: Gateway, patience: float = 10.0) -> None:
    """Until GET /ready answers 200; SetupError after `patience` seconds."""
    deadline = time.monotonic() + patience
    last = ""
    while True:
        try:
            reply = await gateway.request("GET", "/ready")
            if reply.status == 200:
                return
            last = f"HTTP {reply.status}: {reply.text[:200]}"
        except (TimeoutError, aiohttp.ClientError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() > deadline:
            raise SetupError(f"the gateway at {gateway.url} is not ready ({last})")
        await asyncio.sleep(0.25)


async def create_merchants(
    gateway: Gateway,
    admin_headers: Mapping[str, str],
    count: int,
    run_id: str,
    token_for: Callable[[str], str],
) -> list[Merchant]:
    """Onboard `count` merchants as admin; each with its own bearer token."""
    merchants = []
    for number in range(1, count + 1):
        body = {
            "name": f"Bench {run_id} #{number}",
            "email": f"bench-{run_id}-{number}@bench.example",
        }
        try:
            reply = await gateway.request(
                "POST", "/api/v1/admin/merchants", json=body, headers=admin_headers
            )
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise SetupError(f"creating merchant {number} failed: {exc!r}") from None
        if reply.status != 200:
            raise SetupError(
                f"creating merchant {number} answered HTTP {reply.status}: {reply.text[:500]}"
            )
        merchant_id = json.loads(reply.body).get("merchant_id")
        if not isinstance(merchant_id, str):
            raise SetupError(f"creating merchant {number} answered without merchant_id")
        merchants.append(
            Merchant(merchant_id, {"Authorization": f"Bearer {token_for(merchant_id)}"})
        )
    return merchants
