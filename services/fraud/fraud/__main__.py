"""`python -m fraud`: the fraud scoring service.

Rules come from FRAUD_RULES_CONFIG_PATH (reloaded when the file changes); velocity windows and
device history live in Redis (REDIS_HOST/PORT/PASSWORD/DB). The ML model is the committed one,
served in-process, or the external scorer at FRAUD_ML_API_URL when that is set; without a usable
model the service answers `rules_only = true`.
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client import Counter

from fraud.device import DeviceStore
from fraud.model import HttpScorer, ModelUnavailable, load_scorer
from fraud.model_input import model_features
from fraud.rules import RulesFile
from fraud.scoring import Scorer, Thresholds
from fraud.servicer import FeatureBuilder, FraudServicer
from fraud.settings import Settings, get_settings
from fraud.velocity import VelocityStore
from gateway_core.logging import get_logger
from gateway_core.redis_client import ping, redis_client
from gateway_core.server import ServiceApp, run_service
from paygate.fraud.v1 import fraud_pb2_grpc

log = get_logger(__name__)

SERVICE_NAME = "paygate.fraud.v1.FraudService"
# The orchestrator waits FRAUD_TIMEOUT_MS (50 ms by default) for a verdict: a slow Redis call
# is given up well before that and the payment scored without velocity and device signals.
REDIS_TIMEOUT_SECONDS = 0.02

RULES_RELOADS = Counter(
    "fraud_rules_reloads_total",
    "Changes of the fraud rules file, by whether the new rules took effect.",
    ["result"],
)


def build_app(
    settings: Settings,
    rules_path: Path | None = None,
    scorer: Scorer | None = None,
    features: FeatureBuilder | None = None,
) -> ServiceApp:
    """The fraud service, ready to run; a bad rules file at start-up raises RulesError."""
    rules = RulesFile(
        rules_path or Path(settings.fraud_rules_config_path),
        on_reload=lambda ok: RULES_RELOADS.labels("applied" if ok else "refused").inc(),
    )
    app = ServiceApp("fraud", settings)
    redis = redis_client(settings, timeout_seconds=REDIS_TIMEOUT_SECONDS)
    app.on_shutdown(redis.aclose)
    # Velocity and device history live in Redis: without it the service still answers
    # (degraded), but reports NOT_SERVING so the orchestrator knows before it calls.
    app.add_dependency_check("redis", lambda: ping(redis))

    async def watch_rules() -> None:
        await rules.watch(settings.fraud_rules_reload_seconds)

    app.add_background_task("fraud-rules-reload", watch_rules)
    app.add_service(
        SERVICE_NAME,
        fraud_pb2_grpc.add_FraudServiceServicer_to_server,
        FraudServicer(
            rules,
            Thresholds(
                max_score=settings.max_fraud_score,
                block=settings.block_threshold,
                review=settings.review_threshold,
            ),
            VelocityStore(redis),
            DeviceStore(redis),
            scorer=scorer,
            features=features,
        ),
    )
    return app


async def main() -> None:
    settings = get_settings()
    scorer: Scorer | None
    if settings.fraud_ml_api_url:
        http = HttpScorer(settings.fraud_ml_api_url)
        scorer = http
    else:
        http = None
        try:
            scorer = load_scorer(
                Path(settings.fraud_model_path) if settings.fraud_model_path else None
            )
        except ModelUnavailable as exc:
            log.error("fraud model unusable, scoring with rules only", error=str(exc))
            scorer = None
    app = build_app(settings, scorer=scorer, features=model_features)
    if http is not None:
        app.on_shutdown(http.aclose)
    await app.run()


if __name__ == "__main__":
    run_service(main)
