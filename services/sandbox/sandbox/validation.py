"""Request checks every simulated provider makes, collected so one error names every bad field."""

from __future__ import annotations

from collections.abc import Collection
from urllib.parse import urlsplit

from gateway_core.errors import FieldViolation, InvalidArgument, invalid_field

CURRENCY = "INR"


def one_of(field: str, value: str, choices: Collection[str]) -> str:
    """`value` (already normalized by the caller) if it is one of `choices`; else the request
    is refused at once, naming the field and the choices (they decide which provider answers,
    so nothing else is worth checking first)."""
    if value not in choices:
        raise invalid_field(field, f"must be one of {', '.join(choices)}")
    return value


class Violations:
    def __init__(self) -> None:
        self._found: list[FieldViolation] = []

    def __len__(self) -> int:
        return len(self._found)

    def add(self, field: str, description: str) -> None:
        self._found.append(FieldViolation(field, description))

    def required(self, field: str, value: str) -> None:
        if not value.strip():
            self.add(field, "is required")

    def positive(self, field: str, value: int) -> None:
        if value <= 0:
            self.add(field, "must be greater than 0")

    def currency(self, field: str, value: str) -> None:
        if value != CURRENCY:
            self.add(field, f"must be {CURRENCY}")

    def http_url(self, field: str, value: str) -> None:
        """An absolute http(s) URL, when given at all."""
        if not value:
            return
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            self.add(field, "must be an absolute http or https URL")

    def raise_if_any(self) -> None:
        if self._found:
            raise InvalidArgument.for_fields(self._found)
