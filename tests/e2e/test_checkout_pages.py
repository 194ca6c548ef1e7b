"""Hosted checkout and the dashboard (issue 15), in a real browser: Debian's Chromium driven by
Playwright, through Envoy, against the whole stack. Nothing downloads a browser: the system's
`chromium` (installed by .ci/run) is launched by path.

Screenshots of every page go to test-screenshots/ (git-ignored).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from devstack import Stack
from devstack.webhook_receiver import WebhookReceiver
from gateway_core.services import REPO_ROOT

SCREENSHOTS = REPO_ROOT / "test-screenshots"
RETURN_URL = "https://shop.example/orders/42/done"
ONE_LAKH_PAISA = 10_000_000  # ₹1,00,000.00
CHALLENGE_CARD = "4000 0000 0000 3220"
DECLINED_CARD = "4000 0000 0000 0002"
GOOD_CARD = "4242 4242 4242 4242"


def chromium_path() -> str:
    found = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium")
    if not found:
        raise pytest.fail.Exception(
            "Chromium is not installed: `apt-get install -y chromium` (.ci/run does it)",
            pytrace=False,
        )
    return found


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=chromium_path(), args=["--no-sandbox"]
        )
        yield launched
        await launched.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    # A phone-sized window: the page is mobile first.
    context = await browser.new_context(viewport={"width": 390, "height": 844})
    opened = await context.new_page()
    # The merchant's return page is outside the stack: answer it here.
    await opened.route(
        "https://shop.example/**",
        lambda route: route.fulfill(
            status=200, body="<h1>Thanks from the shop</h1>", content_type="text/html"
        ),
    )
    yield opened
    await context.close()


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[WebhookReceiver]:
    running = WebhookReceiver()
    await running.start()
    yield running
    await running.stop()


async def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


async def create_session(
    api: httpx.AsyncClient, merchant: dict[str, Any], **overrides: Any
) -> dict[str, Any]:
    body = {
        "amount_paisa": ONE_LAKH_PAISA,
        "currency": "INR",
        "description": "Order #42: a very good chair",
        # A customer of its own: fraud velocity counts per customer.
        "customer": {
            "name": "Asha Rao",
            "email": f"asha.{uuid.uuid4().hex[:8]}@example.com",
            "phone": "9876543210",
        },
        "methods": ["UPI", "CARD", "WALLET", "NET_BANKING"],
        "return_url": RETURN_URL,
        "metadata": {"order_id": "42"},
    } | overrides
    reply = await api.post("/api/v1/checkout/sessions", json=body, headers=merchant["auth"])
    assert reply.status_code == 200, reply.text
    session: dict[str, Any] = reply.json()
    return session


async def get_session(
    api: httpx.AsyncClient, merchant: dict[str, Any], session_id: str
) -> dict[str, Any]:
    reply = await api.get(f"/api/v1/checkout/sessions/{session_id}", headers=merchant["auth"])
    assert reply.status_code == 200, reply.text
    found: dict[str, Any] = reply.json()
    return found


async def subscribe(
    api: httpx.AsyncClient, merchant: dict[str, Any], receiver: WebhookReceiver, name: str
) -> str:
    reply = await api.post(
        "/api/v1/webhooks",
        json={"url": receiver.endpoint(name), "events": ["*"]},
        headers=merchant["auth"],
    )
    assert reply.status_code == 200, reply.text
    return str(reply.json()["webhook_id"])


def events_of(receiver: WebhookReceiver, name: str, event_type: str) -> list[dict[str, Any]]:
    return [d.document for d in receiver.to(name) if d.type == event_type]


async def callback_secret(api: httpx.AsyncClient, merchant: dict[str, Any]) -> str:
    reply = await api.get("/api/v1/callback-secret", headers=merchant["auth"])
    assert reply.status_code == 200, reply.text
    return str(reply.json()["secret"])


# -- the sessions API ------------------------------------------------------------------------


async def test_a_session_is_created_read_and_expired_with_its_event(
    api: httpx.AsyncClient, merchant: dict[str, Any], receiver: WebhookReceiver
) -> None:
    name = f"expire-{uuid.uuid4().hex[:6]}"
    await subscribe(api, merchant, receiver, name)
    session = await create_session(api, merchant, methods=["UPI"])
    assert session["status"] == "OPEN"
    assert session["checkout_session_id"].startswith("CS_")
    assert len(session["checkout_session_id"]) == 46
    assert session["url"].endswith(f"/checkout/{session['checkout_session_id']}")
    assert session["methods"] == ["UPI"]
    assert session["customer"]["email"].endswith("@example.com")
    read = await get_session(api, merchant, session["checkout_session_id"])
    assert read["expires_at"] == session["expires_at"]

    reply = await api.post(
        f"/api/v1/checkout/sessions/{session['checkout_session_id']}/expire",
        json={},
        headers=merchant["auth"],
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["status"] == "EXPIRED"
    await receiver.wait_for(name, 1)
    [event] = events_of(receiver, name, "checkout.session.expired")
    assert event["data"]["checkout_session_id"] == session["checkout_session_id"]
    assert event["data"]["status"] == "EXPIRED"


async def test_bad_session_requests_name_the_field_and_other_merchants_get_404(
    api: httpx.AsyncClient, merchant: dict[str, Any], mint_token: Any
) -> None:
    reply = await api.post(
        "/api/v1/checkout/sessions",
        json={
            "amount_paisa": 0,
            "currency": "USD",
            "return_url": "ftp://x",
            "expire_after_seconds": 60,
            "customer": {"email": "nope", "phone": "123"},
        },
        headers=merchant["auth"],
    )
    assert reply.status_code == 400
    fields = {v["field"] for d in reply.json()["details"] for v in d.get("field_violations", [])}
    assert fields == {
        "amount_paisa",
        "currency",
        "return_url",
        "expire_after_seconds",
        "customer.email",
        "customer.phone",
    }
    session = await create_session(api, merchant)
    other = {"Authorization": f"Bearer {mint_token('MER_someone_else')}"}
    reply = await api.get(
        f"/api/v1/checkout/sessions/{session['checkout_session_id']}", headers=other
    )
    assert reply.status_code == 404

    key = {"Idempotency-Key": f"sess-{uuid.uuid4()}"}
    body = {"amount_paisa": 500, "currency": "INR", "return_url": RETURN_URL}
    first = await api.post("/api/v1/checkout/sessions", json=body, headers=merchant["auth"] | key)
    again = await api.post("/api/v1/checkout/sessions", json=body, headers=merchant["auth"] | key)
    assert first.json()["checkout_session_id"] == again.json()["checkout_session_id"]
    changed = await api.post(
        "/api/v1/checkout/sessions",
        json=body | {"amount_paisa": 501},
        headers=merchant["auth"] | key,
    )
    assert changed.status_code == 409


# -- the checkout page -----------------------------------------------------------------------


async def test_upi_on_the_page_turns_to_success_live_and_the_return_is_signed(
    api: httpx.AsyncClient,
    merchant: dict[str, Any],
    receiver: WebhookReceiver,
    page: Page,
    stack: Stack,
) -> None:
    name = f"upi-{uuid.uuid4().hex[:6]}"
    await subscribe(api, merchant, receiver, name)
    session = await create_session(api, merchant, amount_paisa=1_234_500)
    session_id = session["checkout_session_id"]
    response = await page.goto(session["url"])
    assert response is not None
    assert response.status == 200
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    await expect(page.locator("#merchant-name")).to_have_text(merchant["name"])
    await expect(page.locator("#amount")).to_have_text("₹12,345.00")
    await expect(page.get_by_role("tab")).to_have_count(4)
    await shot(page, "checkout-upi")

    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    await page.get_by_label("UPI ID").fill("manual@upi")
    await page.get_by_role("button", name="Pay ₹12,345.00").first.click()
    await expect(page.locator("#upi-qr")).to_be_visible()
    link = await page.locator("#upi-link").get_attribute("href")
    assert link is not None
    assert link.startswith("upi://pay?")
    assert "am=12345.00" in link
    await expect(page.locator("#upi-status")).to_contain_text("Waiting")
    await shot(page, "checkout-upi-waiting")

    payment_id = (await get_session(api, merchant, session_id))["payment_id"]
    assert payment_id.startswith("PAY_")
    async with httpx.AsyncClient(base_url=stack.env["SANDBOX_PUBLIC_URL"]) as sandbox:
        approved = await sandbox.post(f"/upi/transactions/{payment_id}/approve")
    assert approved.status_code == 200, approved.text

    await page.wait_for_url(f"**/checkout/{session_id}/receipt", timeout=20_000)
    # Live: the page never reloaded, it went straight from the checkout to its receipt.
    assert [u for u in navigations if u.rstrip("/").endswith(session_id)] == []
    await expect(page.locator("#receipt-amount")).to_have_text("₹12,345.00")
    await expect(page.locator("#receipt-payment-id")).to_have_text(payment_id)
    await shot(page, "checkout-receipt")

    href = await page.locator("#return-link").get_attribute("href")
    assert href is not None
    assert href.startswith(RETURN_URL)
    query = {k: v[0] for k, v in parse_qs(urlsplit(href).query).items()}
    assert query["payment_id"] == payment_id
    assert query["checkout_session_id"] == session_id
    secret = await callback_secret(api, merchant)
    expected = hmac.new(
        secret.encode(), f"{session_id}|{payment_id}".encode(), hashlib.sha256
    ).hexdigest()
    assert hmac.compare_digest(query["signature"], expected)
    forged = hmac.new(b"another secret", f"{session_id}|{payment_id}".encode(), hashlib.sha256)
    assert query["signature"] != forged.hexdigest()
    # Then the customer is sent back to the merchant.
    await page.wait_for_url(f"{RETURN_URL}?**", timeout=10_000)

    done = await get_session(api, merchant, session_id)
    assert done["status"] == "COMPLETE"
    assert done["payment_id"] == payment_id
    payment = (await api.get(f"/api/v1/payments/{payment_id}", headers=merchant["auth"])).json()
    assert payment["metadata"]["checkout_session_id"] == session_id
    assert payment["metadata"]["order_id"] == "42"
    await receiver.wait_for(name, 2)
    for _ in range(100):
        if events_of(receiver, name, "checkout.session.completed"):
            break
        await receiver.wait_for(name, len(receiver.to(name)) + 1, within=5)
    [completed] = events_of(receiver, name, "checkout.session.completed")
    assert completed["data"]["payment_id"] == payment_id
    assert completed["data"]["status"] == "COMPLETE"


async def test_card_with_a_3ds_challenge_pays_and_card_data_leaves_no_trace(
    api: httpx.AsyncClient, merchant: dict[str, Any], page: Page
) -> None:
    session = await create_session(api, merchant, amount_paisa=600_000)
    session_id = session["checkout_session_id"]
    await page.goto(session["url"])
    await page.get_by_role("tab", name="Card").click()
    number = page.get_by_label("Card number")
    # Checked as you type: a wrong digit fails Luhn, the brand shows at once.
    await number.press_sequentially("4242424242424241")
    await expect(page.locator("#card-number-error")).to_contain_text("not valid")
    await expect(page.locator("#card-brand")).to_have_text("Visa")
    await number.fill("")
    await number.press_sequentially(CHALLENGE_CARD.replace(" ", ""))
    await expect(page.locator("#card-number-error")).to_have_text("")
    await expect(number).to_have_value(CHALLENGE_CARD)
    await page.get_by_label("Expiry (MM/YY)").press_sequentially("0120")
    await expect(page.locator("#card-expiry-error")).to_contain_text("expired")
    await page.get_by_label("Expiry (MM/YY)").fill("")
    await page.get_by_label("Expiry (MM/YY)").press_sequentially("1230")
    await page.get_by_label("CVV").fill("123")
    await expect(page.locator("#emi")).to_be_visible()
    await shot(page, "checkout-card")
    await page.locator("#card-form button[type=submit]").click()

    # The sandbox's ACS page: the one-time password.
    await page.wait_for_url("**/acs/**", timeout=20_000)
    await shot(page, "checkout-3ds-challenge")
    await page.get_by_label("OTP").fill("123456")
    await page.get_by_role("button", name="Submit").click()
    await page.wait_for_url(f"**/checkout/{session_id}/receipt", timeout=30_000)
    await expect(page.locator("#receipt-amount")).to_have_text("₹6,000.00")
    assert "4000000000003220" not in await page.content()
    done = await get_session(api, merchant, session_id)
    assert done["status"] == "COMPLETE"


async def test_a_declined_card_says_so_and_the_customer_retries(
    api: httpx.AsyncClient, merchant: dict[str, Any], page: Page
) -> None:
    session = await create_session(api, merchant, amount_paisa=75_000, methods=["CARD"])
    await page.goto(session["url"])

    async def pay_with(card: str) -> None:
        await page.get_by_label("Card number").press_sequentially(card.replace(" ", ""))
        await page.get_by_label("Expiry (MM/YY)").press_sequentially("1230")
        await page.get_by_label("CVV").fill("123")
        await page.locator("#card-form button[type=submit]").click()

    await pay_with(DECLINED_CARD)
    await expect(page.locator("#message")).to_contain_text("declined", timeout=20_000)
    # Nothing of the card is left in the page.
    html = await page.content()
    assert "4000000000000002" not in html
    assert DECLINED_CARD not in html
    await expect(page.get_by_label("Card number")).to_have_value("")
    await shot(page, "checkout-card-declined")
    await pay_with(GOOD_CARD)
    await page.wait_for_url(f"**/checkout/{session['checkout_session_id']}/receipt", timeout=30_000)
    await expect(page.locator("#receipt-amount")).to_have_text("₹750.00")


async def test_an_expired_session_shows_it_is_expired_and_takes_no_payment(
    api: httpx.AsyncClient, merchant: dict[str, Any], page: Page
) -> None:
    session = await create_session(api, merchant)
    await api.post(
        f"/api/v1/checkout/sessions/{session['checkout_session_id']}/expire",
        json={},
        headers=merchant["auth"],
    )
    response = await page.goto(session["url"])
    assert response is not None
    assert response.status == 410
    await expect(page.get_by_role("heading", name="This checkout has expired")).to_be_visible()
    # Indian digit grouping: one lakh rupees.
    await expect(page.locator("#amount")).to_have_text("₹1,00,000.00")
    await expect(page.get_by_role("tab")).to_have_count(0)
    await shot(page, "checkout-expired")
    reply = await api.post(
        f"/checkout/{session['checkout_session_id']}/pay",
        json={"method": "UPI", "vpa": "success@upi", "attempt_id": "x"},
    )
    assert reply.status_code == 409
    unknown = await api.get("/checkout/CS_" + "x" * 43)
    assert unknown.status_code == 404


# -- the dashboard ---------------------------------------------------------------------------


async def test_the_dashboard_finds_a_payment_refunds_it_and_replays_its_webhook(
    api: httpx.AsyncClient, merchant: dict[str, Any], receiver: WebhookReceiver, page: Page
) -> None:
    name = f"dash-{uuid.uuid4().hex[:6]}"
    webhook_id = await subscribe(api, merchant, receiver, name)
    email = f"owner-{uuid.uuid4().hex[:6]}@shop.example"
    password = "correct horse battery staple"
    reply = await api.post(
        "/api/v1/dashboard/logins",
        json={"email": email, "password": password},
        headers=merchant["auth"],
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["merchant_id"] == merchant["merchant_id"]
    assert "password" not in reply.json()
    short = await api.post(
        "/api/v1/dashboard/logins",
        json={"email": email, "password": "short"},
        headers=merchant["auth"],
    )
    assert short.status_code == 400, short.text

    created = await api.post(
        "/api/v1/payments",
        json={
            "amount_paisa": 50000,
            "currency": "INR",
            "payment_method": "WALLET",
            "payment_details": {"wallet": "PAYTM", "phone": "9999999999"},
            "description": "dashboard test",
        },
        headers=merchant["auth"],
    )
    assert created.status_code == 200, created.text
    payment_id = created.json()["payment_id"]
    await receiver.wait_for(name, 1)

    await page.set_viewport_size({"width": 1280, "height": 900})  # a desk, for the dashboard
    await page.goto(f"{api.base_url}/dashboard")
    await page.wait_for_url("**/dashboard/login")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill("wrong password!!")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#login-problem")).to_have_text("Wrong email or password.")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url("**/dashboard/payments")
    cookies = await page.context.cookies()
    [session_cookie] = [c for c in cookies if c["name"] == "paygate_dashboard"]
    assert session_cookie["httpOnly"]
    assert session_cookie["sameSite"] == "Strict"
    await expect(page.locator("#payments")).to_contain_text(payment_id)
    await shot(page, "dashboard-payments")

    await page.get_by_label("Status").select_option("FAILED")
    await page.get_by_role("button", name="Search").click()
    await expect(page.locator("#payments")).not_to_contain_text(payment_id)
    await page.get_by_label("Payment id").fill(payment_id)
    await page.get_by_label("Status").select_option("")
    await page.get_by_role("button", name="Search").click()
    await page.get_by_role("link", name=payment_id).click()
    await expect(page.locator("#payment-status")).to_have_text("SUCCESS")
    await expect(page.locator("#deliveries")).to_contain_text("payment.success")
    await page.get_by_label("Amount in ₹").fill("200.00")
    await page.get_by_label("Reason").fill("one item returned")
    await page.get_by_role("button", name="Refund").click()
    await expect(page.locator("#flash")).to_contain_text("₹200.00")
    await expect(page.locator("#refunds")).to_contain_text("one item returned")
    await expect(page.locator("#payment-status")).to_have_text("PARTIALLY_REFUNDED")
    await shot(page, "dashboard-payment")
    refunded = (await api.get(f"/api/v1/payments/{payment_id}", headers=merchant["auth"])).json()
    assert refunded["refunded_amount_paisa"] == 20000

    # The webhook endpoint's delivery log, and a replay.
    await page.get_by_role("link", name="Webhooks").click()
    await page.get_by_role("link", name=receiver.endpoint(name)).click()
    await page.wait_for_url(f"**/dashboard/webhooks/{webhook_id}")
    row = page.locator("#deliveries tr", has_text="payment.success").first
    delivery_id = await row.get_attribute("data-delivery")
    assert delivery_id
    before = len([d for d in receiver.to(name) if d.webhook_id == delivery_id])
    await shot(page, "dashboard-webhooks")
    await row.get_by_role("button", name=f"Replay delivery {delivery_id}").click()
    await expect(page.locator("#flash")).to_contain_text(f"Delivery {delivery_id} sent again")
    replays = await receiver.wait_for(name, len(receiver.to(name)), within=10)
    assert replays
    for _ in range(50):
        after = [d for d in receiver.to(name) if d.webhook_id == delivery_id]
        if len(after) > before:
            break
        await page.wait_for_timeout(200)
    assert len(after) == before + 1

    # The charts, from the analytics API (fresh within about a second of the events).
    await page.get_by_role("link", name="Analytics").click()
    await page.wait_for_url("**/dashboard/analytics")
    await expect(page.locator("#volume-chart canvas")).to_have_count(1, timeout=15_000)
    await expect(page.locator("#rate-chart canvas")).to_have_count(1)
    totals = page.locator("#analytics-totals")
    await expect(totals).to_contain_text("WALLET")
    await expect(totals).to_contain_text("₹500.00")
    await expect(page.locator("#analytics-status")).to_contain_text("Updated")
    await shot(page, "dashboard-analytics")


async def test_dashboard_forms_refuse_a_post_without_the_csrf_token(
    api: httpx.AsyncClient, merchant: dict[str, Any]
) -> None:
    email = f"csrf-{uuid.uuid4().hex[:6]}@shop.example"
    password = "another long password"
    await api.post(
        "/api/v1/dashboard/logins",
        json={"email": email, "password": password},
        headers=merchant["auth"],
    )
    async with httpx.AsyncClient(base_url=str(api.base_url), timeout=20) as browser_like:
        form = await browser_like.get("/dashboard/login")
        assert form.status_code == 200
        no_token = await browser_like.post(
            "/dashboard/login", data={"email": email, "password": password}
        )
        assert no_token.status_code == 403
        # The refusal shows a fresh form (and cookie): sign in with that one.
        token = no_token.text.split('name="csrf_token" value="')[1].split('"')[0]
        signed_in = await browser_like.post(
            "/dashboard/login", data={"email": email, "password": password, "csrf_token": token}
        )
        assert signed_in.status_code == 303
        refused = await browser_like.post(
            "/dashboard/payments/PAY_x/refund", data={"amount": "1.00"}
        )
        assert refused.status_code == 403


async def test_the_dashboard_shows_a_dispute_and_submits_evidence(
    api: httpx.AsyncClient, merchant: dict[str, Any], page: Page, stack: Stack
) -> None:
    paid = await api.post(
        "/api/v1/payments",
        headers=merchant["auth"],
        json={
            "amount_paisa": 9900,
            "currency": "INR",
            "payment_method": "CARD",
            "payment_details": {
                "card": {
                    "card_number": GOOD_CARD.replace(" ", ""),
                    "expiry_month": "12",
                    "expiry_year": "2030",
                    "cvv": "123",
                }
            },
        },
    )
    assert paid.status_code == 200, paid.text
    payment = paid.json()
    async with httpx.AsyncClient(base_url=stack.env["SANDBOX_PUBLIC_URL"]) as sandbox:
        raised = await sandbox.post(
            "/disputes", json={"provider": payment["provider"], "payment_id": payment["payment_id"]}
        )
    assert raised.status_code == 200, raised.text
    email = f"disputes-{uuid.uuid4().hex[:6]}@shop.example"
    password = "disputes are no fun at all"
    await api.post(
        "/api/v1/dashboard/logins",
        json={"email": email, "password": password},
        headers=merchant["auth"],
    )
    await page.set_viewport_size({"width": 1280, "height": 900})
    await page.goto(f"{api.base_url}/dashboard/login")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url("**/dashboard/payments")
    for _ in range(50):
        await page.goto(f"{api.base_url}/dashboard/disputes")
        if await page.locator("#disputes", has_text=payment["payment_id"]).count():
            break
        await page.wait_for_timeout(300)
    row = page.locator("#disputes tr", has_text=payment["payment_id"])
    await expect(row).to_contain_text("NEEDS_RESPONSE")
    await row.get_by_role("link").first.click()
    await page.get_by_label("Summary").fill("The customer received the goods on 2 December.")
    await page.get_by_label("Shipping proof (tracking number, carrier)").fill("BLUEDART 123456")
    await shot(page, "dashboard-dispute")
    await page.get_by_role("button", name="Submit evidence").click()
    await expect(page.locator("#flash")).to_have_text("Evidence submitted")
    await expect(page.locator("#dispute-status")).not_to_have_text("NEEDS_RESPONSE")
    [dispute] = (
        await api.get(
            "/api/v1/disputes",
            params={"payment_id": payment["payment_id"]},
            headers=merchant["auth"],
        )
    ).json()["disputes"]
    assert dispute["evidence"]["shipping_proof"] == "BLUEDART 123456"


async def test_an_admin_sees_any_merchant_and_the_reconciliation_exceptions(
    api: httpx.AsyncClient, merchant: dict[str, Any], page: Page
) -> None:
    email = f"ops-{uuid.uuid4().hex[:6]}@paygate.example"
    password = "an admin's long passphrase"
    made = await api.post(
        "/api/v1/dashboard/logins",
        json={"email": email, "password": password, "admin": True},
        headers=merchant["admin"],
    )
    assert made.status_code == 200, made.text
    assert made.json()["admin"] is True
    # A merchant cannot make an admin sign-in.
    refused = await api.post(
        "/api/v1/dashboard/logins",
        json={"email": f"x-{email}", "password": password, "admin": True},
        headers=merchant["auth"],
    )
    assert refused.status_code == 403
    created = await api.post(
        "/api/v1/payments",
        json={
            "amount_paisa": 4200,
            "currency": "INR",
            "payment_method": "WALLET",
            "payment_details": {"wallet": "PHONEPE", "phone": "9876543210"},
        },
        headers=merchant["auth"],
    )
    assert created.status_code == 200, created.text

    await page.set_viewport_size({"width": 1280, "height": 900})
    await page.goto(f"{api.base_url}/dashboard/login")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url("**/dashboard/payments")
    await page.get_by_label("Merchant id").fill(merchant["merchant_id"])
    await page.get_by_role("button", name="Show").click()
    await expect(page.locator("#payments")).to_contain_text(created.json()["payment_id"])
    await page.get_by_role("link", name="Reconciliation").click()
    await expect(page.get_by_role("heading", name="Reconciliation exceptions")).to_be_visible()
    await expect(page.locator("#exceptions")).to_be_visible()
    await shot(page, "dashboard-exceptions")


async def test_net_banking_goes_to_the_bank_and_back_and_a_wallet_pays_at_once(
    api: httpx.AsyncClient, merchant: dict[str, Any], page: Page
) -> None:
    session = await create_session(api, merchant, amount_paisa=150_000)
    session_id = session["checkout_session_id"]
    await page.goto(session["url"])
    # The keyboard moves between the method tabs.
    await page.get_by_role("tab", name="UPI").focus()
    await page.keyboard.press("End")
    await expect(page.get_by_role("tab", name="Net banking")).to_have_attribute(
        "aria-selected", "true"
    )
    await page.get_by_label("Your bank").select_option("HDFC")
    await page.get_by_role("button", name="Continue to bank").click()
    await page.wait_for_url("**/netbanking/**", timeout=20_000)
    await page.get_by_role("button", name="Pay").click()
    await page.wait_for_url(f"**/checkout/{session_id}/receipt", timeout=30_000)
    await expect(page.locator("#receipt-amount")).to_have_text("₹1,500.00")

    wallet = await create_session(api, merchant, amount_paisa=20_000, methods=["WALLET"])
    await page.goto(wallet["url"])
    await page.get_by_label("PhonePe").check()
    await page.get_by_label("Mobile number linked to the wallet").fill("98765")
    await page.get_by_role("button", name="Pay ₹200.00").click()
    await expect(page.locator("#wallet-phone-error")).to_contain_text("10-digit")
    await page.get_by_label("Mobile number linked to the wallet").fill("9876543210")
    await page.get_by_role("button", name="Pay ₹200.00").click()
    await page.wait_for_url(f"**/checkout/{wallet['checkout_session_id']}/receipt")
    done = await get_session(api, merchant, wallet["checkout_session_id"])
    assert done["status"] == "COMPLETE"
