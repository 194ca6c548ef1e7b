"""The webhook service's pure parts: signing, the retry schedule, what an attempt's result
means, event parsing, and the SSRF rules, including at delivery time against a real receiver
whose host name "rebinds" to a refused address."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook

from devstack.webhook_receiver import HOST, WebhookReceiver
from gateway_core.config import ConfigError, load_settings
from webhook.delivery import AttemptResult, Sender, _links, decide
from webhook.events import event_filter_problem, parse_event
from webhook.repository import FAILED, PENDING, SUCCEEDED, Claimed
from webhook.schedule import parse_retry_after, retry_delay
from webhook.settings import Settings
from webhook.signing import generate_secret, secret_key, secret_problem, signature_headers
from webhook.ssrf import IPAddress, address_problem, destination_problem, url_problem

SCHEDULE = (5.0, 300.0, 1800.0)
NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


# -- signing ------------------------------------------------------------------------------


def test_a_generated_secret_is_whsec_and_32_random_bytes() -> None:
    secret = generate_secret()

    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert secret != generate_secret()
    assert secret_problem(secret) is None


def test_a_whsec_secret_is_decoded_and_any_other_is_its_utf8_bytes() -> None:
    assert secret_key("whsec_" + base64.b64encode(b"k" * 24).decode()) == b"k" * 24
    assert secret_key("webhook_secret_key") == b"webhook_secret_key"
    assert secret_problem("whsec_%%%not-base64") is not None
    assert secret_problem("short") == "must be 16 to 128 bytes once decoded"


def test_every_signature_verifies_with_the_reference_library_during_a_rotation() -> None:
    new, old = generate_secret(), "webhook_secret_key"
    body = b'{"type":"payment.success","timestamp":"2026-12-05T12:00:00.000Z","data":{}}'
    headers = signature_headers(
        [secret_key(new), secret_key(old)],
        message_id="DLV_1",
        timestamp=int(datetime.now(UTC).timestamp()),
        body=body,
        event_type="payment.success",
    )

    assert Webhook(new).verify(body, headers)["type"] == "payment.success"
    assert Webhook(b"webhook_secret_key").verify(body, headers)["data"] == {}
    assert headers["webhook-signature"].count("v1,") == 2
    assert headers["x-webhook-event"] == "payment.success"
    hexes = headers["x-webhook-signature"].split(" ")
    assert hmac.new(b"webhook_secret_key", body, hashlib.sha256).hexdigest() in hexes


# -- schedule and outcomes -----------------------------------------------------------------


def test_retries_follow_the_schedule_with_jitter_then_stop() -> None:
    rng = random.Random(7)
    delays = [retry_delay(n, SCHEDULE, rng=rng) for n in (1, 2, 3)]

    for delay, planned in zip(delays, SCHEDULE, strict=True):
        assert delay is not None
        assert planned * 0.8 <= delay <= planned * 1.2
    assert retry_delay(4, SCHEDULE) is None


def test_retry_after_is_honoured_but_never_beyond_the_longest_delay() -> None:
    assert retry_delay(1, SCHEDULE, retry_after=120, rng=random.Random(1)) == 120
    assert retry_delay(1, SCHEDULE, retry_after=10**9) == 1800
    assert parse_retry_after("30") == 30
    assert parse_retry_after("Sat, 05 Dec 2026 12:01:00 GMT", now=NOW) == 60
    assert parse_retry_after("soon") is None


def claimed(attempts: int = 0) -> Claimed:
    return Claimed(
        delivery_id="DLV_1",
        lease_id=uuid.uuid4(),
        merchant_id="MER_1",
        webhook_id="WH_1",
        url="https://merchant.example/hook",
        event_type="payment.success",
        payload=b'{"type":"payment.success","timestamp":"2026-12-05T12:00:00.000Z","data":{}}',
        attempts=attempts,
        event_at=NOW,
        traceparent="",
        secrets=("webhook_secret_key",),
        endpoint_enabled=True,
    )


def result(code: int, error: str = "", retry_after: float | None = None) -> AttemptResult:
    return AttemptResult(NOW, 12, code, error, retry_after)


def test_what_an_attempt_means_for_its_delivery() -> None:
    rng = random.Random(3)
    assert decide(claimed(), result(204), SCHEDULE).status == SUCCEEDED

    retry = decide(claimed(), result(500, "HTTP 500"), SCHEDULE, rng=rng)
    assert retry.status == PENDING
    assert retry.next_attempt_at is not None
    assert NOW + timedelta(seconds=4) <= retry.next_attempt_at <= NOW + timedelta(seconds=6)

    spent = decide(claimed(attempts=3), result(500, "HTTP 500"), SCHEDULE)
    assert (spent.status, spent.dead_letter) == (FAILED, True)

    gone = decide(claimed(), result(410, "HTTP 410"), SCHEDULE)
    assert (gone.status, gone.gone, gone.dead_letter) == (FAILED, True, False)

    busy = decide(claimed(), result(429, "HTTP 429", retry_after=600), SCHEDULE)
    assert busy.next_attempt_at == NOW + timedelta(seconds=600)
    # Retry-After on a 500 is not a promise the spec asks us to keep.
    plain = decide(claimed(), result(500, "HTTP 500", retry_after=600), SCHEDULE)
    assert plain.next_attempt_at is not None
    assert plain.next_attempt_at < NOW + timedelta(seconds=10)


def test_the_schedule_and_allowed_cidrs_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WEBHOOK_RETRY_SCHEDULE", "1, 2.5,60")
    monkeypatch.setenv("WEBHOOK_ALLOWED_CIDRS", "127.0.0.0/8, ::1/128")
    settings = load_settings(Settings)
    assert settings.webhook_retry_delays == (1.0, 2.5, 60.0)
    assert [str(n) for n in settings.webhook_allowed_networks] == ["127.0.0.0/8", "::1/128"]
    assert Settings().webhook_timeout == 15.0

    monkeypatch.setenv("WEBHOOK_RETRY_SCHEDULE", "5,soon")
    with pytest.raises(ConfigError, match="WEBHOOK_RETRY_SCHEDULE"):
        load_settings(Settings)
    monkeypatch.setenv("WEBHOOK_RETRY_SCHEDULE", "5")
    monkeypatch.setenv("WEBHOOK_ALLOWED_CIDRS", "10.0.0.0/33")
    with pytest.raises(ConfigError, match="WEBHOOK_ALLOWED_CIDRS"):
        load_settings(Settings)


# -- events --------------------------------------------------------------------------------


def test_an_event_filter_names_known_events_or_star_alone() -> None:
    assert event_filter_problem(["payment.success", "refund.processed"]) is None
    assert event_filter_problem(["*"]) is None
    assert "at least one" in (event_filter_problem([]) or "")
    assert "payment.paid" in (event_filter_problem(["payment.paid"]) or "")
    assert event_filter_problem(["*", "payment.success"]) is not None
    assert event_filter_problem(["payment.success", "payment.success"]) is not None


def test_a_delivery_body_is_the_snapshot_with_the_payment_sequence() -> None:
    record = {
        "event_id": "EVT_1",
        "type": "refund.processed",
        "occurred_at": "2026-12-05T12:00:00.123456789Z",
        "merchant_id": "MER_1",
        "payment_id": "PAY_1",
        "payment": {"payment_id": "PAY_1", "callback_url": "https://m.example/cb"},
        "refund": {"refund_id": "RFD_1", "amount_paisa": 500},
        "sequence": "7",
    }
    event = parse_event(json.dumps(record).encode())

    assert (event.payment_id, event.callback_url) == ("PAY_1", "https://m.example/cb")
    assert json.loads(event.body) == {
        "type": "refund.processed",
        "timestamp": "2026-12-05T12:00:00.123Z",
        "data": {"refund_id": "RFD_1", "amount_paisa": 500, "sequence": 7},
    }


# -- SSRF ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("10.0.0.8", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("fd12::1", "private"),
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("100.100.100.200", "cloud metadata"),
        ("169.254.10.1", "link-local"),
        ("fe80::1", "link-local"),
        ("100.64.0.1", "CGNAT"),
        ("0.0.0.0", "not a public"),
        ("224.0.0.1", "not a public"),
    ],
)
def test_internal_addresses_are_refused_unless_allowed(address: str, kind: str) -> None:
    ip = ipaddress.ip_address(address)
    assert kind in (address_problem(ip, []) or "")
    everything = [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")]
    assert address_problem(ip, everything) is None


def test_public_addresses_pass() -> None:
    for address in ("8.8.8.8", "2606:4700:4700::1111", "1.1.1.1"):
        assert address_problem(ipaddress.ip_address(address), []) is None


def test_urls_must_be_http_without_credentials() -> None:
    assert url_problem("https://merchant.example/hooks?x=1") is None
    assert "http(s)" in (url_problem("ftp://merchant.example/") or "")
    assert "http(s)" in (url_problem("/relative") or "")
    assert "credentials" in (url_problem("https://a:b@merchant.example/") or "")
    assert "2048" in (url_problem("https://m.example/" + "a" * 2048) or "")


async def test_a_host_resolving_to_any_refused_address_is_refused() -> None:
    async def mixed(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address("93.184.215.14"), ipaddress.ip_address("10.0.0.1")]

    problem = await destination_problem("https://shop.example/hook", [], mixed)
    assert problem is not None
    assert "10.0.0.1, a private address" in problem


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    running = WebhookReceiver()
    await running.start()
    yield running
    await running.stop()


async def test_delivery_connects_only_to_the_address_it_checked_so_rebinding_fails(
    receiver: WebhookReceiver,
) -> None:
    """The host passed the check once (127.0.0.2 is allowed); then its DNS answer turns into
    127.0.0.1. The next connection is refused before it is opened."""
    answers = iter([[ipaddress.ip_address(HOST)], [ipaddress.ip_address("127.0.0.1")]])

    async def rebinding(host: str, port: int) -> list[IPAddress]:
        assert host == "hooks.shop.test"
        return next(answers)

    allowed = [ipaddress.ip_network(f"{HOST}/32")]
    port = receiver.url.rpartition(":")[2]
    delivery = Claimed(**{**claimed().__dict__, "url": f"http://hooks.shop.test:{port}/hooks/r"})
    outcomes = []
    for _ in range(2):
        # A new client each time: a kept-alive connection is to the checked address already.
        sender = Sender(allowed, timeout=5, resolver=rebinding)
        try:
            outcomes.append(await sender.attempt(delivery))
        finally:
            await sender.close()
    first, second = outcomes

    assert first.response_code == 200
    assert second.response_code == 0
    assert (
        second.error == "refused: host 'hooks.shop.test' reaches 127.0.0.1, a loopback "
        "address (allow it with WEBHOOK_ALLOWED_CIDRS)"
    )
    [received] = receiver.to("r")
    assert received.headers["host"] == f"hooks.shop.test:{port}"
    assert received.verify(b"webhook_secret_key")["type"] == "payment.success"


async def test_a_literal_address_is_checked_before_the_attempt_too(
    receiver: WebhookReceiver,
) -> None:
    """An endpoint saved while 127.0.0.1 was allowed is not called once it no longer is."""
    port = receiver.url.rpartition(":")[2]
    delivery = Claimed(**{**claimed().__dict__, "url": f"http://127.0.0.1:{port}/hooks/l"})
    sender = Sender([ipaddress.ip_network(f"{HOST}/32")], timeout=5)
    try:
        outcome = await sender.attempt(delivery)
    finally:
        await sender.close()

    assert outcome.error.startswith("refused: host '127.0.0.1' reaches 127.0.0.1, a loopback")
    assert receiver.to("l") == []


def test_a_delivery_span_links_to_the_events_trace() -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    [link] = _links(traceparent)

    assert format(link.context.trace_id, "032x") == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert format(link.context.span_id, "016x") == "00f067aa0ba902b7"
    assert _links("") == []
    assert _links("garbage") == []
