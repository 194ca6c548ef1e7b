"""`python -m ratelimit`: the global rate limit service Envoy calls for every API request.

Limits come from the YAML file at RATE_LIMIT_CONFIG_PATH (default: config/limits.yaml next to
this package); counters live in Redis (REDIS_HOST/PORT/PASSWORD/DB).
"""

from __future__ import annotations

import os
from pathlib import Path

from envoy.service.ratelimit.v3 import rls_pb2_grpc

from gateway_core.config import Settings, get_settings
from gateway_core.redis_client import redis_client
from gateway_core.server import ServiceApp, run_service
from ratelimit.limits import load_config
from ratelimit.servicer import RateLimitServicer
from ratelimit.store import RedisCounterStore

SERVICE_NAME = "envoy.service.ratelimit.v3.RateLimitService"
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "limits.yaml"
# Envoy waits RATE_LIMIT_TIMEOUT_MS (50 ms by default) at most, then lets the request through:
# a slow or retried Redis call only holds the request up, so fail fast instead.
REDIS_TIMEOUT_SECONDS = 0.25


def build_app(settings: Settings, config_path: Path) -> ServiceApp:
    config = load_config(config_path)
    app = ServiceApp("ratelimit", settings)
    redis = redis_client(settings, timeout_seconds=REDIS_TIMEOUT_SECONDS)
    app.on_shutdown(redis.aclose)
    store = RedisCounterStore(redis)
    # NOT_SERVING while Redis is down: Envoy's health check then skips the call altogether and
    # lets requests through at once instead of after a timeout.
    app.add_dependency_check("redis", store.ping)
    app.add_service(
        SERVICE_NAME,
        rls_pb2_grpc.add_RateLimitServiceServicer_to_server,
        RateLimitServicer(config, store),
    )
    return app


async def main() -> None:
    config_path = Path(os.environ.get("RATE_LIMIT_CONFIG_PATH") or DEFAULT_CONFIG)
    await build_app(get_settings(), config_path).run()


if __name__ == "__main__":
    run_service(main)
