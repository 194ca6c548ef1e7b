"""`python -m vault`: the tokenization vault service."""

from __future__ import annotations

from gateway_core.config import get_settings
from gateway_core.db import check_pool, create_pool
from gateway_core.server import ServiceApp, run_service
from paygate.vault.v1 import vault_pb2_grpc
from vault.servicer import VaultServicer

SCHEMA = "vault"


async def main() -> None:
    settings = get_settings()
    app = ServiceApp("tokenization-vault", settings)

    pool = await create_pool(settings, SCHEMA)
    app.on_shutdown(pool.close)
    app.add_dependency_check("postgres", lambda: check_pool(pool))

    app.add_service(
        "paygate.vault.v1.VaultService",
        vault_pb2_grpc.add_VaultServiceServicer_to_server,
        VaultServicer(),
    )
    await app.run()


if __name__ == "__main__":
    run_service(main)
