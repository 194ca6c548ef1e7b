"""Provider faults, cancels and the providers' books as the orchestrator and a test meet them:
the real sandbox ServiceApp on a gRPC port and its HTTP server, each on port 0, calling back a
receiver that plays the gateway.

A hang does the work and answers after the caller's deadline. The real hangs outlast the
orchestrator's deadlines by seconds (test_sandbox_rules keeps them in step); here they are
shortened to HANG_SECONDS against a DEADLINE_SECONDS client deadline, so the suite stays fast."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import grpc
import pytest
import pytest_asyncio

from devstack.callback_receiver import TEST_SECRETS, Receiver
from gateway_core.errors import GatewayError, from_rpc_error
from gateway_core.grpc_client import insecure_channel
from gateway_core.server import ServiceApp
from paygate.sandbox.v1 import (
    cards_pb2,
    cards_pb2_grpc,
    netbanking_pb2,
    netbanking_pb2_grpc,
    upi_pb2,
    upi_pb2_grpc,
    wallets_pb2,
    wallets_pb2_grpc,
)
from sandbox import magic
from sandbox.app import Sandbox
from sandbox.callbacks import CallbackSender
from sandbox.settings import Settings

T = TypeVar("T")

PUBLIC_URL = "https://providers.sandbox.test"
DEADLINE_SECONDS = 1.0
HANG_SECONDS = 3.0
SLOW_SECONDS = 1.0
NEXT_YEAR = str(datetime.now(UTC).year + 1)

SLOW_AUTHORIZATION = "4000000000005001"
ALL_ACQUIRERS_DOWN = "4000000000005035"
AUTHORIZATION_TIMEOUT = "4000000000005043"
THREE_DS_DOWN = "4000000000005134"
THREE_DS_TIMEOUT = "4000000000005142"
CAPTURE_TIMEOUT = "4000000000005241"
VOID_TIMEOUT = "4000000000005340"
VOID_REFUSED = "4000000000005399"
VISA_OK = "4242424242424242"
FAULT_CARDS = (
    SLOW_AUTHORIZATION,
    ALL_ACQUIRERS_DOWN,
    AUTHORIZATION_TIMEOUT,
    THREE_DS_DOWN,
    THREE_DS_TIMEOUT,
    CAPTURE_TIMEOUT,
    VOID_TIMEOUT,
    VOID_REFUSED,
)

DEBIT_TIMEOUT_PHONE = "9000000001"
WALLET_DOWN_PHONE = "9000000002"
REFUND_TIMEOUT_PHONE = "9000000003"
REFUND_FAILS_PHONE = "9000000004"
DEBIT_LATE_PHONE = "9000000005"

Auth = cards_pb2.CardAuthorization
Tds = cards_pb2.ThreeDsAuthentication
Debit = wallets_pb2.WalletDebit
WalletRefund = wallets_pb2.RefundWalletDebitResponse
Nb = netbanking_pb2.NetBankingPayment
Upi = upi_pb2


@dataclass
class Running:
    app: ServiceApp
    upi: upi_pb2_grpc.UpiCoreServiceAsyncStub
    wallets: wallets_pb2_grpc.WalletProviderServiceAsyncStub
    banks: netbanking_pb2_grpc.NetBankingServiceAsyncStub
    cards: cards_pb2_grpc.CardAcquirerServiceAsyncStub
    http: aiohttp.ClientSession
    http_url: str
    receiver: Receiver

    def callback_url(self, provider: str) -> str:
        return f"{self.receiver.url}/api/v1/provider-callbacks/{provider}"

    def local(self, public_url: str) -> str:
        """A public sandbox URL, reached on the port this test's sandbox really bound."""
        return f"{self.http_url}{urlsplit(public_url).path}"

    async def books(self, payment_id: str = "") -> dict[str, Any]:
        params = {"payment_id": payment_id} if payment_id else {}
        async with self.http.get(f"{self.http_url}/books", params=params) as response:
            assert response.status == 200
            assert response.content_type == "application/json"
            document: dict[str, Any] = await response.json()
            return document


@asynccontextmanager
async def sandbox_running(in_process_server: dict[str, Any]) -> AsyncIterator[Running]:
    receiver = Receiver()
    await receiver.start()
    settings = Settings.model_validate(
        {
            **in_process_server,
            "sandbox_http_port": 0,
            "sandbox_public_url": PUBLIC_URL,
            "gateway_public_url": receiver.url,
            "sandbox_upi_approval_delay_ms": 100,
            **{f"provider_callback_secret_{p}": key for p, key in TEST_SECRETS.items()},
        }
    )
    app = ServiceApp("sandbox", settings)
    callbacks = CallbackSender(
        settings.callback_secrets(), settings.gateway_public_url, first_backoff_seconds=0.05
    )
    sandbox = Sandbox(settings, callbacks)
    sandbox.register(app)
    run = asyncio.create_task(app.run())
    port = await asyncio.wait_for(app.wait_started(), 10)
    http_port = await asyncio.wait_for(sandbox.web.wait_started(), 10)
    channel = insecure_channel(f"127.0.0.1:{port}", typed_errors=False)
    http = aiohttp.ClientSession()
    try:
        yield Running(
            app=app,
            upi=upi_pb2_grpc.UpiCoreServiceStub(channel),
            wallets=wallets_pb2_grpc.WalletProviderServiceStub(channel),
            banks=netbanking_pb2_grpc.NetBankingServiceStub(channel),
            cards=cards_pb2_grpc.CardAcquirerServiceStub(channel),
            http=http,
            http_url=f"http://127.0.0.1:{http_port}",
            receiver=receiver,
        )
    finally:
        await http.close()
        await channel.close(grace=None)
        app.stop()
        await asyncio.wait_for(run, 10)
        await receiver.stop()


@pytest_asyncio.fixture(scope="module")
async def running(in_process_server: dict[str, Any]) -> AsyncIterator[Running]:
    async with sandbox_running(in_process_server) as sandbox:
        yield sandbox


@pytest.fixture(autouse=True)
def short_hangs(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "UPI_HANG_SECONDS",
        "WALLET_HANG_SECONDS",
        "WALLET_LATE_DEBIT_SECONDS",
        "NETBANKING_HANG_SECONDS",
    ):
        monkeypatch.setattr(magic, name, HANG_SECONDS)
    monkeypatch.setattr(magic, "CARD_HANG_SECONDS", HANG_SECONDS)
    monkeypatch.setattr(magic, "CARD_SLOW_AUTHORIZATION_SECONDS", SLOW_SECONDS)


async def rpc_error(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value


async def gateway_error(call: Awaitable[Any]) -> GatewayError:
    return from_rpc_error(await rpc_error(call))


async def misses_the_deadline(call: Awaitable[Any]) -> None:
    """The call's answer does not come within the caller's deadline."""
    started = time.monotonic()
    error = await rpc_error(call)
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < HANG_SECONDS


async def timed(call: Awaitable[T]) -> tuple[T, float]:
    started = time.monotonic()
    answer = await call
    return answer, time.monotonic() - started


def book_of(books: dict[str, Any], provider: str) -> dict[str, Any]:
    (entry,) = [p for p in books["payments"] if p["provider"] == provider]
    assert isinstance(entry, dict)
    return entry


# --- Cards --------------------------------------------------------------------------------


def card(number: str) -> cards_pb2.CardDetails:
    return cards_pb2.CardDetails(
        card_number=number, expiry_month="12", expiry_year=NEXT_YEAR, cvv="123"
    )


def authorize(
    running: Running,
    payment_id: str,
    number: str,
    gateway: str = "razorpay",
    timeout: float = DEADLINE_SECONDS,
    **fields: Any,
) -> Awaitable[cards_pb2.CardAuthorization]:
    request = cards_pb2.AuthorizeRequest(
        gateway=gateway,
        payment_id=payment_id,
        merchant_id="MER_1",
        card=card(number),
        amount_paisa=10_000,
        currency="INR",
        **fields,
    )
    answer: Awaitable[cards_pb2.CardAuthorization] = running.cards.Authorize(
        request, timeout=timeout
    )
    return answer


async def authorization(running: Running, payment_id: str, gateway: str = "razorpay") -> Auth:
    answer: Auth = await running.cards.GetAuthorization(
        cards_pb2.GetAuthorizationRequest(gateway=gateway, payment_id=payment_id)
    )
    return answer


def capture(
    running: Running, auth: Auth, timeout: float = DEADLINE_SECONDS
) -> Awaitable[cards_pb2.CaptureResponse]:
    answer: Awaitable[cards_pb2.CaptureResponse] = running.cards.Capture(
        cards_pb2.CaptureRequest(
            gateway=auth.gateway,
            acquirer_txn_id=auth.acquirer_txn_id,
            payment_id=auth.payment_id,
            amount_paisa=auth.amount_paisa,
            currency="INR",
        ),
        timeout=timeout,
    )
    return answer


def void(
    running: Running, auth: Auth, timeout: float = DEADLINE_SECONDS
) -> Awaitable[cards_pb2.VoidResponse]:
    answer: Awaitable[cards_pb2.VoidResponse] = running.cards.Void(
        cards_pb2.VoidRequest(
            gateway=auth.gateway,
            acquirer_txn_id=auth.acquirer_txn_id,
            payment_id=auth.payment_id,
        ),
        timeout=timeout,
    )
    return answer


def authenticate(
    running: Running, payment_id: str, number: str, timeout: float = DEADLINE_SECONDS
) -> Awaitable[cards_pb2.ThreeDsAuthentication]:
    answer: Awaitable[cards_pb2.ThreeDsAuthentication] = running.cards.Authenticate3ds(
        cards_pb2.Authenticate3dsRequest(
            gateway="razorpay",
            payment_id=payment_id,
            card=card(number),
            amount_paisa=10_000,
            currency="INR",
            callback_url=running.callback_url("acs"),
        ),
        timeout=timeout,
    )
    return answer


async def test_a_slow_authorization_is_approved_after_a_few_seconds(running: Running) -> None:
    approved, took = await timed(
        authorize(running, "PAY_SLOW", SLOW_AUTHORIZATION, timeout=SLOW_SECONDS + 2)
    )
    # A client less patient than the acquirer gives up; the authorization still stands. (Half
    # the acquirer's delay: a deadline equal to it raced the answer and lost on a busy machine.)
    await misses_the_deadline(
        authorize(running, "PAY_SLOW_2", SLOW_AUTHORIZATION, timeout=SLOW_SECONDS / 2)
    )

    assert approved.status == Auth.APPROVED
    assert SLOW_SECONDS <= took < SLOW_SECONDS + 2
    assert (await authorization(running, "PAY_SLOW_2")).status == Auth.APPROVED


async def test_an_authorization_timeout_is_approved_and_recorded_at_every_gateway(
    running: Running,
) -> None:
    for gateway in magic.CARD_GATEWAYS:
        await misses_the_deadline(
            authorize(running, "PAY_AUTH_HANG", AUTHORIZATION_TIMEOUT, gateway)
        )

        found = await authorization(running, "PAY_AUTH_HANG", gateway)
        repeat = await authorize(running, "PAY_AUTH_HANG", AUTHORIZATION_TIMEOUT, gateway)

        assert found.status == Auth.APPROVED
        assert found.auth_code
        assert repeat == found
    books = await running.books("PAY_AUTH_HANG")
    assert [(p["provider"], p["authorized_paisa"]) for p in books["payments"]] == [
        (gateway, 10_000) for gateway in magic.CARD_GATEWAYS
    ]


async def test_every_acquirer_is_down_for_the_all_acquirers_down_card(running: Running) -> None:
    for gateway in magic.CARD_GATEWAYS:
        down = await gateway_error(authorize(running, "PAY_ALL_DOWN", ALL_ACQUIRERS_DOWN, gateway))
        nothing = await rpc_error(authorization(running, "PAY_ALL_DOWN", gateway))

        assert (down.grpc_code, down.reason) == (
            grpc.StatusCode.UNAVAILABLE,
            "ACQUIRER_UNAVAILABLE",
        )
        assert nothing.code() == grpc.StatusCode.NOT_FOUND
    assert (await running.books("PAY_ALL_DOWN"))["payments"] == []


async def test_a_3ds_timeout_authenticates_and_a_repeat_answers_at_once(running: Running) -> None:
    await misses_the_deadline(authenticate(running, "PAY_3DS_HANG", THREE_DS_TIMEOUT))

    repeat = await authenticate(running, "PAY_3DS_HANG", THREE_DS_TIMEOUT)
    approved = await authorize(
        running,
        "PAY_3DS_HANG",
        THREE_DS_TIMEOUT,
        eci=repeat.eci,
        authentication_value=repeat.authentication_value,
        three_ds_transaction_id=repeat.three_ds_transaction_id,
    )

    assert (repeat.status, repeat.eci) == (Tds.AUTHENTICATED, "05")
    assert approved.status == Auth.APPROVED


async def test_a_3ds_server_that_is_down_answers_unavailable(running: Running) -> None:
    down = await gateway_error(authenticate(running, "PAY_3DS_DOWN", THREE_DS_DOWN))

    assert (down.grpc_code, down.reason) == (grpc.StatusCode.UNAVAILABLE, "ACS_UNAVAILABLE")


async def test_a_capture_timeout_captures_and_a_repeat_answers_captured(running: Running) -> None:
    auth = await authorize(running, "PAY_CAPTURE_HANG", CAPTURE_TIMEOUT)

    await misses_the_deadline(capture(running, auth))
    found = await authorization(running, "PAY_CAPTURE_HANG")
    repeat = await capture(running, auth)

    assert auth.status == Auth.APPROVED
    assert found.captured
    assert (repeat.status, repeat.captured_amount_paisa) == (
        cards_pb2.CaptureResponse.CAPTURED,
        10_000,
    )
    entry = book_of(await running.books("PAY_CAPTURE_HANG"), "razorpay")
    assert (entry["captured_paisa"], entry["charged_paisa"]) == (10_000, 10_000)


async def test_a_void_timeout_voids_and_a_repeat_answers_voided(running: Running) -> None:
    auth = await authorize(running, "PAY_VOID_HANG", VOID_TIMEOUT)

    await misses_the_deadline(void(running, auth))
    repeat = await void(running, auth)
    late_capture = await capture(running, auth)

    assert repeat.status == cards_pb2.VoidResponse.VOIDED
    assert (late_capture.status, late_capture.failure_code) == (
        cards_pb2.CaptureResponse.FAILED,
        "AUTHORIZATION_VOIDED",
    )
    entry = book_of(await running.books("PAY_VOID_HANG"), "razorpay")
    assert (entry["voided"], entry["authorized_paisa"], entry["charged_paisa"]) == (
        True,
        10_000,
        0,
    )


async def test_a_refused_void_fails_and_the_authorization_stays_capturable(
    running: Running,
) -> None:
    auth = await authorize(running, "PAY_VOID_REFUSED", VOID_REFUSED)

    refused = await void(running, auth)
    captured = await capture(running, auth)

    assert (refused.status, refused.failure_code) == (
        cards_pb2.VoidResponse.FAILED,
        "VOID_NOT_ALLOWED",
    )
    assert captured.status == cards_pb2.CaptureResponse.CAPTURED
    entry = book_of(await running.books("PAY_VOID_REFUSED"), "razorpay")
    assert (entry["voided"], entry["charged_paisa"]) == (False, 10_000)


async def test_a_hang_holds_up_no_other_request_and_answers_in_the_end(running: Running) -> None:
    hanging = asyncio.ensure_future(
        timed(authorize(running, "PAY_HANG_ALONE", AUTHORIZATION_TIMEOUT, timeout=HANG_SECONDS * 3))
    )
    await asyncio.sleep(0.1)

    other, other_took = await timed(authorize(running, "PAY_NOT_HELD_UP", VISA_OK))
    hung, hung_took = await hanging

    assert other.status == Auth.APPROVED
    assert other_took < DEADLINE_SECONDS
    assert hung.status == Auth.APPROVED
    assert hung_took >= HANG_SECONDS


async def test_fault_cards_log_only_their_last_four_digits(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    await rpc_error(authorize(running, "PAY_LOG_DOWN", ALL_ACQUIRERS_DOWN))
    await rpc_error(authenticate(running, "PAY_LOG_3DS_DOWN", THREE_DS_DOWN))
    await misses_the_deadline(authorize(running, "PAY_LOG_HANG", AUTHORIZATION_TIMEOUT))

    assert "**** 5035" in caplog.text
    assert "**** 5134" in caplog.text
    assert "**** 5043" in caplog.text
    leaked = [pan for pan in FAULT_CARDS if pan in caplog.text]
    assert leaked == []


# --- Wallets ------------------------------------------------------------------------------


def debit(
    running: Running, payment_id: str, phone: str, amount: int = 10_000, wallet: str = "PAYTM"
) -> Awaitable[wallets_pb2.WalletDebit]:
    answer: Awaitable[wallets_pb2.WalletDebit] = running.wallets.DebitWallet(
        wallets_pb2.DebitWalletRequest(
            wallet=wallet, phone=phone, payment_id=payment_id, amount_paisa=amount, currency="INR"
        ),
        timeout=DEADLINE_SECONDS,
    )
    return answer


def debit_of(running: Running, payment_id: str, wallet: str = "PAYTM") -> Awaitable[Debit]:
    answer: Awaitable[Debit] = running.wallets.GetWalletDebit(
        wallets_pb2.GetWalletDebitRequest(wallet=wallet, payment_id=payment_id),
        timeout=DEADLINE_SECONDS,
    )
    return answer


def refund(
    running: Running, debited: Debit, refund_id: str, amount: int, payment_id: str = ""
) -> Awaitable[WalletRefund]:
    answer: Awaitable[WalletRefund] = running.wallets.RefundWalletDebit(
        wallets_pb2.RefundWalletDebitRequest(
            wallet=debited.wallet or "PAYTM",
            wallet_txn_id=debited.wallet_txn_id or "WTX_UNKNOWN",
            payment_id=payment_id or debited.payment_id,
            refund_id=refund_id,
            amount_paisa=amount,
            currency="INR",
        ),
        timeout=DEADLINE_SECONDS,
    )
    return answer


def balance(running: Running, phone: str, wallet: str = "PAYTM") -> Awaitable[Any]:
    return running.wallets.GetWalletBalance(
        wallets_pb2.GetWalletBalanceRequest(wallet=wallet, phone=phone), timeout=DEADLINE_SECONDS
    )


async def test_a_debit_timeout_debits_once_and_inquiry_or_a_repeat_finds_it(
    running: Running,
) -> None:
    phone = DEBIT_TIMEOUT_PHONE
    await misses_the_deadline(debit(running, "PAY_W_HANG", phone, wallet="GOOGLE_PAY"))

    found = await debit_of(running, "PAY_W_HANG", "GOOGLE_PAY")
    repeat = await debit(running, "PAY_W_HANG", phone, wallet="GOOGLE_PAY")
    after = (await balance(running, phone, "GOOGLE_PAY")).balance_paisa

    assert (found.status, found.amount_paisa) == (Debit.SUCCESS, 10_000)
    assert repeat == found
    assert after == magic.AMPLE_BALANCE_PAISA - 10_000
    entry = book_of(await running.books("PAY_W_HANG"), "google_pay")
    assert (entry["status"], entry["charged_paisa"]) == ("SUCCESS", 10_000)


async def test_a_late_debit_lands_after_the_caller_gave_up_and_not_before(
    running: Running,
) -> None:
    await misses_the_deadline(debit(running, "PAY_W_LATE", DEBIT_LATE_PHONE))
    before = await gateway_error(debit_of(running, "PAY_W_LATE"))
    assert before.reason == "DEBIT_NOT_FOUND"

    give_up = time.monotonic() + 10
    while True:
        books = (await running.books("PAY_W_LATE"))["payments"]
        if books or time.monotonic() > give_up:
            break
        await asyncio.sleep(0.1)
    landed = await debit_of(running, "PAY_W_LATE")
    assert (landed.status, landed.amount_paisa) == (Debit.SUCCESS, 10_000)
    entry = book_of(await running.books("PAY_W_LATE"), "paytm")
    assert entry["charged_paisa"] == 10_000


async def test_a_wallet_that_is_down_answers_nothing_about_that_phone(running: Running) -> None:
    errors = [
        await gateway_error(balance(running, WALLET_DOWN_PHONE)),
        await gateway_error(debit(running, "PAY_W_DOWN", WALLET_DOWN_PHONE)),
        await gateway_error(debit_of(running, "PAY_W_DOWN")),
        await gateway_error(refund(running, Debit(payment_id="PAY_W_DOWN"), "WRF_DOWN", 100)),
    ]
    offers = await running.wallets.ListWalletOffers(
        wallets_pb2.ListWalletOffersRequest(wallet="PAYTM")
    )

    assert [(e.grpc_code, e.reason) for e in errors] == [
        (grpc.StatusCode.UNAVAILABLE, "WALLET_UNAVAILABLE")
    ] * 4
    assert offers.offers  # offers are the wallet's, not the phone's
    assert (await running.books("PAY_W_DOWN"))["payments"] == []


async def test_a_refund_timeout_refunds_once_and_a_repeat_answers_processed(
    running: Running,
) -> None:
    debited = await debit(running, "PAY_W_RF_HANG", REFUND_TIMEOUT_PHONE, amount=9_000)

    await misses_the_deadline(refund(running, debited, "WRF_HANG_1", 4_000))
    repeat = await refund(running, debited, "WRF_HANG_1", 4_000)
    await misses_the_deadline(refund(running, debited, "WRF_HANG_2", 5_000))
    after = (await balance(running, REFUND_TIMEOUT_PHONE)).balance_paisa

    assert repeat.status == WalletRefund.PROCESSED
    assert after == magic.AMPLE_BALANCE_PAISA
    books = await running.books("PAY_W_RF_HANG")
    assert book_of(books, "paytm")["refunded_paisa"] == 9_000
    assert [(r["refund_id"], r["status"]) for r in books["refunds"]] == [
        ("WRF_HANG_1", "PROCESSED"),
        ("WRF_HANG_2", "PROCESSED"),
    ]


async def test_a_refund_failing_wallet_refuses_every_refund(running: Running) -> None:
    debited = await debit(running, "PAY_W_RF_FAILS", REFUND_FAILS_PHONE, wallet="PHONEPE")

    refused = await refund(running, debited, "WRF_FAILS", 10_000)
    after = (await balance(running, REFUND_FAILS_PHONE, "PHONEPE")).balance_paisa

    assert (refused.status, refused.failure_code) == (WalletRefund.FAILED, "REFUND_NOT_ALLOWED")
    assert after == magic.AMPLE_BALANCE_PAISA - 10_000
    books = await running.books("PAY_W_RF_FAILS")
    assert (book_of(books, "phonepe")["refunded_paisa"], books["refunds"][0]["status"]) == (
        0,
        "FAILED",
    )


# --- Net banking --------------------------------------------------------------------------


def start_bank_payment(
    running: Running, payment_id: str, bank_code: str = "HDFC"
) -> Awaitable[netbanking_pb2.NetBankingPayment]:
    answer: Awaitable[netbanking_pb2.NetBankingPayment] = running.banks.InitiateNetBankingPayment(
        netbanking_pb2.InitiateNetBankingPaymentRequest(
            bank_code=bank_code,
            payment_id=payment_id,
            amount_paisa=50_000,
            currency="INR",
            return_url="https://shop.test/return",
            callback_url=running.callback_url("netbanking"),
        ),
        timeout=DEADLINE_SECONDS,
    )
    return answer


def bank_payment(
    running: Running, payment_id: str, bank_code: str = "HDFC"
) -> Awaitable[netbanking_pb2.NetBankingPayment]:
    answer: Awaitable[netbanking_pb2.NetBankingPayment] = running.banks.GetNetBankingPayment(
        netbanking_pb2.GetNetBankingPaymentRequest(bank_code=bank_code, payment_id=payment_id)
    )
    return answer


def cancel_bank_payment(
    running: Running, payment_id: str, bank_code: str = "HDFC"
) -> Awaitable[netbanking_pb2.NetBankingPayment]:
    answer: Awaitable[netbanking_pb2.NetBankingPayment] = running.banks.CancelNetBankingPayment(
        netbanking_pb2.CancelNetBankingPaymentRequest(bank_code=bank_code, payment_id=payment_id)
    )
    return answer


async def pay_on_the_bank_page(running: Running, redirect_url: str) -> str:
    async with running.http.post(
        running.local(redirect_url), data={"action": "approve"}, allow_redirects=False
    ) as response:
        assert response.status == 303
        return response.headers["Location"]


async def test_list_banks_names_every_bank_code_the_sandbox_takes(running: Running) -> None:
    listing = await running.banks.ListBanks(netbanking_pb2.ListBanksRequest())

    assert {bank.bank_code: bank.name for bank in listing.banks} == magic.BANKS
    assert {"HDFC", "FAIL", "DOWN", "HANG"} <= {bank.bank_code for bank in listing.banks}


async def test_a_bank_that_is_down_refuses_the_payment_and_never_registers_it(
    running: Running,
) -> None:
    down = await gateway_error(start_bank_payment(running, "PAY_NB_DOWN", "DOWN"))
    unknown = await rpc_error(bank_payment(running, "PAY_NB_DOWN", "DOWN"))

    assert (down.grpc_code, down.reason) == (grpc.StatusCode.UNAVAILABLE, "BANK_UNAVAILABLE")
    assert unknown.code() == grpc.StatusCode.NOT_FOUND


async def test_a_hanging_bank_registers_the_payment_pending(running: Running) -> None:
    await misses_the_deadline(start_bank_payment(running, "PAY_NB_HANG", "HANG"))

    found = await bank_payment(running, "PAY_NB_HANG", "HANG")
    repeat = await start_bank_payment(running, "PAY_NB_HANG", "HANG")

    assert found.status == Nb.PENDING
    assert found.redirect_url == f"{PUBLIC_URL}/netbanking/HANG/PAY_NB_HANG"
    assert repeat == found


async def test_a_merchant_cancel_fails_a_pending_payment_and_closes_its_page(
    running: Running,
) -> None:
    started = await start_bank_payment(running, "PAY_NB_CANCEL", "AXIS")

    cancelled = await cancel_bank_payment(running, "PAY_NB_CANCEL", "AXIS")
    again = await cancel_bank_payment(running, "PAY_NB_CANCEL", "AXIS")
    async with running.http.get(running.local(started.redirect_url)) as page:
        html = await page.text()
    location = await pay_on_the_bank_page(running, started.redirect_url)
    await asyncio.sleep(0.3)

    assert (cancelled.status, cancelled.failure_code) == (Nb.FAILED, "MERCHANT_CANCELLED")
    assert cancelled.redirect_url == ""
    assert again == cancelled
    assert "is closed: FAILED, cancelled by the merchant" in html
    assert "<form" not in html
    assert location.endswith("payment_id=PAY_NB_CANCEL&status=FAILED")
    assert (await bank_payment(running, "PAY_NB_CANCEL", "AXIS")).status == Nb.FAILED
    assert running.receiver.for_ref("PAY_NB_CANCEL") == []


async def test_a_merchant_cancel_leaves_a_paid_payment_as_it_is(running: Running) -> None:
    started = await start_bank_payment(running, "PAY_NB_PAID")
    await pay_on_the_bank_page(running, started.redirect_url)

    answer = await cancel_bank_payment(running, "PAY_NB_PAID")
    unknown = await rpc_error(cancel_bank_payment(running, "PAY_NB_NEVER"))

    assert answer.status == Nb.SUCCESS
    assert answer.bank_reference
    assert unknown.code() == grpc.StatusCode.NOT_FOUND
    entry = book_of(await running.books("PAY_NB_PAID"), "netbanking")
    assert (entry["status"], entry["charged_paisa"]) == ("SUCCESS", 50_000)


# --- UPI ----------------------------------------------------------------------------------


def collect(
    running: Running, ref: str, vpa: str, timeout: float = DEADLINE_SECONDS
) -> Awaitable[Any]:
    return running.upi.InitiateTransaction(
        Upi.InitiateTransactionRequest(
            transaction_ref=ref,
            payer_vpa=vpa,
            payee_vpa="shop@paygate",
            amount_paisa=20_000,
            currency="INR",
            flow="COLLECT",
            callback_url=running.callback_url("upi_core"),
        ),
        timeout=timeout,
    )


async def cancel_upi(running: Running, ref: str) -> Upi.CancelTransactionResponse:
    answer: Upi.CancelTransactionResponse = await running.upi.CancelTransaction(
        Upi.CancelTransactionRequest(transaction_ref=ref)
    )
    return answer


async def upi_status(running: Running, ref: str) -> Upi.CheckTransactionStatusResponse:
    answer: Upi.CheckTransactionStatusResponse = await running.upi.CheckTransactionStatus(
        Upi.CheckTransactionStatusRequest(transaction_ref=ref)
    )
    return answer


async def test_a_cancelled_collect_fails_with_pc_and_cannot_be_approved(running: Running) -> None:
    await collect(running, "PAY_UPI_CANCEL", "manual@upi")

    cancelled = await cancel_upi(running, "PAY_UPI_CANCEL")
    again = await cancel_upi(running, "PAY_UPI_CANCEL")
    url = f"{running.http_url}/upi/transactions/PAY_UPI_CANCEL/approve"
    async with running.http.post(url) as approve:
        approve_status = approve.status
    await asyncio.sleep(0.3)

    assert (cancelled.status, cancelled.response_code) == (Upi.TRANSACTION_FAILED, "PC")
    assert cancelled.upi_txn_id
    assert again == cancelled
    assert approve_status == 409
    assert running.receiver.for_ref("PAY_UPI_CANCEL") == []
    entry = book_of(await running.books("PAY_UPI_CANCEL"), "upi_core")
    assert (entry["status"], entry["charged_paisa"]) == ("FAILED", 0)


async def test_a_timed_out_collect_cancelled_while_pending_never_succeeds(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(magic, "UPI_LATE_OUTCOME_SECONDS", HANG_SECONDS / 2)
    await misses_the_deadline(collect(running, "PAY_UPI_HUNG_CANCEL", "timeout@upi"))

    cancelled = await cancel_upi(running, "PAY_UPI_HUNG_CANCEL")
    await asyncio.sleep(HANG_SECONDS)
    later = await upi_status(running, "PAY_UPI_HUNG_CANCEL")

    assert (cancelled.status, cancelled.response_code) == (Upi.TRANSACTION_FAILED, "PC")
    assert (later.status, later.rrn) == (Upi.TRANSACTION_FAILED, "")
    assert running.receiver.for_ref("PAY_UPI_HUNG_CANCEL") == []


async def test_cancelling_a_paid_collect_answers_success(running: Running) -> None:
    await collect(running, "PAY_UPI_PAID", "success@upi")
    (callback,) = await running.receiver.wait_for("PAY_UPI_PAID")

    answer = await cancel_upi(running, "PAY_UPI_PAID")
    unknown = await rpc_error(cancel_upi(running, "PAY_UPI_NEVER"))

    assert (answer.status, answer.rrn) == (Upi.TRANSACTION_SUCCESS, callback.document["rrn"])
    assert unknown.code() == grpc.StatusCode.NOT_FOUND


# --- Books --------------------------------------------------------------------------------


async def test_books_list_every_provider_and_filter_by_payment(running: Running) -> None:
    await collect(running, "PAY_BOOKS_UPI", "success@upi")
    await running.receiver.wait_for("PAY_BOOKS_UPI")
    await running.upi.RefundTransaction(
        Upi.RefundTransactionRequest(
            transaction_ref="PAY_BOOKS_UPI", refund_ref="RF_BOOKS_UPI", amount_paisa=5_000
        )
    )
    await debit(running, "PAY_BOOKS_WALLET", "9812345678", wallet="AMAZON_PAY")
    await start_bank_payment(running, "PAY_BOOKS_BANK", "KKBK")
    auth = await authorize(running, "PAY_BOOKS_CARD", VISA_OK, "ccavenue", capture=True)

    everything = await running.books()
    upi_only = await running.books("PAY_BOOKS_UPI")

    providers = {(p["provider"], p["payment_id"]) for p in everything["payments"]}
    assert {
        ("upi_core", "PAY_BOOKS_UPI"),
        ("amazon_pay", "PAY_BOOKS_WALLET"),
        ("netbanking", "PAY_BOOKS_BANK"),
        ("ccavenue", "PAY_BOOKS_CARD"),
    } <= providers
    assert upi_only == {
        "payments": [
            {
                "provider": "upi_core",
                "payment_id": "PAY_BOOKS_UPI",
                "status": "SUCCESS",
                "amount_paisa": 20_000,
                "charged_paisa": 20_000,
                "authorized_paisa": 0,
                "captured_paisa": 0,
                "voided": False,
                "refunded_paisa": 5_000,
            }
        ],
        "refunds": [
            {
                "provider": "upi_core",
                "payment_id": "PAY_BOOKS_UPI",
                "refund_id": "RF_BOOKS_UPI",
                "amount_paisa": 5_000,
                "status": "PROCESSED",
            }
        ],
    }
    card_entry = book_of(await running.books("PAY_BOOKS_CARD"), "ccavenue")
    assert auth.captured
    assert (card_entry["captured_paisa"], card_entry["charged_paisa"]) == (10_000, 10_000)
    assert book_of(await running.books("PAY_BOOKS_BANK"), "netbanking")["status"] == "PENDING"
    assert await running.books("PAY_NOBODY_KNOWS") == {"payments": [], "refunds": []}


# --- Shutdown -----------------------------------------------------------------------------


async def test_shutdown_cuts_a_hanging_call_short_and_keeps_what_it_did(
    monkeypatch: pytest.MonkeyPatch, in_process_server: dict[str, Any]
) -> None:
    monkeypatch.setattr(magic, "WALLET_HANG_SECONDS", 60.0)
    async with sandbox_running(in_process_server) as sandbox:
        hanging = asyncio.ensure_future(
            sandbox.wallets.DebitWallet(
                wallets_pb2.DebitWalletRequest(
                    wallet="PAYTM",
                    phone=DEBIT_TIMEOUT_PHONE,
                    payment_id="PAY_W_SHUTDOWN",
                    amount_paisa=10_000,
                    currency="INR",
                )
            )
        )
        give_up = time.monotonic() + 5
        while not (await sandbox.books("PAY_W_SHUTDOWN"))["payments"]:
            assert time.monotonic() < give_up, "the debit never reached the wallet"
            await asyncio.sleep(0.02)
        debited = book_of(await sandbox.books("PAY_W_SHUTDOWN"), "paytm")
        started = time.monotonic()
        sandbox.app.stop()
        error = await rpc_error(hanging)
        stopped_after = time.monotonic() - started

    assert debited["charged_paisa"] == 10_000
    assert error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
    assert stopped_after < 5  # the 1 s shutdown grace, not the 60 s hang
