"""Rows the database holds whose one home is the orchestrator's code, rendered after every
migration run (gateway_core.db.DERIVED_FILE):

- `payment_transitions`, which the transition trigger checks, from domain/states.py's
  TRANSITIONS (migrations 0001 and 0007 loaded the rows once; from then on this rewrites them);
- `dispute_transitions`, likewise, from domain/disputes.py's TRANSITIONS (0011 loaded them);
- `pricing`, from gateway_core.fees.DEFAULT_PRICING (0002 and 0011 seeded it once).

Idempotent: a second run changes nothing, and nothing is rewritten that already agrees.
"""

from __future__ import annotations

from gateway_core.fees import DEFAULT_PRICING
from orchestrator.domain import disputes, states

# (SQL, its parameters): the values travel as parameters, never inside the text.
Statement = tuple[str, tuple[object, ...]]


def transition_statements(table: str, transitions: frozenset[tuple[str, str]]) -> list[Statement]:
    """`table` (from_status, to_status) made to hold exactly `transitions`."""
    pairs = sorted(transitions)
    columns = ([source for source, _ in pairs], [target for _, target in pairs])
    return [
        (
            f"DELETE FROM {table} t WHERE NOT EXISTS (SELECT 1 FROM"  # noqa: S608 - our names
            " unnest($1::text[], $2::text[]) AS code (from_status, to_status)"
            " WHERE code.from_status = t.from_status AND code.to_status = t.to_status)",
            columns,
        ),
        (
            f"INSERT INTO {table} (from_status, to_status)"  # noqa: S608 - our names
            " SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING",
            columns,
        ),
    ]


def pricing_statements() -> list[Statement]:
    prices = list(DEFAULT_PRICING.values())
    columns = (
        [p.method for p in prices],
        [p.rate_bps for p in prices],
        [p.fixed_paisa for p in prices],
        [p.gst_bps for p in prices],
        [p.dispute_fee_paisa for p in prices],
    )
    return [
        (
            "INSERT INTO pricing (method, rate_bps, fixed_paisa, gst_bps, dispute_fee_paisa)"
            " SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::int[], $5::bigint[])"
            " ON CONFLICT (method) DO UPDATE SET rate_bps = EXCLUDED.rate_bps,"
            " fixed_paisa = EXCLUDED.fixed_paisa, gst_bps = EXCLUDED.gst_bps,"
            " dispute_fee_paisa = EXCLUDED.dispute_fee_paisa, updated_at = now()"
            " WHERE (pricing.rate_bps, pricing.fixed_paisa, pricing.gst_bps,"
            " pricing.dispute_fee_paisa) IS DISTINCT FROM (EXCLUDED.rate_bps,"
            " EXCLUDED.fixed_paisa, EXCLUDED.gst_bps, EXCLUDED.dispute_fee_paisa)",
            columns,
        )
    ]


def statements() -> list[Statement]:
    return [
        *transition_statements(
            "payment_transitions", frozenset((a.value, b.value) for a, b in states.TRANSITIONS)
        ),
        *transition_statements(
            "dispute_transitions", frozenset((a.value, b.value) for a, b in disputes.TRANSITIONS)
        ),
        *pricing_statements(),
    ]
