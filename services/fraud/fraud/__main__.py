"""`python -m fraud`: the fraud scoring service."""

from __future__ import annotations

from redis.asyncio import Redis

from fraud.servicer import FraudServicer
from gateway_core.config import get_settings
from gateway_core.server import ServiceApp, run_service
from paygate.fraud.v1 import fraud_pb2_grpc


async def main() -> None:
    settings = get_settings()
    app = ServiceApp("fraud", settings)

    # Velocity windows live in Redis, so the service is not ready without it.
    redis = Redis(
        host=settings.redis_host,
        port=settings.redis_port,
        password=settings.redis_password or None,
        db=settings.redis_db,
    )
    app.on_shutdown(redis.aclose)

    async def ping_redis() -> None:
        await redis.ping()

    app.add_dependency_check("redis", ping_redis)

    app.add_service(
        "paygate.fraud.v1.FraudService",
        fraud_pb2_grpc.add_FraudServiceServicer_to_server,
        FraudServicer(),
    )
    await app.run()


if __name__ == "__main__":
    run_service(main)
