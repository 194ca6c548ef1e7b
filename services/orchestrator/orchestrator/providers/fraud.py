"""Client for the fraud service, with the policy for when it cannot answer in time.

The check sits on every payment's path, so it gets a deadline of tens of milliseconds. When
the scorer is slow or down, FRAUD_FAIL_POLICY decides: "open" lets the payment through
(ALLOW, marked UNAVAILABLE), "closed" fails it. Either way the fallback is counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import Counter

from gateway_core.errors import GatewayError
from gateway_core.logging import get_logger
from orchestrator.domain.payment import FraudSignal, FraudVerdict
from paygate.fraud.v1 import fraud_pb2, fraud_pb2_grpc

log = get_logger(__name__)

FALLBACKS = Counter(
    "fraud_check_fallbacks_total",
    "Fraud checks that did not answer in time, by the policy applied",
    ["policy", "reason"],
)


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


class FraudClient:
    def __init__(self, channel: grpc.aio.Channel, *, timeout_ms: int, fail_policy: str) -> None:
        if fail_policy not in ("open", "closed"):
            raise ValueError("FRAUD_FAIL_POLICY must be 'open' or 'closed'")
        self._stub = fraud_pb2_grpc.FraudServiceStub(channel)
        self._timeout = timeout_ms / 1000
        self._policy = fail_policy

    async def check(self, query: FraudQuery) -> FraudVerdict:
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
        )
        try:
            reply = await self._stub.CheckTransaction(request, timeout=self._timeout)
        except GatewayError as exc:
            return self._fallback(exc.grpc_code.name.lower())
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
