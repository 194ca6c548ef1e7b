"""Random references the simulated providers issue: RRNs, approval and authorization codes,
bank references. Unique enough for a simulator, and never derived from card data."""

from __future__ import annotations

import secrets


def digits(count: int) -> str:
    """`count` random decimal digits, leading zeros kept ("004217")."""
    return f"{secrets.randbelow(10**count):0{count}d}"
