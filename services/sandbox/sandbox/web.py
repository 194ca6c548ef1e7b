"""The sandbox's HTTP server, in the same process and event loop as its gRPC server.

It serves what real providers serve over the web: the bank pages a customer's browser is sent
to for net banking, the card issuer's 3-D Secure challenge page (OTP), plus what a test or a
demo uses: controls to act as the customer of a UPI request (approve/decline manual@upi), the
providers' books (`GET /books`, sandbox.books), and `/health`. It also serves what providers
publish for the merchant's finance team: each provider's daily settlement file
(`GET /settlements/{provider}/{YYYY-MM-DD}.csv`, with the provider's report API key as a bearer
token; sandbox.settlements), and the control that settles an OMITted payment in a later file.

Like the simulator itself, none of it is for production: the local stack binds it to loopback,
Envoy never routes to it, and the Helm chart exposes no port for it.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Mapping, Sequence
from datetime import date
from html import escape

from aiohttp import web

from gateway_core.errors import (
    Conflict,
    FailedPrecondition,
    GatewayError,
    InvalidArgument,
    NotFound,
    Unauthenticated,
)
from gateway_core.logging import get_logger
from sandbox import acs as acs_module
from sandbox.acs import Acs, Authentication, AuthenticationStatus
from sandbox.books import KeepsBooks, books_document
from sandbox.disputes import DisputeDesk
from sandbox.netbanking import (
    MERCHANT_CANCELLED,
    PAGE_ROUTE,
    BankPayment,
    BankPaymentStatus,
    NetBanks,
)
from sandbox.settlements import SettlementReports
from sandbox.upi import UpiSwitch

log = get_logger(__name__)

# In-flight requests get this long to finish when the server stops.
_SHUTDOWN_TIMEOUT_SECONDS = 5.0

_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>{bank} - Sandbox net banking</title></head>
<body>
<h1>{bank}</h1>
<p>Sandbox net banking: no real money moves.</p>
{content}
</body>
</html>
"""
_FORM = """<p>Pay <strong>{amount}</strong> for payment <code>{payment_id}</code>?</p>
<form method="post">
<button type="submit" name="action" value="approve">Pay</button>
<button type="submit" name="action" value="cancel">Cancel</button>
</form>"""
_DONE = """<p>Payment <code>{payment_id}</code> is closed: {status}{why}.</p>
<p><a href="{return_to}">Return to the merchant</a></p>"""


_ACS_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>3-D Secure - Sandbox issuer</title></head>
<body>
<h1>3-D Secure verification</h1>
<p>Sandbox card issuer: no real money moves. The OTP is 123456.</p>
{content}
</body>
</html>
"""
_ACS_FORM = """<p>Pay <strong>{amount}</strong>{merchant} with card <code>{card}</code>
(payment <code>{payment_id}</code>).</p>
<p>Enter the one-time password sent to your registered mobile number.</p>
<form method="post">
<label for="otp">OTP</label>
<input id="otp" name="otp" type="text" inputmode="numeric" autocomplete="one-time-code"
 maxlength="6" required autofocus>
<button type="submit" name="action" value="submit">Submit</button>
<button type="submit" name="action" value="cancel" formnovalidate>Cancel</button>
</form>"""
_ACS_DONE = """<p>Authentication <code>{authentication_id}</code> of payment
<code>{payment_id}</code> is {status}.</p>
<p><a href="{return_to}">Return to the merchant</a></p>"""


def rupees(paisa: int) -> str:
    return f"₹{paisa // 100:,}.{paisa % 100:02d}"


class SandboxWeb:
    def __init__(
        self,
        host: str,
        port: int,
        upi: UpiSwitch,
        banks: NetBanks,
        acs: Acs,
        books: Sequence[KeepsBooks] = (),
        settlements: SettlementReports | None = None,
        report_keys: Mapping[str, str] | None = None,
        disputes: DisputeDesk | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._upi = upi
        self._banks = banks
        self._acs = acs
        self._books = books
        self._settlements = settlements
        self._report_keys = dict(report_keys or {})
        self._disputes = disputes
        self._started = asyncio.Event()
        self.port: int | None = None

    def application(self) -> web.Application:
        app = web.Application()
        app.add_routes(
            [
                web.get("/health", self._health),
                web.get("/books", self._books_of),
                web.get(PAGE_ROUTE, self._bank_page),
                web.post(PAGE_ROUTE, self._bank_submit),
                web.get(acs_module.PAGE_ROUTE, self._acs_page),
                web.post(acs_module.PAGE_ROUTE, self._acs_submit),
                web.post(
                    "/upi/transactions/{transaction_ref}/{decision:approve|decline}",
                    self._upi_decide,
                ),
                web.get("/settlements/providers", self._settlement_providers),
                web.get("/settlements/{provider}/{day}.csv", self._settlement_file),
                web.post("/settlements/{provider}/release", self._settlement_release),
                web.post("/disputes", self._raise_dispute),
            ]
        )
        return app

    async def serve(self) -> None:
        """Serve until cancelled (a ServiceApp background task), then stop."""
        runner = web.AppRunner(self.application(), shutdown_timeout=_SHUTDOWN_TIMEOUT_SECONDS)
        await runner.setup()
        try:
            await web.TCPSite(runner, self._host, self._port).start()
            self.port = runner.addresses[0][1]
            self._started.set()
            log.info("http listening", address=f"{self._host}:{self.port}", port=self.port)
            await asyncio.Event().wait()
        finally:
            self._started.clear()
            await runner.cleanup()

    async def wait_started(self) -> int:
        """The bound HTTP port, once the server accepts requests (port 0 binds an ephemeral one)."""
        await self._started.wait()
        assert self.port is not None
        return self.port

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _books_of(self, request: web.Request) -> web.Response:
        """Every simulated provider's payments and refunds; `?payment_id=` for one payment."""
        payment_id = request.query.get("payment_id", "")
        return web.json_response(books_document(self._books, payment_id))

    async def _bank_page(self, request: web.Request) -> web.Response:
        payment = self._payment(request)
        if payment.status is BankPaymentStatus.PENDING:
            content = _FORM.format(
                amount=escape(rupees(payment.amount_paisa)),
                payment_id=escape(payment.payment_id),
            )
        else:
            cancelled = payment.failure_code == MERCHANT_CANCELLED
            content = _DONE.format(
                payment_id=escape(payment.payment_id),
                status=escape(payment.status.value),
                why=", cancelled by the merchant" if cancelled else "",
                return_to=escape(payment.return_to()),
            )
        return web.Response(
            text=_PAGE.format(bank=escape(payment.bank_name), content=content),
            content_type="text/html",
        )

    async def _bank_submit(self, request: web.Request) -> web.Response:
        payment = self._payment(request)
        action = (await request.post()).get("action")
        if action not in ("approve", "cancel"):
            raise web.HTTPBadRequest(text="action must be approve or cancel")
        payment = self._banks.complete(
            payment.bank_code, payment.payment_id, approve=action == "approve"
        )
        raise web.HTTPSeeOther(payment.return_to())

    async def _acs_page(self, request: web.Request) -> web.Response:
        authentication = self._authentication(request)
        if authentication.status is AuthenticationStatus.CHALLENGE_REQUIRED:
            merchant = authentication.merchant_id
            content = _ACS_FORM.format(
                amount=escape(rupees(authentication.amount_paisa)),
                merchant=f" to <strong>{escape(merchant)}</strong>" if merchant else "",
                card=escape(authentication.card.masked),
                payment_id=escape(authentication.payment_id),
            )
        else:
            content = _ACS_DONE.format(
                authentication_id=escape(authentication.authentication_id),
                payment_id=escape(authentication.payment_id),
                status=escape(authentication.callback_status),
                return_to=escape(authentication.return_to()),
            )
        return web.Response(text=_ACS_PAGE.format(content=content), content_type="text/html")

    async def _acs_submit(self, request: web.Request) -> web.Response:
        """The challenge form: `otp` (with `action=submit`, or no action) or `action=cancel`.
        A challenge already over changes nothing and sends the browser back again."""
        authentication = self._authentication(request)
        form = await request.post()
        action = form.get("action", "submit")
        otp = form.get("otp")
        if action == "cancel":
            authentication = self._acs.cancel(authentication.authentication_id)
        elif action != "submit":
            raise web.HTTPBadRequest(text="action must be submit or cancel")
        elif authentication.status is AuthenticationStatus.CHALLENGE_REQUIRED:
            if not isinstance(otp, str) or not otp.strip():
                raise web.HTTPBadRequest(text="otp is required")
            authentication = self._acs.submit_otp(authentication.authentication_id, otp)
        raise web.HTTPSeeOther(authentication.return_to())

    async def _upi_decide(self, request: web.Request) -> web.Response:
        approve = request.match_info["decision"] == "approve"
        try:
            txn = self._upi.decide(request.match_info["transaction_ref"], approve=approve)
        except NotFound as exc:
            return _error(404, exc)
        except Conflict as exc:
            return _error(409, exc)
        return web.json_response(
            {
                "transaction_ref": txn.transaction_ref,
                "upi_txn_id": txn.upi_txn_id,
                "status": txn.status.value,
                "rrn": txn.rrn,
                "approval_code": txn.approval_code,
                "response_code": txn.response_code,
            }
        )

    async def _settlement_providers(self, request: web.Request) -> web.Response:
        reports = self._reports()
        return web.json_response(
            [{"provider": p.provider, "method": p.method} for p in reports.providers]
        )

    async def _settlement_file(self, request: web.Request) -> web.Response:
        """A provider's settlement of one IST date, for the holder of its report key."""
        reports = self._reports()
        provider = request.match_info["provider"]
        if not reports.knows(provider):
            return _error(404, NotFound(f"no provider {provider!r}", reason="PROVIDER_NOT_FOUND"))
        if not self._authorized(provider, request.headers.get("Authorization", "")):
            response = _error(
                401,
                Unauthenticated(
                    f"send {provider}'s report API key as Authorization: Bearer <key>",
                    reason="REPORT_KEY_INVALID",
                ),
            )
            response.headers["WWW-Authenticate"] = 'Bearer realm="settlements"'
            return response
        try:
            day = _day(request.match_info["day"], "date in the path")
        except InvalidArgument as exc:
            return _error(400, exc)
        settlement = reports.file(provider, day)
        return web.Response(
            text=settlement.csv(),
            content_type="text/csv",
            charset="utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="{provider}-{day}.csv"',
                "X-Settlement-Id": settlement.settlement_id,
                "X-Settlement-Utr": settlement.utr,
            },
        )

    async def _settlement_release(self, request: web.Request) -> web.Response:
        """Settle an OMITted payment in a later date's file: {"payment_id": ..., "date": ...}."""
        reports = self._reports()
        provider = request.match_info["provider"]
        try:
            body = await request.json()
        except json.JSONDecodeError:
            body = None
        try:
            if not isinstance(body, dict):
                raise InvalidArgument(
                    'the body must be a JSON object {"payment_id": ..., "date": "YYYY-MM-DD"}',
                    reason="BAD_REQUEST_BODY",
                )
            payment_id = body.get("payment_id")
            if not isinstance(payment_id, str) or not payment_id.strip():
                raise InvalidArgument("payment_id is required", reason="PAYMENT_ID_REQUIRED")
            day = _day(body.get("date"), "date")
            reports.release(provider, payment_id.strip(), day)
        except InvalidArgument as exc:
            return _error(400, exc)
        except NotFound as exc:
            return _error(404, exc)
        except FailedPrecondition as exc:
            return _error(409, exc)
        return web.json_response(
            {"provider": provider, "payment_id": payment_id.strip(), "date": day.isoformat()}
        )

    async def _raise_dispute(self, request: web.Request) -> web.Response:
        """A dispute on demand: {"provider": ..., "payment_id": ..., and optionally
        "amount_paisa", "reason_code", "respond_within_seconds", "notify"}. The provider raises
        it and calls the gateway back at once (unless "notify" is false)."""
        if self._disputes is None:
            raise web.HTTPNotFound(text="disputes are not raised here")
        try:
            body = await request.json()
        except json.JSONDecodeError:
            body = None
        try:
            if not isinstance(body, dict):
                raise InvalidArgument(
                    'the body must be a JSON object {"provider": ..., "payment_id": ...}',
                    reason="BAD_REQUEST_BODY",
                )
            provider, payment_id = body.get("provider"), body.get("payment_id")
            amount, reason_code = body.get("amount_paisa", 0), body.get("reason_code", "")
            within = body.get("respond_within_seconds")
            notify = body.get("notify", True)
            if not isinstance(notify, bool):
                raise InvalidArgument("notify must be true or false")
            if not isinstance(provider, str) or not isinstance(payment_id, str):
                raise InvalidArgument(
                    "provider and payment_id are required", reason="BAD_REQUEST_BODY"
                )
            if not isinstance(amount, int) or amount < 0:
                raise InvalidArgument("amount_paisa must be a whole number of paisa")
            if not isinstance(reason_code, str):
                raise InvalidArgument("reason_code must be a string")
            if within is not None and (not isinstance(within, int | float) or within <= 0):
                raise InvalidArgument("respond_within_seconds must be a positive number")
            case = self._disputes.raise_dispute(
                provider,
                payment_id,
                amount_paisa=amount,
                reason_code=reason_code,
                respond_within_seconds=within,
                notify=notify,
            )
        except InvalidArgument as exc:
            return _error(400, exc)
        except NotFound as exc:
            return _error(404, exc)
        except FailedPrecondition as exc:
            return _error(409, exc)
        return web.json_response(
            {
                "provider": case.provider,
                "case_reference": case.case_reference,
                "payment_id": case.payment_id,
                "amount_paisa": case.amount_paisa,
                "reason_code": case.reason_code,
                "status": case.status.value,
            }
        )

    def _reports(self) -> SettlementReports:
        if self._settlements is None:
            raise web.HTTPNotFound(text="settlement files are not served here")
        return self._settlements

    def _authorized(self, provider: str, authorization: str) -> bool:
        expected = self._report_keys.get(provider, "")
        scheme, _, presented = authorization.partition(" ")
        if not expected or scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(presented.strip().encode(), expected.encode())

    def _payment(self, request: web.Request) -> BankPayment:
        try:
            return self._banks.get(
                request.match_info["bank_code"], request.match_info["payment_id"]
            )
        except NotFound:
            raise web.HTTPNotFound(text="no such payment at this bank") from None

    def _authentication(self, request: web.Request) -> Authentication:
        try:
            return self._acs.get(request.match_info["authentication_id"])
        except NotFound:
            raise web.HTTPNotFound(text="no such 3-D Secure authentication") from None


def _day(value: object, what: str) -> date:
    """An ISO date (YYYY-MM-DD), or InvalidArgument naming `what`."""
    try:
        if not isinstance(value, str) or len(value) != len("YYYY-MM-DD"):
            raise ValueError
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidArgument(
            f"{what} must be a date written YYYY-MM-DD, got {value!r}", reason="BAD_DATE"
        ) from None


def _error(status: int, error: GatewayError) -> web.Response:
    return web.json_response(
        {"error": {"reason": error.reason, "message": error.message}}, status=status
    )
