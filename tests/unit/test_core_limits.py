"""Input limits: sizes of free text and maps, amount bounds, and no card number in free text."""

from __future__ import annotations

import pytest

from gateway_core.errors import InvalidArgument, to_rpc_status
from gateway_core.limits import (
    CARD_DATA_IN_FREE_TEXT,
    INVALID_FIELD,
    MAX_METADATA_KEYS,
    FieldProblems,
)

PAN = "4000056655665556"  # a Visa test number that appears nowhere else in these tests


def refusal(problems: FieldProblems) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as raised:
        problems.raise_if_any()
    return raised.value


def rules(problems: FieldProblems) -> dict[str, str]:
    return {v.field: v.description for v in refusal(problems).field_violations}


def test_nothing_to_report_raises_nothing() -> None:
    problems = FieldProblems()
    problems.text("description", "x" * 1000, 1000)
    problems.metadata("metadata", {f"k{i}": "v" * 500 for i in range(MAX_METADATA_KEYS)})
    problems.amount("amount_paisa", 1, 100)
    problems.raise_if_any()


def test_text_longer_than_its_limit_names_the_field_and_the_limit() -> None:
    problems = FieldProblems()
    problems.text("description", "x" * 1001, 1000)
    error = refusal(problems)
    assert error.reason == INVALID_FIELD
    assert rules(problems) == {"description": "must be at most 1000 characters"}


def test_length_counts_characters_not_bytes() -> None:
    problems = FieldProblems()
    problems.text("description", "₹" * 1000, 1000)
    problems.raise_if_any()


@pytest.mark.parametrize(
    "text",
    [
        PAN,
        "card 4000 0566 5566 5556 please",
        "4000-0566-5566-5556",
        "Amex 3782 822463 10005",
    ],
)
def test_a_card_number_in_free_text_is_refused_without_repeating_it(text: str) -> None:
    problems = FieldProblems()
    problems.text("reason", text, 1000)
    error = refusal(problems)
    assert error.reason == CARD_DATA_IN_FREE_TEXT
    assert list(rules(problems)) == ["reason"]
    wire = repr(to_rpc_status(error))  # message, ErrorInfo and BadRequest as sent
    for digits in ("5556", "10005"):
        assert digits not in error.message
        assert digits not in wire


@pytest.mark.parametrize(
    "text",
    [
        "4000056655665557",  # fails Luhn
        "919876543210",  # a phone number with its country code
        "+91 98765 43210",
        "order 2024-000123",
        "PAY_01KAP6W4JZ8M3V7Q2X5R9T1B0C",
    ],
)
def test_numbers_that_are_not_cards_are_left_alone(text: str) -> None:
    problems = FieldProblems()
    problems.text("description", text, 1000)
    problems.raise_if_any()


def test_metadata_allows_fifty_keys_and_refuses_fifty_one() -> None:
    problems = FieldProblems()
    problems.metadata("metadata", {f"k{i}": "v" for i in range(MAX_METADATA_KEYS + 1)})
    assert rules(problems) == {"metadata": "must have at most 50 keys"}


def test_metadata_keys_and_values_have_their_own_limits() -> None:
    problems = FieldProblems()
    problems.metadata("metadata", {"k" * 41: "v", "": "v", "ok": "v" * 501})
    found = [(v.field, v.description) for v in refusal(problems).field_violations]
    assert found == [
        ("metadata", "keys must be 1 to 40 characters"),
        ("metadata.ok", "must be at most 500 characters"),
    ]


def test_a_card_number_in_a_metadata_value_names_the_key() -> None:
    problems = FieldProblems()
    problems.metadata("refund.metadata", {"note": f"paid with {PAN}"})
    assert refusal(problems).reason == CARD_DATA_IN_FREE_TEXT
    assert list(rules(problems)) == ["refund.metadata.note"]


def test_a_card_number_as_a_metadata_key_is_reported_on_the_map_never_by_name() -> None:
    problems = FieldProblems()
    problems.metadata("metadata", {PAN: "x"})
    error = refusal(problems)
    assert error.reason == CARD_DATA_IN_FREE_TEXT
    assert [v.field for v in error.field_violations] == ["metadata"]
    assert "5556" not in error.message


def test_card_data_is_the_reason_even_next_to_other_faults() -> None:
    problems = FieldProblems()
    problems.text("description", "x" * 2000, 1000)
    problems.text("reason", PAN, 1000)
    assert refusal(problems).reason == CARD_DATA_IN_FREE_TEXT
    assert set(rules(problems)) == {"description", "reason"}


@pytest.mark.parametrize(
    ("paisa", "rule"),
    [
        (0, "must be a positive whole number of paisa"),
        (-5, "must be a positive whole number of paisa"),
        (101, "must be at most 100 paisa"),
        (2_147_483_647, "must be at most 100 paisa"),
    ],
)
def test_amounts_are_positive_and_bounded(paisa: int, rule: str) -> None:
    problems = FieldProblems()
    problems.amount("amount_paisa", paisa, 100)
    assert rules(problems) == {"amount_paisa": rule}
