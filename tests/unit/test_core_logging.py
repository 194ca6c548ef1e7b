"""Logs are JSON lines that never contain a PAN or a CVV, whatever path the data takes."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry import trace

from gateway_core.cards import luhn_valid
from gateway_core.config import Settings
from gateway_core.logging import configure_logging, get_logger, mask_sensitive
from gateway_core.telemetry import configure_tracing

PAN = "4111111111111111"
MASKED = "************1111"

ReadLog = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def read_log() -> Iterator[ReadLog]:
    """What the configured pipeline renders, captured with the formatter stdout gets."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure_logging("test-service", "DEBUG")
    buffer = io.StringIO()
    capture = logging.StreamHandler(buffer)
    capture.setFormatter(root.handlers[0].formatter)
    root.addHandler(capture)

    def read() -> list[dict[str, Any]]:
        out = buffer.getvalue()
        assert PAN not in out
        return [json.loads(line) for line in out.splitlines()]

    yield read
    root.handlers, root.level = saved[0], saved[1]


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (PAN, MASKED),
        ("4111 1111 1111 1111", MASKED),
        ("4111-1111-1111-1111", MASKED),
        ("card=378282246310005;", "card=***********0005;"),
        ("pan 6521234567890123456 end", "pan ***************3456 end"),
        ("pan and cvv glued 4111111111111111123", "pan and cvv glued ***************1123"),
    ],
)
def test_long_digit_runs_keep_only_their_last_four_digits(text: str, masked: str) -> None:
    assert mask_sensitive(text) == masked


@pytest.mark.parametrize(
    "text",
    [
        "amount 10000000 paisa",
        "PAY_01JD3Z8Q4X6T8V0W2Y4A6C8E0G",
        "2026-11-22T03:06:00Z",
        "98765 43210",
    ],
)
def test_ordinary_numbers_and_ids_are_left_alone(text: str) -> None:
    assert mask_sensitive(text) == text


def test_card_fields_are_redacted_whatever_their_spelling() -> None:
    masked = mask_sensitive(
        {"cardNumber": PAN, "CVV": "123", "security-code": "999", "pan": "x", "expiry": "12/30"}
    )

    assert masked == {
        "cardNumber": "[REDACTED]",
        "CVV": "[REDACTED]",
        "security-code": "[REDACTED]",
        "pan": "[REDACTED]",
        "expiry": "12/30",
    }


def test_nested_containers_are_walked() -> None:
    masked = mask_sensitive({"payment": {"attempts": [{"note": f"card {PAN}"}, ("cvc", PAN)]}})

    assert masked == {"payment": {"attempts": [{"note": f"card {MASKED}"}, ["cvc", MASKED]]}}


def test_only_luhn_valid_integers_are_taken_for_cards() -> None:
    assert mask_sensitive(int(PAN)) == MASKED
    assert mask_sensitive(1732240000000) == 1732240000000


def test_integers_are_cards_by_the_card_primitives_length_and_luhn_rules() -> None:
    # The shortest and longest card numbers, Luhn-valid, are masked; one digit shorter or
    # longer they are numbers, as gateway_core.cards would refuse them.
    assert [mask_sensitive(n) for n in (424242424242, 4242424242424242428)] == [
        "********4242",
        "***************2428",
    ]
    assert luhn_valid("42424242420")
    assert luhn_valid("42424242424242424242")
    assert mask_sensitive(42424242420) == 42424242420
    assert mask_sensitive(42424242424242424242) == 42424242424242424242
    assert mask_sensitive(4111111111111112) == 4111111111111112  # fails Luhn


def test_a_negative_integer_is_masked_not_a_crash() -> None:
    # A minus sign is not a digit: the Luhn check once tripped over it and raised.
    assert mask_sensitive(-int(PAN)) == f"-{MASKED}"
    assert mask_sensitive(-1732240000000) == -1732240000000


def test_pan_in_the_message_is_masked(read_log: ReadLog) -> None:
    get_logger("payments").info(f"charging card {PAN}")

    (line,) = read_log()
    assert line["event"] == f"charging card {MASKED}"
    assert line["level"] == "info"
    assert line["service"] == "test-service"
    assert "timestamp" in line


def test_pan_and_cvv_in_nested_fields_are_masked(read_log: ReadLog) -> None:
    get_logger().info("tokenizing", request={"card": {"card_number": PAN, "cvv": "123"}}, raw=[PAN])

    (line,) = read_log()
    assert line["request"] == {"card": {"card_number": "[REDACTED]", "cvv": "[REDACTED]"}}
    assert line["raw"] == [MASKED]


def test_pan_in_an_exception_traceback_is_masked(read_log: ReadLog) -> None:
    try:
        raise ValueError(f"provider rejected {PAN}")
    except ValueError:
        get_logger().exception("authorization failed")

    (line,) = read_log()
    assert f"ValueError: provider rejected {MASKED}" in line["exception"]


def test_library_logs_share_the_pipeline(read_log: ReadLog) -> None:
    logging.getLogger("aiokafka").warning("retrying %s", PAN)

    (line,) = read_log()
    assert (line["event"], line["logger"], line["level"]) == (
        f"retrying {MASKED}",
        "aiokafka",
        "warning",
    )


def test_lines_inside_a_span_carry_its_trace_and_span_ids(read_log: ReadLog) -> None:
    configure_tracing("test-service", Settings.model_validate({"jaeger_endpoint": ""}))
    with trace.get_tracer("test").start_as_current_span("work") as span:
        get_logger().info("inside")
    context = span.get_span_context()

    (line,) = read_log()
    assert line["trace_id"] == format(context.trace_id, "032x")
    assert line["span_id"] == format(context.span_id, "016x")


def test_level_filters_events(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("test-service", "WARNING")
        get_logger().info("hidden")
        get_logger().warning("shown")
        lines = capsys.readouterr().out.splitlines()
    finally:
        root.handlers, root.level = saved[0], saved[1]

    assert [json.loads(line)["event"] for line in lines] == ["shown"]
