"""The card acquirers and the 3-D Secure ACS as the orchestrator and a customer's browser meet
them: the real ServiceApp on a gRPC port and its HTTP server, each on port 0, calling back a
tiny HTTP receiver that plays the gateway and checks every signature. Every log record of the
run is collected, so the last tests can prove no full card number reached a log line."""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import grpc
import pytest
import pytest_asyncio

from devstack.callback_receiver import TEST_SECRETS, Received, Receiver
from gateway_core.errors import from_rpc_error
from gateway_core.grpc_client import insecure_channel
from gateway_core.server import ServiceApp
from paygate.sandbox.v1 import cards_pb2, cards_pb2_grpc
from sandbox.app import Sandbox
from sandbox.callbacks import CallbackSender
from sandbox.settings import Settings

PUBLIC_URL = "https://acs.sandbox.test"
RETURN_URL = "https://shop.test/checkout/return?order=42"
ACS_TTL_SECONDS = 2.0
NEXT_YEAR = str(datetime.now(UTC).year + 1)

VISA_OK = "4242424242424242"
MASTERCARD_OK = "5555555555554444"
DECLINED = "4000000000000002"
INSUFFICIENT = "4000000000009995"
CHALLENGE = "4000000000003220"
CHALLENGE_DECLINED = "4000008400001629"
FAILOVER = "4000000000000119"
OTHER_VISA = "4111111111111111"
AMEX = "378282246310005"
# Every full card number these tests send: none may appear in any log line.
PANS = (
    VISA_OK,
    MASTERCARD_OK,
    DECLINED,
    INSUFFICIENT,
    CHALLENGE,
    CHALLENGE_DECLINED,
    FAILOVER,
    OTHER_VISA,
    AMEX,
    "4242424242424241",
)
CVV = "123"

Auth = cards_pb2.CardAuthorization
Tds = cards_pb2.ThreeDsAuthentication
CaptureR = cards_pb2.CaptureResponse
VoidR = cards_pb2.VoidResponse
RefundR = cards_pb2.RefundCardPaymentResponse


class LogLines(logging.Handler):
    """Every record of the run: as the service prints it (its own formatter) and raw (the
    event dict before any masking), so both must be free of card numbers."""

    def __init__(self, formatter: logging.Formatter | None) -> None:
        super().__init__(logging.DEBUG)
        self._printer = formatter or logging.Formatter()
        self.printed: list[str] = []
        self.raw: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.raw.append(f"{record.msg!r} {record.args!r} {record.exc_info!r}")
        self.printed.append(self._printer.format(record))

    def lines(self) -> list[str]:
        return self.printed + self.raw


@dataclass
class Running:
    cards: cards_pb2_grpc.CardAcquirerServiceAsyncStub
    http: aiohttp.ClientSession
    http_url: str
    receiver: Receiver
    logs: LogLines

    @property
    def callback_url(self) -> str:
        return f"{self.receiver.url}/api/v1/provider-callbacks/acs"

    def local(self, public_url: str) -> str:
        """A public sandbox URL, reached on the port this test's sandbox really bound."""
        return f"{self.http_url}{urlsplit(public_url).path}"


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
            **{f"provider_callback_secret_{p}": key for p, key in TEST_SECRETS.items()},
        }
    )
    app = ServiceApp("sandbox", settings)  # configures logging: root gets the JSON handler
    root = logging.getLogger()
    logs = LogLines(root.handlers[0].formatter if root.handlers else None)
    root.addHandler(logs)
    callbacks = CallbackSender(
        settings.callback_secrets(), settings.gateway_public_url, first_backoff_seconds=0.05
    )
    sandbox = Sandbox(settings, callbacks, acs_challenge_ttl_seconds=ACS_TTL_SECONDS)
    sandbox.register(app)
    run = asyncio.create_task(app.run())
    port = await asyncio.wait_for(app.wait_started(), 10)
    http_port = await asyncio.wait_for(sandbox.web.wait_started(), 10)
    channel = insecure_channel(f"127.0.0.1:{port}", typed_errors=False)
    http = aiohttp.ClientSession()
    yield Running(
        cards=cards_pb2_grpc.CardAcquirerServiceStub(channel),
        http=http,
        http_url=f"http://127.0.0.1:{http_port}",
        receiver=receiver,
        logs=logs,
    )
    await http.close()
    await channel.close(grace=None)
    app.stop()
    await asyncio.wait_for(run, 10)
    await receiver.stop()
    root.removeHandler(logs)


def card(number: str, cvv: str = CVV, month: str = "12", year: str = NEXT_YEAR) -> Any:
    return cards_pb2.CardDetails(
        card_number=number, expiry_month=month, expiry_year=year, cvv=cvv, holder_name="A Test"
    )


def authorize_request(
    payment_id: str, number: str, gateway: str = "razorpay", **fields: Any
) -> cards_pb2.AuthorizeRequest:
    values: dict[str, Any] = {
        "gateway": gateway,
        "payment_id": payment_id,
        "merchant_id": "MER_1",
        "card": card(number),
        "amount_paisa": 10_000,
        "currency": "INR",
    }
    values.update(fields)
    return cards_pb2.AuthorizeRequest(**values)


async def authorize(
    running: Running, payment_id: str, number: str, gateway: str = "razorpay", **fields: Any
) -> cards_pb2.CardAuthorization:
    answer: cards_pb2.CardAuthorization = await running.cards.Authorize(
        authorize_request(payment_id, number, gateway, **fields)
    )
    return answer


async def authenticate(
    running: Running, payment_id: str, number: str, **fields: Any
) -> cards_pb2.ThreeDsAuthentication:
    values: dict[str, Any] = {
        "gateway": "razorpay",
        "payment_id": payment_id,
        "merchant_id": "MER_1",
        "card": card(number),
        "amount_paisa": 10_000,
        "currency": "INR",
        "return_url": RETURN_URL,
        "callback_url": running.callback_url,
    }
    values.update(fields)
    answer: cards_pb2.ThreeDsAuthentication = await running.cards.Authenticate3ds(
        cards_pb2.Authenticate3dsRequest(**values)
    )
    return answer


async def get_3ds(running: Running, authentication_id: str) -> cards_pb2.ThreeDsAuthentication:
    answer: cards_pb2.ThreeDsAuthentication = await running.cards.Get3dsAuthentication(
        cards_pb2.Get3dsAuthenticationRequest(
            gateway="razorpay", three_ds_transaction_id=authentication_id
        )
    )
    return answer


async def post_challenge(running: Running, challenge_url: str, **form: str) -> str:
    async with running.http.post(
        running.local(challenge_url), data=form, allow_redirects=False
    ) as response:
        assert response.status == 303, await response.text()
        return response.headers["Location"]


def three_ds_fields(authentication: cards_pb2.ThreeDsAuthentication) -> dict[str, str]:
    return {
        "eci": authentication.eci,
        "authentication_value": authentication.authentication_value,
        "three_ds_transaction_id": authentication.three_ds_transaction_id,
    }


def assert_signed(callback: Received) -> None:
    assert callback.content_type == "application/json"
    callback.verify()


def query_of(location: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlsplit(location).query).items()}


async def rpc_error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value


def assert_approved(answer: cards_pb2.CardAuthorization) -> None:
    assert answer.status == Auth.APPROVED
    assert re.fullmatch(r"\d{6}", answer.auth_code)
    assert re.fullmatch(r"\d{12}", answer.rrn)
    assert answer.acquirer_txn_id
    assert (answer.decline_code, answer.decline_reason) == ("", "")


# --- Authorization by magic card number ---------------------------------------------------


@pytest.mark.parametrize(
    ("number", "cvv", "status", "decline_code", "decline_reason"),
    [
        (VISA_OK, CVV, Auth.APPROVED, "", ""),
        (MASTERCARD_OK, CVV, Auth.APPROVED, "", ""),
        (DECLINED, CVV, Auth.DECLINED, "05", "card_declined"),
        (INSUFFICIENT, CVV, Auth.DECLINED, "51", "insufficient_funds"),
        (OTHER_VISA, CVV, Auth.APPROVED, "", ""),
        (AMEX, "1234", Auth.APPROVED, "", ""),
        (CHALLENGE, CVV, Auth.REQUIRES_CHALLENGE, "", ""),
        (CHALLENGE_DECLINED, CVV, Auth.REQUIRES_CHALLENGE, "", ""),
    ],
    ids=[
        "visa-ok",
        "mastercard-ok",
        "declined",
        "insufficient",
        "any-other",
        "amex",
        "challenge",
        "challenge-declined",
    ],
)
async def test_magic_cards_decide_the_authorization(
    running: Running, number: str, cvv: str, status: int, decline_code: str, decline_reason: str
) -> None:
    payment_id = f"PAY_MAGIC_{number[-4:]}_{len(cvv)}"  # never the full number, even in ids

    answer = await authorize(running, payment_id, number, card=card(number, cvv=cvv))

    assert answer.status == status
    assert (answer.decline_code, answer.decline_reason) == (decline_code, decline_reason)
    assert (answer.payment_id, answer.gateway) == (payment_id, "razorpay")
    assert (answer.amount_paisa, answer.currency, answer.captured) == (10_000, "INR", False)
    if status == Auth.APPROVED:
        assert_approved(answer)
    else:
        assert (answer.auth_code, answer.rrn) == ("", "")


async def test_failover_card_is_unavailable_on_razorpay_only(running: Running) -> None:
    down = from_rpc_error(await rpc_error(authorize(running, "PAY_FAILOVER", FAILOVER)))
    again = await rpc_error(authorize(running, "PAY_FAILOVER", FAILOVER))
    nothing = await rpc_error(
        running.cards.GetAuthorization(
            cards_pb2.GetAuthorizationRequest(gateway="razorpay", payment_id="PAY_FAILOVER")
        )
    )
    payu = await authorize(running, "PAY_FAILOVER", FAILOVER, "payu")
    ccavenue = await authorize(running, "PAY_FAILOVER_2", FAILOVER, "ccavenue")

    assert down.grpc_code == grpc.StatusCode.UNAVAILABLE
    assert down.reason == "ACQUIRER_UNAVAILABLE"
    assert again.code() == grpc.StatusCode.UNAVAILABLE
    assert nothing.code() == grpc.StatusCode.NOT_FOUND
    assert_approved(payu)
    assert payu.gateway == "payu"
    assert_approved(ccavenue)
    assert ccavenue.gateway == "ccavenue"


async def test_other_cards_approve_on_every_gateway(running: Running) -> None:
    for gateway in ("razorpay", "payu", "ccavenue"):
        assert_approved(await authorize(running, f"PAY_GW_{gateway}", VISA_OK, gateway))


async def test_expired_card_and_wrong_length_cvv_are_declined(running: Running) -> None:
    expired = await authorize(running, "PAY_EXPIRED", VISA_OK, card=card(VISA_OK, year="2020"))
    short_cvv = await authorize(running, "PAY_CVV", VISA_OK, card=card(VISA_OK, cvv="12"))
    amex_cvv = await authorize(running, "PAY_AMEX_CVV", AMEX, card=card(AMEX, cvv="123"))
    two_digit_year = await authorize(
        running, "PAY_YY", VISA_OK, card=card(VISA_OK, month="01", year=NEXT_YEAR[2:])
    )
    no_cvv = await authorize(running, "PAY_NO_CVV", VISA_OK, card=card(VISA_OK, cvv=""))

    assert (expired.status, expired.decline_code, expired.decline_reason) == (
        Auth.DECLINED,
        "54",
        "expired_card",
    )
    assert (short_cvv.decline_code, short_cvv.decline_reason) == ("N7", "incorrect_cvc")
    assert amex_cvv.decline_reason == "incorrect_cvc"
    assert_approved(two_digit_year)
    assert_approved(no_cvv)


async def test_malformed_requests_name_every_bad_field_without_the_card_number(
    running: Running,
) -> None:
    bad_luhn = "4242424242424241"
    request = authorize_request(
        "",
        bad_luhn,
        card=card(bad_luhn, month="13", year="x"),
        amount_paisa=0,
        currency="USD",
        emi_tenure_months=5,
    )

    error = from_rpc_error(await rpc_error(running.cards.Authorize(request)))
    gateway = from_rpc_error(await rpc_error(authorize(running, "PAY_GW", VISA_OK, "stripe")))

    assert {v.field for v in error.field_violations} == {
        "payment_id",
        "card.card_number",
        "card.expiry_month",
        "card.expiry_year",
        "amount_paisa",
        "currency",
        "emi_tenure_months",
    }
    assert bad_luhn not in error.message
    assert all(bad_luhn not in v.description for v in error.field_violations)
    assert [v.field for v in gateway.field_violations] == ["gateway"]


async def test_authorization_is_idempotent_per_payment_and_gateway(running: Running) -> None:
    first = await authorize(running, "PAY_TWICE", VISA_OK, emi_tenure_months=6)
    replay = await authorize(running, "PAY_TWICE", VISA_OK, emi_tenure_months=6)
    # A retry after the vault dropped the CVV is still the same request.
    without_cvv = await authorize(
        running, "PAY_TWICE", VISA_OK, card=card(VISA_OK, cvv=""), emi_tenure_months=6
    )
    found = await running.cards.GetAuthorization(
        cards_pb2.GetAuthorizationRequest(gateway="razorpay", payment_id="PAY_TWICE")
    )
    changed = from_rpc_error(
        await rpc_error(
            authorize(running, "PAY_TWICE", VISA_OK, amount_paisa=20_000, emi_tenure_months=6)
        )
    )
    elsewhere = await authorize(running, "PAY_TWICE", VISA_OK, "payu", emi_tenure_months=6)
    unknown = await rpc_error(
        running.cards.GetAuthorization(
            cards_pb2.GetAuthorizationRequest(gateway="payu", payment_id="PAY_NEVER")
        )
    )

    assert_approved(first)
    assert replay == first == without_cvv == found
    assert changed.grpc_code == grpc.StatusCode.ALREADY_EXISTS
    assert changed.reason == "DUPLICATE_PAYMENT_ID"
    assert elsewhere.acquirer_txn_id != first.acquirer_txn_id
    assert unknown.code() == grpc.StatusCode.NOT_FOUND


# --- Capture, void, refund ----------------------------------------------------------------


async def capture(
    running: Running, auth: cards_pb2.CardAuthorization, amount: int, txn_id: str = ""
) -> cards_pb2.CaptureResponse:
    answer: cards_pb2.CaptureResponse = await running.cards.Capture(
        cards_pb2.CaptureRequest(
            gateway=auth.gateway,
            acquirer_txn_id=txn_id or auth.acquirer_txn_id,
            payment_id=auth.payment_id,
            amount_paisa=amount,
            currency="INR",
        )
    )
    return answer


async def void(running: Running, auth: cards_pb2.CardAuthorization) -> cards_pb2.VoidResponse:
    answer: cards_pb2.VoidResponse = await running.cards.Void(
        cards_pb2.VoidRequest(
            gateway=auth.gateway, acquirer_txn_id=auth.acquirer_txn_id, payment_id=auth.payment_id
        )
    )
    return answer


async def refund(
    running: Running, auth: cards_pb2.CardAuthorization, refund_id: str, amount: int
) -> cards_pb2.RefundCardPaymentResponse:
    answer: cards_pb2.RefundCardPaymentResponse = await running.cards.RefundCardPayment(
        cards_pb2.RefundCardPaymentRequest(
            gateway=auth.gateway,
            acquirer_txn_id=auth.acquirer_txn_id,
            payment_id=auth.payment_id,
            refund_id=refund_id,
            amount_paisa=amount,
            currency="INR",
        )
    )
    return answer


async def test_auto_capture_captures_in_the_same_call(running: Running) -> None:
    auth = await authorize(running, "PAY_AUTO", MASTERCARD_OK, "payu", capture=True)
    again = await capture(running, auth, 10_000)
    voided = await void(running, auth)

    assert_approved(auth)
    assert auth.captured
    assert (again.status, again.captured_amount_paisa) == (CaptureR.CAPTURED, 10_000)
    assert (voided.status, voided.failure_code) == (VoidR.FAILED, "ALREADY_CAPTURED")


async def test_manual_capture_is_partial_at_most_once_and_replays(running: Running) -> None:
    auth = await authorize(running, "PAY_MANUAL", VISA_OK)
    too_much = await capture(running, auth, 10_001)
    first = await capture(running, auth, 6_000)
    replay = await capture(running, auth, 6_000)
    other = await capture(running, auth, 4_000)
    status = await running.cards.GetAuthorization(
        cards_pb2.GetAuthorizationRequest(gateway="razorpay", payment_id="PAY_MANUAL")
    )
    wrong_txn = await rpc_error(capture(running, auth, 6_000, txn_id="RZP_SOMETHING_ELSE"))

    assert not auth.captured
    assert (too_much.status, too_much.failure_code) == (
        CaptureR.FAILED,
        "AMOUNT_EXCEEDS_AUTHORIZATION",
    )
    assert (first.status, first.captured_amount_paisa) == (CaptureR.CAPTURED, 6_000)
    assert replay == first
    assert (other.status, other.failure_code) == (CaptureR.FAILED, "ALREADY_CAPTURED")
    assert status.captured
    assert wrong_txn.code() == grpc.StatusCode.NOT_FOUND


async def test_a_declined_authorization_cannot_be_captured_voided_or_refunded(
    running: Running,
) -> None:
    auth = await authorize(running, "PAY_DECLINED_OPS", DECLINED)

    captured = await capture(running, auth, 10_000)
    voided = await void(running, auth)
    refunded = await refund(running, auth, "CRF_DECLINED", 100)

    assert auth.acquirer_txn_id
    assert (captured.status, captured.failure_code) == (CaptureR.FAILED, "NOT_AUTHORIZED")
    assert (voided.status, voided.failure_code) == (VoidR.FAILED, "NOT_AUTHORIZED")
    assert (refunded.status, refunded.failure_code) == (RefundR.FAILED, "NOT_CAPTURED")


async def test_void_releases_an_uncaptured_authorization_once(running: Running) -> None:
    auth = await authorize(running, "PAY_VOID", VISA_OK, "ccavenue")

    first = await void(running, auth)
    again = await void(running, auth)
    captured = await capture(running, auth, 10_000)
    refunded = await refund(running, auth, "CRF_VOIDED", 100)

    assert first.status == again.status == VoidR.VOIDED
    assert (captured.status, captured.failure_code) == (CaptureR.FAILED, "AUTHORIZATION_VOIDED")
    assert (refunded.status, refunded.failure_code) == (RefundR.FAILED, "NOT_CAPTURED")


async def test_refunds_replay_by_refund_id_and_never_exceed_the_capture(
    running: Running,
) -> None:
    auth = await authorize(running, "PAY_REFUND", VISA_OK, "payu", capture=True)

    first = await refund(running, auth, "CRF_1", 6_000)
    replay = await refund(running, auth, "CRF_1", 6_000)
    too_much = await refund(running, auth, "CRF_2", 4_001)
    rest = await refund(running, auth, "CRF_3", 4_000)
    nothing_left = await refund(running, auth, "CRF_4", 1)
    changed = from_rpc_error(await rpc_error(refund(running, auth, "CRF_1", 5_000)))

    assert first.status == RefundR.PROCESSED
    assert first.acquirer_refund_id
    assert replay == first
    assert (too_much.status, too_much.failure_code) == (RefundR.FAILED, "REFUND_EXCEEDS_CAPTURE")
    assert rest.status == RefundR.PROCESSED
    assert rest.acquirer_refund_id != first.acquirer_refund_id
    assert nothing_left.failure_code == "REFUND_EXCEEDS_CAPTURE"
    assert changed.reason == "DUPLICATE_REFUND_ID"


async def test_refunds_are_bounded_by_a_partial_capture(running: Running) -> None:
    auth = await authorize(running, "PAY_PARTIAL_RF", VISA_OK)
    await capture(running, auth, 3_000)

    over = await refund(running, auth, "CRF_P_1", 3_001)
    exact = await refund(running, auth, "CRF_P_2", 3_000)

    assert (over.status, over.failure_code) == (RefundR.FAILED, "REFUND_EXCEEDS_CAPTURE")
    assert exact.status == RefundR.PROCESSED


async def test_concurrent_refunds_never_exceed_the_capture(running: Running) -> None:
    auth = await authorize(running, "PAY_RF_RACE", VISA_OK, capture=True)

    answers = await asyncio.gather(*(refund(running, auth, f"CRF_R_{i}", 3_000) for i in range(8)))

    assert sum(a.status == RefundR.PROCESSED for a in answers) == 3


# --- 3-D Secure ---------------------------------------------------------------------------


async def test_every_card_is_enrolled_in_3ds2(running: Running) -> None:
    enrolled = await running.cards.Enroll3ds(
        cards_pb2.Enroll3dsRequest(gateway="payu", card_number=CHALLENGE)
    )
    bad = from_rpc_error(
        await rpc_error(
            running.cards.Enroll3ds(
                cards_pb2.Enroll3dsRequest(gateway="payu", card_number="4242424242424241")
            )
        )
    )

    assert (enrolled.enrolled, enrolled.protocol_version) == (True, "2.2.0")
    assert [v.field for v in bad.field_violations] == ["card_number"]


@pytest.mark.parametrize(
    ("number", "eci"), [(VISA_OK, "05"), (MASTERCARD_OK, "02")], ids=["visa", "mastercard"]
)
async def test_frictionless_authentication_then_authorization(
    running: Running, number: str, eci: str
) -> None:
    payment_id = f"PAY_FRICTIONLESS_{eci}"

    authentication = await authenticate(running, payment_id, number)
    auth = await authorize(running, payment_id, number, **three_ds_fields(authentication))
    replay = await authenticate(running, payment_id, number)

    assert authentication.status == Tds.AUTHENTICATED
    assert authentication.payment_id == payment_id
    assert authentication.eci == eci
    assert len(base64.b64decode(authentication.authentication_value, validate=True)) == 20
    assert authentication.challenge_url == ""
    assert authentication.protocol_version == "2.2.0"
    assert replay == authentication
    assert_approved(auth)
    await asyncio.sleep(0.1)
    assert running.receiver.for_ref(payment_id) == []


async def test_authentication_data_of_another_payment_is_declined(running: Running) -> None:
    authentication = await authenticate(running, "PAY_3DS_A", VISA_OK)

    stolen = await authorize(running, "PAY_3DS_B", VISA_OK, **three_ds_fields(authentication))
    forged = await authorize(
        running,
        "PAY_3DS_A",
        VISA_OK,
        eci="05",
        authentication_value=base64.b64encode(b"x" * 20).decode(),
    )

    assert (stolen.status, stolen.decline_reason) == (Auth.DECLINED, "authentication_failed")
    assert (forged.status, forged.decline_reason) == (Auth.DECLINED, "authentication_failed")


async def test_challenge_page_is_an_otp_form(running: Running) -> None:
    authentication = await authenticate(running, "PAY_3DS_PAGE", CHALLENGE, amount_paisa=123_450)
    assert authentication.status == Tds.CHALLENGE_REQUIRED
    assert authentication.challenge_url == (
        f"{PUBLIC_URL}/acs/{authentication.three_ds_transaction_id}"
    )
    assert (authentication.eci, authentication.authentication_value) == ("", "")

    async with running.http.get(running.local(authentication.challenge_url)) as page:
        html = await page.text()
        assert page.status == 200
        assert page.content_type == "text/html"

    assert '<form method="post">' in html
    assert 'name="otp"' in html
    assert 'value="cancel"' in html
    assert "₹1,234.50" in html
    assert "**** 3220" in html
    assert CHALLENGE not in html
    assert (await get_3ds(running, authentication.three_ds_transaction_id)) == authentication


async def test_right_otp_authenticates_calls_back_and_returns(running: Running) -> None:
    payment_id = "PAY_3DS_OK"
    authentication = await authenticate(running, payment_id, CHALLENGE)
    before = await authorize(running, payment_id, CHALLENGE, capture=True)

    location = await post_challenge(running, authentication.challenge_url, otp="123456")
    (callback,) = await running.receiver.wait_for(payment_id)
    result = await get_3ds(running, authentication.three_ds_transaction_id)
    after = await authorize(running, payment_id, CHALLENGE, capture=True, **three_ds_fields(result))

    assert before.status == Auth.REQUIRES_CHALLENGE
    assert location.startswith("https://shop.test/checkout/return?order=42&")
    assert query_of(location) == {
        "order": "42",
        "payment_id": payment_id,
        "three_ds_transaction_id": authentication.three_ds_transaction_id,
        "status": "SUCCESS",
    }
    assert_signed(callback)
    assert callback.provider == "acs"
    document = callback.document
    assert document["event_id"]
    assert (document["provider"], document["transaction_ref"], document["status"]) == (
        "acs",
        payment_id,
        "SUCCESS",
    )
    assert document["eci"] == "05"
    assert document["authentication_value"] == result.authentication_value != ""
    assert document["provider_txn_id"] == authentication.three_ds_transaction_id
    assert document["three_ds_transaction_id"] == authentication.three_ds_transaction_id
    assert document["amount_paisa"] == 10_000
    assert (result.status, result.eci, result.challenge_url) == (Tds.AUTHENTICATED, "05", "")
    assert_approved(after)
    assert after.captured
    assert after.acquirer_txn_id == before.acquirer_txn_id


async def test_challenge_requested_by_fraud_review_challenges_any_card(
    running: Running,
) -> None:
    payment_id = "PAY_3DS_REVIEW"
    authentication = await authenticate(
        running, payment_id, MASTERCARD_OK, challenge_requested=True
    )

    await post_challenge(running, authentication.challenge_url, otp="123456", action="submit")
    (callback,) = await running.receiver.wait_for(payment_id)

    assert authentication.status == Tds.CHALLENGE_REQUIRED
    assert (callback.document["status"], callback.document["eci"]) == ("SUCCESS", "02")


async def test_wrong_otp_fails_and_a_later_right_one_changes_nothing(running: Running) -> None:
    payment_id = "PAY_3DS_BAD_OTP"
    authentication = await authenticate(running, payment_id, CHALLENGE)

    location = await post_challenge(running, authentication.challenge_url, otp="654321")
    (callback,) = await running.receiver.wait_for(payment_id)
    again = await post_challenge(running, authentication.challenge_url, otp="123456")
    result = await get_3ds(running, authentication.three_ds_transaction_id)
    auth = await authorize(running, payment_id, CHALLENGE, **three_ds_fields(result))
    await asyncio.sleep(0.1)

    assert query_of(location)["status"] == "FAILED"
    assert query_of(again)["status"] == "FAILED"
    assert_signed(callback)
    document = callback.document
    assert (document["provider"], document["status"], document["response_code"]) == (
        "acs",
        "FAILED",
        "OTP_INVALID",
    )
    assert (document["eci"], document["authentication_value"]) == ("", "")
    assert result.status == Tds.FAILED
    assert result.authentication_value == ""
    assert (auth.status, auth.decline_reason) == (Auth.DECLINED, "authentication_failed")
    assert len(running.receiver.for_ref(payment_id)) == 1


async def test_challenge_then_issuer_declines(running: Running) -> None:
    payment_id = "PAY_3DS_THEN_DECLINE"
    authentication = await authenticate(running, payment_id, CHALLENGE_DECLINED)

    await post_challenge(running, authentication.challenge_url, otp="123456")
    (callback,) = await running.receiver.wait_for(payment_id)
    result = await get_3ds(running, authentication.three_ds_transaction_id)
    auth = await authorize(running, payment_id, CHALLENGE_DECLINED, **three_ds_fields(result))

    assert authentication.status == Tds.CHALLENGE_REQUIRED
    assert callback.document["status"] == "SUCCESS"
    assert (auth.status, auth.decline_code, auth.decline_reason) == (
        Auth.DECLINED,
        "05",
        "card_declined",
    )


async def test_cancel_on_the_challenge_page_fails_it(running: Running) -> None:
    payment_id = "PAY_3DS_CANCEL"
    authentication = await authenticate(running, payment_id, CHALLENGE)

    location = await post_challenge(running, authentication.challenge_url, action="cancel")
    (callback,) = await running.receiver.wait_for(payment_id)

    assert query_of(location)["status"] == "FAILED"
    assert (callback.document["status"], callback.document["response_code"]) == (
        "FAILED",
        "CUSTOMER_CANCELLED",
    )
    assert (await get_3ds(running, authentication.three_ds_transaction_id)).status == Tds.FAILED


async def test_a_submission_without_otp_is_a_bad_request(running: Running) -> None:
    authentication = await authenticate(running, "PAY_3DS_NO_OTP", CHALLENGE)

    async with running.http.post(
        running.local(authentication.challenge_url), data={"otp": " "}, allow_redirects=False
    ) as response:
        assert response.status == 400

    status = await get_3ds(running, authentication.three_ds_transaction_id)
    assert status.status == Tds.CHALLENGE_REQUIRED


async def test_abandoned_challenge_expires_and_calls_back(running: Running) -> None:
    payment_id = "PAY_3DS_ABANDONED"
    started = time.monotonic()
    authentication = await authenticate(running, payment_id, CHALLENGE, callback_url="")

    (callback,) = await running.receiver.wait_for(payment_id, within=ACS_TTL_SECONDS + 2)
    waited = time.monotonic() - started
    result = await get_3ds(running, authentication.three_ds_transaction_id)
    location = await post_challenge(running, authentication.challenge_url, otp="123456")
    async with running.http.get(running.local(authentication.challenge_url)) as page:
        html = await page.text()

    assert waited >= ACS_TTL_SECONDS - 0.1
    assert callback.provider == "acs"  # the gateway's default callback endpoint
    assert_signed(callback)
    assert (callback.document["status"], callback.document["response_code"]) == (
        "EXPIRED",
        "CHALLENGE_EXPIRED",
    )
    assert (result.status, result.challenge_url) == (Tds.FAILED, "")
    assert query_of(location)["status"] == "EXPIRED"
    assert 'name="otp"' not in html
    assert "EXPIRED" in html


async def test_unknown_authentications_are_not_found(running: Running) -> None:
    error = await rpc_error(get_3ds(running, "TDS_NONE"))
    async with running.http.get(f"{running.http_url}/acs/TDS_NONE") as page:
        assert page.status == 404

    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_authentication_is_idempotent_per_payment(running: Running) -> None:
    first = await authenticate(running, "PAY_3DS_TWICE", CHALLENGE)
    replay = await authenticate(running, "PAY_3DS_TWICE", CHALLENGE)
    changed = from_rpc_error(
        await rpc_error(authenticate(running, "PAY_3DS_TWICE", CHALLENGE, amount_paisa=1))
    )

    assert replay == first
    assert changed.reason == "DUPLICATE_PAYMENT_ID"


# --- PCI: card numbers never reach a log line ---------------------------------------------


async def test_a_card_payment_logs_only_the_last_four_digits(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    await authorize(running, "PAY_LOG", OTHER_VISA, card=card(OTHER_VISA, cvv="987"))
    await authenticate(running, "PAY_LOG", OTHER_VISA)
    with pytest.raises(grpc.aio.AioRpcError):
        await authorize(running, "PAY_LOG_DOWN", FAILOVER)

    assert "**** 1111" in caplog.text
    assert "**** 0119" in caplog.text
    assert OTHER_VISA not in caplog.text
    assert FAILOVER not in caplog.text
    assert "cvv" not in caplog.text.lower()


async def test_no_full_card_number_in_any_log_line_of_the_run(running: Running) -> None:
    lines = running.logs.lines()

    assert any("**** 1111" in line for line in running.logs.printed)
    leaked = [line for line in lines for pan in PANS if pan in line]
    assert leaked == []
