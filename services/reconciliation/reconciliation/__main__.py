"""`python -m reconciliation`: the reconciliation and analytics service."""

from __future__ import annotations

from gateway_core.config import get_settings
from gateway_core.db import check_pool, create_pool
from gateway_core.server import ServiceApp, run_service
from paygate.reconciliation.v1 import reconciliation_pb2_grpc
from reconciliation.servicer import ReconciliationServicer

SCHEMA = "reconciliation"


async def main() -> None:
    settings = get_settings()
    app = ServiceApp("reconciliation", settings)

    pool = await create_pool(settings, SCHEMA)
    app.on_shutdown(pool.close)
    app.add_dependency_check("postgres", lambda: check_pool(pool))

    app.add_service(
        "paygate.reconciliation.v1.ReconciliationService",
        reconciliation_pb2_grpc.add_ReconciliationServiceServicer_to_server,
        ReconciliationServicer(),
    )
    await app.run()


if __name__ == "__main__":
    run_service(main)
