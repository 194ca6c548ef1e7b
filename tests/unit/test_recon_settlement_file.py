"""The settlement file format: every rule refuses its line with the line number and reason."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest

from reconciliation.settlement_file import HEADER, MalformedFile, paisa, parse

HEAD = ",".join(HEADER)
GOOD = "RRN1,PAY_1,payment,1234.50,24.69,4.44,INR,2026-12-05T23:59:59+05:30,setl_1,UTR1,UPI"


def lines_of(*rows: str) -> list[object]:
    return list(parse(io.StringIO("\n".join([HEAD, *rows]) + "\n")))


def refusal(*rows: str) -> MalformedFile:
    with pytest.raises(MalformedFile) as caught:
        lines_of(*rows)
    return caught.value


def test_a_good_line_becomes_paisa_and_an_aware_time() -> None:
    (line,) = lines_of(GOOD)
    assert line.line_number == 2  # the header is line 1
    assert (line.amount_paisa, line.fee_paisa, line.tax_paisa) == (123450, 2469, 444)
    assert line.settled_at.utcoffset() == timedelta(hours=5, minutes=30)
    assert (line.settlement_id, line.utr, line.method) == ("setl_1", "UTR1", "UPI")
    assert line.net_paisa == 123450 - 2469 - 444


def test_refunds_and_chargebacks_take_money_back_and_adjustments_may_be_negative() -> None:
    refund, chargeback, adjustment = lines_of(
        GOOD.replace("payment,1234.50,24.69,4.44", "refund,100.00,0.00,0.00"),
        GOOD.replace("payment,1234.50", "chargeback,50.00"),
        GOOD.replace("PAY_1,payment,1234.50,24.69,4.44", ",adjustment,-10.00,0.00,0.00"),
    )
    assert refund.net_paisa == -10000
    assert chargeback.net_paisa == -5000 - 2469 - 444
    assert adjustment.amount_paisa == -1000


@pytest.mark.parametrize(
    ("amount", "why"),
    [
        ("1234.5", "one decimal"),
        ("1234.500", "three decimals"),
        ("1234", "no decimals"),
        ("1e3", "an exponent"),
        ("", "empty"),
        ("NaN", "not a number"),
        ("-5.00", "negative payment"),
        ("01.00", "a leading zero"),
        ("1,234.50", "a thousands separator"),
    ],
)
def test_an_amount_that_is_not_rupees_with_two_decimals_is_refused(amount: str, why: str) -> None:
    refused = refusal(GOOD, GOOD.replace("1234.50", f'"{amount}"'))
    assert refused.line_number == 3, why
    assert refused.reason.startswith("amount must be rupees with exactly two decimals")


@pytest.mark.parametrize(
    ("broken", "reason"),
    [
        (GOOD.replace(",INR,", ",USD,"), "currency must be INR"),
        (GOOD.replace("payment", "payout"), "type must be one of"),
        (GOOD.replace(",UPI", ",CASH"), "method must be one of"),
        (GOOD.replace("24.69", "-1.00"), "fee must be rupees"),
        (GOOD.replace("4.44", "x"), "tax must be rupees"),
        (GOOD.replace("+05:30", ""), "settled_at must be an ISO 8601 time with an offset"),
        (GOOD.replace("2026-12-05T", "yesterday "), "settled_at must be"),
        (GOOD.replace("RRN1", ""), "provider_reference must be"),
        (GOOD.replace("PAY_1", ""), "merchant_reference must be"),
        (GOOD + ",extra", "expected 11 comma-separated fields, found 12"),
        ("", "empty line"),
        (GOOD.replace("setl_1", "setl_2"), "settlement_id and utr must be the same on every line"),
        (GOOD.replace("UTR1", "UTR2"), "settlement_id and utr must be the same on every line"),
    ],
)
def test_a_line_breaking_a_rule_is_refused_with_its_number(broken: str, reason: str) -> None:
    refused = refusal(GOOD, GOOD, broken)
    assert refused.line_number == 4
    assert reason in refused.reason
    assert str(refused).startswith("line 4: ")


def test_a_wrong_or_missing_header_is_line_one() -> None:
    with pytest.raises(MalformedFile) as caught:
        list(parse(io.StringIO(GOOD + "\n")))
    assert caught.value.line_number == 1
    assert "header" in caught.value.reason
    with pytest.raises(MalformedFile) as empty:
        list(parse(io.StringIO("")))
    assert (empty.value.line_number, "header line is missing" in empty.value.reason) == (1, True)


def test_a_header_only_file_has_no_lines() -> None:
    assert lines_of() == []


def test_paisa_is_exact_without_floats() -> None:
    assert paisa("0.10") + paisa("0.20") == paisa("0.30")
    assert paisa("999999999999999.99") == 99999999999999999
    assert paisa("-0.05", signed=True) == -5
    with pytest.raises(ValueError, match=r"-0\.05"):
        paisa("-0.05")
