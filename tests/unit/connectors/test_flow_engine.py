"""The flow engine (PaymentProcessor) knows no payment method: driven here by a scripted
connector (a fake of the PaymentConnector protocol), it stores payments in a real PostgreSQL
and moves them as the connector's Steps and provider results say. No provider server runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import asyncpg
import pytest

from devstack.postgres import ScratchServer
from gateway_core.admission import Admission, LoopLag
from gateway_core.db import create_pool
from gateway_core.errors import FailedPrecondition, InvalidArgument, Unavailable
from gateway_core.fees import compute_fee
from gateway_core.ids import new_id
from orchestrator import ledger_store
from orchestrator.connectors.base import (
    Apply,
    AwaitCustomer,
    DetailsInput,
    DetailsType,
    Prepared,
    Reporter,
    RequireAction,
    StartRequest,
    Step,
    result_from_callback,
    stored_fields,
)
from orchestrator.connectors.registry import Connectors
from orchestrator.domain.payment import EmiTerms, FraudVerdict, Merchant, Payment
from orchestrator.domain.states import Status
from orchestrator.processing import PaymentProcessor, PaymentStart
from orchestrator.providers.base import Outcome, ProviderResult
from orchestrator.providers.fraud import FraudClient, FraudQuery
from orchestrator.repository import NewPayment, Repository
from orchestrator.servicers.wire import encode_event, payment_message
from orchestrator.settings import Settings

SUCCESS = ProviderResult(Outcome.SUCCESS, "TXN_1", {"rrn": "R1"})
FAILED = ProviderResult(Outcome.FAILED, failure_reason="declined")


@dataclass(frozen=True)
class FakeDetails:
    reference: str = "ref"
    redirect_url: str = ""

    def encode(self) -> dict[str, str]:
        return stored_fields(reference=self.reference, redirect_url=self.redirect_url)

    @classmethod
    def decode(cls, stored: Mapping[str, str]) -> FakeDetails:
        return cls(stored.get("reference", ""), stored.get("redirect_url", ""))

    def emi_terms(self, amount_paisa: int) -> EmiTerms | None:
        return None


# The fakes' details stand in for those of the methods they play.
FAKE_DETAILS: Mapping[str, DetailsType] = {"UPI": FakeDetails, "WALLET": FakeDetails}


@dataclass
class Scripted:
    """A connector that answers what the test scripted, and notes what it was asked."""

    method: ClassVar[str] = "UPI"
    details_type: ClassVar[DetailsType] = FakeDetails
    manual_capture: ClassVar[bool] = False
    offers_emi: ClassVar[bool] = False

    step: Step = field(default_factory=lambda: Apply(SUCCESS, "fake answer"))
    refuse_start: Exception | None = None
    refuse_initiate: Exception | None = None
    refuse_undo: Exception | None = None
    status_result: ProviderResult = field(default_factory=lambda: ProviderResult(Outcome.PENDING))
    withdraw_result: ProviderResult = field(default_factory=lambda: FAILED)
    capture_result: ProviderResult = field(default_factory=lambda: SUCCESS)
    void_result: ProviderResult = field(default_factory=lambda: SUCCESS)
    refund_result: ProviderResult = field(default_factory=lambda: SUCCESS)
    hold: bool = False
    calls: list[str] = field(default_factory=list)

    @staticmethod
    def validate_details(given: DetailsInput, bad: Reporter) -> None:
        pass

    @staticmethod
    def read_details(given: DetailsInput) -> FakeDetails:
        return FakeDetails()

    async def prepare(self, request: StartRequest) -> Prepared:
        self.calls.append("prepare")
        if self.refuse_start is not None:
            raise self.refuse_start
        return Prepared(provider="fakepay", details=FakeDetails(), undo=self.undo)

    async def undo(self) -> None:
        """What a card's connector does with the card it tokenized for a refused payment."""
        self.calls.append("undo")
        if self.refuse_undo is not None:
            raise self.refuse_undo

    async def initiate(
        self, request: StartRequest, payment: Payment, prepared: Prepared, *, step_up: bool
    ) -> Step:
        self.calls.append("initiate")
        if self.refuse_initiate is not None:
            raise self.refuse_initiate
        return self.step

    async def status(self, payment: Payment) -> ProviderResult:
        self.calls.append("status")
        return self.status_result

    async def withdraw(self, payment: Payment) -> ProviderResult:
        self.calls.append("withdraw")
        return self.withdraw_result

    async def capture(self, payment: Payment) -> ProviderResult:
        self.calls.append("capture")
        return self.capture_result

    async def void(self, payment: Payment) -> ProviderResult:
        self.calls.append("void")
        return self.void_result

    async def refund(self, payment: Payment, refund_id: str, amount_paisa: int) -> ProviderResult:
        self.calls.append(f"refund {refund_id} {amount_paisa}")
        return self.refund_result

    def late_success_is_hold(self, payment: Payment) -> bool:
        return self.hold

    async def on_callback(self, payment: Payment, provider: str, doc: Mapping[str, Any]) -> Step:
        return result_from_callback(payment, provider, doc)


@dataclass
class Holding(Scripted):
    """A method whose authorizations can be held for a later capture."""

    method: ClassVar[str] = "WALLET"
    manual_capture: ClassVar[bool] = True


class Fraud(FraudClient):
    def __init__(self, decision: str = "ALLOW") -> None:
        self.decision = decision
        self.queries: list[FraudQuery] = []

    async def check(self, query: FraudQuery) -> FraudVerdict:
        self.queries.append(query)
        return FraudVerdict(score=90 if self.decision == "BLOCK" else 5, decision=self.decision)


@pytest.fixture(scope="module")
async def database(postgres_server: ScratchServer) -> Settings:
    settings = await postgres_server.database("flow_engine", "orchestrator")
    # The scratch server answers with the shared settings; the engine reads the orchestrator's.
    return Settings.model_validate({**dict(settings), "app_env": "local"})


@pytest.fixture(scope="module")
async def pool(database: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database, "orchestrator", "flow-engine-tests")
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture(scope="module")
async def merchant(pool: asyncpg.Pool) -> Merchant:
    repo = Repository(pool, "payments.events", encode_event, FAKE_DETAILS)
    merchant_id = new_id("MER")
    return await repo.create_merchant(
        merchant_id=merchant_id, name="Test shop", email="", vpa="shop@paygate", category="5411"
    )


@dataclass
class Engine:
    processor: PaymentProcessor
    repo: Repository
    merchant: Merchant

    async def start(self, method: str, *, capture_method: str = "AUTOMATIC") -> Payment:
        return await self.processor.start(
            PaymentStart(
                merchant=self.merchant,
                user_id="user-1",
                amount_paisa=25_000,
                currency="INR",
                method=method,
                details=FakeDetails(),
                description="",
                callback_url="",
                metadata={},
                capture_method=capture_method,
                expire_after=timedelta(minutes=15),
            )
        )


async def engine(
    pool: asyncpg.Pool,
    database: Settings,
    merchant: Merchant,
    *connectors: Scripted,
    fraud: Fraud | None = None,
    admission: Admission | None = None,
) -> Engine:
    repo = Repository(pool, "payments.events", encode_event, FAKE_DETAILS)
    processor = PaymentProcessor(
        repo,
        database,
        connectors=Connectors(connectors),
        pricing=await ledger_store.load_pricing(pool),
        fraud=fraud or Fraud(),
        admission=admission or Admission("payments", LoopLag(), max_in_flight=8, max_lag_ms=100),
    )
    return Engine(processor, repo, merchant)


async def test_a_providers_success_completes_the_payment_with_its_fee(
    pool: asyncpg.Pool, database: Settings, merchant: Merchant
) -> None:
    flow = await engine(pool, database, merchant, Scripted())
    payment = await flow.start("UPI")
    assert payment.status == Status.SUCCESS
    assert payment.provider == "fakepay"
    assert payment.external_txn_id == "TXN_1"
    assert payment.gateway_response == {"rrn": "R1"}
    fee = compute_fee(25_000, (await ledger_store.load_pricing(pool))["UPI"])
    assert (payment.fees_paisa, payment.tax_paisa) == (fee.fee_paisa, fee.tax_paisa)
    assert [s.to_status for s in payment.history] == ["CREATED", "SUCCESS"]


async def test_a_payment_the_provider_holds_waits_for_the_customer_with_an_inquiry_due(
    pool: asyncpg.Pool, database: Settings, merchant: Merchant
) -> None:
    step = AwaitCustomer("awaiting the customer", timedelta(seconds=10), "TXN_P")
    flow = await engine(pool, database, merchant, Scripted(step=step))
    payment = await flow.start("UPI")
    assert payment.status == Status.PENDING
    assert payment.external_txn_id == "TXN_P"
    due = await pool.fetchval(
        "SELECT next_inquiry_at FROM payments WHERE payment_id = $1", payment.payment_id
    )
    assert timedelta(seconds=5) < due - datetime.now(UTC) <= timedelta(seconds=10)


async def test_a_redirect_is_shown_as_the_next_action(
    pool: asyncpg.Pool, database: Settings, merchant: Merchant
) -> None:
    step = RequireAction("go to the bank", FakeDetails(redirect_url="https://bank/p"))
    flow = await engine(pool, database, merchant, Scripted(step=step))
    payment = await flow.start("UPI")
    assert payment.status == Status.REQUIRES_ACTION
    wire = payment_message(payment)
    assert wire.next_action.type == "REDIRECT"
    assert wire.next_action.redirect_url == "https://bank/p"


async def test_a_refusal_before_the_payment_exists_stores_nothing(
    pool: asyncpg.Pool, database: Settings, merchant: Merchant
) -> None:
    before = await pool.fetchval("SELECT count(*) FROM payments")
    refusal = InvalidArgument("no such customer", reason="INVALID_FIELD")
    flow = await engine(pool, database, merchant, Scripted(refuse_start=refusal))
    with pytest.raises(InvalidArgument):
        await flow.start("UPI")
    assert await pool.fetchval("SELECT count(*) FROM payments") == before


async def test_a_payment_past_the_admission_bound_is_refused_before_anything_is_stored(
    pool: asyncpg.Pool, database: Settings, merchant: Merchant
) -> None:
    before = await pool.fetchval("SELECT count(*) FROM payments")
    admission = Admission("payments", LoopLag(), max_in_flight=1, max_lag_ms=100)
    connector = Scripted()
    flow = await engine(pool, database, merchant, connector, admission=admission)
    # Another payment is being screened and stored.
    with admission.admit(), pytest.raises(Unavailable) as refusal:
        await flow.start("UPI")
    assert refusal.value.reason == "OVERLOADED"
    assert refusal.value.retry_after_s == 1
    # Never started at the provider, and what preparing made is undone (in the background).
    await flow.processor.drain()
    assert connector.calls == ["prepare", "undo"]
    assert await pool.fetchval("SELECT count(*) FROM payments") == before
    assert (await flow.start("UPI")).status == Status.SUCCESS  # room again


async def test_a_payment_shed_at_the_fraud_check_is_undone_and_stores_nothing(
    pool: asyncpg.Pool, database: Settings, merchant: Merchant
) -> None:
    """A card tokenized for a payment that is then shed would stay in the vault, unused."""

    class Shedding(Fraud):
        async def check(self, query: FraudQuery) -> FraudVerdict:
            raise Unavailable("the gateway is busy", reason="OVERLOADED")

    before = await pool.fetchval("SELECT count(*) FROM payments")
    connector = Scripted()
    flow = await engine(pool, database, merchant, connector, fraud=Shedding())
    with pytest.raises(Unavailable):
        await flow.start("UPI")
    await flow.processor.drain()
    assert connector.calls == ["prepare", "undo"]
    assert await pool.fetchval("SELECT count(*) FROM payments") == before


async def test_a_refusal_does_not_wait_for_its_undo(
    pool: asyncpg.Pool, database: Settings, merchant: Merchant
) -> None:
    """Past saturation the 503 goes back at once, and the key is free for the retry, however
    slow the vault is to delete the card."""
    release = asyncio.Event()

    @dataclass
    class SlowUndo(Scripted):
        async def undo(self) -> None:
            await release.wait()
            await super().undo()

    admission = Admission("payments", LoopLag(), max_in_flight=1, max_lag_ms=100)
    connector = SlowUndo()
    flow = await engine(pool, database, merchant, connector, admission=admission)
    with admission.admit(), pytest.raises(Unavailable):
        await asyncio.wait_for(flow.start("UPI"), timeout=5)
    assert connector.calls == ["prepare"]  # refused, the undo still waiting
    release.set()
    await flow.processor.drain()
    assert connector.calls == ["prepare", "undo"]


async def test_a_payment_cancelled_while_it_is_screened_is_undone_and_stores_nothing(
    pool: asyncpg.Pool, database: Settings, merchant: Merchant
) -> None:
    """A shutdown cancels the handler mid-screening: the payment never exists, so the card it
    put in the vault goes again, and the place it held is given back."""
    screening = asyncio.Event()

    class Hanging(Fraud):
        async def check(self, query: FraudQuery) -> FraudVerdict:
            screening.set()
            await asyncio.Event().wait()
            raise AssertionError("never answered")

    before = await pool.fetchval("SELECT count(*) FROM payments")
    admission = Admission("payments", LoopLag(), max_in_flight=8, max_lag_ms=100)
    connector = Scripted()
    flow = await engine(pool, database, merchant, connector, fraud=Hanging(), admission=admission)
    started = asyncio.ensure_future(flow.start("UPI"))
    await asyncio.wait_for(screening.wait(), 5)
    started.cancel()
    with pytest.raises(asyncio.CancelledError):
        await started
    await flow.processor.drain()
    assert connector.calls == ["prepare", "undo"]
    assert admission.in_flight == 0
    assert await pool.fetchval("SELECT count(*) FROM payments") == before


async def test_an_undo_that_fails_leaves_the_refusal_as_it_was(
    pool: asyncpg.Pool, database: Settings, merchant: Merchant
) -> None:
    admission = Admission("payments", LoopLag(), max_in_flight=1, max_lag_ms=100)
    connector = Scripted(refuse_undo=Unavailable("the vault is down", reason="VAULT_DOWN"))
    flow = await engine(pool, database, merchant, connector, admission=admission)
    with admission.admit(), pytest.raises(Unavailable) as refusal:
        await flow.start("UPI")
    assert refusal.value.reason == "OVERLOADED"
    await flow.processor.drain()
    assert connector.calls == ["prepare", "undo"]


async def test_a_store_that_fails_after_screening_undoes_nothing(
    pool: asyncpg.Pool, database: Settings, merchant: Merchant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed insert may still have committed (its answer lost on the way back): the payment
    may exist and name the card, so nothing is undone."""
    connector = Scripted()
    flow = await engine(pool, database, merchant, connector)
    create_payment = flow.repo.create_payment

    async def committed_then_lost(new: NewPayment) -> Payment:
        await create_payment(new)
        raise ConnectionResetError("connection lost before the answer")

    monkeypatch.setattr(flow.repo, "create_payment", committed_then_lost)
    with pytest.raises(ConnectionResetError):
        await flow.start("UPI")
    await flow.processor.drain()
    assert connector.calls == ["prepare"]


async def test_a_payment_that_was_stored_is_never_undone(
    pool: asyncpg.Pool, database: Settings, merchant: Merchant
) -> None:
    """Blocked by fraud or refused by the provider, the payment exists and names its card."""
    refused = Scripted(refuse_initiate=InvalidArgument("no", reason="INVALID_FIELD"))
    for connector, fraud in (
        (Scripted(), Fraud()),
        (Scripted(), Fraud("BLOCK")),
        (refused, Fraud()),
    ):
        flow = await engine(pool, database, merchant, connector, fraud=fraud)
        await flow.start("UPI")
        await flow.processor.drain()
        assert "undo" not in connector.calls, connector.calls


async def test_only_screening_and_storing_hold_an_admission_place(
    pool: asyncpg.Pool, database: Settings, merchant: Merchant
) -> None:
    """A slow bank is not this process's load: preparing (a VPA or balance lookup at the
    provider) and starting at the provider hold no place; screening and storing do."""
    admission = Admission("payments", LoopLag(), max_in_flight=1, max_lag_ms=100)
    places: dict[str, int] = {}

    @dataclass
    class Watching(Scripted):
        async def prepare(self, request: StartRequest) -> Prepared:
            places["prepare"] = admission.in_flight
            return await super().prepare(request)

        async def initiate(
            self, request: StartRequest, payment: Payment, prepared: Prepared, *, step_up: bool
        ) -> Step:
            places["initiate"] = admission.in_flight
            return await super().initiate(request, payment, prepared, step_up=step_up)

    class WatchingFraud(Fraud):
        async def check(self, query: FraudQuery) -> FraudVerdict:
            places["screen"] = admission.in_flight
            return await super().check(query)

    flow = await engine(
        pool, database, merchant, Watching(), fraud=WatchingFraud(), admission=admission
    )
    assert (await flow.start("UPI")).status == Status.SUCCESS
    assert places == {"prepare": 0, "screen": 1, "initiate": 0}
    assert admission.in_flight == 0


async def test_a_provider_that_refuses_the_start_fails_the_payment(
    pool: asyncpg.Pool, database: Settings, merchant: Merchant
) -> None:
    refusal = FailedPrecondition("account closed", reason="ACCOUNT_CLOSED")
    flow = await engine(pool, database, merchant, Scripted(refuse_initiate=refusal))
    payment = await flow.start("UPI")
    assert payment.status == Status.FAILED
    assert payment.failure_reason == "provider_rejected"


async def test_a_payment_fraud_screening_blocks_never_reaches_the_provider(
    pool: asyncpg.Pool, database: Settings, merchant: Merchant
) -> None:
    connector = Scripted()
    flow = await engine(pool, database, merchant, connector, fraud=Fraud("BLOCK"))
    payment = await flow.start("UPI")
    assert payment.status == Status.FAILED
    assert payment.failure_reason == "fraud_blocked"
    assert connector.calls == ["prepare"]


async def test_a_method_that_holds_authorizations_is_authorized_then_captured(
    pool: asyncpg.Pool, database: Settings, merchant: Merchant
) -> None:
    connector = Holding()
    flow = await engine(pool, database, merchant, connector)
    payment = await flow.start("WALLET", capture_method="MANUAL")
    assert payment.status == Status.AUTHORIZED
    assert payment.expires_at is not None
    assert payment.expires_at - datetime.now(UTC) > database.authorization_ttl - timedelta(
        minutes=1
    )
    captured = await flow.processor.capture(payment.payment_id, merchant.merchant_id, 0)
    assert captured.status == Status.SUCCESS
    assert connector.calls[-1] == "capture"


async def test_a_refused_capture_leaves_the_payment_authorized(
    pool: asyncpg.Pool, database: Settings, merchant: Merchant
) -> None:
    connector = Holding(capture_result=ProviderResult(Outcome.FAILED, failure_reason="expired"))
    flow = await engine(pool, database, merchant, connector)
    payment = await flow.start("WALLET", capture_method="MANUAL")
    with pytest.raises(FailedPrecondition) as info:
        await flow.processor.capture(payment.payment_id, merchant.merchant_id, 0)
    assert info.value.reason == "CAPTURE_REFUSED"
    again = await flow.repo.get_payment(payment.payment_id, None)
    assert again.status == Status.AUTHORIZED


async def test_manual_capture_means_nothing_to_a_method_that_cannot_hold(
    pool: asyncpg.Pool, database: Settings, merchant: Merchant
) -> None:
    flow = await engine(pool, database, merchant, Scripted())
    payment = await flow.start("UPI", capture_method="MANUAL")
    assert payment.status == Status.SUCCESS


async def test_an_inquiry_applies_what_the_provider_reports(
    pool: asyncpg.Pool, database: Settings, merchant: Merchant
) -> None:
    connector = Scripted(step=AwaitCustomer("waiting", timedelta(seconds=10)))
    flow = await engine(pool, database, merchant, connector)
    payment = await flow.start("UPI")
    connector.status_result = FAILED
    inquired = await flow.processor.inquire(payment)
    assert inquired.status == Status.FAILED
    assert inquired.failure_reason == "declined"


async def test_a_success_reported_after_a_cancel_is_refunded_as_a_reversal(
    pool: asyncpg.Pool, database: Settings, merchant: Merchant
) -> None:
    connector = Scripted(step=AwaitCustomer("waiting", timedelta(seconds=10)))
    flow = await engine(pool, database, merchant, connector)
    payment = await flow.start("UPI")
    cancelled = await flow.processor.cancel(payment.payment_id, merchant.merchant_id, "")
    assert cancelled.status == Status.CANCELLED
    after = await flow.processor.apply_result(payment.payment_id, SUCCESS, "late callback")
    assert after.status == Status.CANCELLED
    assert [(r.kind, r.status, r.amount_paisa) for r in after.refunds] == [
        ("REVERSAL", "PROCESSED", 25_000)
    ]
    assert connector.calls[-1] == f"refund REV_{payment.payment_id} 25000"


async def test_a_late_authorization_is_voided_not_refunded(
    pool: asyncpg.Pool, database: Settings, merchant: Merchant
) -> None:
    connector = Holding(step=AwaitCustomer("waiting", timedelta(seconds=10)), hold=True)
    flow = await engine(pool, database, merchant, connector)
    payment = await flow.start("WALLET", capture_method="MANUAL")
    await flow.processor.cancel(payment.payment_id, merchant.merchant_id, "")
    after = await flow.processor.apply_result(payment.payment_id, SUCCESS, "late callback")
    assert after.status == Status.CANCELLED
    assert after.refunds == ()
    assert connector.calls[-1] == "void"


async def test_a_callback_about_another_amount_changes_nothing(
    pool: asyncpg.Pool, database: Settings, merchant: Merchant
) -> None:
    flow = await engine(
        pool, database, merchant, Scripted(step=AwaitCustomer("waiting", timedelta(seconds=10)))
    )
    payment = await flow.start("UPI")
    doc = {
        "event_id": "EV1",
        "provider": "fakepay",
        "transaction_ref": payment.payment_id,
        "status": "SUCCESS",
        "amount_paisa": 1,
    }
    with pytest.raises(FailedPrecondition) as info:
        await flow.processor.handle_callback("fakepay", doc)
    assert info.value.reason == "AMOUNT_MISMATCH"
    doc["amount_paisa"] = payment.amount_paisa
    handled = await flow.processor.handle_callback("fakepay", doc)
    assert handled.applied
    assert handled.payment.status == Status.SUCCESS
