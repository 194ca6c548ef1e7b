"""Card numbers, expiries and CVVs: validated on parse, named by field, never printed in clear."""

from __future__ import annotations

import copy
import logging
import pickle
from datetime import UTC, datetime

import pytest

from gateway_core.cards import (
    IIN_RANGES,
    SANDBOX_ISSUERS,
    CardBrand,
    CardNumber,
    Cvv,
    contains_card_number,
    detect_brand,
    luhn_valid,
    validate_card,
    validate_cvv,
    validate_expiry,
)
from gateway_core.errors import InvalidArgument, to_rpc_status

NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
VISA = "4242424242424242"


def with_check_digit(partial: str) -> str:
    """`partial` plus the digit that makes it pass Luhn."""
    for digit in "0123456789":
        if luhn_valid(partial + digit):
            return partial + digit
    raise AssertionError("unreachable")


def violations(error: InvalidArgument) -> dict[str, str]:
    return {v.field: v.description for v in error.field_violations}


# --- parsing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "brand", "issuer"),
    [
        ("4242424242424242", CardBrand.VISA, "PayGate Test Bank"),
        ("4000000000000002", CardBrand.VISA, "PayGate Sandbox Bank"),
        ("4000000000009995", CardBrand.VISA, "PayGate Sandbox Bank"),
        ("4000000000003220", CardBrand.VISA, "PayGate Sandbox Bank"),
        ("4000008400001629", CardBrand.VISA, "PayGate Sandbox Bank"),
        ("5555555555554444", CardBrand.MASTERCARD, "PayGate Test Bank"),
        ("2223003122003222", CardBrand.MASTERCARD, "PayGate Test Bank"),
        ("378282246310005", CardBrand.AMEX, "American Express Test"),
        ("30569309025904", CardBrand.DINERS, "Diners Club Test"),
        (with_check_digit("608001000000000"), CardBrand.RUPAY, "PayGate RuPay Test Bank"),
    ],
)
def test_the_sandbox_test_numbers_parse_with_their_brand_and_issuer(
    number: str, brand: CardBrand, issuer: str
) -> None:
    card = CardNumber(number)

    assert card.brand is brand
    assert card.issuer == issuer
    assert card.bin == number[:6]
    assert card.last4 == number[-4:]
    assert card.expose() == number


def test_every_sandbox_issuer_bin_belongs_to_a_supported_brand() -> None:
    for bin6 in SANDBOX_ISSUERS:
        assert detect_brand(bin6) is not None, bin6


def test_spaces_and_dashes_are_ignored() -> None:
    assert CardNumber(" 4242 4242-4242 4242 ").expose() == VISA


@pytest.mark.parametrize(
    ("prefix", "length", "brand"),
    [
        ("4", 13, CardBrand.VISA),
        ("4", 19, CardBrand.VISA),
        ("51", 16, CardBrand.MASTERCARD),
        ("55", 16, CardBrand.MASTERCARD),
        ("2221", 16, CardBrand.MASTERCARD),
        ("2720", 16, CardBrand.MASTERCARD),
        ("34", 15, CardBrand.AMEX),
        ("37", 15, CardBrand.AMEX),
        ("300", 14, CardBrand.DINERS),
        ("305", 14, CardBrand.DINERS),
        ("36", 14, CardBrand.DINERS),
        ("38", 14, CardBrand.DINERS),
        ("39", 14, CardBrand.DINERS),
        ("60", 16, CardBrand.RUPAY),
        ("65", 16, CardBrand.RUPAY),
        ("81", 16, CardBrand.RUPAY),
        ("82", 16, CardBrand.RUPAY),
        ("508", 16, CardBrand.RUPAY),
        ("353", 16, CardBrand.RUPAY),
        ("356", 16, CardBrand.RUPAY),
    ],
)
def test_brand_comes_from_the_iin_range(prefix: str, length: int, brand: CardBrand) -> None:
    number = with_check_digit(prefix + "1" * (length - len(prefix) - 1))

    assert CardNumber(number).brand is brand


def test_no_two_iin_ranges_overlap() -> None:
    for leading in range(10_000):
        digits = f"{leading:04d}"
        matches = [
            brand
            for first, last, brand in IIN_RANGES
            if first <= int(digits[: len(str(first))]) <= last
        ]
        assert len(matches) <= 1, (digits, matches)


@pytest.mark.parametrize(
    ("number", "description"),
    [
        ("", "is required"),
        ("  - ", "is required"),
        ("4242a42424242424", "must contain only digits"),
        ("\uff14\uff12" * 8, "must contain only digits"),  # full-width digits
        ("42424242424", "must have 12 to 19 digits"),
        ("42424242424242424242", "must have 12 to 19 digits"),
        ("4242424242424241", "check digit"),
        (with_check_digit("622126000000000"), "network we do not accept"),  # UnionPay
        (with_check_digit("222000000000000"), "network we do not accept"),  # below MC 2221
        (with_check_digit("272100000000000"), "network we do not accept"),  # above MC 2720
        (with_check_digit("378282246310001"), "AMEX card numbers have 15 digits"),
        (with_check_digit("55555555555544"), "MASTERCARD card numbers have 16 digits"),
        (with_check_digit("4242424242424"), "VISA card numbers have 13, 16 or 19 digits"),
    ],
)
def test_invalid_numbers_are_refused_naming_the_field(number: str, description: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        CardNumber(number)

    assert list(violations(raised.value)) == ["card_number"]
    assert description in violations(raised.value)["card_number"]


def test_an_unsupported_network_has_its_own_reason() -> None:
    with pytest.raises(InvalidArgument) as raised:
        CardNumber(with_check_digit("622126000000000"))

    assert raised.value.reason == "CARD_BRAND_UNSUPPORTED"


def test_the_field_is_named_under_a_prefix() -> None:
    with pytest.raises(InvalidArgument) as raised:
        CardNumber("4242424242424241", prefix="payment_details.card")

    assert list(violations(raised.value)) == ["payment_details.card.card_number"]


# --- never printed in clear --------------------------------------------------------------


def test_masked_shows_the_last_four_only() -> None:
    assert CardNumber(VISA).masked == "**** **** **** 4242"
    assert CardNumber("378282246310005").masked == "**** **** **** 0005"


def test_no_rendering_of_a_card_number_shows_the_number(caplog: pytest.LogCaptureFixture) -> None:
    card = CardNumber(VISA)
    renderings = [
        str(card),
        repr(card),
        f"{card}",
        f"{card!r}",
        f"{card:>30}",
        "%s" % card,  # noqa: UP031 - old-style formatting must be safe too
        str([card]),
        str({"card": card}),
    ]
    logging.getLogger("test").warning("card %s", card)
    renderings.append(caplog.text)

    for text in renderings:
        assert VISA not in text
        assert "424242424242" not in text
    assert repr(card) == "CardNumber(VISA **** **** **** 4242)"


def test_a_card_number_cannot_be_pickled_or_changed() -> None:
    card = CardNumber(VISA)

    with pytest.raises(TypeError):
        pickle.dumps(card)
    with pytest.raises(AttributeError):
        card._digits = "4000000000000002"
    assert copy.deepcopy(card) is card


def test_card_numbers_compare_by_number() -> None:
    assert CardNumber(VISA) == CardNumber("4242 4242 4242 4242")
    assert CardNumber(VISA) != CardNumber("4000000000000002")
    assert len({CardNumber(VISA), CardNumber(VISA)}) == 1


def test_errors_never_echo_the_number() -> None:
    bad = "4242424242424241"
    with pytest.raises(InvalidArgument) as raised:
        validate_card(bad, "13", "2020", "12", NOW)

    status = to_rpc_status(raised.value)
    rendered = f"{raised.value} {raised.value!r} {raised.value.field_violations} {status.details}"
    assert bad not in rendered
    assert "4242" not in rendered


def test_cvv_prints_as_stars() -> None:
    cvv = validate_cvv("123", CardBrand.VISA)

    assert cvv.expose() == "123"
    for text in (str(cvv), repr(cvv), f"{cvv}", str([cvv])):
        assert "123" not in text
    with pytest.raises(TypeError):
        pickle.dumps(cvv)


def test_a_validated_card_prints_nothing_secret() -> None:
    card = validate_card(VISA, "12", "2030", "987", NOW)

    assert VISA not in repr(card)
    assert "987" not in repr(card)


# --- expiry ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("month", "year", "expected"),
    [
        ("12", "2030", ("12", "2030")),
        ("1", "30", ("01", "2030")),
        ("03", "26", ("03", "2026")),  # the current month has not expired yet
        ("3", "2026", ("03", "2026")),
        ("01", "2046", ("01", "2046")),
    ],
)
def test_expiry_is_normalized(month: str, year: str, expected: tuple[str, str]) -> None:
    assert validate_expiry(month, year, NOW) == expected


def test_last_month_has_expired() -> None:
    with pytest.raises(InvalidArgument) as raised:
        validate_expiry("02", "2026", NOW)

    assert raised.value.reason == "CARD_EXPIRED"
    assert "expired" in violations(raised.value)["expiry_month"]


def test_last_year_has_expired() -> None:
    with pytest.raises(InvalidArgument) as raised:
        validate_expiry("12", "25", NOW)

    assert raised.value.reason == "CARD_EXPIRED"
    assert list(violations(raised.value)) == ["expiry_year"]


@pytest.mark.parametrize(
    ("month", "year", "fields"),
    [
        ("13", "2030", ["expiry_month"]),
        ("0", "2030", ["expiry_month"]),
        ("ab", "2030", ["expiry_month"]),
        ("", "2030", ["expiry_month"]),
        ("12", "203", ["expiry_year"]),
        ("12", "", ["expiry_year"]),
        ("12", "2099", ["expiry_year"]),
        ("13", "x", ["expiry_month", "expiry_year"]),
    ],
)
def test_invalid_expiries_name_every_bad_field(month: str, year: str, fields: list[str]) -> None:
    with pytest.raises(InvalidArgument) as raised:
        validate_expiry(month, year, NOW, prefix="card")

    assert sorted(violations(raised.value)) == [f"card.{f}" for f in fields]
    assert raised.value.reason == "INVALID_EXPIRY"


# --- CVV ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cvv", "brand"),
    [("123", CardBrand.VISA), ("1234", CardBrand.AMEX), ("000", CardBrand.RUPAY)],
)
def test_cvv_length_follows_the_brand(cvv: str, brand: CardBrand) -> None:
    assert validate_cvv(cvv, brand) == Cvv(cvv)


@pytest.mark.parametrize(
    ("cvv", "brand", "description"),
    [
        ("1234", CardBrand.VISA, "must be 3 digits"),
        ("123", CardBrand.AMEX, "must be 4 digits"),
        ("12a", CardBrand.MASTERCARD, "must be 3 digits"),
        ("", CardBrand.DINERS, "is required"),
        ("12", None, "must be 3 or 4 digits"),
    ],
)
def test_bad_cvvs_are_refused(cvv: str, brand: CardBrand | None, description: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        validate_cvv(cvv, brand, prefix="payment_details.card")

    assert violations(raised.value) == {"payment_details.card.cvv": description}
    assert raised.value.reason == "INVALID_CVV"


# --- the whole card ----------------------------------------------------------------------


def test_a_valid_card_comes_back_typed() -> None:
    card = validate_card("3782 822463 10005", "7", "29", "1234", NOW)

    assert card.number.brand is CardBrand.AMEX
    assert (card.expiry_month, card.expiry_year) == ("07", "2029")
    assert card.cvv is not None
    assert card.cvv.expose() == "1234"


def test_the_cvv_is_optional_unless_required() -> None:
    assert validate_card(VISA, "12", "2030", "", NOW).cvv is None
    with pytest.raises(InvalidArgument) as raised:
        validate_card(VISA, "12", "2030", "", NOW, cvv_required=True)
    assert list(violations(raised.value)) == ["cvv"]


def test_every_card_violation_is_reported_at_once() -> None:
    with pytest.raises(InvalidArgument) as raised:
        validate_card("4242424242424241", "13", "2020", "12", NOW, prefix="payment_details.card")

    assert sorted(violations(raised.value)) == [
        "payment_details.card.card_number",
        "payment_details.card.cvv",
        "payment_details.card.expiry_month",
        "payment_details.card.expiry_year",
    ]
    assert raised.value.reason == "INVALID_CARD"


def test_the_cvv_is_checked_against_the_brand_of_the_number() -> None:
    with pytest.raises(InvalidArgument) as raised:
        validate_card("378282246310005", "12", "2030", "123", NOW)

    assert violations(raised.value) == {"cvv": "must be 4 digits"}


# --- card numbers in the wrong place -----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("customer 4242 4242 4242 4242", True),
        ("ref-4242424242424242-x", True),
        ("holder 3782-822463-10005", True),
        ("4242424242424241", False),  # fails Luhn
        ("919876543210", False),  # a phone number with its country code
        ("MER_01JD3ZQ8Y6K2", False),
        ("order 123456", False),
        ("", False),
    ],
)
def test_card_numbers_are_found_in_free_text(text: str, found: bool) -> None:
    assert contains_card_number(text) is found
