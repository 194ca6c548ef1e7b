"""The chaos run's checks can fail: each is fed hand-made facts with one thing wrong (a lost
payment, a double charge, an unbalanced ledger, a missing event, ...) and must name it, and
the same facts without the fault must pass."""

from __future__ import annotations

from dataclasses import replace

from chaos import checks
from chaos.checks import (
    Books,
    EventKey,
    Gateway,
    HistoryRow,
    JournalRow,
    KafkaEvent,
    PaymentRow,
    RefundRow,
    Window,
)
from chaos.load import AckedPayment, AckedRefund, Answer
from chaos.schedule import Journey

NOW = 1_800_000_000.0
MERCHANT = "MER_1"


def payment(payment_id: str, status: str = "SUCCESS", **changes: object) -> PaymentRow:
    row = PaymentRow(
        payment_id=payment_id,
        merchant_id=MERCHANT,
        amount_paisa=10_000,
        method="UPI",
        status=status,
        chaos_key=f"key-{payment_id}",
        created_at=NOW - 100,
        updated_at=NOW - 90,
        expires_at=NOW - 40,
    )
    return replace(row, **changes)  # type: ignore[arg-type]


def capture(payment_id: str, amount: int = 10_000, sum_paisa: int = 0) -> JournalRow:
    return JournalRow(f"capture:{payment_id}", "capture", payment_id, "", amount, sum_paisa, 3)


def refund_journal(payment_id: str, refund_id: str, amount: int) -> JournalRow:
    return JournalRow(f"refund:{refund_id}", "refund", payment_id, refund_id, amount, 0, 2)


def healthy() -> Gateway:
    """Two captured payments, one refunded in part, every record in agreement."""
    refund = RefundRow("RFD_1", "PAY_2", 4_000, "PROCESSED", "REFUND", NOW - 80, NOW - 79)
    return Gateway(
        payments={
            "PAY_1": payment("PAY_1"),
            "PAY_2": payment("PAY_2", "PARTIALLY_REFUNDED"),
        },
        refunds={"RFD_1": refund},
        journals=[capture("PAY_1"), capture("PAY_2"), refund_journal("PAY_2", "RFD_1", 4_000)],
        history=[
            HistoryRow(pid, status, NOW - 95)
            for pid, statuses in (
                ("PAY_1", ("CREATED", "PENDING", "SUCCESS")),
                ("PAY_2", ("CREATED", "PENDING", "SUCCESS", "PARTIALLY_REFUNDED")),
            )
            for status in statuses
        ],
    )


def acked(payment_id: str, journey: Journey = Journey.UPI) -> AckedPayment:
    return AckedPayment(f"key-{payment_id}", payment_id, MERCHANT, 10_000, "UPI", journey)


def books_document(pay2_refunded: int = 4_000) -> dict[str, list[dict[str, object]]]:
    return {
        "payments": [
            {"provider": "upi_core", "payment_id": "PAY_1", "charged_paisa": 10_000,
             "refunded_paisa": 0},
            {"provider": "upi_core", "payment_id": "PAY_2", "charged_paisa": 10_000,
             "refunded_paisa": pay2_refunded},
        ],
        "refunds": [
            {"provider": "upi_core", "refund_id": "RFD_1", "amount_paisa": 4_000,
             "status": "PROCESSED"},
        ],
    }  # fmt: skip


def events(gateway: Gateway) -> list[KafkaEvent]:
    """What a healthy relay publishes for `gateway`'s history and refunds."""
    published = []
    sequence: dict[str, int] = {}
    for n, step in enumerate(gateway.history):
        sequence[step.payment_id] = sequence.get(step.payment_id, 0) + 1
        key = EventKey(
            checks.PAYMENT_EVENT[step.to_status], step.payment_id, "", sequence[step.payment_id]
        )
        published.append(KafkaEvent(f"EVT_{n}", MERCHANT, key))
    for refund in gateway.refunds.values():
        for event_type in ("refund.created", "refund.processed"):
            key = EventKey(event_type, refund.payment_id, refund.refund_id, 4)
            published.append(KafkaEvent(f"EVT_{event_type}_{refund.refund_id}", MERCHANT, key))
    return published


# -- acknowledged writes ---------------------------------------------------------------------


def test_every_acknowledged_write_found_passes() -> None:
    refund = AckedRefund("key-r", "RFD_1", "PAY_2", 4_000)
    result = checks.acknowledged_writes_kept(
        [acked("PAY_1"), acked("PAY_2")], [refund], {"PAY_1"}, healthy()
    )
    assert result.passed, result.problems


def test_a_lost_payment_fails_and_is_named() -> None:
    result = checks.acknowledged_writes_kept([acked("PAY_1"), acked("PAY_9")], [], set(), healthy())
    assert not result.passed
    assert result.offenders == ("PAY_9",)
    assert "PAY_9 was acknowledged and is gone" in result.problems


def test_a_payment_with_another_amount_than_acknowledged_fails() -> None:
    wrong = replace(acked("PAY_1"), amount_paisa=9_999)
    result = checks.acknowledged_writes_kept([wrong], [], set(), healthy())
    assert result.offenders == ("PAY_1",)


def test_a_lost_refund_and_an_undone_capture_fail() -> None:
    gateway = healthy()
    gateway.payments["PAY_3"] = payment("PAY_3", "AUTHORIZED", method="CARD")
    lost = AckedRefund("key-r", "RFD_9", "PAY_1", 1_000)
    result = checks.acknowledged_writes_kept([], [lost], {"PAY_3"}, gateway)
    assert result.offenders == ("PAY_1", "PAY_3")


# -- nothing in flight -----------------------------------------------------------------------


def test_a_payment_pending_past_its_deadline_and_grace_fails() -> None:
    gateway = healthy()
    gateway.payments["PAY_3"] = payment("PAY_3", "PENDING", expires_at=NOW - 61)
    gateway.payments["PAY_4"] = payment("PAY_4", "PENDING", expires_at=NOW - 59)
    result = checks.nothing_stuck(gateway, NOW, grace=60)
    assert result.offenders == ("PAY_3",)
    assert checks.nothing_stuck(healthy(), NOW, grace=60).passed


def test_a_capture_left_capturing_and_a_refund_left_pending_fail() -> None:
    gateway = healthy()
    gateway.payments["PAY_3"] = payment("PAY_3", "CAPTURING", updated_at=NOW - 300)
    gateway.refunds["RFD_2"] = RefundRow("RFD_2", "PAY_1", 100, "PENDING", "REFUND", NOW - 300)
    result = checks.nothing_stuck(gateway, NOW, grace=60)
    assert result.offenders == ("PAY_3", "PAY_1")


def test_a_held_authorization_before_its_deadline_is_not_stuck() -> None:
    gateway = healthy()
    gateway.payments["PAY_3"] = payment("PAY_3", "AUTHORIZED", expires_at=NOW + 86_400)
    assert checks.nothing_stuck(gateway, NOW, grace=60).passed


# -- no double effect ------------------------------------------------------------------------


def test_books_that_agree_pass() -> None:
    result = checks.books_agree(Books.from_document(books_document()), healthy(), set())
    assert result.passed, result.problems


def test_a_double_charge_at_the_provider_fails() -> None:
    document = books_document()
    document["payments"].append(
        {"provider": "paytm", "payment_id": "PAY_1", "charged_paisa": 10_000, "refunded_paisa": 0}
    )
    result = checks.books_agree(Books.from_document(document), healthy(), set())
    assert result.offenders == ("PAY_1",)
    assert "the providers hold 20000 paisa, the gateway's books say 10000" in result.problems[0]


def test_a_charge_the_gateway_does_not_know_fails() -> None:
    document = books_document()
    document["payments"].append(
        {"provider": "upi_core", "payment_id": "PAY_X", "charged_paisa": 500, "refunded_paisa": 0}
    )
    result = checks.books_agree(Books.from_document(document), healthy(), set())
    assert "PAY_X" in result.offenders


def test_a_refund_processed_twice_at_the_provider_fails() -> None:
    result = checks.books_agree(
        Books.from_document(books_document(pay2_refunded=8_000)), healthy(), set()
    )
    assert result.offenders == ("PAY_2",)


def test_a_refund_only_the_provider_made_fails() -> None:
    document = books_document()
    document["refunds"].append(
        {"provider": "upi_core", "refund_id": "RFD_X", "amount_paisa": 1, "status": "PROCESSED"}
    )
    result = checks.books_agree(Books.from_document(document), healthy(), set())
    assert not result.passed


def test_payments_a_forgetful_provider_was_handling_are_skipped_and_counted() -> None:
    document = books_document()
    document["payments"][0]["charged_paisa"] = 0  # the provider forgot PAY_1's charge
    books = Books.from_document(document)
    assert not checks.books_agree(books, healthy(), set()).passed
    skipped = checks.books_agree(books, healthy(), {"PAY_1"})
    assert skipped.passed
    assert "1 skipped" in skipped.counts


def test_a_later_reading_of_the_books_replaces_an_earlier_one() -> None:
    books = Books.from_document(books_document(pay2_refunded=0))
    books.add(books_document())
    assert checks.books_agree(books, healthy(), set()).passed


def test_payments_touched_while_a_provider_restarted_are_found() -> None:
    gateway = healthy()
    gateway.history.append(HistoryRow("PAY_1", "SUCCESS", NOW - 10))
    assert checks.touched_between(gateway, NOW - 12, NOW - 8) == {"PAY_1"}
    assert checks.touched_between(gateway, NOW - 78.5, NOW - 78) == set()
    assert checks.touched_between(gateway, NOW - 79.5, NOW - 78) == {"PAY_2"}  # its refund


def test_two_payments_under_one_idempotency_key_fail() -> None:
    gateway = healthy()
    assert checks.one_payment_per_key(gateway).passed
    gateway.payments["PAY_3"] = payment("PAY_3", chaos_key="key-PAY_1")
    result = checks.one_payment_per_key(gateway)
    assert result.offenders == ("PAY_1", "PAY_3")


# -- the ledger ------------------------------------------------------------------------------


def test_a_balanced_ledger_with_each_posting_once_passes() -> None:
    result = checks.ledger_exact(healthy())
    assert result.passed, result.problems


def test_an_unbalanced_journal_fails() -> None:
    gateway = healthy()
    gateway.journals[0] = capture("PAY_1", sum_paisa=1)
    result = checks.ledger_exact(gateway)
    assert result.offenders == ("PAY_1",)
    assert "unbalanced" in result.problems[0]


def test_a_capture_posted_twice_or_never_fails() -> None:
    twice = healthy()
    twice.journals.append(replace(capture("PAY_1"), journal_id="capture:PAY_1:again"))
    assert checks.ledger_exact(twice).offenders == ("PAY_1",)
    never = healthy()
    never.journals = [j for j in never.journals if j.payment_id != "PAY_1"]
    assert checks.ledger_exact(never).offenders == ("PAY_1",)


def test_a_capture_journal_for_a_failed_payment_or_a_missing_refund_journal_fails() -> None:
    gateway = healthy()
    gateway.payments["PAY_3"] = payment("PAY_3", "FAILED")
    gateway.journals.append(capture("PAY_3"))
    gateway.journals = [j for j in gateway.journals if j.kind != "refund"]
    result = checks.ledger_exact(gateway)
    assert result.offenders == ("PAY_3", "PAY_2")


def test_a_reversed_payment_may_have_its_capture_journal() -> None:
    gateway = healthy()
    gateway.payments["PAY_3"] = payment("PAY_3", "EXPIRED")
    gateway.refunds["RFD_R"] = RefundRow("RFD_R", "PAY_3", 10_000, "PROCESSED", "REVERSAL", NOW)
    gateway.journals += [capture("PAY_3"), refund_journal("PAY_3", "RFD_R", 10_000)]
    assert checks.ledger_exact(gateway).passed


def test_the_orchestrators_own_invariant_problems_fail_the_check() -> None:
    gateway = healthy()
    gateway.ledger_problems.append("account x does not balance")
    assert not checks.ledger_exact(gateway).passed


# -- events and webhooks ---------------------------------------------------------------------


def test_every_change_published_once_or_more_passes() -> None:
    gateway = healthy()
    published = events(gateway)
    result = checks.events_published(gateway, published + published[:3])  # redelivered
    assert result.passed, result.problems


def test_a_missing_event_fails_and_names_its_payment() -> None:
    gateway = healthy()
    published = [e for e in events(gateway) if e.key.type != "payment.success"]
    result = checks.events_published(gateway, published)
    assert result.offenders == ("PAY_1", "PAY_2")
    missing_refund = [e for e in events(gateway) if e.key.type != "refund.processed"]
    assert checks.events_published(gateway, missing_refund).offenders == ("PAY_2",)


def test_an_event_for_a_change_that_never_happened_fails() -> None:
    gateway = healthy()
    extra = KafkaEvent("EVT_X", MERCHANT, EventKey("payment.failed", "PAY_1", "", 9))
    assert not checks.events_published(gateway, [*events(gateway), extra]).passed


def test_every_event_delivered_to_its_webhook_passes_and_a_missing_one_fails() -> None:
    published = events(healthy())
    keys = [e.key for e in published]
    assert checks.webhooks_delivered(published, {MERCHANT}, keys + keys[:2]).passed
    result = checks.webhooks_delivered(published, {MERCHANT}, keys[1:])
    assert result.offenders == (keys[0].payment_id,)
    # A merchant with no endpoint is owed nothing.
    assert checks.webhooks_delivered(published, set(), []).passed


# -- error answers ---------------------------------------------------------------------------


def answer(status: int | None, **changes: object) -> Answer:
    base = Answer(
        op="create",
        journey=1,
        started=NOW,
        seconds=0.2,
        status=status,
        reason="",
        json_error=status is not None and status >= 400,
        timed_out=False,
        payment_id="PAY_1",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_retryable_json_errors_pass() -> None:
    answers = [
        answer(200),
        answer(503),
        answer(504),
        answer(429),
        answer(409, reason="IDEMPOTENCY_IN_PROGRESS"),
    ]
    result = checks.errors_clean(answers, [])
    assert result.passed, result.problems
    assert "5 requests, 4 errors" in result.counts


def test_a_500_a_non_json_error_and_a_business_refusal_fail() -> None:
    answers = [
        answer(500, reason="INTERNAL"),
        answer(503, json_error=False, payment_id="PAY_2"),
        answer(400, reason="INVALID_FIELD", payment_id="PAY_3"),
    ]
    result = checks.errors_clean(answers, [])
    assert result.offenders == ("PAY_1", "PAY_2", "PAY_3")


def test_a_hang_fails_even_while_envoy_is_down() -> None:
    hung = answer(None, timed_out=True, seconds=45.0, reason="client timeout")
    result = checks.errors_clean([hung], [Window("Envoy restarted", NOW - 1, NOW + 60)])
    assert not result.passed
    assert "hung for 45 s" in result.problems[0]


def test_no_answer_is_allowed_only_while_envoy_is_down() -> None:
    refused = answer(None, reason="ConnectError")
    down = Window("Envoy restarted", NOW - 5, NOW + 5)
    assert checks.errors_clean([refused], [down]).passed
    later = Window("Envoy restarted", NOW + 10, NOW + 20)
    assert not checks.errors_clean([refused], [later]).passed


# -- the load did its work -------------------------------------------------------------------


def test_a_method_that_never_succeeded_fails() -> None:
    gateway = Gateway(payments={f"PAY_{j.name}": payment(f"PAY_{j.name}") for j in Journey})
    every = [acked(f"PAY_{j.name}", j) for j in Journey]
    assert checks.every_method_exercised(every, gateway).passed
    gateway.payments["PAY_WALLET"] = payment("PAY_WALLET", "FAILED")
    result = checks.every_method_exercised(every, gateway)
    assert not result.passed
    assert result.problems == ("no wallet journey succeeded",)


def test_a_partition_not_read_to_its_end_fails_the_event_check() -> None:
    gateway = healthy()
    result = checks.events_published(gateway, events(gateway), ["partition 1 read only to 7"])
    assert not result.passed
    assert result.problems == ("partition 1 read only to 7",)


def test_a_refusal_about_a_payment_the_provider_forgot_is_its_answer_not_a_fault() -> None:
    refused = answer(400, reason="CAPTURE_REFUSED")
    assert not checks.errors_clean([refused], []).passed
    assert checks.errors_clean([refused], [], forgotten={"PAY_1"}).passed
    # A 500 stays a fault whatever the provider forgot.
    assert not checks.errors_clean([answer(500)], [], forgotten={"PAY_1"}).passed
