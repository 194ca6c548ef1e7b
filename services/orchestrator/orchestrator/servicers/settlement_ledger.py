"""paygate.ledger.v1.SettlementLedgerService: reconciliation posts matched settlement lines.

Internal: Envoy never routes it (gateway_core.services lists it as internal), and every call
must carry the reconciliation service's identity (`x-service-token` signed with
RECONCILIATION_SERVICE_KEY, gateway_core.service_auth); no other service, and no merchant or
admin token, can move money into the bank accounts.
"""

from __future__ import annotations

from collections.abc import Mapping

import asyncpg

from gateway_core.auth import RpcContext
from gateway_core.config import Settings
from gateway_core.limits import FieldProblems
from gateway_core.logging import get_logger
from gateway_core.service_auth import verify_service_token
from orchestrator import settlement_store
from orchestrator.settlement_store import LineType, ProviderBalance, SettlementLine
from paygate.ledger.v1 import settlement_pb2, settlement_pb2_grpc

log = get_logger(__name__)

AUDIENCE = "orchestrator"
RECONCILIATION = "reconciliation"
MAX_LINE_KEY_CHARS = 200
MAX_REFERENCE_CHARS = 64  # provider, payment, refund, settlement ids and UTRs
# A line's amounts fit a bigint comfortably and no real settlement line comes near this.
MAX_LINE_PAISA = 10**15

_LINE_TYPES: Mapping[int, LineType] = {
    settlement_pb2.PAYMENT: "PAYMENT",
    settlement_pb2.REFUND: "REFUND",
}


def service_keys(settings: Settings) -> dict[str, str]:
    """The HS256 keys of the services the settlement ledger trusts, by service name."""
    return {RECONCILIATION: settings.secret("reconciliation_service_key")}


def settlement_line(request: settlement_pb2.PostSettlementLineRequest) -> SettlementLine:
    """The request as a line, or InvalidArgument naming every field that breaks a rule."""
    problems = FieldProblems()
    bad = problems.add
    for name, value, limit in (
        ("line_key", request.line_key, MAX_LINE_KEY_CHARS),
        ("provider", request.provider, MAX_REFERENCE_CHARS),
        ("payment_id", request.payment_id, MAX_REFERENCE_CHARS),
        ("settlement_id", request.settlement_id, MAX_REFERENCE_CHARS),
        ("utr", request.utr, MAX_REFERENCE_CHARS),
    ):
        if not value.strip():
            bad(name, "is required")
        elif len(value) > limit:
            bad(name, f"must be at most {limit} characters")
    if ":" in request.provider:
        bad("provider", "must be a provider name as payments show it (no ':')")
    line_type = _LINE_TYPES.get(request.type)
    if line_type is None:
        bad("type", "must be PAYMENT or REFUND")
    if line_type == "REFUND":
        if not request.refund_id.strip():
            bad("refund_id", "is required for a REFUND line")
        elif len(request.refund_id) > MAX_REFERENCE_CHARS:
            bad("refund_id", f"must be at most {MAX_REFERENCE_CHARS} characters")
        if request.fee_paisa or request.tax_paisa:
            bad("fee_paisa", "must be 0 on a REFUND line (a refund carries no fee or tax)")
    elif request.refund_id:
        bad("refund_id", "must be empty on a PAYMENT line")
    if not 0 < request.amount_paisa <= MAX_LINE_PAISA:
        bad("amount_paisa", f"must be a positive number of paisa up to {MAX_LINE_PAISA}")
    if request.fee_paisa < 0:
        bad("fee_paisa", "must not be negative")
    if request.tax_paisa < 0:
        bad("tax_paisa", "must not be negative")
    fee_total = request.fee_paisa + request.tax_paisa
    if request.fee_paisa >= 0 and request.tax_paisa >= 0 and fee_total > request.amount_paisa > 0:
        bad("fee_paisa", "fee_paisa + tax_paisa must not exceed amount_paisa")
    problems.raise_if_any()
    assert line_type is not None
    return SettlementLine(
        line_key=request.line_key,
        provider=request.provider,
        payment_id=request.payment_id,
        refund_id=request.refund_id if line_type == "REFUND" else None,
        type=line_type,
        amount_paisa=request.amount_paisa,
        fee_paisa=request.fee_paisa,
        tax_paisa=request.tax_paisa,
        settlement_id=request.settlement_id,
        utr=request.utr,
    )


class SettlementLedgerServicer(settlement_pb2_grpc.SettlementLedgerServiceServicer):
    def __init__(self, pool: asyncpg.Pool, service_keys: Mapping[str, str]) -> None:
        self._pool = pool
        self._service_keys = dict(service_keys)

    async def PostSettlementLine(
        self, request: settlement_pb2.PostSettlementLineRequest, context: RpcContext
    ) -> settlement_pb2.PostSettlementLineResponse:
        caller = verify_service_token(context, AUDIENCE, self._service_keys)
        line = settlement_line(request)
        posted = await settlement_store.post_settlement_line(self._pool, line)
        if not posted.already_posted:
            log.info(
                "settlement line posted",
                caller=caller,
                line_key=line.line_key,
                journal_id=posted.journal_id,
                provider=line.provider,
                type=line.type,
                amount_paisa=line.amount_paisa,
                settlement_id=line.settlement_id,
            )
        return settlement_pb2.PostSettlementLineResponse(
            journal_id=posted.journal_id, already_posted=posted.already_posted
        )

    async def GetProviderBalances(
        self, request: settlement_pb2.GetProviderBalancesRequest, context: RpcContext
    ) -> settlement_pb2.GetProviderBalancesResponse:
        verify_service_token(context, AUDIENCE, self._service_keys)
        problems = FieldProblems()
        if len(request.provider) > MAX_REFERENCE_CHARS or ":" in request.provider:
            problems.add("provider", "must be a provider name as payments show it")
        problems.raise_if_any()
        balances = await settlement_store.provider_balances(self._pool, request.provider)
        return settlement_pb2.GetProviderBalancesResponse(
            balances=[_balance_proto(balance) for balance in balances]
        )


def _balance_proto(balance: ProviderBalance) -> settlement_pb2.ProviderBalance:
    return settlement_pb2.ProviderBalance(
        provider=balance.provider,
        currency=balance.currency,
        captured_paisa=balance.captured_paisa,
        refunded_paisa=balance.refunded_paisa,
        adjusted_paisa=balance.adjusted_paisa,
        settled_paisa=balance.settled_paisa,
        receivable_paisa=balance.receivable_paisa,
        bank_paisa=balance.bank_paisa,
        fees_paisa=balance.fees_paisa,
    )
