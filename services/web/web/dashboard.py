"""The dashboard at /dashboard: a merchant's (or an admin's) payments, refunds and webhooks.

Signing in sets a random session cookie (HttpOnly, SameSite=Strict, Secure outside local mode;
only its SHA-256 is stored). Every form carries the session's CSRF token, checked on every POST;
the sign-in form, before any session exists, uses a double-submit cookie instead. An admin
chooses which merchant to look at; the dashboard then acts as that merchant.
"""

from __future__ import annotations

import hmac
import secrets
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, time, timedelta
from typing import Any
from urllib.parse import quote_plus

import jinja2
from aiohttp import web

from gateway_core.errors import GatewayError, NotFound
from gateway_core.money import format_inr, paisa_from_rupees
from paygate.disputes.v1 import disputes_pb2
from paygate.merchants.v1 import merchants_pb2
from paygate.payments.v1 import payments_pb2
from paygate.webhooks.v1 import webhooks_pb2
from web.analytics import DEFAULT_RANGE, RANGES, analytics_request, chart_series
from web.clients import Acting, Gateway
from web.passwords import hash_password, needs_rehash, verify_password
from web.repository import BrowserSession, Repository
from web.site import render

COOKIE = "paygate_dashboard"
SECURE_COOKIE = "__Host-paygate_dashboard"
LOGIN_CSRF_COOKIE = "paygate_login_csrf"
SESSION_TTL = timedelta(hours=8)
# EnumTypeWrapper is not iterable: .keys() lists its names.
STATUSES = [n for n in payments_pb2.Payment.Status.keys() if n != "STATUS_UNSPECIFIED"]  # noqa: SIM118
METHODS = [n for n in payments_pb2.PaymentMethod.keys() if n != "PAYMENT_METHOD_UNSPECIFIED"]  # noqa: SIM118
PAGE_SIZE = 25
# paygate.disputes.v1.DisputeEvidence's text fields, as the evidence form labels them.
EVIDENCE_FIELDS = (
    ("summary", "Summary"),
    ("shipping_proof", "Shipping proof (tracking number, carrier)"),
    ("customer_communication", "Customer communication"),
    ("proof_of_service", "Proof of service or delivery"),
    ("refund_confirmation", "Refund confirmation"),
    ("explanation_letter", "Explanation letter"),
    ("others", "Anything else"),
)

Page = Callable[[web.Request, BrowserSession], Awaitable[web.StreamResponse]]


def _enum(message: Any, field: str) -> str:
    descriptor = message.DESCRIPTOR.fields_by_name[field]
    return str(descriptor.enum_type.values_by_number[getattr(message, field)].name)


def _when(stamp: Any) -> str:
    if not stamp.seconds:
        return ""
    return str(stamp.ToDatetime(UTC).strftime("%d %b %Y %H:%M:%S UTC"))


class Dashboard:
    def __init__(
        self,
        repo: Repository,
        gateway: Gateway,
        environment: jinja2.Environment,
        *,
        secure_cookies: bool,
    ) -> None:
        self._repo = repo
        self._gateway = gateway
        self._templates = environment
        self._secure = secure_cookies
        self._cookie = SECURE_COOKIE if secure_cookies else COOKIE
        environment.globals.update(enum=_enum, when=_when, inr=format_inr)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/dashboard", self._signed_in(self.home))
        app.router.add_get("/dashboard/login", self.login_form)
        app.router.add_post("/dashboard/login", self.login)
        app.router.add_post("/dashboard/logout", self._signed_in(self.logout, post=True))
        app.router.add_post("/dashboard/merchant", self._signed_in(self.choose_merchant, post=True))
        app.router.add_get("/dashboard/payments", self._signed_in(self.payments))
        app.router.add_get("/dashboard/payments/{payment_id}", self._signed_in(self.payment))
        app.router.add_post(
            "/dashboard/payments/{payment_id}/refund", self._signed_in(self.refund, post=True)
        )
        app.router.add_get("/dashboard/disputes", self._signed_in(self.disputes))
        app.router.add_get("/dashboard/disputes/{dispute_id}", self._signed_in(self.dispute))
        app.router.add_post(
            "/dashboard/disputes/{dispute_id}/evidence", self._signed_in(self.evidence, post=True)
        )
        app.router.add_post(
            "/dashboard/disputes/{dispute_id}/accept", self._signed_in(self.accept, post=True)
        )
        app.router.add_get("/dashboard/exceptions", self._signed_in(self.exceptions))
        app.router.add_get("/dashboard/analytics", self._signed_in(self.analytics))
        app.router.add_get("/dashboard/analytics.json", self._signed_in(self.analytics_data))
        app.router.add_get("/dashboard/webhooks", self._signed_in(self.webhooks))
        app.router.add_get("/dashboard/webhooks/{webhook_id}", self._signed_in(self.webhook))
        app.router.add_post(
            "/dashboard/webhooks/{webhook_id}/deliveries/{delivery_id}/replay",
            self._signed_in(self.replay, post=True),
        )

    # -- sign-in ----------------------------------------------------------------------------

    def _signed_in(
        self, page: Page, *, post: bool = False
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            token = request.cookies.get(self._cookie, "")
            user = await self._repo.browser_session(token) if token else None
            if user is None:
                raise web.HTTPSeeOther("/dashboard/login")
            if post:
                form = await request.post()
                sent = str(form.get("csrf_token", ""))
                if not hmac.compare_digest(sent.encode(), user.csrf_token.encode()):
                    return self._page(
                        request,
                        user,
                        "error.html",
                        status=403,
                        problem="This form has expired. Go back, reload and try again.",
                    )
            return await page(request, user)

        return handler

    async def login_form(self, request: web.Request) -> web.StreamResponse:
        return self._login_page(request, "")

    def _login_page(self, request: web.Request, problem: str, status: int = 200) -> web.Response:
        csrf = secrets.token_urlsafe(32)
        response = render(
            self._templates, "login.html", status=status, csrf_token=csrf, problem=problem
        )
        response.set_cookie(
            LOGIN_CSRF_COOKIE,
            csrf,
            httponly=True,
            samesite="Strict",
            secure=self._secure,
            path="/dashboard/login",
            max_age=3600,
        )
        return response

    async def login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        sent = str(form.get("csrf_token", ""))
        expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
        if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
            return self._login_page(request, "The sign-in form expired: try again.", status=403)
        email = str(form.get("email", "")).strip().lower()
        password = str(form.get("password", ""))
        login = await self._repo.find_login(email)
        if not verify_password(login.password_hash if login else None, password) or login is None:
            return self._login_page(request, "Wrong email or password.", status=401)
        if needs_rehash(login.password_hash):
            await self._repo.update_hash(email, hash_password(password))
        token = secrets.token_urlsafe(32)
        await self._repo.open_browser_session(
            token, email, secrets.token_urlsafe(32), SESSION_TTL.total_seconds()
        )
        response = web.HTTPSeeOther("/dashboard/payments")
        response.set_cookie(
            self._cookie,
            token,
            httponly=True,
            samesite="Strict",
            secure=self._secure,
            path="/",
            max_age=int(SESSION_TTL.total_seconds()),
        )
        response.del_cookie(LOGIN_CSRF_COOKIE, path="/dashboard/login")
        raise response

    async def logout(self, request: web.Request, user: BrowserSession) -> web.StreamResponse:
        await self._repo.close_browser_session(request.cookies.get(self._cookie, ""))
        response = web.HTTPSeeOther("/dashboard/login")
        response.del_cookie(self._cookie, path="/")
        raise response

    # -- which merchant -----------------------------------------------------------------

    def _merchant_of(self, request: web.Request, user: BrowserSession) -> str:
        if not user.is_admin:
            return user.merchant_id
        return request.cookies.get("paygate_admin_merchant", "")

    async def choose_merchant(
        self, request: web.Request, user: BrowserSession
    ) -> web.StreamResponse:
        form = await request.post()
        response = web.HTTPSeeOther("/dashboard/payments")
        response.set_cookie(
            "paygate_admin_merchant",
            str(form.get("merchant_id", ""))[:64],
            httponly=True,
            samesite="Strict",
            secure=self._secure,
            path="/dashboard",
        )
        raise response

    async def _merchants(self, user: BrowserSession) -> list[merchants_pb2.Merchant]:
        if not user.is_admin:
            return []
        reply = await self._gateway.merchants.ListMerchants(
            merchants_pb2.ListMerchantsRequest(page_size=100), metadata=Acting.admin().metadata
        )
        return list(reply.merchants)

    def _page(
        self,
        request: web.Request,
        user: BrowserSession,
        name: str,
        status: int = 200,
        **context: Any,
    ) -> web.Response:
        return render(
            self._templates,
            name,
            status=status,
            user=user,
            csrf_token=user.csrf_token,
            merchant_id=self._merchant_of(request, user),
            path=request.path,
            **context,
        )

    async def home(self, request: web.Request, user: BrowserSession) -> web.StreamResponse:
        raise web.HTTPSeeOther("/dashboard/payments")

    # -- payments -------------------------------------------------------------------------

    async def payments(self, request: web.Request, user: BrowserSession) -> web.StreamResponse:
        merchant_id = self._merchant_of(request, user)
        merchants = await self._merchants(user)
        query = request.query
        found: list[payments_pb2.Payment] = []
        next_token = ""
        problem = ""
        search = query.get("q", "").strip()
        if merchant_id:
            acting = Acting(merchant_id)
            try:
                if search:
                    found = [await self._gateway.get_payment(acting, search)]
                else:
                    listing = await self._gateway.list_payments(acting, self._filters(query))
                    found, next_token = list(listing.payments), listing.next_page_token
            except NotFound:
                problem = f"No payment {search}."
            except GatewayError as exc:
                problem = exc.message
        return self._page(
            request,
            user,
            "payments.html",
            payments=found,
            next_token=next_token,
            problem=problem,
            query=query,
            statuses=STATUSES,
            methods=METHODS,
            merchants=merchants,
        )

    @staticmethod
    def _filters(query: Any) -> payments_pb2.ListPaymentsRequest:
        listing = payments_pb2.ListPaymentsRequest(
            page_size=PAGE_SIZE,
            page_token=query.get("page_token", ""),
            status=query["status"] if query.get("status") in STATUSES else None,
            payment_method=query["method"] if query.get("method") in METHODS else None,
        )
        for field, name, extra in (("from", "created_from", 0), ("to", "created_to", 1)):
            text = query.get(field, "")
            if text:
                try:
                    day = datetime.strptime(text, "%Y-%m-%d").date() + timedelta(days=extra)
                except ValueError:
                    continue
                setattr(
                    listing,
                    name,
                    datetime.combine(day, time(), UTC).isoformat().replace("+00:00", "Z"),
                )
        return listing

    async def payment(self, request: web.Request, user: BrowserSession) -> web.StreamResponse:
        merchant_id = self._merchant_of(request, user)
        acting = Acting(merchant_id)
        try:
            payment = await self._gateway.get_payment(acting, request.match_info["payment_id"])
        except GatewayError as exc:
            return self._page(
                request, user, "error.html", status=exc.http_status, problem=exc.message
            )
        deliveries: list[tuple[webhooks_pb2.Webhook, webhooks_pb2.WebhookDelivery]] = []
        for webhook in await self._gateway.list_webhooks(acting):
            for delivery in await self._gateway.deliveries(acting, webhook.webhook_id, 100):
                if delivery.payment_id == payment.payment_id:
                    deliveries.append((webhook, delivery))
        disputes = await self._gateway.list_disputes(acting, payment.payment_id)
        refundable = payment.captured_amount_paisa - payment.refunded_amount_paisa
        return self._page(
            request,
            user,
            "payment.html",
            payment=payment,
            deliveries=deliveries,
            disputes=disputes,
            refundable=refundable,
            flash=request.query.get("flash", ""),
            flash_error=request.query.get("error", ""),
        )

    async def refund(self, request: web.Request, user: BrowserSession) -> web.StreamResponse:
        payment_id = request.match_info["payment_id"]
        form = await request.post()
        refund = payments_pb2.RefundPaymentRequest(
            payment_id=payment_id, reason=str(form.get("reason", ""))[:1000]
        )
        amount = str(form.get("amount", "")).strip()
        target = f"/dashboard/payments/{payment_id}"
        if amount:
            try:
                refund.amount_paisa = paisa_from_rupees(amount.replace(",", ""))
            except ValueError:
                raise web.HTTPSeeOther(
                    f"{target}?error=Enter+the+amount+in+rupees,+like+250.00"
                ) from None
        try:
            made = await self._gateway.refund(
                Acting(self._merchant_of(request, user)),
                refund,
                idempotency_key=str(form.get("idempotency_key", "")) or str(uuid.uuid4()),
            )
        except GatewayError as exc:
            raise web.HTTPSeeOther(f"{target}?error={_q(exc.message)}") from None
        done = f"Refund {made.refund_id} of {format_inr(made.amount_paisa)} created"
        raise web.HTTPSeeOther(f"{target}?flash={_q(done)}")

    # -- disputes -------------------------------------------------------------------------

    async def disputes(self, request: web.Request, user: BrowserSession) -> web.StreamResponse:
        merchant_id = self._merchant_of(request, user)
        found = await self._gateway.list_disputes(Acting(merchant_id)) if merchant_id else []
        return self._page(
            request, user, "disputes.html", disputes=found, merchants=await self._merchants(user)
        )

    async def dispute(self, request: web.Request, user: BrowserSession) -> web.StreamResponse:
        try:
            found = await self._gateway.get_dispute(
                Acting(self._merchant_of(request, user)), request.match_info["dispute_id"]
            )
        except GatewayError as exc:
            return self._page(
                request, user, "error.html", status=exc.http_status, problem=exc.message
            )
        return self._page(
            request,
            user,
            "dispute.html",
            dispute=found,
            evidence_fields=EVIDENCE_FIELDS,
            flash=request.query.get("flash", ""),
            flash_error=request.query.get("error", ""),
        )

    async def evidence(self, request: web.Request, user: BrowserSession) -> web.StreamResponse:
        dispute_id = request.match_info["dispute_id"]
        form = await request.post()
        evidence = disputes_pb2.DisputeEvidence()
        for name, _ in EVIDENCE_FIELDS:
            setattr(evidence, name, str(form.get(name, "")).strip())
        target = f"/dashboard/disputes/{dispute_id}"
        try:
            await self._gateway.submit_evidence(
                Acting(self._merchant_of(request, user)), dispute_id, evidence
            )
        except GatewayError as exc:
            raise web.HTTPSeeOther(f"{target}?error={_q(exc.message)}") from None
        raise web.HTTPSeeOther(f"{target}?flash={_q('Evidence submitted')}")

    async def accept(self, request: web.Request, user: BrowserSession) -> web.StreamResponse:
        dispute_id = request.match_info["dispute_id"]
        target = f"/dashboard/disputes/{dispute_id}"
        try:
            await self._gateway.accept_dispute(Acting(self._merchant_of(request, user)), dispute_id)
        except GatewayError as exc:
            raise web.HTTPSeeOther(f"{target}?error={_q(exc.message)}") from None
        raise web.HTTPSeeOther(f"{target}?flash={_q('Dispute accepted')}")

    # -- reconciliation (admins) -----------------------------------------------------------

    async def exceptions(self, request: web.Request, user: BrowserSession) -> web.StreamResponse:
        if not user.is_admin:
            return self._page(
                request, user, "error.html", status=403, problem="Only admins see this page."
            )
        return self._page(
            request, user, "exceptions.html", exceptions=await self._gateway.open_exceptions()
        )

    # -- analytics ------------------------------------------------------------------------

    async def analytics(self, request: web.Request, user: BrowserSession) -> web.StreamResponse:
        return self._page(
            request,
            user,
            "analytics.html",
            ranges=list(RANGES),
            chosen=request.query.get("range", DEFAULT_RANGE),
            merchants=await self._merchants(user),
        )

    async def analytics_data(
        self, request: web.Request, user: BrowserSession
    ) -> web.StreamResponse:
        merchant_id = self._merchant_of(request, user)
        if not merchant_id:
            return web.json_response({"error": "choose a merchant"}, status=400)
        try:
            found = await self._gateway.analytics(
                Acting(merchant_id), analytics_request(request.query.get("range", ""))
            )
        except GatewayError as exc:
            return web.json_response({"error": exc.message}, status=exc.http_status)
        return web.json_response(chart_series(found))

    # -- webhooks -------------------------------------------------------------------------

    async def webhooks(self, request: web.Request, user: BrowserSession) -> web.StreamResponse:
        merchant_id = self._merchant_of(request, user)
        endpoints = await self._gateway.list_webhooks(Acting(merchant_id)) if merchant_id else []
        return self._page(
            request,
            user,
            "webhooks.html",
            webhooks=endpoints,
            merchants=await self._merchants(user),
        )

    async def webhook(self, request: web.Request, user: BrowserSession) -> web.StreamResponse:
        acting = Acting(self._merchant_of(request, user))
        webhook_id = request.match_info["webhook_id"]
        try:
            endpoint = await self._gateway.get_webhook(acting, webhook_id)
            deliveries = await self._gateway.deliveries(acting, webhook_id, 100)
        except GatewayError as exc:
            return self._page(
                request, user, "error.html", status=exc.http_status, problem=exc.message
            )
        return self._page(
            request,
            user,
            "webhook.html",
            webhook=endpoint,
            deliveries=deliveries,
            flash=request.query.get("flash", ""),
            flash_error=request.query.get("error", ""),
        )

    async def replay(self, request: web.Request, user: BrowserSession) -> web.StreamResponse:
        webhook_id = request.match_info["webhook_id"]
        target = f"/dashboard/webhooks/{webhook_id}"
        try:
            delivery = await self._gateway.replay(
                Acting(self._merchant_of(request, user)),
                webhook_id,
                request.match_info["delivery_id"],
            )
        except GatewayError as exc:
            raise web.HTTPSeeOther(f"{target}?error={_q(exc.message)}") from None
        raise web.HTTPSeeOther(
            f"{target}?flash={_q(f'Delivery {delivery.delivery_id} sent again')}"
        )


def _q(text: str) -> str:
    return quote_plus(text)
