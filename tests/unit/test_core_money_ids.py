"""Money as integer paisa, and prefixed time-sortable ids."""

from __future__ import annotations

import re
import time

import pytest

from gateway_core.errors import FieldViolation, InvalidArgument
from gateway_core.ids import new_id
from gateway_core.money import (
    check_non_negative_paisa,
    check_positive_paisa,
    paisa_from_rupees,
    rupees_string,
)


@pytest.mark.parametrize(
    ("paisa", "text"),
    [
        (0, "0.00"),
        (5, "0.05"),
        (100, "1.00"),
        (10050, "100.50"),
        (100_000_000, "1000000.00"),
        (-5, "-0.05"),
        (10**20 + 1, "1000000000000000000.01"),
    ],
)
def test_rupees_string_is_exact(paisa: int, text: str) -> None:
    assert rupees_string(paisa) == text


@pytest.mark.parametrize(
    ("text", "paisa"),
    [("100.5", 10050), ("100.50", 10050), ("1", 100), ("0.05", 5), (" -2.10 ", -210)],
)
def test_paisa_from_rupees_reads_at_most_two_decimals(text: str, paisa: int) -> None:
    assert paisa_from_rupees(text) == paisa


@pytest.mark.parametrize("text", ["1.005", "abc", "1e3", "", "1,000.00", ".5"])
def test_paisa_from_rupees_rejects_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="rupee amount"):
        paisa_from_rupees(text)


def test_positive_amount_passes() -> None:
    assert check_positive_paisa(1) == 1


@pytest.mark.parametrize("amount", [0, -1])
def test_amount_that_is_not_positive_is_an_invalid_field(amount: int) -> None:
    with pytest.raises(InvalidArgument) as raised:
        check_positive_paisa(amount)

    assert raised.value.reason == "AMOUNT_NOT_POSITIVE"
    assert raised.value.field_violations == [
        FieldViolation("amount_paisa", "must be greater than 0")
    ]


def test_amount_above_the_maximum_names_the_given_field() -> None:
    with pytest.raises(InvalidArgument) as raised:
        check_positive_paisa(101, field="refund.amount_paisa", maximum=100)

    assert raised.value.reason == "AMOUNT_TOO_LARGE"
    assert raised.value.field_violations[0].field == "refund.amount_paisa"


def test_zero_fee_is_allowed_but_a_negative_one_is_not() -> None:
    assert check_non_negative_paisa(0, "fees_paisa") == 0
    with pytest.raises(InvalidArgument, match="fees_paisa"):
        check_non_negative_paisa(-1, "fees_paisa")


def test_new_id_is_prefix_underscore_ulid() -> None:
    assert re.fullmatch(r"PAY_[0-9A-HJKMNP-TV-Z]{26}", new_id("PAY"))


def test_new_ids_sort_by_creation_time() -> None:
    earlier = new_id("PAY")
    time.sleep(0.002)
    later = new_id("PAY")

    assert earlier < later


@pytest.mark.parametrize("prefix", ["", "PAY_", "pay ment", "1PAY"])
def test_new_id_rejects_prefixes_that_would_make_ids_ambiguous(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        new_id(prefix)
