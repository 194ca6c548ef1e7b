"""paygate.fraud.v1.FraudService (DESIGN.md §5): CheckTransaction.

Thin: validates the request, gathers the signals (list and rule signals from the rules in force,
velocity and device signals from Redis, the model's points when a scorer is loaded), lets
`scoring.decide` turn them into a verdict, and records metrics.

Degradation: Redis down or slow skips the velocity and device signals and adds the 0-point
signals "velocity_unavailable" / "device_unavailable"; no scorer, or a scorer that fails, gives
`rules_only = true`. Neither fails the call: the orchestrator decides its own policy from it.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import grpc
from prometheus_client import Counter, Histogram
from redis.exceptions import RedisError

from fraud.device import DeviceObservation, DeviceStore, device_signals
from fraud.rules import DeviceLimits, RulesFile
from fraud.scoring import (
    Decision,
    ModelScore,
    Scorer,
    Signal,
    Thresholds,
    Transaction,
    Verdict,
    decide,
)
from fraud.velocity import VelocityStats, VelocityStore, velocity_signals
from gateway_core.errors import FieldViolation, InvalidArgument
from gateway_core.logging import get_logger
from paygate.fraud.v1 import fraud_pb2, fraud_pb2_grpc

log = get_logger(__name__)

# Builds the model's `fraud.model.Features` from what the service knows about a payment.
FeatureBuilder = Callable[[Transaction, VelocityStats, DeviceObservation], Any]

FRAUD_SCORES = Histogram(
    "fraud_score_distribution",
    "Distribution of fraud scores",
    ["payment_method", "risk_level"],
    buckets=(10, 20, 30, 40, 50, 60, 70, 80, 90, 100),
)
FRAUD_DECISIONS = Counter(
    "fraud_decisions_total",
    "Fraud decisions, by decision and the signal that drove it (its top signal).",
    ["decision", "reason"],
)
FRAUD_DEGRADED = Counter(
    "fraud_degraded_total",
    "Checks scored without a component (velocity, device, model) because it was unavailable.",
    ["component"],
)

_PROTO_DECISIONS = {
    Decision.ALLOW: fraud_pb2.CheckTransactionResponse.ALLOW,
    Decision.REVIEW: fraud_pb2.CheckTransactionResponse.REVIEW,
    Decision.BLOCK: fraud_pb2.CheckTransactionResponse.BLOCK,
}
_REDIS_FAILURES = (RedisError, OSError, asyncio.TimeoutError)


class FraudServicer(fraud_pb2_grpc.FraudServiceServicer):
    """Scores payments for the orchestrator."""

    def __init__(
        self,
        rules: RulesFile,
        thresholds: Thresholds,
        velocity: VelocityStore,
        devices: DeviceStore,
        scorer: Scorer | None = None,
        features: FeatureBuilder | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._rules = rules
        self._thresholds = thresholds
        self._velocity = velocity
        self._devices = devices
        self._scorer = scorer if features is not None else None
        self._features = features
        self._clock = clock

    async def CheckTransaction(
        self,
        request: fraud_pb2.CheckTransactionRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> fraud_pb2.CheckTransactionResponse:
        txn = self._transaction(request)
        verdict = await self.assess(txn)
        FRAUD_SCORES.labels(txn.payment_method, verdict.decision.value.lower()).observe(
            verdict.score
        )
        FRAUD_DECISIONS.labels(verdict.decision.value, verdict.reason).inc()
        log.info(
            "fraud check",
            payment_id=txn.payment_id,
            merchant_id=txn.merchant_id,
            score=verdict.score,
            decision=verdict.decision.value,
            reason=verdict.reason,
            rules_only=verdict.rules_only,
        )
        return fraud_pb2.CheckTransactionResponse(
            score=verdict.score,
            decision=_PROTO_DECISIONS[verdict.decision],
            signals=[
                fraud_pb2.Signal(name=s.name, points=s.points, detail=s.detail)
                for s in verdict.signals
            ],
            model_version=verdict.model_version,
            rules_only=verdict.rules_only,
        )

    async def assess(self, txn: Transaction) -> Verdict:
        rules = self._rules.current  # one rule set for the whole check, even across a reload
        signals = rules.list_signals(txn, self._thresholds.max_score)
        signals += rules.rule_signals(txn)
        stats, seen = await asyncio.gather(
            self._record_velocity(txn), self._observe_device(txn, rules.device)
        )
        if stats is None:
            signals.append(Signal("velocity_unavailable", 0, "velocity store unreachable"))
        else:
            signals += velocity_signals(stats, rules.velocity)
        if seen is None:
            signals.append(Signal("device_unavailable", 0, "device store unreachable"))
        else:
            signals += device_signals(seen, rules.device)
        model = await self._model_score(txn, stats or {}, seen or DeviceObservation())
        return decide(signals, self._thresholds, model)

    async def _record_velocity(self, txn: Transaction) -> VelocityStats | None:
        try:
            return await self._velocity.record(txn)
        except _REDIS_FAILURES as exc:
            FRAUD_DEGRADED.labels("velocity").inc()
            log.warning("velocity unavailable, scoring without it", error=repr(exc))
            return None

    async def _observe_device(
        self, txn: Transaction, limits: DeviceLimits
    ) -> DeviceObservation | None:
        try:
            return await self._devices.observe(txn, limits)
        except _REDIS_FAILURES as exc:
            FRAUD_DEGRADED.labels("device").inc()
            log.warning("device store unavailable, scoring without it", error=repr(exc))
            return None

    async def _model_score(
        self, txn: Transaction, stats: VelocityStats, seen: DeviceObservation
    ) -> ModelScore | None:
        if self._scorer is None or self._features is None:
            return None
        try:
            result = self._scorer.score(self._features(txn, stats, seen))
            return await result if inspect.isawaitable(result) else result
        except Exception:
            FRAUD_DEGRADED.labels("model").inc()
            log.exception("model scorer failed, scoring with rules only")
            return None

    def _transaction(self, request: fraud_pb2.CheckTransactionRequest) -> Transaction:
        problems = [
            FieldViolation(name, "is required")
            for name in ("payment_id", "merchant_id", "currency", "payment_method")
            if not getattr(request, name).strip()
        ]
        if request.amount_paisa <= 0:
            problems.append(FieldViolation("amount_paisa", "must be positive"))
        if problems:
            raise InvalidArgument.for_fields(problems)
        now = self._clock()
        # A time in the future would slide every window past the payments really in it.
        occurred_at = (
            min(request.occurred_at.ToDatetime(tzinfo=UTC), now)
            if request.HasField("occurred_at")
            else now
        )
        return Transaction(
            payment_id=request.payment_id,
            merchant_id=request.merchant_id,
            amount_paisa=request.amount_paisa,
            currency=request.currency,
            payment_method=request.payment_method.strip().upper(),
            occurred_at=occurred_at,
            user_id=request.user_id,
            vpa=request.vpa,
            card_fingerprint=request.card_fingerprint,
            card_bin=request.card_bin,
            email=request.email,
            merchant_category=request.merchant_category,
            device_fingerprint=request.device.fingerprint_id,
            user_agent=request.device.user_agent,
            ip_address=request.device.ip_address,
            attempt_key=request.attempt_key,
        )
