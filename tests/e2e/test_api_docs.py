"""The API's OpenAPI description and its docs page, served by Envoy to anyone."""

from __future__ import annotations

import json
import re

import httpx

from gateway_core.services import REPO_ROOT


def test_the_openapi_description_is_public_and_is_the_generated_one(gateway_url: str) -> None:
    reply = httpx.get(f"{gateway_url}/api/v1/openapi.json", timeout=10)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "application/json"
    served = reply.json()
    assert served == json.loads((REPO_ROOT / "gen" / "openapi.json").read_text())
    assert "/api/v1/payments" in served["paths"]


def test_the_docs_page_is_public_and_needs_nothing_from_elsewhere(gateway_url: str) -> None:
    reply = httpx.get(f"{gateway_url}/docs", timeout=10)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/html")
    page = reply.text
    assert "Payment gateway API" in page
    assert "CreatePayment" in page or "/api/v1/payments" in page
    # Scripts and styles are inlined: no tag loads anything from another host.
    external = re.findall(r"<(?:script|link)[^>]+(?:src|href)=\"https?://[^\"]+\"", page)
    assert external == []


def test_the_rest_of_the_api_still_needs_a_token(gateway_url: str) -> None:
    reply = httpx.get(f"{gateway_url}/api/v1/payments", timeout=10)
    assert reply.status_code == 401
    near_miss = httpx.get(f"{gateway_url}/api/v1/openapi.json/../payments", timeout=10)
    assert near_miss.status_code == 401
