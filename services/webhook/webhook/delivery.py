"""The delivery worker: claims due deliveries, sends each signed, records what came of it.

Attempts run concurrently (up to CONCURRENCY per process); their outcomes are written in
batches, one transaction per batch. A consumer that adds deliveries wakes the worker at once;
otherwise it polls, which is also how retries and other replicas' work come due.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiohttp
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway_core.logging import get_logger
from webhook import metrics
from webhook.repository import (
    ENDPOINT_DISABLED_ERROR,
    FAILED,
    PENDING,
    SUCCEEDED,
    Claimed,
    DisabledEndpoint,
    Outcome,
    Repository,
)
from webhook.schedule import parse_retry_after, retry_delay
from webhook.settings import IPNetwork
from webhook.signing import secret_key, signature_headers
from webhook.ssrf import (
    RefusedDestination,
    Resolver,
    checking_connector,
    literal_problem,
    resolve,
)

log = get_logger(__name__)
tracer = trace.get_tracer(__name__)

CONCURRENCY = 200
CLAIM_BATCH = 200
RECORD_BATCH = 500
POLL_SECONDS = 0.5
# A claimed delivery is due again this long after its attempt's deadline, should its worker die.
LEASE_MARGIN = timedelta(seconds=10)
# Only the status line matters; a body beyond this is not read (and not kept).
MAX_RESPONSE_BYTES = 64 * 1024
_RETRY_AFTER_STATUSES = frozenset({429, 503})
GONE = 410


@dataclass(frozen=True)
class AttemptResult:
    attempted_at: datetime
    latency_ms: int
    response_code: int = 0
    error: str = ""
    retry_after: float | None = None
    # For metrics: success, http_error, timeout, connection_error, refused.
    kind: str = "success"


def decide(
    claimed: Claimed,
    result: AttemptResult,
    schedule: Sequence[float],
    *,
    rng: random.Random | None = None,
) -> Outcome:
    """What an attempt's result means for its delivery: done, retried later, or given up."""

    def outcome(status: str, **more: object) -> Outcome:
        return Outcome(
            claimed=claimed,
            attempted_at=result.attempted_at,
            latency_ms=result.latency_ms,
            response_code=result.response_code,
            error=result.error,
            status=status,
            next_attempt_at=more.get("next_attempt_at"),  # type: ignore[arg-type]
            dead_letter=bool(more.get("dead_letter")),
            gone=bool(more.get("gone")),
        )

    if not result.error:
        return outcome(SUCCEEDED)
    if result.response_code == GONE:
        return outcome(FAILED, gone=True)
    retry_after = result.retry_after if result.response_code in _RETRY_AFTER_STATUSES else None
    delay = retry_delay(claimed.attempts + 1, schedule, retry_after=retry_after, rng=rng)
    if delay is None:
        return outcome(FAILED, dead_letter=True)
    return outcome(PENDING, next_attempt_at=result.attempted_at + timedelta(seconds=delay))


class Sender:
    """Sends one attempt over a connection to a checked address (webhook.ssrf). Construct it
    inside the running event loop."""

    def __init__(
        self, allowed: Sequence[IPNetwork], timeout: float, resolver: Resolver = resolve
    ) -> None:
        self.timeout = timeout
        self._allowed = tuple(allowed)
        # No proxy from the environment (trust_env): a proxy would connect for us, unchecked.
        self._session = aiohttp.ClientSession(
            connector=checking_connector(allowed, limit=CONCURRENCY, resolver=resolver),
            timeout=aiohttp.ClientTimeout(total=timeout),
            trust_env=False,
            auto_decompress=False,
        )

    async def close(self) -> None:
        await self._session.close()

    async def attempt(self, claimed: Claimed) -> AttemptResult:
        attempted_at = datetime.now(UTC)
        started = time.perf_counter()
        headers = signature_headers(
            [secret_key(s) for s in claimed.secrets],
            message_id=claimed.delivery_id,
            timestamp=int(time.time()),
            body=claimed.payload,
            event_type=claimed.event_type,
        )
        code, error, kind, retry_after = 0, "", "success", None
        try:
            literal = literal_problem(claimed.url, self._allowed)
            if literal:
                raise RefusedDestination(literal)
            async with self._session.post(
                claimed.url, data=claimed.payload, headers=headers, allow_redirects=False
            ) as response:
                code = response.status
                retry_after = parse_retry_after(response.headers.get("retry-after"))
                await _read_some(response)
        except RefusedDestination as exc:
            error, kind = f"refused: {exc}", "refused"
        except TimeoutError:
            error, kind = f"timed out after {self.timeout:g} s", "timeout"
        except (aiohttp.ClientError, OSError) as exc:
            error, kind = f"connection failed: {type(exc).__name__}", "connection_error"
        if not error and not 200 <= code < 300:
            kind = "http_error"
            error = f"HTTP {code}" + (" (redirects are not followed)" if 300 <= code < 400 else "")
        latency = time.perf_counter() - started
        metrics.ATTEMPTS.labels(kind).inc()
        metrics.ATTEMPT_SECONDS.observe(latency)
        return AttemptResult(
            attempted_at=attempted_at,
            latency_ms=round(latency * 1000),
            response_code=code,
            error=error,
            retry_after=retry_after,
            kind=kind,
        )


async def _read_some(response: aiohttp.ClientResponse) -> None:
    """Read the body so the connection can be reused; a huge one is cut off (and its
    connection closed)."""
    read = 0
    while chunk := await response.content.readany():
        read += len(chunk)
        if read > MAX_RESPONSE_BYTES:
            response.close()
            return


class DeliveryWorker:
    """Claims, sends and records deliveries until cancelled (a ServiceApp background task)."""

    def __init__(
        self,
        repo: Repository,
        sender: Sender,
        *,
        schedule: Sequence[float],
        disable_after: timedelta,
        on_disabled: Callable[[DisabledEndpoint], Awaitable[None]],
        concurrency: int = CONCURRENCY,
    ) -> None:
        self._repo = repo
        self._sender = sender
        self._schedule = tuple(schedule)
        self._disable_after = disable_after
        self._on_disabled = on_disabled
        self._concurrency = concurrency
        self._lease = timedelta(seconds=sender.timeout) + LEASE_MARGIN
        self._wake = asyncio.Event()
        self._outcomes: asyncio.Queue[Outcome] = asyncio.Queue()
        self._in_flight: dict[asyncio.Task[None], Claimed] = {}

    def wake(self) -> None:
        """New deliveries are due: claim them now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        recorder = asyncio.create_task(self._record_forever())
        try:
            while True:
                self._wake.clear()
                free = self._concurrency - len(self._in_flight)
                claimed = (
                    await self._repo.claim_due(min(free, CLAIM_BATCH), self._lease)
                    if free > 0
                    else []
                )
                for delivery in claimed:
                    task = asyncio.create_task(self._deliver(delivery))
                    self._in_flight[task] = delivery
                    task.add_done_callback(self._finished)
                if claimed and len(claimed) == min(free, CLAIM_BATCH):
                    continue  # more may be due right now
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)
        finally:
            await self._stop(recorder)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(task, None)
        if len(self._in_flight) == self._concurrency - 1:
            self._wake.set()  # a slot came free while the worker was full

    async def _deliver(self, claimed: Claimed) -> None:
        # Never sent: to a disabled endpoint, or unsigned (no secret found for it).
        unsendable = (
            ENDPOINT_DISABLED_ERROR
            if not claimed.endpoint_enabled
            else "no signing secret"
            if not claimed.secrets
            else ""
        )
        if unsendable:
            self._outcomes.put_nowait(
                Outcome(
                    claimed=claimed,
                    attempted_at=datetime.now(UTC),
                    latency_ms=0,
                    response_code=0,
                    error=unsendable,
                    status=FAILED,
                    attempted=False,
                )
            )
            return
        links = _links(claimed.traceparent)
        with tracer.start_as_current_span(
            "webhook.deliver",
            kind=SpanKind.CLIENT,
            links=links,
            attributes={
                "webhook.delivery_id": claimed.delivery_id,
                "webhook.event_type": claimed.event_type,
                "webhook.attempt": claimed.attempts + 1,
            },
        ) as span:
            result = await self._sender.attempt(claimed)
            span.set_attribute("http.response.status_code", result.response_code)
            if result.error:
                span.set_status(trace.Status(trace.StatusCode.ERROR, result.error))
        outcome = decide(claimed, result, self._schedule)
        if outcome.status == SUCCEEDED:
            metrics.DELIVERIES.labels("succeeded").inc()
            lag = (
                result.attempted_at - claimed.event_at
            ).total_seconds() + result.latency_ms / 1000
            metrics.EVENT_TO_DELIVERY_SECONDS.observe(max(lag, 0.0))
        elif outcome.dead_letter:
            metrics.DELIVERIES.labels("dead_lettered").inc()
        elif outcome.gone:
            metrics.DELIVERIES.labels("gone").inc()
        self._outcomes.put_nowait(outcome)

    async def _record_forever(self) -> None:
        while True:
            batch = [await self._outcomes.get()]
            await self._record(batch)

    async def _record(self, batch: list[Outcome]) -> None:
        while len(batch) < RECORD_BATCH and not self._outcomes.empty():
            batch.append(self._outcomes.get_nowait())
        delay = 0.5
        while True:
            try:
                disabled = await self._repo.record(batch, self._disable_after)
                break
            except Exception:
                # The outcomes stay here; their leases outlive a short database outage.
                log.exception("recording delivery outcomes failed; retrying", count=len(batch))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        for endpoint in disabled:
            metrics.ENDPOINTS_DISABLED.labels(endpoint.cause).inc()
            try:
                await self._on_disabled(endpoint)
            except Exception:
                log.exception(
                    "notifying a disabled endpoint failed", webhook_id=endpoint.webhook_id
                )

    async def _stop(self, recorder: asyncio.Task[None]) -> None:
        """Let attempts in flight finish within the grace of a shutdown, record what came of
        them, and leave the rest to their leases."""
        tasks = list(self._in_flight)
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
            for task in tasks:
                task.cancel()
        recorder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await recorder
        if not self._outcomes.empty():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._record([self._outcomes.get_nowait()]), 5.0)


def _links(traceparent: str) -> list[Link]:
    """A link to the payment's trace, from the event's W3C traceparent."""
    if not traceparent:
        return []
    context = TraceContextTextMapPropagator().extract({"traceparent": traceparent})
    span_context = trace.get_current_span(context).get_span_context()
    return [Link(span_context)] if span_context.is_valid else []
