"""The orchestrator's internal settlement ledger (paygate.ledger.v1.SettlementLedgerService),
called over gRPC as the reconciliation service calls it: settlement lines move captured money
from the provider's receivable to the bank, once per line and once per payment or refund, only
the reconciliation identity may call it, and Envoy never routes it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2, status_pb2

from devstack.stack import Stack
from gateway_core.config import Settings
from gateway_core.service_auth import ServiceIdentity, service_channel
from paygate.ledger.v1 import settlement_pb2, settlement_pb2_grpc

pytestmark = pytest.mark.usefixtures("ledger_stays_consistent")

FUTURE_YEAR = str(datetime.now().year + 3)


@pytest.fixture
async def ledger(
    stack: Stack,
) -> AsyncIterator[settlement_pb2_grpc.SettlementLedgerServiceAsyncStub]:
    """The ledger as reconciliation reaches it: straight to the orchestrator, with its identity."""
    identity = ServiceIdentity(
        "reconciliation", stack.env["RECONCILIATION_SERVICE_KEY"], audience="orchestrator"
    )
    channel = service_channel(stack.env["ORCHESTRATOR_ADDR"], identity, typed_errors=False)
    try:
        yield settlement_pb2_grpc.SettlementLedgerServiceStub(channel)
    finally:
        await channel.close(None)


def card(amount: int) -> dict[str, Any]:
    return {
        "amount_paisa": amount,
        "currency": "INR",
        "payment_method": "CARD",
        "payment_details": {
            "card": {
                "card_number": "4111111111111111",
                "expiry_month": "12",
                "expiry_year": FUTURE_YEAR,
                "cvv": "123",
            }
        },
    }


def line(payment: dict[str, Any], **changes: Any) -> settlement_pb2.PostSettlementLineRequest:
    fields: dict[str, Any] = {
        "line_key": f"setl_test:{uuid.uuid4().hex}",
        "provider": payment["provider"],
        "payment_id": payment["payment_id"],
        "type": settlement_pb2.PAYMENT,
        "amount_paisa": payment["amount_paisa"],
        "fee_paisa": payment["fees_paisa"],
        "tax_paisa": payment["tax_paisa"],
        "settlement_id": "setl_test",
        "utr": "SBXN000000000001",
    }
    return settlement_pb2.PostSettlementLineRequest(**(fields | changes))


async def balance(
    ledger: settlement_pb2_grpc.SettlementLedgerServiceAsyncStub, provider: str
) -> settlement_pb2.ProviderBalance:
    reply = await ledger.GetProviderBalances(
        settlement_pb2.GetProviderBalancesRequest(provider=provider), timeout=10
    )
    (found,) = reply.balances
    return found


async def refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value


def reason(error: grpc.aio.AioRpcError) -> str:
    """The ErrorInfo reason in the error's google.rpc.Status details."""
    # grpc.aio.Metadata at run time; the stubs type it as the sync API's tuple.
    trailers: Any = error.trailing_metadata()
    packed = trailers.get("grpc-status-details-bin") if trailers is not None else None
    if not isinstance(packed, bytes):
        return ""
    for detail in status_pb2.Status.FromString(packed).details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    return ""


def holds(found: settlement_pb2.ProviderBalance) -> None:
    """receivable = captured - refunded - adjusted - settled, and the bank and fees add up."""
    assert found.receivable_paisa == (
        found.captured_paisa - found.refunded_paisa - found.adjusted_paisa - found.settled_paisa
    )


async def test_payment_and_refund_lines_move_the_receivable_to_the_bank_once(
    payments: Any, ledger: settlement_pb2_grpc.SettlementLedgerServiceAsyncStub
) -> None:
    paid = await payments.create(card(100_000))
    paid = await payments.wait_for(paid["payment_id"], "SUCCESS")
    refunded = await payments.act(paid["payment_id"], "refund", {"amount_paisa": 30_000})
    assert refunded.status_code == 200, refunded.text
    (refund,) = (await payments.get(paid["payment_id"]))["refunds"]
    assert refund["status"] == "PROCESSED"
    provider = paid["provider"]
    assert (paid["fees_paisa"], paid["tax_paisa"]) == (2000, 360)
    before = await balance(ledger, provider)
    holds(before)

    first = line(paid)
    posted = await ledger.PostSettlementLine(first, timeout=10)
    assert (posted.journal_id, posted.already_posted) == (f"settlement:{paid['payment_id']}", False)
    after_payment = await balance(ledger, provider)
    assert after_payment.settled_paisa - before.settled_paisa == 100_000
    assert before.receivable_paisa - after_payment.receivable_paisa == 100_000
    assert after_payment.bank_paisa - before.bank_paisa == 100_000 - 2000 - 360
    assert after_payment.fees_paisa - before.fees_paisa == 2000 + 360
    holds(after_payment)

    again = await ledger.PostSettlementLine(first, timeout=10)
    assert (again.journal_id, again.already_posted) == (posted.journal_id, True)
    assert await balance(ledger, provider) == after_payment

    refund_line = line(
        paid,
        type=settlement_pb2.REFUND,
        refund_id=refund["refund_id"],
        amount_paisa=30_000,
        fee_paisa=0,
        tax_paisa=0,
    )
    settled_refund = await ledger.PostSettlementLine(refund_line, timeout=10)
    assert settled_refund.journal_id == f"settlement:{paid['payment_id']}:{refund['refund_id']}"
    after_refund = await balance(ledger, provider)
    assert after_refund.settled_paisa - after_payment.settled_paisa == -30_000
    assert after_refund.bank_paisa - after_payment.bank_paisa == -30_000
    assert after_refund.receivable_paisa - after_payment.receivable_paisa == 30_000
    holds(after_refund)

    # The same line of the same settlement under another key (the day's file fetched again).
    refetched = await ledger.PostSettlementLine(line(paid), timeout=10)
    assert (refetched.journal_id, refetched.already_posted) == (posted.journal_id, True)
    # The payment paid out again by another settlement.
    twice = await refused(
        ledger.PostSettlementLine(line(paid, settlement_id="setl_other", utr="SBXN2"), timeout=10)
    )
    assert twice.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason(twice) == "ALREADY_SETTLED"
    # The same key for a different line.
    reused = await refused(
        ledger.PostSettlementLine(line(paid, line_key=first.line_key, utr="SBXN9"), timeout=10)
    )
    assert reused.code() == grpc.StatusCode.ALREADY_EXISTS
    assert reason(reused) == "LINE_KEY_REUSED"
    assert await balance(ledger, provider) == after_refund


async def test_a_line_that_disagrees_with_the_ledger_posts_nothing(
    payments: Any, ledger: settlement_pb2_grpc.SettlementLedgerServiceAsyncStub
) -> None:
    paid = await payments.create(card(50_000))
    paid = await payments.wait_for(paid["payment_id"], "SUCCESS")
    pending = await payments.create(
        {
            "amount_paisa": 10_000,
            "currency": "INR",
            "payment_method": "UPI",
            "payment_details": {"vpa": "manual@upi"},
        }
    )
    before = await balance(ledger, paid["provider"])
    other_provider = "payu" if paid["provider"] != "payu" else "razorpay"

    cases = [
        (line(paid, amount_paisa=49_900), grpc.StatusCode.FAILED_PRECONDITION, "AMOUNT_MISMATCH"),
        (
            line(paid, provider=other_provider),
            grpc.StatusCode.FAILED_PRECONDITION,
            "PROVIDER_MISMATCH",
        ),
        (
            line(pending, fee_paisa=0, tax_paisa=0),
            grpc.StatusCode.FAILED_PRECONDITION,
            "NOT_CAPTURED",
        ),
        (line(paid, payment_id="PAY_NEVER_SEEN"), grpc.StatusCode.NOT_FOUND, "PAYMENT_NOT_FOUND"),
        (
            line(paid, type=settlement_pb2.REFUND, refund_id="RFD_NONE", fee_paisa=0, tax_paisa=0),
            grpc.StatusCode.NOT_FOUND,
            "REFUND_NOT_FOUND",
        ),
    ]
    for request, code, expected in cases:
        error = await refused(ledger.PostSettlementLine(request, timeout=10))
        assert (error.code(), reason(error)) == (code, expected), request

    assert await balance(ledger, paid["provider"]) == before


async def test_a_malformed_line_names_every_bad_field(
    ledger: settlement_pb2_grpc.SettlementLedgerServiceAsyncStub,
) -> None:
    error = await refused(
        ledger.PostSettlementLine(
            settlement_pb2.PostSettlementLineRequest(
                provider="upi_core", amount_paisa=-5, fee_paisa=-1, refund_id="RFD_1"
            ),
            timeout=10,
        )
    )

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = error.details() or ""
    for field in ("line_key", "payment_id", "settlement_id", "utr", "type", "amount_paisa"):
        assert f"{field}:" in details, field
    assert "fee_paisa: must not be negative" in details


async def test_only_the_reconciliation_service_may_call_the_ledger(stack: Stack) -> None:
    request = settlement_pb2.GetProviderBalancesRequest()
    target = stack.env["ORCHESTRATOR_ADDR"]
    # The local stack runs on the published development keys.
    orchestrator_key = Settings.model_fields["orchestrator_service_key"].default
    orchestrator = ServiceIdentity(
        "orchestrator", orchestrator_key.get_secret_value(), audience="orchestrator"
    )
    forger = ServiceIdentity(
        "reconciliation", "a-key-reconciliation-never-had-" + "x" * 8, "orchestrator"
    )
    wrong_audience = ServiceIdentity(
        "reconciliation", stack.env["RECONCILIATION_SERVICE_KEY"], audience="tokenization-vault"
    )

    async with grpc.aio.insecure_channel(target) as anonymous:
        error = await refused(
            settlement_pb2_grpc.SettlementLedgerServiceStub(anonymous).GetProviderBalances(
                request, timeout=10
            )
        )
        assert (error.code(), reason(error)) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "SERVICE_TOKEN_MISSING",
        )
    for identity, code, expected in (
        (orchestrator, grpc.StatusCode.PERMISSION_DENIED, "SERVICE_NOT_ALLOWED"),
        (forger, grpc.StatusCode.UNAUTHENTICATED, "SERVICE_TOKEN_INVALID"),
        (wrong_audience, grpc.StatusCode.UNAUTHENTICATED, "SERVICE_TOKEN_INVALID"),
    ):
        channel = service_channel(target, identity, typed_errors=False)
        try:
            stub = settlement_pb2_grpc.SettlementLedgerServiceStub(channel)
            error = await refused(stub.GetProviderBalances(request, timeout=10))
            assert (error.code(), reason(error)) == (code, expected)
        finally:
            await channel.close(None)


async def test_envoy_never_routes_the_settlement_ledger(
    stack: Stack, payments: Any, ledger: settlement_pb2_grpc.SettlementLedgerServiceAsyncStub
) -> None:
    paid = await payments.create(card(20_000))
    paid = await payments.wait_for(paid["payment_id"], "SUCCESS")
    before = await balance(ledger, paid["provider"])
    admin = payments.merchant["admin"]["Authorization"]
    gateway = stack.gateway_url.removeprefix("http://").rstrip("/")
    # Even carrying reconciliation's own identity and an admin token, through the front door.
    identity = ServiceIdentity(
        "reconciliation", stack.env["RECONCILIATION_SERVICE_KEY"], audience="orchestrator"
    )
    metadata = (("authorization", admin), ("x-service-token", identity.token()))

    async with grpc.aio.insecure_channel(gateway) as channel:
        stub = settlement_pb2_grpc.SettlementLedgerServiceStub(channel)
        error = await refused(stub.PostSettlementLine(line(paid), metadata=metadata, timeout=10))
        assert error.code() == grpc.StatusCode.UNIMPLEMENTED  # HTTP 404: no route
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=10) as http:
        rest = await http.post(
            "/paygate.ledger.v1.SettlementLedgerService/GetProviderBalances",
            content=b"",
            headers={"Authorization": admin, "content-type": "application/json"},
        )
        assert rest.status_code == 404

    assert await balance(ledger, paid["provider"]) == before
