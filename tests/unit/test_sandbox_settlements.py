"""The simulated providers' settlement files: which day settles what, the CSV as the contract
with reconciliation writes it, the net formula, every injected discrepancy, and releases."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from gateway_core.config import LOCAL_PROVIDER_REPORT_KEYS
from gateway_core.errors import FailedPrecondition, InvalidArgument, NotFound
from gateway_core.fees import DEFAULT_PRICING, compute_fee
from paygate.sandbox.v1 import cards_pb2
from sandbox.acquirers import Acquirers
from sandbox.acs import Acs
from sandbox.app import PROVIDERS
from sandbox.cards import read_card
from sandbox.netbanking import NetBanks
from sandbox.settlements import (
    CARD,
    HEADER,
    UPI,
    WALLET,
    Instruction,
    ProviderInfo,
    Settleable,
    SettlementReports,
    build_file,
    settlement_day,
    settlement_instruction,
)
from sandbox.upi import UpiSwitch
from sandbox.validation import Violations
from sandbox.wallets import WalletBook

DAY = date(2026, 12, 5)
# 2026-12-05 10:00 IST
MORNING = datetime(2026, 12, 5, 4, 30, tzinfo=UTC).timestamp()


def payment(
    ref: str = "PAY_1",
    amount: int = 100_000,
    *,
    method: str = CARD,
    provider: str = "razorpay",
    at: float = MORNING,
    instruction: Instruction | None = None,
) -> Settleable:
    return Settleable(
        provider=provider,
        method=method,
        type="payment",
        provider_reference=f"TXN_{ref}",
        merchant_reference=ref,
        payment_id=ref,
        amount_paisa=amount,
        at=at,
        instruction=instruction,
    )


def refund(
    ref: str = "RFD_1", payment_id: str = "PAY_1", amount: int = 40_000, at: float = MORNING + 60
) -> Settleable:
    return Settleable(
        provider="razorpay",
        method=CARD,
        type="refund",
        provider_reference=f"RZPRF_{ref}",
        merchant_reference=ref,
        payment_id=payment_id,
        amount_paisa=amount,
        at=at,
    )


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_a_day_settles_payments_less_refunds_fees_and_tax() -> None:
    settlement = build_file(
        "razorpay", DAY, [payment("PAY_1", 100_000), payment("PAY_2", 12_345), refund()]
    )

    fee_1 = compute_fee(100_000, DEFAULT_PRICING[CARD])  # 2 % = 2000, GST 360
    fee_2 = compute_fee(12_345, DEFAULT_PRICING[CARD])  # 246.9 -> 247, GST 44.46 -> 44
    assert (fee_1.fee_paisa, fee_1.tax_paisa, fee_2.fee_paisa, fee_2.tax_paisa) == (
        2000,
        360,
        247,
        44,
    )
    assert settlement.net_paisa == 100_000 + 12_345 - 40_000 - 2000 - 360 - 247 - 44
    text = settlement.csv()
    assert text.splitlines()[0] == ",".join(HEADER)
    assert rows(text) == [
        {
            "provider_reference": "TXN_PAY_1",
            "merchant_reference": "PAY_1",
            "type": "payment",
            "amount": "1000.00",
            "fee": "20.00",
            "tax": "3.60",
            "currency": "INR",
            "settled_at": "2026-12-05T23:59:59+05:30",
            "settlement_id": settlement.settlement_id,
            "utr": settlement.utr,
            "method": "CARD",
        },
        {
            "provider_reference": "TXN_PAY_2",
            "merchant_reference": "PAY_2",
            "type": "payment",
            "amount": "123.45",
            "fee": "2.47",
            "tax": "0.44",
            "currency": "INR",
            "settled_at": "2026-12-05T23:59:59+05:30",
            "settlement_id": settlement.settlement_id,
            "utr": settlement.utr,
            "method": "CARD",
        },
        {
            "provider_reference": "RZPRF_RFD_1",
            "merchant_reference": "RFD_1",
            "type": "refund",
            "amount": "400.00",
            "fee": "0.00",
            "tax": "0.00",
            "currency": "INR",
            "settled_at": "2026-12-05T23:59:59+05:30",
            "settlement_id": settlement.settlement_id,
            "utr": settlement.utr,
            "method": "CARD",
        },
    ]
    assert settlement.settlement_id.startswith("setl_")
    assert len(settlement.utr) == 16


def test_upi_settles_without_fee_and_wallets_at_their_own_rate() -> None:
    upi = build_file("upi_core", DAY, [payment("PAY_U", 50_000, method=UPI, provider="upi_core")])
    wallet = build_file("paytm", DAY, [payment("PAY_W", 50_000, method=WALLET, provider="paytm")])

    assert [(r["amount"], r["fee"], r["tax"]) for r in rows(upi.csv())] == [
        ("500.00", "0.00", "0.00")
    ]
    # 1.9 % of 500.00 = 9.50, GST 18 % = 1.71
    assert [(r["amount"], r["fee"], r["tax"]) for r in rows(wallet.csv())] == [
        ("500.00", "9.50", "1.71")
    ]
    assert wallet.net_paisa == 50_000 - 950 - 171


def test_a_file_holds_only_its_providers_entries_of_its_ist_date() -> None:
    # 2026-12-04 23:59 IST is still the 4th; 2026-12-05 00:01 IST is the 5th (18:31 UTC the 4th).
    late_on_the_4th = datetime(2026, 12, 4, 18, 29, tzinfo=UTC).timestamp()
    early_on_the_5th = datetime(2026, 12, 4, 18, 31, tzinfo=UTC).timestamp()
    entries = [
        payment("PAY_4TH", at=late_on_the_4th),
        payment("PAY_5TH", at=early_on_the_5th),
        payment("PAY_PAYU", provider="payu"),
    ]

    settlement = build_file("razorpay", DAY, entries)

    assert [line.merchant_reference for line in settlement.lines] == ["PAY_5TH"]
    assert settlement_day(late_on_the_4th, 0) == date(2026, 12, 4)
    assert settlement_day(late_on_the_4th, 2) == date(2026, 12, 6)


def test_the_settlement_cycle_moves_the_file_n_days_later() -> None:
    entries = [payment("PAY_1")]

    assert build_file("razorpay", DAY, entries, cycle_days=1).lines == ()
    assert [
        line.merchant_reference
        for line in build_file("razorpay", date(2026, 12, 6), entries, cycle_days=1).lines
    ] == ["PAY_1"]


def test_nothing_settled_is_a_header_only_file_with_zero_net() -> None:
    settlement = build_file("razorpay", DAY, [])

    assert settlement.csv() == ",".join(HEADER) + "\n"
    assert settlement.net_paisa == 0


def test_the_same_books_give_the_same_file_and_another_day_another_settlement() -> None:
    entries = [payment("PAY_1"), payment("PAY_X", instruction=Instruction.EXTRA)]

    first = build_file("razorpay", DAY, entries, salt="s1")
    again = build_file("razorpay", DAY, entries, salt="s1")
    next_day = build_file("razorpay", date(2026, 12, 6), entries, salt="s1")
    other_provider = build_file("payu", DAY, entries, salt="s1")
    other_run = build_file("razorpay", DAY, entries, salt="s2")

    assert first.csv() == again.csv()
    assert len({first.settlement_id, next_day.settlement_id, other_provider.settlement_id}) == 3
    assert len({first.utr, next_day.utr, other_provider.utr}) == 3
    assert other_run.settlement_id != first.settlement_id


def test_omit_leaves_the_payment_out_but_not_its_refunds() -> None:
    settlement = build_file(
        "razorpay",
        DAY,
        [payment("PAY_1", instruction=Instruction.OMIT), payment("PAY_2"), refund()],
    )

    assert [(line.merchant_reference, line.type) for line in settlement.lines] == [
        ("PAY_2", "payment"),
        ("RFD_1", "refund"),
    ]


def test_a_released_omitted_payment_settles_plainly_on_the_release_date_only() -> None:
    entries = [payment("PAY_1", instruction=Instruction.OMIT)]
    releases = {"PAY_1": date(2026, 12, 7)}

    on_its_day = build_file("razorpay", DAY, entries, releases=releases)
    released = build_file("razorpay", date(2026, 12, 7), entries, releases=releases)

    assert on_its_day.lines == ()
    assert [(r["merchant_reference"], r["amount"], r["fee"]) for r in rows(released.csv())] == [
        ("PAY_1", "1000.00", "20.00")
    ]


def test_amount_mismatch_settles_100_paisa_short_and_keeps_the_fee() -> None:
    settlement = build_file(
        "razorpay", DAY, [payment("PAY_1", 100_000, instruction=Instruction.AMOUNT_MISMATCH)]
    )

    assert [(r["amount"], r["fee"], r["tax"]) for r in rows(settlement.csv())] == [
        ("999.00", "20.00", "3.60")
    ]
    assert settlement.net_paisa == 99_900 - 2000 - 360


def test_fee_mismatch_charges_one_rupee_more_with_its_gst_recomputed() -> None:
    settlement = build_file(
        "razorpay", DAY, [payment("PAY_1", 100_000, instruction=Instruction.FEE_MISMATCH)]
    )

    # fee 20.00 + 1.00 = 21.00; GST 18 % of 21.00 = 3.78
    assert [(r["amount"], r["fee"], r["tax"]) for r in rows(settlement.csv())] == [
        ("1000.00", "21.00", "3.78")
    ]
    assert settlement.net_paisa == 100_000 - 2100 - 378


def test_fee_mismatch_on_upi_charges_a_fee_where_there_is_none() -> None:
    settlement = build_file(
        "upi_core",
        DAY,
        [payment("PAY_U", method=UPI, provider="upi_core", instruction=Instruction.FEE_MISMATCH)],
    )

    assert [(r["fee"], r["tax"]) for r in rows(settlement.csv())] == [("1.00", "0.18")]


def test_duplicate_lists_the_same_line_twice_and_counts_it_twice() -> None:
    settlement = build_file(
        "razorpay", DAY, [payment("PAY_1", 100_000, instruction=Instruction.DUPLICATE)]
    )

    first, second = rows(settlement.csv())
    assert first == second
    assert first["merchant_reference"] == "PAY_1"
    assert settlement.net_paisa == 2 * (100_000 - 2000 - 360)


def test_extra_adds_a_payment_the_gateway_never_saw() -> None:
    settlement = build_file(
        "razorpay", DAY, [payment("PAY_1", 100_000, instruction=Instruction.EXTRA)]
    )

    ours, stranger = rows(settlement.csv())
    assert ours["merchant_reference"] == "PAY_1"
    assert ours["provider_reference"] == "TXN_PAY_1"
    assert stranger["type"] == "payment"
    assert stranger["merchant_reference"].startswith("pay_")
    assert stranger["merchant_reference"] != "PAY_1"
    assert stranger["provider_reference"] not in ("", "TXN_PAY_1")
    assert (stranger["amount"], stranger["fee"], stranger["tax"]) == ("1000.00", "20.00", "3.60")
    assert settlement.net_paisa == 2 * (100_000 - 2000 - 360)


def test_instructions_come_from_the_merchant_note_and_unknown_ones_settle_plainly() -> None:
    assert settlement_instruction({"sandbox_settlement": "omit"}) is Instruction.OMIT
    assert settlement_instruction({"sandbox_settlement": " DUPLICATE "}) is Instruction.DUPLICATE
    assert settlement_instruction({"sandbox_settlement": "LOSE_IT"}) is None
    assert settlement_instruction({"order_id": "7"}) is None


def test_the_providers_books_feed_their_files() -> None:
    """What each simulated provider did (captures, debits, refunds, with the merchant's notes)
    becomes its settlement lines; failed, uncaptured and voided money does not."""
    now = [MORNING]
    clock = lambda: now[0]  # noqa: E731
    switch = UpiSwitch(0.0, on_final=lambda txn: None, clock=clock)
    switch.initiate(
        "PAY_U", "success@upi", 10_000, "INTENT", "", None, {"sandbox_settlement": "DUPLICATE"}
    )
    switch.initiate("PAY_U_FAIL", "failure@upi", 10_000, "INTENT", "", None)
    now[0] += 1
    upi_refund = switch.refund("PAY_U", "RFD_U", 2_500)
    acquirers = Acquirers(Acs(on_final=lambda a: None, clock=clock), clock=clock)
    problems = Violations()
    card = read_card(
        problems,
        cards_pb2.CardDetails(
            card_number="4111111111111111", expiry_month="12", expiry_year="2030", cvv="123"
        ),
        "card",
    )
    assert card is not None
    acquirers.authorize("payu", "PAY_C", "MER_1", card, 5_000, "INR", capture=True)
    held, _ = acquirers.authorize("payu", "PAY_C_HELD", "MER_1", card, 5_000, "INR")
    wallets = WalletBook(clock=clock)
    debit, _ = wallets.debit("PHONEPE", "9811111111", "PAY_W", 7_000, None, {"k": "v"})
    wallets.refund("PHONEPE", debit.wallet_txn_id, "PAY_W", "RFD_W", 7_000)
    banks = NetBanks(on_final=lambda p: None, clock=clock)
    banks.initiate("HDFC", "PAY_NB", 30_000, "https://shop.test/back", "", {})
    banks.complete("HDFC", "PAY_NB", approve=True)
    reports = SettlementReports(
        PROVIDERS, (switch, acquirers, wallets, banks), cycle_days=0, salt=""
    )

    def lines(provider: str) -> list[tuple[str, str, int]]:
        return [
            (line.merchant_reference, line.type, line.amount_paisa)
            for line in reports.file(provider, DAY).lines
        ]

    assert lines("upi_core") == [
        ("PAY_U", "payment", 10_000),
        ("PAY_U", "payment", 10_000),
        ("RFD_U", "refund", 2_500),
    ]
    assert lines("payu") == [("PAY_C", "payment", 5_000)]
    assert held.captured_paisa == 0
    assert lines("phonepe") == [("PAY_W", "payment", 7_000), ("RFD_W", "refund", 7_000)]
    assert lines("netbanking") == [("PAY_NB", "payment", 30_000)]
    assert lines("razorpay") == lines("paytm") == []
    upi_refs = [line.provider_reference for line in reports.file("upi_core", DAY).lines]
    assert upi_refs[0] == switch.get("PAY_U").upi_txn_id
    assert upi_refs[2] == upi_refund.provider_refund_id


def test_release_moves_only_an_omitted_payment_to_a_day_not_before_its_own() -> None:
    book = _Book([payment("PAY_O", instruction=Instruction.OMIT), payment("PAY_2")])
    reports = SettlementReports([ProviderInfo("razorpay", CARD)], [book], cycle_days=0, salt="")

    with pytest.raises(InvalidArgument, match="2026-12-05 or later"):
        reports.release("razorpay", "PAY_O", date(2026, 12, 4))
    with pytest.raises(FailedPrecondition, match="not OMITted"):
        reports.release("razorpay", "PAY_2", date(2026, 12, 6))
    with pytest.raises(NotFound):
        reports.release("razorpay", "PAY_UNKNOWN", date(2026, 12, 6))
    with pytest.raises(NotFound):
        reports.release("nobank", "PAY_O", date(2026, 12, 6))
    reports.release("razorpay", "PAY_O", date(2026, 12, 6))

    assert [line.merchant_reference for line in reports.file("razorpay", DAY).lines] == ["PAY_2"]
    assert [
        line.merchant_reference for line in reports.file("razorpay", date(2026, 12, 6)).lines
    ] == ["PAY_O"]


def test_every_provider_has_a_local_report_key() -> None:
    assert {p.provider for p in PROVIDERS} == set(LOCAL_PROVIDER_REPORT_KEYS)


class _Book:
    def __init__(self, entries: list[Settleable]) -> None:
        self._entries = entries

    def settleable(self) -> list[Settleable]:
        return list(self._entries)


def test_the_readme_documents_every_instruction_and_column() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("### Provider settlement files", 1)[1].split("\n## ", 1)[0]

    assert [i.value for i in Instruction if f"`{i.value}`" not in section] == []
    assert [column for column in HEADER if f"`{column}`" not in section] == []
    assert ",".join(HEADER) in section
