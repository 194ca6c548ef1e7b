"""Client for the fraud service, with the policy for when it cannot answer in time.

The check sits on every payment's path, so it gets a deadline of tens of milliseconds. When
the scorer is slow or down, FRAUD_FAIL_POLICY decides: "open" lets the payment through
(decision UNAVAILABLE, signal `fraud_check_unavailable`, both on the payment), "closed" fails
it. Either way the fallback is counted (`fraud_check_fallbacks_total`).

Overload must never switch screening off (issue 13): a deadline missed because this gateway is
saturated says nothing about the payment or the scorer. So the client sheds instead, before
anything is stored (UNAVAILABLE with Retry-After, HTTP 503 through Envoy; the idempotency key
is released, so the same request may be retried; the error's metadata says `cause`:
`fraud_check.<reason>`), and counts it (`fraud_check_shed_total`):

- at once, when FRAUD_MAX_IN_FLIGHT checks are already waiting for the scorer;
- at once, when this process learned of a missed deadline late (its event loop was behind by
  more than half the deadline, or LATE_S): it is saturated itself;
- when a check misses its deadline twice while the scorer answered another check in time less
  than ANSWERED_RECENTLY_S ago (or two full checks' time, if longer): the scorer is up, so the
  misses are congestion (a machine or a scorer too busy to answer promptly), not an outage.
  The 10-minute bench at twice the sustainable rate let 37 payments through unscored before
  this rule, when only a miss with other checks in flight was shed.

A deadline missed promptly is asked once more (ATTEMPTS; counted in
`fraud_check_retried_total`): one late answer is often a pause of a few tens of milliseconds on
a busy host, at a rate the stack sustains, and shedding it made a sporadic 503 out of it (three
in a 10-minute benchmark at 20 payments/s). A scorer that has answered nothing in time for that
window is down or hung, and the policy applies, to every check, however many wait: after a
scorer hangs, payments are shed for at most the window, then FRAUD_FAIL_POLICY decides. So it
does at once for a scorer that cannot be reached at all. (A retried check reaches the scorer
twice under one payment id, which its velocity windows count once.)
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import Counter

from gateway_core.admission import OVERLOADED, RETRY_AFTER_S
from gateway_core.errors import GatewayError, Unavailable
from gateway_core.logging import get_logger
from orchestrator.domain.payment import FraudSignal, FraudVerdict
from paygate.fraud.v1 import fraud_pb2, fraud_pb2_grpc

log = get_logger(__name__)

FALLBACKS = Counter(
    "fraud_check_fallbacks_total",
    "Fraud checks that did not answer in time, by the policy applied",
    ["policy", "reason"],
)
RETRIED = Counter(
    "fraud_check_retried_total",
    "Fraud checks asked again after missing their deadline alone and on time",
)
SHED = Counter(
    "fraud_check_shed_total",
    "Payments refused with UNAVAILABLE (Retry-After) rather than let through unscored",
    ["reason"],
)
# A missed deadline reported this much later than the deadline means our own event loop is
# behind: the gateway is saturated (at least this, or half the deadline).
LATE_S = 0.025
# A check that missed its deadline alone and on time is asked once more before the policy
# applies: a scorer starved of CPU for an instant (a busy machine) answers the second time; a
# hung one misses both.
ATTEMPTS = 2
# A scorer that answered a check in time this recently is up: a deadline it misses now is the
# machine's congestion, and is shed rather than let through.
ANSWERED_RECENTLY_S = 1.0


@dataclass(frozen=True)
class FraudQuery:
    payment_id: str
    merchant_id: str
    user_id: str
    amount_paisa: int
    currency: str
    payment_method: str
    vpa: str = ""
    card_fingerprint: str = ""
    card_bin: str = ""
    email: str = ""
    merchant_category: str = ""
    device_fingerprint: str = ""
    user_agent: str = ""
    ip_address: str = ""
    attempt_key: str = ""  # the merchant's Idempotency-Key: a shed creation retried counts once


class FraudClient:
    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        timeout_ms: int,
        fail_policy: str,
        max_in_flight: int = 64,
    ) -> None:
        if fail_policy not in ("open", "closed"):
            raise ValueError("FRAUD_FAIL_POLICY must be 'open' or 'closed'")
        if max_in_flight < 1:
            raise ValueError("FRAUD_MAX_IN_FLIGHT must be at least 1")
        self._stub = fraud_pb2_grpc.FraudServiceStub(channel)
        self._timeout = timeout_ms / 1000
        self._policy = fail_policy
        self._max_in_flight = max_in_flight
        self.in_flight = 0
        # When a check last got its answer in time (monotonic seconds), to tell an overloaded
        # scorer from one that is down; the window covers at least two checks' full attempts.
        self._answered_at = float("-inf")
        self._answered_window = max(ANSWERED_RECENTLY_S, 2 * ATTEMPTS * self._timeout)

    async def check(self, query: FraudQuery) -> FraudVerdict:
        """The scorer's verdict; the policy's fallback if the scorer is slow or down; raises
        Unavailable (shed, nothing stored) when the gateway is too busy to wait for it."""
        if self.in_flight >= self._max_in_flight:
            raise _shed("in_flight")
        self.in_flight += 1
        try:
            return await self._check(query)
        finally:
            self.in_flight -= 1

    async def _check(self, query: FraudQuery) -> FraudVerdict:
        now = Timestamp()
        now.GetCurrentTime()
        request = fraud_pb2.CheckTransactionRequest(
            payment_id=query.payment_id,
            merchant_id=query.merchant_id,
            user_id=query.user_id,
            amount_paisa=query.amount_paisa,
            currency=query.currency,
            payment_method=query.payment_method,
            vpa=query.vpa,
            card_fingerprint=query.card_fingerprint,
            card_bin=query.card_bin,
            email=query.email,
            merchant_category=query.merchant_category,
            device=fraud_pb2.DeviceInfo(
                fingerprint_id=query.device_fingerprint,
                user_agent=query.user_agent,
                ip_address=query.ip_address,
            ),
            occurred_at=now,
            attempt_key=query.attempt_key,
        )
        for attempt in range(ATTEMPTS):
            started = time.monotonic()
            try:
                reply = await self._stub.CheckTransaction(request, timeout=self._timeout)
                self._answered_at = time.monotonic()
                break
            except GatewayError as exc:
                if exc.grpc_code is not grpc.StatusCode.DEADLINE_EXCEEDED:
                    return self._fallback(exc.grpc_code.name.lower())
                late = time.monotonic() - started - self._timeout
                if late > max(LATE_S, self._timeout / 2):
                    raise _shed("deadline_while_late") from exc
                if attempt + 1 < ATTEMPTS:
                    RETRIED.inc()
                    continue
                if time.monotonic() - self._answered_at < self._answered_window:
                    raise _shed("deadline_while_scorer_answers") from exc
                return self._fallback("deadline_exceeded")
        return FraudVerdict(
            score=reply.score,
            decision=fraud_pb2.CheckTransactionResponse.Decision.Name(reply.decision),
            signals=tuple(FraudSignal(s.name, s.points, s.detail) for s in reply.signals),
        )

    def _fallback(self, reason: str) -> FraudVerdict:
        FALLBACKS.labels(policy=self._policy, reason=reason).inc()
        log.warning("fraud check unavailable", policy=self._policy, reason=reason)
        if self._policy == "closed":
            return FraudVerdict(0, "BLOCK", (FraudSignal("fraud_check_unavailable", 0, reason),))
        return FraudVerdict(0, "UNAVAILABLE", (FraudSignal("fraud_check_unavailable", 0, reason),))


def _shed(reason: str) -> Unavailable:
    SHED.labels(reason=reason).inc()
    log.warning("payment shed: fraud screening is saturated", reason=reason)
    return Unavailable(
        "the gateway is at capacity and will not let a payment through unscored: retry shortly",
        reason=OVERLOADED,
        metadata={"cause": f"fraud_check.{reason}"},
        retry_after_s=RETRY_AFTER_S,
    )
