"""Contract fuzzing through Envoy (schemathesis): every operation of the generated OpenAPI
description, called with generated input under a merchant's and an admin's token, must answer
without a server error, within the timeout, and as the description says."""

from __future__ import annotations

from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from gateway_core.services import REPO_ROOT

EXAMPLES = 15
TIMEOUT_S = 10
# What the gateway promises: no 5xx, answers that match the description (schema, status code,
# content type), in time. (schemathesis's REST-style extras, such as 405 for a method the
# description does not list, are not promises of a gRPC-transcoding gateway.)
CHECKS = [
    checks.not_a_server_error,
    checks.response_schema_conformance,
    checks.status_code_conformance,
    checks.content_type_conformance,
]


# Operations whose issue has not landed answer 501 UNIMPLEMENTED, which is honest; they are
# fuzzed like the rest once built. The list cannot go stale: test_what_is_not_built_says_so
# fails for an operation on it that answers anything else.
NOT_BUILT = {
    "GET /api/v1/admin/analytics/payments",
    "GET /api/v1/admin/disputes",
    "GET /api/v1/admin/disputes/{dispute_id}",
    "POST /api/v1/admin/disputes/{dispute_id}/evidence",
    "GET /api/v1/admin/settlements",
    "POST /api/v1/webhooks",
    "GET /api/v1/webhooks",
    "GET /api/v1/webhooks/{webhook_id}",
    "DELETE /api/v1/webhooks/{webhook_id}",
    "GET /api/v1/webhooks/{webhook_id}/deliveries",
    "POST /api/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/replay",
}

# The description `make gen` generated (the one Envoy serves, tests/e2e/test_api_docs.py).
schema = schemathesis.openapi.from_path(REPO_ROOT / "gen" / "openapi.json")


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same cases on every run: a failure reproduces
    suppress_health_check=list(HealthCheck),
)
def test_as_a_merchant(case: Any, gateway_url: str, merchant: dict[str, Any]) -> None:
    _call(case, gateway_url, merchant["auth"])


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_as_an_admin(case: Any, gateway_url: str, mint_token: Any) -> None:
    _call(case, gateway_url, {"Authorization": f"Bearer {mint_token('admin', role='admin')}"})


def _call(case: Any, gateway_url: str, auth: dict[str, str]) -> None:
    if case.operation.label in NOT_BUILT:
        response = case.call(base_url=gateway_url, headers=auth, timeout=TIMEOUT_S)
        assert response.status_code < 500 or response.status_code == 501, response.text
        return
    case.call_and_validate(base_url=gateway_url, headers=auth, timeout=TIMEOUT_S, checks=CHECKS)


def test_what_is_not_built_says_so(gateway_url: str, mint_token: Any) -> None:
    auth = {"Authorization": f"Bearer {mint_token('admin', role='admin')}"}
    for label in sorted(NOT_BUILT):
        verb, path = label.split(" ", 1)
        url = gateway_url + path.replace("{", "").replace("}", "")
        reply = httpx.request(verb, url, headers=auth, json={} if verb == "POST" else None)
        assert reply.status_code == 501, f"{label} answers {reply.status_code}: fuzz it now"
