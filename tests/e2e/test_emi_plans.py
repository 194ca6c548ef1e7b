"""EMI plans through Envoy: the query binds, amounts are JSON numbers, kinds are strings."""

from __future__ import annotations

from collections.abc import Callable

import httpx

Token = Callable[..., str]


def test_emi_plans_for_an_amount(gateway_url: str, mint_token: Token) -> None:
    auth = {"Authorization": f"Bearer {mint_token('MER_ANY')}"}
    reply = httpx.get(
        f"{gateway_url}/api/v1/emi/plans", params={"amount_paisa": 10_000_000}, headers=auth
    )
    assert reply.status_code == 200, reply.text
    plans = {p["plan_id"]: p for p in reply.json()["plans"]}
    assert plans["emi_12m"]["monthly_installment_paisa"] == 907_309
    assert plans["emi_12m"]["kind"] == "REGULAR"
    assert plans["emi_3m_no_cost"]["kind"] == "NO_COST"
    assert plans["emi_3m_no_cost"]["interest_paisa"] == 0


def test_no_plans_below_the_minimum_and_a_bad_amount_is_named(
    gateway_url: str, mint_token: Token
) -> None:
    auth = {"Authorization": f"Bearer {mint_token('MER_ANY')}"}
    small = httpx.get(f"{gateway_url}/api/v1/emi/plans?amount_paisa=100", headers=auth)
    assert small.json() == {"plans": []}
    bad = httpx.get(f"{gateway_url}/api/v1/emi/plans?amount_paisa=0", headers=auth)
    assert bad.status_code == 400
    assert bad.json()["details"][0]["field_violations"][0]["field"] == "amount_paisa"


def test_an_amount_above_the_payment_limit_is_refused_not_a_server_error(
    gateway_url: str, mint_token: Token
) -> None:
    """The largest int32 once reached the plan arithmetic and overflowed the int32 totals (500)."""
    auth = {"Authorization": f"Bearer {mint_token('MER_ANY')}"}
    reply = httpx.get(
        f"{gateway_url}/api/v1/emi/plans", params={"amount_paisa": 2_147_483_647}, headers=auth
    )
    assert reply.status_code == 400, reply.text
    violation = reply.json()["details"][0]["field_violations"][0]
    assert violation["field"] == "amount_paisa"
    assert "100000000" in violation["description"]
