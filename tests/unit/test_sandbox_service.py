"""The sandbox as the orchestrator and a customer's browser meet it: the real ServiceApp on a
gRPC port and its HTTP server, each on port 0, calling back a tiny HTTP receiver that plays the
gateway and checks every signature."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import grpc
import pytest
import pytest_asyncio
from google.protobuf.timestamp_pb2 import Timestamp

from devstack.callback_receiver import TEST_SECRETS, Received, Receiver
from gateway_core.errors import Unauthenticated, from_rpc_error
from gateway_core.grpc_client import insecure_channel
from gateway_core.server import ServiceApp
from gateway_core.signing import verify_callback
from paygate.sandbox.v1 import (
    netbanking_pb2,
    netbanking_pb2_grpc,
    upi_pb2,
    upi_pb2_grpc,
    wallets_pb2,
    wallets_pb2_grpc,
)
from sandbox.app import Sandbox
from sandbox.callbacks import CallbackSender
from sandbox.settings import Settings

APPROVAL_DELAY_MS = 100
PUBLIC_URL = "https://bank.sandbox.test"
ORCHESTRATOR_DEADLINE = 2.0
Upi = upi_pb2
Nb = netbanking_pb2.NetBankingPayment
NbRefund = netbanking_pb2.RefundNetBankingPaymentResponse
Debit = wallets_pb2.WalletDebit
WalletRefund = wallets_pb2.RefundWalletDebitResponse


@dataclass
class Running:
    upi: upi_pb2_grpc.UpiCoreServiceAsyncStub
    wallets: wallets_pb2_grpc.WalletProviderServiceAsyncStub
    banks: netbanking_pb2_grpc.NetBankingServiceAsyncStub
    http: aiohttp.ClientSession
    http_url: str
    receiver: Receiver

    def callback_url(self, provider: str) -> str:
        return f"{self.receiver.url}/api/v1/provider-callbacks/{provider}"

    def local(self, public_url: str) -> str:
        """A public sandbox URL, reached on the port this test's sandbox really bound."""
        parts = urlsplit(public_url)
        return f"{self.http_url}{parts.path}"


@pytest_asyncio.fixture(scope="module")
async def running(in_process_server: dict[str, Any]) -> AsyncIterator[Running]:
    receiver = Receiver()
    await receiver.start()

    settings = Settings.model_validate(
        {
            **in_process_server,
            "sandbox_http_port": 0,
            "sandbox_public_url": PUBLIC_URL,
            "gateway_public_url": receiver.url,
            "sandbox_upi_approval_delay_ms": APPROVAL_DELAY_MS,
            **{f"provider_callback_secret_{p}": key for p, key in TEST_SECRETS.items()},
        }
    )
    app = ServiceApp("sandbox", settings)
    # Production's schedule, compressed: 6 attempts 50 ms, 100 ms, ... apart.
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
    yield Running(
        upi=upi_pb2_grpc.UpiCoreServiceStub(channel),
        wallets=wallets_pb2_grpc.WalletProviderServiceStub(channel),
        banks=netbanking_pb2_grpc.NetBankingServiceStub(channel),
        http=http,
        http_url=f"http://127.0.0.1:{http_port}",
        receiver=receiver,
    )
    await http.close()
    await channel.close(grace=None)
    app.stop()
    await asyncio.wait_for(run, 10)
    await receiver.stop()


def assert_signed(callback: Received) -> None:
    assert callback.content_type == "application/json"
    callback.verify()


async def rpc_error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value


def collect(ref: str, vpa: str, running: Running, **fields: Any) -> Upi.InitiateTransactionRequest:
    values: dict[str, Any] = {
        "transaction_ref": ref,
        "payer_vpa": vpa,
        "payee_vpa": "shop@paygate",
        "payee_name": "Shop",
        "amount_paisa": 10_000,
        "currency": "INR",
        "flow": "COLLECT",
        "callback_url": running.callback_url("upi_core"),
    }
    values.update(fields)
    return Upi.InitiateTransactionRequest(**values)


async def status_of(running: Running, ref: str) -> Upi.CheckTransactionStatusResponse:
    request = Upi.CheckTransactionStatusRequest(transaction_ref=ref)
    response: Upi.CheckTransactionStatusResponse = await running.upi.CheckTransactionStatus(request)
    return response


# --- UPI Core -----------------------------------------------------------------------------


async def test_vpa_lookup_knows_registered_and_unregistered_vpas(running: Running) -> None:
    known = await running.upi.ValidateVpa(Upi.ValidateVpaRequest(vpa="success@upi"))
    unknown = await running.upi.ValidateVpa(Upi.ValidateVpaRequest(vpa="nouser@upi"))

    assert (known.exists, known.holder_name) == (True, "S****")
    assert not unknown.exists


async def test_success_vpa_is_approved_and_called_back_signed_within_two_seconds(
    running: Running,
) -> None:
    started = time.monotonic()
    answer = await running.upi.InitiateTransaction(collect("PAY_UPI_OK", "success@upi", running))

    assert answer.status == Upi.TRANSACTION_PENDING
    (callback,) = await running.receiver.wait_for("PAY_UPI_OK", within=2.0)
    assert time.monotonic() - started < 2.0
    assert_signed(callback)
    document = callback.document
    assert callback.provider == "upi_core"
    assert document["provider"] == "upi_core"
    assert document["status"] == "SUCCESS"
    assert document["provider_txn_id"] == answer.upi_txn_id
    assert document["amount_paisa"] == 10_000
    assert re.fullmatch(r"\d{12}", document["rrn"])
    assert re.fullmatch(r"\d{6}", document["approval_code"])
    assert document["event_id"]
    assert datetime.fromisoformat(document["occurred_at"]).tzinfo is not None
    status = await status_of(running, "PAY_UPI_OK")
    assert (status.status, status.rrn, status.approval_code) == (
        Upi.TRANSACTION_SUCCESS,
        document["rrn"],
        document["approval_code"],
    )


async def test_failure_vpa_is_declined_and_called_back(running: Running) -> None:
    await running.upi.InitiateTransaction(collect("PAY_UPI_FAIL", "failure@upi", running))

    (callback,) = await running.receiver.wait_for("PAY_UPI_FAIL")

    assert_signed(callback)
    assert (callback.document["status"], callback.document["response_code"]) == ("FAILED", "U30")
    assert (await status_of(running, "PAY_UPI_FAIL")).status == Upi.TRANSACTION_FAILED


@pytest.mark.parametrize(
    ("vpa", "late_status"),
    [("timeout@upi", Upi.TRANSACTION_SUCCESS), ("latefail@upi", Upi.TRANSACTION_FAILED)],
    ids=["late-success", "late-failure"],
)
async def test_hung_switch_misses_the_deadline_and_only_inquiry_finds_the_late_outcome(
    running: Running, vpa: str, late_status: int
) -> None:
    ref = f"PAY_UPI_HUNG_{vpa.split('@')[0]}"
    started = time.monotonic()

    error = await rpc_error(
        running.upi.InitiateTransaction(collect(ref, vpa, running), timeout=ORCHESTRATOR_DEADLINE)
    )

    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert (await status_of(running, ref)).status == Upi.TRANSACTION_PENDING
    await asyncio.sleep(max(0.0, started + 2.6 - time.monotonic()))
    assert (await status_of(running, ref)).status == late_status
    await asyncio.sleep(0.3)
    assert running.receiver.for_ref(ref) == []


async def test_manual_vpa_waits_for_the_control_then_calls_back(running: Running) -> None:
    await running.upi.InitiateTransaction(collect("PAY_UPI_MANUAL", "manual@upi", running))
    await asyncio.sleep(APPROVAL_DELAY_MS / 1000 * 3)
    assert (await status_of(running, "PAY_UPI_MANUAL")).status == Upi.TRANSACTION_PENDING
    assert running.receiver.for_ref("PAY_UPI_MANUAL") == []
    control = f"{running.http_url}/upi/transactions/PAY_UPI_MANUAL"

    async with running.http.post(f"{control}/approve") as approved:
        assert approved.status == 200
        assert (await approved.json())["status"] == "SUCCESS"
    (callback,) = await running.receiver.wait_for("PAY_UPI_MANUAL")
    async with running.http.post(f"{control}/decline") as again:
        assert again.status == 409
        assert (await again.json())["error"]["reason"] == "TRANSACTION_FINAL"

    assert_signed(callback)
    assert callback.document["status"] == "SUCCESS"


async def test_manual_decline_fails_the_transaction(running: Running) -> None:
    await running.upi.InitiateTransaction(collect("PAY_UPI_DECLINE", "manual@upi", running))

    url = f"{running.http_url}/upi/transactions/PAY_UPI_DECLINE/decline"
    async with running.http.post(url) as declined:
        assert declined.status == 200
    (callback,) = await running.receiver.wait_for("PAY_UPI_DECLINE")

    assert (callback.document["status"], callback.document["response_code"]) == ("FAILED", "ZA")


async def test_control_of_an_unknown_transaction_is_404(running: Running) -> None:
    async with running.http.post(f"{running.http_url}/upi/transactions/PAY_NONE/approve") as r:
        assert r.status == 404
        assert (await r.json())["error"]["reason"] == "TRANSACTION_NOT_FOUND"


async def test_initiation_is_idempotent_on_the_transaction_ref(running: Running) -> None:
    request = collect("PAY_UPI_TWICE", "success@upi", running)

    first = await running.upi.InitiateTransaction(request)
    second = await running.upi.InitiateTransaction(request)
    await running.receiver.wait_for("PAY_UPI_TWICE")
    await asyncio.sleep(APPROVAL_DELAY_MS / 1000 * 2)
    changed = await rpc_error(
        running.upi.InitiateTransaction(
            collect("PAY_UPI_TWICE", "success@upi", running, amount_paisa=20_000)
        )
    )

    assert first.upi_txn_id == second.upi_txn_id
    assert len(running.receiver.for_ref("PAY_UPI_TWICE")) == 1
    assert changed.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_unanswered_collect_expires_without_callback(running: Running) -> None:
    expires_at = Timestamp()
    expires_at.FromDatetime(datetime.now(UTC) + timedelta(milliseconds=300))
    await running.upi.InitiateTransaction(
        collect("PAY_UPI_EXPIRE", "manual@upi", running, expires_at=expires_at)
    )

    await asyncio.sleep(0.5)

    status = await status_of(running, "PAY_UPI_EXPIRE")
    assert status.status == Upi.TRANSACTION_EXPIRED
    assert running.receiver.for_ref("PAY_UPI_EXPIRE") == []


async def test_status_of_an_unknown_transaction_is_not_found(running: Running) -> None:
    request = Upi.CheckTransactionStatusRequest(transaction_ref="PAY_NEVER")

    error = await rpc_error(running.upi.CheckTransactionStatus(request))

    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_bad_initiation_names_every_bad_field(running: Running) -> None:
    request = collect("", "not a vpa", running, amount_paisa=0, flow="PUSH", callback_url="ftp://x")

    error = from_rpc_error(await rpc_error(running.upi.InitiateTransaction(request)))

    fields = {v.field for v in error.field_violations}
    assert fields == {"transaction_ref", "payer_vpa", "amount_paisa", "flow", "callback_url"}


async def test_refunds_replay_by_refund_ref_and_never_exceed_the_amount(
    running: Running,
) -> None:
    await running.upi.InitiateTransaction(collect("PAY_UPI_REFUND", "success@upi", running))
    await running.receiver.wait_for("PAY_UPI_REFUND")

    def refund(ref: str, amount: int) -> Any:
        return running.upi.RefundTransaction(
            Upi.RefundTransactionRequest(
                transaction_ref="PAY_UPI_REFUND", refund_ref=ref, amount_paisa=amount
            )
        )

    first = await refund("RF_1", 6_000)
    replay = await refund("RF_1", 6_000)
    too_much = from_rpc_error(await rpc_error(refund("RF_2", 4_001)))
    rest = await refund("RF_3", 4_000)

    assert first.status == Upi.TRANSACTION_SUCCESS
    assert replay.upi_refund_id == first.upi_refund_id
    assert too_much.reason == "REFUND_EXCEEDS_AMOUNT"
    assert rest.upi_refund_id != first.upi_refund_id


async def test_refund_of_a_pending_transaction_is_refused(running: Running) -> None:
    await running.upi.InitiateTransaction(collect("PAY_UPI_RF_PENDING", "manual@upi", running))

    error = await rpc_error(
        running.upi.RefundTransaction(
            Upi.RefundTransactionRequest(
                transaction_ref="PAY_UPI_RF_PENDING", refund_ref="RF_1", amount_paisa=100
            )
        )
    )

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION


# --- Callback delivery --------------------------------------------------------------------


async def test_callback_without_a_url_goes_to_the_gateway_endpoint(running: Running) -> None:
    await running.upi.InitiateTransaction(
        collect("PAY_UPI_DEFAULT_URL", "success@upi", running, callback_url="")
    )

    (callback,) = await running.receiver.wait_for("PAY_UPI_DEFAULT_URL")

    assert callback.provider == "upi_core"
    assert_signed(callback)


async def test_refused_callbacks_are_retried_with_the_same_event_id(running: Running) -> None:
    running.receiver.refuse["PAY_UPI_RETRY"] = 2
    await running.upi.InitiateTransaction(collect("PAY_UPI_RETRY", "success@upi", running))

    attempts = await running.receiver.wait_for("PAY_UPI_RETRY", count=3)

    assert len({a.document["event_id"] for a in attempts}) == 1
    for attempt in attempts:
        assert_signed(attempt)
    await asyncio.sleep(0.3)
    assert len(running.receiver.for_ref("PAY_UPI_RETRY")) == 3


async def test_a_tampered_callback_body_fails_verification(running: Running) -> None:
    await running.upi.InitiateTransaction(collect("PAY_UPI_TAMPER", "success@upi", running))
    (callback,) = await running.receiver.wait_for("PAY_UPI_TAMPER")

    tampered = callback.body.replace(b'"amount_paisa":10000', b'"amount_paisa":1')

    assert tampered != callback.body
    with pytest.raises(Unauthenticated) as raised:
        verify_callback(TEST_SECRETS["upi_core"], tampered, callback.signature)
    assert raised.value.reason == "BAD_SIGNATURE"


# --- Wallets ------------------------------------------------------------------------------


async def balance(running: Running, wallet: str, phone: str) -> int:
    answer = await running.wallets.GetWalletBalance(
        wallets_pb2.GetWalletBalanceRequest(wallet=wallet, phone=phone)
    )
    value: int = answer.balance_paisa
    return value


def debit_request(
    payment_id: str, phone: str, amount: int, wallet: str = "PAYTM", offer_id: str = ""
) -> wallets_pb2.DebitWalletRequest:
    return wallets_pb2.DebitWalletRequest(
        wallet=wallet,
        phone=phone,
        payment_id=payment_id,
        amount_paisa=amount,
        currency="INR",
        offer_id=offer_id,
    )


async def test_opening_balances_follow_the_magic_phones(running: Running) -> None:
    assert await balance(running, "PHONEPE", "9999999999") == 100_000_000
    assert await balance(running, "PHONEPE", "9000000000") == 0
    assert await balance(running, "PHONEPE", "9123456789") == 5_000_000


async def test_unknown_wallet_and_bad_phone_are_invalid_arguments(running: Running) -> None:
    wallet = from_rpc_error(await rpc_error(balance(running, "FREECHARGE", "9123456789")))
    phone = from_rpc_error(await rpc_error(balance(running, "PAYTM", "12345")))

    assert [v.field for v in wallet.field_violations] == ["wallet"]
    assert [v.field for v in phone.field_violations] == ["phone"]


async def test_debit_is_instant_idempotent_and_moves_the_balance_once(running: Running) -> None:
    phone = "9811111111"

    first = await running.wallets.DebitWallet(debit_request("PAY_W_1", phone, 150_000))
    replay = await running.wallets.DebitWallet(debit_request("PAY_W_1", phone, 150_000))
    found = await running.wallets.GetWalletDebit(
        wallets_pb2.GetWalletDebitRequest(wallet="PAYTM", payment_id="PAY_W_1")
    )

    assert first.status == Debit.SUCCESS
    assert first.wallet_txn_id
    assert replay == first == found
    assert await balance(running, "PAYTM", phone) == 5_000_000 - 150_000


async def test_debit_beyond_the_balance_fails_and_debits_nothing(running: Running) -> None:
    debit = await running.wallets.DebitWallet(debit_request("PAY_W_EMPTY", "9000000000", 100))

    assert (debit.status, debit.failure_code) == (Debit.FAILED, "INSUFFICIENT_BALANCE")
    assert await balance(running, "PAYTM", "9000000000") == 0


async def test_an_offer_credits_its_cashback(running: Running) -> None:
    phone = "9822222222"
    offers = await running.wallets.ListWalletOffers(
        wallets_pb2.ListWalletOffersRequest(wallet="AMAZON_PAY")
    )
    (offer,) = offers.offers

    small = await running.wallets.DebitWallet(
        debit_request("PAY_W_CB_SMALL", phone, 40_000, "AMAZON_PAY", offer.offer_id)
    )
    large = await running.wallets.DebitWallet(
        debit_request("PAY_W_CB_LARGE", phone, 2_000_000, "AMAZON_PAY", offer.offer_id)
    )

    assert (offer.cashback_bps, offer.max_cashback_paisa, offer.min_amount_paisa) == (
        1_000,
        10_000,
        50_000,
    )
    assert offer.valid_until.ToDatetime(UTC) > datetime.now(UTC)
    assert small.cashback_paisa == 0  # below ₹500
    assert large.cashback_paisa == 10_000  # 10 % capped at ₹100
    expected = 5_000_000 - 40_000 - 2_000_000 + 10_000
    assert await balance(running, "AMAZON_PAY", phone) == expected


async def test_offers_are_listed_per_wallet_and_amount(running: Running) -> None:
    def listing(wallet: str, amount: int = 0) -> Any:
        return running.wallets.ListWalletOffers(
            wallets_pb2.ListWalletOffersRequest(wallet=wallet, amount_paisa=amount)
        )

    assert [o.offer_id for o in (await listing("PAYTM")).offers] == ["PAYTM_CASHBACK_5"]
    assert list((await listing("PAYTM", 5_000)).offers) == []
    assert list((await listing("GOOGLE_PAY")).offers) == []


async def test_an_offer_of_another_wallet_is_refused(running: Running) -> None:
    error = from_rpc_error(
        await rpc_error(
            running.wallets.DebitWallet(
                debit_request(
                    "PAY_W_BAD_OFFER", "9833333333", 20_000, "PAYTM", "PHONEPE_CASHBACK_2"
                )
            )
        )
    )

    assert [v.field for v in error.field_violations] == ["offer_id"]


async def test_wallet_refunds_replay_and_never_exceed_the_debit(running: Running) -> None:
    phone = "9844444444"
    debit = await running.wallets.DebitWallet(debit_request("PAY_W_RF", phone, 10_000))

    def refund(refund_id: str, amount: int, txn_id: str = debit.wallet_txn_id) -> Any:
        return running.wallets.RefundWalletDebit(
            wallets_pb2.RefundWalletDebitRequest(
                wallet="PAYTM",
                wallet_txn_id=txn_id,
                payment_id="PAY_W_RF",
                refund_id=refund_id,
                amount_paisa=amount,
                currency="INR",
            )
        )

    first = await refund("WRF_1", 6_000)
    replay = await refund("WRF_1", 6_000)
    too_much = await refund("WRF_2", 5_000)
    rest = await refund("WRF_3", 4_000)
    wrong_txn = await rpc_error(refund("WRF_4", 1, "WTX_SOMETHING_ELSE"))

    assert first.status == WalletRefund.PROCESSED
    assert replay.wallet_refund_id == first.wallet_refund_id
    assert (too_much.status, too_much.failure_code) == (
        WalletRefund.FAILED,
        "REFUND_EXCEEDS_DEBIT",
    )
    assert rest.status == WalletRefund.PROCESSED
    assert wrong_txn.code() == grpc.StatusCode.NOT_FOUND
    assert await balance(running, "PAYTM", phone) == 5_000_000


async def test_unknown_debit_is_not_found(running: Running) -> None:
    error = await rpc_error(
        running.wallets.GetWalletDebit(
            wallets_pb2.GetWalletDebitRequest(wallet="PAYTM", payment_id="PAY_W_NONE")
        )
    )

    assert error.code() == grpc.StatusCode.NOT_FOUND


# --- Net banking --------------------------------------------------------------------------


async def start_bank_payment(
    running: Running, payment_id: str, bank_code: str = "HDFC", amount: int = 123_450
) -> netbanking_pb2.NetBankingPayment:
    payment: netbanking_pb2.NetBankingPayment = await running.banks.InitiateNetBankingPayment(
        netbanking_pb2.InitiateNetBankingPaymentRequest(
            bank_code=bank_code,
            payment_id=payment_id,
            amount_paisa=amount,
            currency="INR",
            return_url="https://shop.test/return?order=42",
            callback_url=running.callback_url("netbanking"),
        )
    )
    return payment


async def submit(running: Running, redirect_url: str, action: str) -> str:
    async with running.http.post(
        running.local(redirect_url), data={"action": action}, allow_redirects=False
    ) as response:
        assert response.status == 303
        return response.headers["Location"]


async def test_bank_page_is_a_form_and_paying_calls_back_and_returns(running: Running) -> None:
    payment = await start_bank_payment(running, "PAY_NB_OK")
    assert payment.status == Nb.PENDING
    assert payment.redirect_url == f"{PUBLIC_URL}/netbanking/HDFC/PAY_NB_OK"

    async with running.http.get(running.local(payment.redirect_url)) as page:
        html = await page.text()
        assert page.status == 200
        assert page.content_type == "text/html"
    location = await submit(running, payment.redirect_url, "approve")
    (callback,) = await running.receiver.wait_for("PAY_NB_OK")
    settled = await running.banks.GetNetBankingPayment(
        netbanking_pb2.GetNetBankingPaymentRequest(bank_code="HDFC", payment_id="PAY_NB_OK")
    )

    assert "HDFC Bank" in html
    assert "₹1,234.50" in html
    assert '<form method="post">' in html
    assert 'value="approve"' in html
    assert 'value="cancel"' in html
    assert location == "https://shop.test/return?order=42&payment_id=PAY_NB_OK&status=SUCCESS"
    assert_signed(callback)
    assert callback.provider == "netbanking"
    document = callback.document
    assert (document["provider"], document["transaction_ref"], document["status"]) == (
        "netbanking",
        "PAY_NB_OK",
        "SUCCESS",
    )
    assert document["amount_paisa"] == 123_450
    assert settled.status == Nb.SUCCESS
    assert settled.bank_reference == document["provider_txn_id"] != ""
    assert settled.redirect_url == ""


async def test_a_second_submission_changes_nothing(running: Running) -> None:
    payment = await start_bank_payment(running, "PAY_NB_TWICE")
    await submit(running, payment.redirect_url, "approve")
    await running.receiver.wait_for("PAY_NB_TWICE")

    location = await submit(running, payment.redirect_url, "cancel")
    await asyncio.sleep(0.2)

    assert location.endswith("status=SUCCESS")
    assert len(running.receiver.for_ref("PAY_NB_TWICE")) == 1


async def test_the_failing_bank_declines(running: Running) -> None:
    payment = await start_bank_payment(running, "PAY_NB_FAIL", bank_code="FAIL")

    location = await submit(running, payment.redirect_url, "approve")
    (callback,) = await running.receiver.wait_for("PAY_NB_FAIL")

    assert location.endswith("payment_id=PAY_NB_FAIL&status=FAILED")
    assert_signed(callback)
    assert (callback.document["status"], callback.document["response_code"]) == (
        "FAILED",
        "BANK_DECLINED",
    )


async def test_cancelling_on_the_bank_page_fails_the_payment(running: Running) -> None:
    payment = await start_bank_payment(running, "PAY_NB_CANCEL", bank_code="SBIN")

    await submit(running, payment.redirect_url, "cancel")
    settled = await running.banks.GetNetBankingPayment(
        netbanking_pb2.GetNetBankingPaymentRequest(bank_code="SBIN", payment_id="PAY_NB_CANCEL")
    )

    assert (settled.status, settled.failure_code) == (Nb.FAILED, "CUSTOMER_CANCELLED")
    (callback,) = await running.receiver.wait_for("PAY_NB_CANCEL")
    assert callback.document["status"] == "FAILED"


async def test_unknown_bank_is_an_invalid_bank_code(running: Running) -> None:
    error = from_rpc_error(await rpc_error(start_bank_payment(running, "PAY_NB_X", "NOPE")))

    assert [v.field for v in error.field_violations] == ["bank_code"]


async def test_page_of_an_unknown_payment_is_404(running: Running) -> None:
    async with running.http.get(f"{running.http_url}/netbanking/HDFC/PAY_NB_NONE") as page:
        assert page.status == 404


async def test_bank_refunds_replay_and_never_exceed_the_payment(running: Running) -> None:
    payment = await start_bank_payment(running, "PAY_NB_RF", bank_code="ICIC", amount=10_000)

    def refund(refund_id: str, amount: int) -> Any:
        return running.banks.RefundNetBankingPayment(
            netbanking_pb2.RefundNetBankingPaymentRequest(
                bank_code="ICIC",
                payment_id="PAY_NB_RF",
                refund_id=refund_id,
                amount_paisa=amount,
                currency="INR",
            )
        )

    unpaid = await refund("NRF_0", 100)
    await submit(running, payment.redirect_url, "approve")
    first = await refund("NRF_1", 7_000)
    replay = await refund("NRF_1", 7_000)
    too_much = await refund("NRF_2", 3_001)
    rest = await refund("NRF_3", 3_000)

    assert (unpaid.status, unpaid.failure_code) == (NbRefund.FAILED, "PAYMENT_NOT_SUCCESSFUL")
    assert first.status == NbRefund.PROCESSED
    assert replay.bank_refund_reference == first.bank_refund_reference
    assert (too_much.status, too_much.failure_code) == (NbRefund.FAILED, "REFUND_EXCEEDS_PAYMENT")
    assert rest.status == NbRefund.PROCESSED


# --- HTTP server --------------------------------------------------------------------------


async def test_health(running: Running) -> None:
    async with running.http.get(f"{running.http_url}/health") as response:
        assert response.status == 200
        assert await response.json() == {"status": "ok"}
