"""The hosted checkout page: `/checkout/{checkout_session_id}`, public, the session id in the
URL being its only credential.

The page's script posts the customer's choice to `…/pay` as JSON; this service creates the
payment at the orchestrator as the session's merchant (card details go on to the vault there,
and are never logged, stored or echoed here), then follows it: live over `…/stream` (a relay of
the webhook service's WebSocket status stream, which the page cannot open itself without the
merchant's token), or after a redirect (3-D Secure, the bank's page) back to the page. A paid
session shows a receipt, then sends the customer to the merchant's return_url, signed.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import jinja2
from aiohttp import web

from gateway_core.auth import MERCHANT_ID_KEY, ROLE_KEY
from gateway_core.cards import CVV_LENGTH, IIN_RANGES, LENGTHS
from gateway_core.errors import GatewayError, InvalidArgument, NotFound
from gateway_core.logging import get_logger
from gateway_core.money import format_inr
from paygate.payments.v1 import payments_pb2
from web.clients import Acting, Gateway
from web.jobs import PAID_STATUSES
from web.repository import Repository
from web.sessions import Session, Status, looks_like_session_id, return_location
from web.site import render

log = get_logger(__name__)

WALLETS = {
    "PAYTM": "Paytm",
    "PHONEPE": "PhonePe",
    "GOOGLE_PAY": "Google Pay",
    "AMAZON_PAY": "Amazon Pay",
}
BANKS = {
    "HDFC": "HDFC Bank",
    "ICIC": "ICICI Bank",
    "SBIN": "State Bank of India",
    "AXIS": "Axis Bank",
    "KKBK": "Kotak Mahindra Bank",
}
METHOD_LABELS = {"UPI": "UPI", "CARD": "Card", "WALLET": "Wallet", "NET_BANKING": "Net banking"}
FINAL_FAILURES = frozenset({"FAILED", "EXPIRED", "CANCELLED"})
# What the customer reads for a payment's failure_reason (anything else: the generic line).
FAILURE_MESSAGES = {
    "declined": "Your bank declined this payment. Try another card or another method.",
    "card_declined": "Your bank declined this card. Try another card or another method.",
    "insufficient_funds": "The payment was declined for insufficient funds. Try another card.",
    "expired_card": "Your bank declined this card: it has expired. Try another card.",
    "incorrect_cvc": "Your bank declined the CVV. Check it and try again.",
    "authentication_failed": "The 3-D Secure check failed. Try again, or use another card.",
    "fraud_blocked": "This payment could not be accepted. Try another method.",
    "expired": "The payment timed out before it was completed. Try again.",
}
GENERIC_FAILURE = "The payment did not go through. You were not charged; try again."
MAX_BODY_BYTES = 8 * 1024


@dataclass(frozen=True)
class Attempt:
    """What the page needs to know about the session's current payment."""

    payment_id: str
    status: str
    payment_url: str = ""
    qr_code: str = ""
    redirect_url: str = ""
    failure_reason: str = ""
    message: str = ""

    @classmethod
    def of(cls, payment: payments_pb2.Payment) -> Attempt:
        status = payments_pb2.Payment.Status.Name(payment.status)
        message = ""
        if status in FINAL_FAILURES:
            message = FAILURE_MESSAGES.get(payment.failure_reason, GENERIC_FAILURE)
            if status == "EXPIRED":
                message = FAILURE_MESSAGES["expired"]
        return cls(
            payment_id=payment.payment_id,
            status=status,
            payment_url=payment.payment_url,
            qr_code=payment.qr_code,
            redirect_url=payment.next_action.redirect_url,
            failure_reason=payment.failure_reason,
            message=message,
        )


def error_json(error: GatewayError) -> web.Response:
    body: dict[str, Any] = {"error": error.message, "reason": error.reason}
    body["fields"] = {v.field: v.description for v in error.field_violations}
    return web.json_response(body, status=error.http_status)


class CheckoutPages:
    def __init__(
        self,
        repo: Repository,
        gateway: Gateway,
        environment: jinja2.Environment,
        *,
        page_url: Callable[[str], str],
        stream_base: str,
    ) -> None:
        self._repo = repo
        self._gateway = gateway
        self._templates = environment
        self._page_url = page_url
        # ws://host:port of the webhook service's status stream
        self._stream_base = stream_base.rstrip("/")

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/checkout/{sid}", self.page)
        # Deliveries a payment's callback_url gets (it is this page): acknowledged, not used.
        app.router.add_post("/checkout/{sid}", self.ignore_delivery)
        app.router.add_post("/checkout/{sid}/pay", self.pay)
        app.router.add_get("/checkout/{sid}/status", self.status)
        app.router.add_get("/checkout/{sid}/emi-plans", self.emi_plans)
        app.router.add_get("/checkout/{sid}/stream", self.stream)
        app.router.add_get("/checkout/{sid}/receipt", self.receipt)

    async def _session(self, request: web.Request) -> Session:
        sid = request.match_info["sid"]
        if not looks_like_session_id(sid):
            raise NotFound("no such checkout", reason="SESSION_NOT_FOUND")
        return await self._repo.get(sid)

    async def page(self, request: web.Request) -> web.StreamResponse:
        try:
            session = await self._session(request)
        except NotFound:
            return render(self._templates, "not_found.html", status=404)
        if session.status is Status.COMPLETE:
            raise web.HTTPSeeOther(f"/checkout/{session.checkout_session_id}/receipt")
        merchant_name = await self._gateway.merchant_name(session.merchant_id)
        expired = not session.is_open_at(datetime.now(UTC))
        return render(
            self._templates,
            "checkout.html",
            status=410 if expired else 200,
            session=session,
            merchant_name=merchant_name,
            expired=expired,
            methods=[(m, METHOD_LABELS[m]) for m in session.methods],
            wallets=WALLETS,
            banks=BANKS,
            # One home for card rules (gateway_core.cards): the page's script reads them here.
            card_rules=json.dumps(
                {
                    "iin": [[lo, hi, str(brand)] for lo, hi, brand in IIN_RANGES],
                    "lengths": {str(b): list(n) for b, n in LENGTHS.items()},
                    "cvv": {str(b): n for b, n in CVV_LENGTH.items()},
                }
            ),
            # A payment the customer is coming back to (3-D Secure, the bank's page).
            returning=session.payment_id if request.query.get("payment_id") else "",
        )

    async def ignore_delivery(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def pay(self, request: web.Request) -> web.Response:
        try:
            session = await self._session(request)
            if not session.is_open_at(datetime.now(UTC)):
                return web.json_response(
                    {"error": "This checkout has expired.", "reason": "SESSION_CLOSED"},
                    status=409,
                )
            body = await _json_body(request)
            payment_request = self._payment_request(session, body, request)
            attempt = str(body.get("attempt_id", ""))[:64]
            if not attempt:
                raise InvalidArgument("attempt_id is required", reason="INVALID_FIELD")
            payment = await self._gateway.create_payment(
                Acting(session.merchant_id),
                payment_request,
                idempotency_key=f"{session.checkout_session_id}:{attempt}",
            )
        except GatewayError as exc:
            return error_json(exc)
        await self._repo.attach_payment(session.checkout_session_id, payment.payment_id)
        found = Attempt.of(payment)
        if found.status in PAID_STATUSES:
            await self._repo.complete(session.checkout_session_id, payment.payment_id)
        return web.json_response(asdict(found))

    def _payment_request(
        self, session: Session, body: dict[str, Any], request: web.Request
    ) -> payments_pb2.CreatePaymentRequest:
        method = str(body.get("method", ""))
        if method not in session.methods:
            raise InvalidArgument(
                f"method must be one of {', '.join(session.methods)}", reason="INVALID_FIELD"
            )
        details = payments_pb2.PaymentDetails()
        callback_url = ""
        if method == "UPI":
            details.vpa = str(body.get("vpa", "")).strip()
        elif method == "CARD":
            card = body.get("card") or {}
            details.card.card_number = str(card.get("number", "")).replace(" ", "")
            details.card.expiry_month = str(card.get("expiry_month", ""))
            details.card.expiry_year = str(card.get("expiry_year", ""))
            details.card.cvv = str(card.get("cvv", ""))
            details.card.holder_name = str(card.get("holder_name", ""))
            details.emi_plan_id = str(body.get("emi_plan_id", ""))
            # 3-D Secure sends the customer back here.
            callback_url = self._page_url(session.checkout_session_id)
        elif method == "WALLET":
            details.wallet = str(body.get("wallet", ""))
            details.phone = str(body.get("phone", "") or session.customer.phone)
        else:
            details.bank_code = str(body.get("bank_code", ""))
            callback_url = self._page_url(session.checkout_session_id)
        remaining = int((session.expires_at - datetime.now(UTC)).total_seconds())
        return payments_pb2.CreatePaymentRequest(
            user_id=session.customer.email or session.checkout_session_id,
            amount_paisa=session.amount_paisa,
            currency=session.currency,
            payment_method=method,
            payment_details=details,
            description=session.description,
            callback_url=callback_url,
            metadata=session.payment_metadata(),
            expire_after_seconds=max(1, min(remaining, 86400)),
            device=payments_pb2.DeviceInfo(
                user_agent=request.headers.get("User-Agent", "")[:1000],
                ip_address=_client_ip(request),
            ),
        )

    async def status(self, request: web.Request) -> web.Response:
        try:
            session = await self._session(request)
        except GatewayError as exc:
            return error_json(exc)
        body: dict[str, Any] = {"session_status": session.status.value}
        if session.payment_id:
            payment = await self._gateway.get_payment(
                Acting(session.merchant_id), session.payment_id
            )
            attempt = Attempt.of(payment)
            if attempt.status in PAID_STATUSES and session.status is Status.OPEN:
                await self._repo.complete(session.checkout_session_id, payment.payment_id)
                body["session_status"] = Status.COMPLETE.value
            body["payment"] = asdict(attempt)
        if session.status is Status.OPEN and not session.is_open_at(datetime.now(UTC)):
            body["session_status"] = Status.EXPIRED.value
        return web.json_response(body)

    async def emi_plans(self, request: web.Request) -> web.Response:
        try:
            session = await self._session(request)
            plans = await self._gateway.emi_plans(Acting(session.merchant_id), session.amount_paisa)
        except GatewayError as exc:
            return error_json(exc)
        return web.json_response(
            {
                "plans": [
                    {
                        "plan_id": p.plan_id,
                        "label": _plan_label(p),
                    }
                    for p in plans
                ]
            }
        )

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """The session's payment status, relayed from the webhook service's stream."""
        try:
            session = await self._session(request)
        except GatewayError as exc:
            return error_json(exc)
        if not session.payment_id:
            return web.json_response({"error": "no payment yet"}, status=409)
        client = web.WebSocketResponse(heartbeat=30)
        await client.prepare(request)
        url = f"{self._stream_base}/api/v1/payments/{session.payment_id}/stream"
        headers = {MERCHANT_ID_KEY: session.merchant_id, ROLE_KEY: "merchant"}
        try:
            async with (
                aiohttp.ClientSession() as http,
                http.ws_connect(url, headers=headers, heartbeat=30) as upstream,
            ):
                async for message in upstream:
                    if message.type is not aiohttp.WSMsgType.TEXT:
                        break
                    await client.send_str(message.data)
                    with contextlib.suppress(ValueError, KeyError):
                        if json.loads(message.data)["status"] in PAID_STATUSES:
                            await self._repo.complete(
                                session.checkout_session_id, session.payment_id
                            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("status relay failed", error=str(exc))
        await client.close()
        return client

    async def receipt(self, request: web.Request) -> web.StreamResponse:
        try:
            session = await self._session(request)
        except NotFound:
            return render(self._templates, "not_found.html", status=404)
        if session.status is not Status.COMPLETE:
            raise web.HTTPSeeOther(f"/checkout/{session.checkout_session_id}")
        acting = Acting(session.merchant_id)
        payment = await self._gateway.get_payment(acting, session.payment_id)
        secret = await self._gateway.callback_secret(session.merchant_id)
        return render(
            self._templates,
            "receipt.html",
            session=session,
            merchant_name=await self._gateway.merchant_name(session.merchant_id),
            payment=payment,
            method=METHOD_LABELS[payments_pb2.PaymentMethod.Name(payment.payment_method)],
            paid_at=(session.closed_at or datetime.now(UTC)).strftime("%d %b %Y, %H:%M UTC"),
            return_url=return_location(session, session.payment_id, secret),
        )


def _plan_label(plan: payments_pb2.EmiPlan) -> str:
    kind = "No-cost EMI" if plan.kind == payments_pb2.EmiPlan.NO_COST else "EMI"
    rate = f" at {plan.annual_interest_bps / 100:.2f}% a year" if plan.annual_interest_bps else ""
    return (
        f"{kind}: {plan.tenure_months} months of {format_inr(plan.monthly_installment_paisa)}"
        f"{rate} (total {format_inr(plan.total_payable_paisa)})"
    )


async def _json_body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise InvalidArgument(
            "send the payment as JSON (the page's script does)", reason="JSON_REQUIRED"
        )
    raw = await request.content.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise InvalidArgument("request body too large", reason="BODY_TOO_LARGE")
    try:
        body = json.loads(raw)
    except ValueError:
        raise InvalidArgument("the body is not JSON", reason="MALFORMED_JSON") from None
    if not isinstance(body, dict):
        raise InvalidArgument("the body must be a JSON object", reason="MALFORMED_JSON")
    return body


def _client_ip(request: web.Request) -> str:
    forwarded = request.headers.get("X-Forwarded-For", "")
    first = forwarded.split(",")[0].strip() if forwarded else (request.remote or "")
    return first[:45]
