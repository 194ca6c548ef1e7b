"""The chaos run's load: journeys of every method through Envoy, at a constant arrival rate
(the open model: arrivals never wait for earlier journeys), recording everything the client
was told.

A journey behaves like a careful merchant integration: every POST carries an Idempotency-Key,
and an answer that says "try again" (429, 502, 503, 504, a 409 for work still in progress, or
no answer at all) is retried with the same key, with backoff, for a while. Every 2xx is an
acknowledgement the checks later hold the gateway to; every other answer is recorded to judge
whether it was a clean, retryable error.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from chaos.schedule import Journey, JourneyPlan

RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
# 409s that mean "the work you asked for is still going on": retry, as the README says.
RETRYABLE_CONFLICTS = frozenset({"IDEMPOTENCY_IN_PROGRESS", "PAYMENT_OPERATION_IN_PROGRESS"})
FINAL = frozenset({"SUCCESS", "FAILED", "EXPIRED", "CANCELLED", "PARTIALLY_REFUNDED", "REFUNDED"})
OTP = "123456"  # the sandbox ACS's passing OTP (README, Sandbox test values)
CAPTURE_ATTEMPTS = 3


@dataclass(frozen=True)
class LoadSettings:
    rate: float = 5.0  # journeys started per second
    request_timeout: float = 45.0  # longer than Envoy's upstream timeout (30 s): past it, a hang
    retry_for: float = 60.0  # how long a journey keeps retrying one step
    poll_interval: float = 1.0
    journey_timeout: float = 90.0  # polling for an outcome stops after this


@dataclass(frozen=True)
class Answer:
    """One HTTP exchange as the client saw it."""

    op: str  # create, get, capture, refund, 3ds, bank
    journey: int
    started: float  # time.time()
    seconds: float
    status: int | None  # None: no HTTP answer (a transport error or the client's timeout)
    reason: str  # the ErrorInfo reason of an error answer, or the transport error's name
    json_error: bool  # the body is a JSON google.rpc.Status ({"code", "message"})
    timed_out: bool  # no answer within the client's timeout: a hang
    payment_id: str = ""

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 400

    @property
    def retryable(self) -> bool:
        if self.status is None:
            return not self.timed_out
        if self.status in RETRYABLE_STATUSES:
            return True
        return self.status == 409 and self.reason in RETRYABLE_CONFLICTS


@dataclass(frozen=True)
class AckedPayment:
    key: str  # the create's Idempotency-Key (also in metadata.chaos_key)
    payment_id: str
    merchant_id: str
    amount_paisa: int
    method: str
    journey: Journey


@dataclass(frozen=True)
class AckedRefund:
    key: str
    refund_id: str
    payment_id: str
    amount_paisa: int


@dataclass
class Observations:
    """Everything the load saw; the checks read it."""

    answers: list[Answer] = field(default_factory=list)
    payments: list[AckedPayment] = field(default_factory=list)
    refunds: list[AckedRefund] = field(default_factory=list)
    # Payment ids whose capture answered 2xx with SUCCESS (CAPTURING promises nothing yet).
    captures: set[str] = field(default_factory=set)
    outcomes: dict[int, str] = field(
        default_factory=dict
    )  # journey -> last status or why it stopped
    started: int = 0


@dataclass(frozen=True)
class Merchant:
    merchant_id: str
    headers: Mapping[str, str]


class Retry(Exception):
    """A step's answer said to try again."""


class GiveUp(Exception):
    """A step cannot go on (retries spent, or an answer that ends the journey)."""


@dataclass
class Load:
    client: httpx.AsyncClient  # on the gateway (Envoy)
    browser: httpx.AsyncClient  # the customer's browser, on the sandbox's pages
    merchants: list[Merchant]
    settings: LoadSettings
    run_id: str
    seen: Observations = field(default_factory=Observations)
    clock: Callable[[], float] = time.monotonic

    async def run(self, plans: list[JourneyPlan], stop: asyncio.Event) -> None:
        """Start journeys at the set rate until `stop`, then wait for those running."""
        running: set[asyncio.Task[None]] = set()
        start = self.clock()
        for plan in plans:
            due = start + plan.index / self.settings.rate
            delay = due - self.clock()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                break
            task = asyncio.create_task(self.journey(plan))
            running.add(task)
            task.add_done_callback(running.discard)
            self.seen.started += 1
        if running:
            await asyncio.gather(*running, return_exceptions=True)

    async def journey(self, plan: JourneyPlan) -> None:
        merchant = self.merchants[plan.index % len(self.merchants)]
        rng = random.Random(f"{self.run_id}:{plan.index}")  # noqa: S311 - seeded jitter
        try:
            outcome = await self._journey(plan, merchant, rng)
        except GiveUp as stop:
            outcome = f"gave up: {stop}"
        except Exception as exc:  # a bug in the load must not end the run unseen
            outcome = f"load error: {type(exc).__name__}: {exc}"
        self.seen.outcomes[plan.index] = outcome

    async def _journey(self, plan: JourneyPlan, merchant: Merchant, rng: random.Random) -> str:
        key = f"chaos-{self.run_id}-{plan.index}"
        body = payment_body(plan, key)
        created = await self._post(
            plan.index, "create", "/api/v1/payments", body, key, merchant, rng
        )
        payment_id = str(created["payment_id"])
        self.seen.payments.append(
            AckedPayment(
                key,
                payment_id,
                merchant.merchant_id,
                int(created["amount_paisa"]),
                str(created["payment_method"]),
                plan.journey,
            )
        )
        payment = created
        if payment["status"] == "REQUIRES_ACTION":
            await self._complete_action(plan.index, payment, rng)
        payment = await self._until(plan.index, payment_id, merchant, FINAL | {"AUTHORIZED"})
        attempt = 0
        while payment["status"] == "AUTHORIZED" and plan.journey is Journey.CARD_MANUAL:
            # A capture answered CAPTURING is still at the provider; the inquiry may find it
            # not done (the payment is AUTHORIZED again): the merchant captures again.
            attempt += 1
            if attempt > CAPTURE_ATTEMPTS:
                raise GiveUp(f"{payment_id} still AUTHORIZED after {CAPTURE_ATTEMPTS} captures")
            path = f"/api/v1/payments/{payment_id}/capture"
            capture_key = f"{key}-capture-{attempt}"
            captured = await self._post(plan.index, "capture", path, {}, capture_key, merchant, rng)
            if captured.get("status") == "SUCCESS":
                self.seen.captures.add(payment_id)
            payment = await self._until(plan.index, payment_id, merchant, FINAL | {"AUTHORIZED"})
        if payment["status"] == "SUCCESS" and plan.refund_paisa:
            path = f"/api/v1/payments/{payment_id}/refund"
            refund_body = {"amount_paisa": plan.refund_paisa, "reason": "chaos run refund"}
            refund = await self._post(
                plan.index, "refund", path, refund_body, f"{key}-refund", merchant, rng
            )
            self.seen.refunds.append(
                AckedRefund(
                    f"{key}-refund", str(refund["refund_id"]), payment_id, plan.refund_paisa
                )
            )
        return str(payment["status"])

    async def _complete_action(
        self, journey: int, payment: dict[str, Any], rng: random.Random
    ) -> None:
        """The customer at the 3-D Secure page (OTP) or the bank's page (pay)."""
        url = str((payment.get("next_action") or {}).get("redirect_url") or "")
        if not url:
            return
        page = await self._browse(journey, "page", url, rng)
        # The ACS asks for the OTP; the bank's page has Pay (approve) and Cancel.
        form = {"otp": OTP} if 'name="otp"' in page else {"action": "approve"}
        await self._browse(journey, "submit", url, rng, form=form)

    async def _browse(
        self,
        journey: int,
        op: str,
        url: str,
        rng: random.Random,
        form: dict[str, str] | None = None,
    ) -> str:
        """A page of the sandbox (the provider's site, not the gateway): retried while the
        provider is down; its answers are not the gateway's, so they are not judged."""
        deadline = self.clock() + self.settings.retry_for
        attempt = 0
        while True:
            try:
                if form is None:
                    reply = await self.browser.get(url)
                else:
                    reply = await self.browser.post(url, data=form)
                if reply.status_code < 400:
                    return reply.text
                if reply.status_code < 500:
                    raise GiveUp(f"the provider's page refused the {op}: {reply.status_code}")
            except httpx.HTTPError:
                pass
            attempt += 1
            if self.clock() > deadline:
                raise GiveUp(f"the provider's page {op} never answered")
            await asyncio.sleep(_backoff(attempt, rng))

    async def _until(
        self, journey: int, payment_id: str, merchant: Merchant, wanted: frozenset[str]
    ) -> dict[str, Any]:
        """Poll the payment until its status is in `wanted`."""
        deadline = self.clock() + self.settings.journey_timeout
        path = f"/api/v1/payments/{payment_id}"
        while True:
            answer, body = await self._request(journey, "get", "GET", path, None, merchant.headers)
            if answer.ok and body.get("status") in wanted:
                return body
            if self.clock() > deadline:
                raise GiveUp(f"{payment_id} still {body.get('status', '?')} after polling")
            await asyncio.sleep(self.settings.poll_interval)

    async def _post(
        self,
        journey: int,
        op: str,
        path: str,
        body: dict[str, Any],
        key: str,
        merchant: Merchant,
        rng: random.Random,
    ) -> dict[str, Any]:
        """POST with an Idempotency-Key, retried with the same key while the answer says so."""
        headers = {**merchant.headers, "Idempotency-Key": key}
        deadline = self.clock() + self.settings.retry_for
        attempt = 0
        while True:
            answer, reply = await self._request(journey, op, "POST", path, body, headers)
            if answer.ok:
                return reply
            if not answer.retryable:
                raise GiveUp(f"{op} answered {answer.status} {answer.reason}")
            attempt += 1
            if self.clock() > deadline:
                raise GiveUp(f"{op} still failing after {self.settings.retry_for:g} s")
            await asyncio.sleep(_backoff(attempt, rng))

    async def _request(
        self,
        journey: int,
        op: str,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        headers: Mapping[str, str],
    ) -> tuple[Answer, dict[str, Any]]:
        started, began = time.time(), self.clock()
        status: int | None = None
        reason = ""
        document: dict[str, Any] = {}
        timed_out = False
        try:
            async with asyncio.timeout(self.settings.request_timeout):
                reply = await self.client.request(method, path, json=body, headers=headers)
            status = reply.status_code
            document = _json(reply)
            reason = error_reason(document)
        except TimeoutError:
            timed_out = True
            reason = "client timeout"
        except httpx.HTTPError as exc:
            reason = type(exc).__name__
        answer = Answer(
            op=op,
            journey=journey,
            started=started,
            seconds=self.clock() - began,
            status=status,
            reason=reason,
            json_error=is_status_document(document),
            timed_out=timed_out,
            payment_id=_payment_id(path, document),
        )
        self.seen.answers.append(answer)
        return answer, document


def payment_body(plan: JourneyPlan, key: str) -> dict[str, Any]:
    """The create request of a journey, from the README's sandbox magic values."""
    body: dict[str, Any] = {
        "user_id": f"chaos-user-{uuid.uuid4().hex[:12]}",
        "amount_paisa": plan.amount_paisa,
        "currency": "INR",
        "description": f"chaos journey {plan.index}",
        "metadata": {"chaos_key": key},
    }
    card = {"expiry_month": "12", "expiry_year": "2030", "cvv": "123", "holder_name": "Chaos"}
    match plan.journey:
        case Journey.UPI:
            details: dict[str, Any] = {"vpa": "success@upi"}
            method = "UPI"
        case Journey.CARD:
            details = {"card": {"card_number": "4242424242424242", **card}}
            method = "CARD"
        case Journey.CARD_CHALLENGE:
            details = {"card": {"card_number": "4000000000003220", **card}}
            method = "CARD"
        case Journey.CARD_MANUAL:
            details = {"card": {"card_number": "5555555555554444", **card}}
            method = "CARD"
            body["capture_method"] = "MANUAL"
        case Journey.WALLET:
            details = {"wallet": "PAYTM", "phone": "9999999999"}
            method = "WALLET"
        case Journey.NET_BANKING:
            details = {"bank_code": "HDFC"}
            method = "NET_BANKING"
    return body | {"payment_method": method, "payment_details": details}


def error_reason(document: dict[str, Any]) -> str:
    """The ErrorInfo reason of a google.rpc.Status body, or ''."""
    for detail in document.get("details") or []:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("ErrorInfo"):
            return str(detail.get("reason", ""))
    return ""


def is_status_document(document: dict[str, Any]) -> bool:
    return isinstance(document.get("code"), int) and isinstance(document.get("message"), str)


def _json(reply: httpx.Response) -> dict[str, Any]:
    try:
        document = reply.json()
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


def _payment_id(path: str, document: dict[str, Any]) -> str:
    parts = path.split("/")
    if len(parts) > 4 and parts[3] == "payments":
        return parts[4]
    return str(document.get("payment_id", ""))


def _backoff(attempt: int, rng: random.Random) -> float:
    """0.5 s, 1 s, 2 s, 4 s, then 5 s, each with up to 50 % jitter."""
    base: float = min(0.5 * 2 ** (attempt - 1), 5.0)
    return base * (1 + rng.random() / 2)
