"""The sandbox's dispute desk: which payments a provider can dispute and for how much, the
signed callbacks it sends, its decision on the evidence, and the chargeback settlement line."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime
from typing import Any

import pytest

from gateway_core.errors import FailedPrecondition, InvalidArgument, NotFound
from paygate.sandbox.v1 import cards_pb2
from sandbox.acquirers import Acquirers
from sandbox.acs import Acs
from sandbox.app import PROVIDERS
from sandbox.callbacks import ProviderCallback
from sandbox.cards import read_card
from sandbox.disputes import CaseStatus, DisputeDesk
from sandbox.settlements import SettlementReports
from sandbox.upi import UpiSwitch
from sandbox.validation import Violations

DAY = date(2026, 12, 5)
MORNING = datetime(2026, 12, 5, 4, 30, tzinfo=UTC).timestamp()


class Sent:
    """Stands in for the callback sender: records what would be POSTed, and where."""

    def __init__(self) -> None:
        self.callbacks: list[tuple[dict[str, Any], str]] = []

    def send(self, callback: ProviderCallback, url: str = "") -> None:
        self.callbacks.append((json.loads(callback.body()), url))


def books() -> tuple[Acquirers, UpiSwitch]:
    clock = lambda: MORNING  # noqa: E731
    acquirers = Acquirers(Acs(on_final=lambda a: None, clock=clock), clock=clock)
    problems = Violations()
    card = read_card(
        problems,
        cards_pb2.CardDetails(
            card_number="4111111111111111",
            expiry_month="12",
            expiry_year="2030",
            cvv="123",
        ),
        "card",
    )
    assert card is not None
    acquirers.authorize("razorpay", "PAY_C", "MER_1", card, 50_000, "INR", capture=True)
    acquirers.authorize("razorpay", "PAY_HELD", "MER_1", card, 50_000, "INR")
    acquirers.refund(
        "razorpay", acquirers.get("razorpay", "PAY_C").acquirer_txn_id, "PAY_C", "RFD_1", 10_000
    )
    switch = UpiSwitch(0.0, on_final=lambda txn: None, clock=clock)
    switch.initiate("PAY_U", "success@upi", 20_000, "INTENT", "", None)
    return acquirers, switch


def desk(sent: Sent, decision_delay: float = 0.0) -> DisputeDesk:
    acquirers, switch = books()
    return DisputeDesk(
        acquirers,
        switch,
        sent,  # type: ignore[arg-type]
        respond_within_seconds=3600,
        decision_delay_seconds=decision_delay,
        clock=lambda: MORNING,
    )


def test_a_chargeback_takes_what_is_still_captured_and_calls_back_signed_fields() -> None:
    sent = Sent()
    disputes = desk(sent)

    case = disputes.raise_dispute("razorpay", "PAY_C")

    assert (case.amount_paisa, case.reason_code) == (40_000, "4853")  # captured less refunded
    [(document, url)] = sent.callbacks
    assert url == ""  # the gateway's default callback URL for the provider
    assert document["type"] == "dispute.opened"
    assert document["provider"] == "razorpay"
    assert document["transaction_ref"] == "PAY_C"
    assert document["case_reference"] == case.case_reference
    assert document["amount_paisa"] == 40_000
    assert document["respond_by"] == "2026-12-05T05:30:00.000Z"
    with pytest.raises(FailedPrecondition) as info:
        disputes.raise_dispute("razorpay", "PAY_C", amount_paisa=1)  # nothing left
    assert info.value.reason == "DISPUTE_EXCEEDS_CAPTURED"


def test_what_cannot_be_disputed() -> None:
    disputes = desk(Sent())
    with pytest.raises(FailedPrecondition):
        disputes.raise_dispute("razorpay", "PAY_HELD")  # authorized, never captured
    with pytest.raises(NotFound):
        disputes.raise_dispute("payu", "PAY_C")  # another acquirer's
    with pytest.raises(InvalidArgument):
        disputes.raise_dispute("paytm", "PAY_C")
    with pytest.raises(InvalidArgument) as info:
        disputes.raise_dispute("upi_core", "PAY_U", reason_code="4853")
    assert "U008" in info.value.message


def test_a_upi_dispute_carries_a_udir_code() -> None:
    disputes = desk(Sent())
    case = disputes.raise_dispute("upi_core", "PAY_U", reason_code="U023", amount_paisa=5_000)
    assert (case.method, case.reason_code, case.amount_paisa) == ("UPI", "U023", 5_000)
    assert case.case_reference.startswith("UDIR")


@pytest.mark.parametrize(
    ("summary", "outcome"),
    [("delivered: winning_evidence", CaseStatus.WON), ("the customer is wrong", CaseStatus.LOST)],
)
async def test_the_decision_follows_the_summary(summary: str, outcome: CaseStatus) -> None:
    sent = Sent()
    disputes = desk(sent)
    case = disputes.raise_dispute("razorpay", "PAY_C")

    disputes.submit_evidence("razorpay", case.case_reference, "PAY_C", summary, "http://gw/cb")
    disputes.submit_evidence("razorpay", case.case_reference, "PAY_C", summary, "http://gw/cb")
    await asyncio.sleep(0.05)
    await disputes.aclose()

    assert case.status is outcome
    decided = [(d, url) for d, url in sent.callbacks if d["type"] == "dispute.decided"]
    assert decided == [(decided[0][0], "http://gw/cb")]  # once, however often submitted
    assert decided[0][0]["outcome"] == outcome.value


def test_each_dispute_is_a_chargeback_line_of_its_day() -> None:
    acquirers, switch = books()
    disputes = DisputeDesk(
        acquirers,
        switch,
        Sent(),  # type: ignore[arg-type]
        respond_within_seconds=3600,
        decision_delay_seconds=0,
        clock=lambda: MORNING,
    )
    case = disputes.raise_dispute("razorpay", "PAY_C", amount_paisa=25_000)
    reports = SettlementReports(PROVIDERS, (acquirers, switch, disputes), cycle_days=0, salt="")

    settlement = reports.file("razorpay", DAY)

    [line] = [line for line in settlement.lines if line.type == "chargeback"]
    assert (line.provider_reference, line.merchant_reference) == (case.case_reference, "PAY_C")
    assert (line.amount_paisa, line.fee_paisa, line.tax_paisa) == (25_000, 0, 0)
    assert line.net_paisa == -25_000


async def test_a_magic_chargeback_on_a_payment_refunded_in_full_meanwhile_is_not_raised() -> None:
    sent = Sent()
    acquirers, switch = books()
    authorization = acquirers.get("razorpay", "PAY_C")
    acquirers.refund("razorpay", authorization.acquirer_txn_id, "PAY_C", "RFD_2", 40_000)
    disputes = DisputeDesk(
        acquirers,
        switch,
        sent,  # type: ignore[arg-type]
        respond_within_seconds=3600,
        decision_delay_seconds=0,
        clock=lambda: MORNING,
    )

    disputes.raise_later("razorpay", "PAY_C", 0)
    await asyncio.sleep(0.05)
    await disputes.aclose()

    assert sent.callbacks == []
    assert disputes.settleable() == []
