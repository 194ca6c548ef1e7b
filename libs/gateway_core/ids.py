"""Public ids: a type prefix and a ULID, so ids sort by creation time and say what they are."""

from __future__ import annotations

import re

from ulid import ULID

_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")


def new_id(prefix: str) -> str:
    """`new_id("PAY")` -> `PAY_01JD3...` (26 Crockford base32 characters after the underscore)."""
    if not _PREFIX.match(prefix):
        raise ValueError(f"id prefix must be alphanumeric, got {prefix!r}")
    return f"{prefix}_{ULID()}"
