"""The vault's parts, put together: used by `python -m vault` and by the tests alike."""

from __future__ import annotations

from collections.abc import Callable

import asyncpg

from gateway_core.db import check_pool, create_pool
from gateway_core.server import ServiceApp
from paygate.vault.v1 import vault_pb2_grpc
from vault.crypto import KeyEncryptionKey
from vault.jobs import Jobs
from vault.keyring import Keyring
from vault.service import CardVault
from vault.servicer import VaultServicer, service_keys
from vault.settings import Settings

SERVICE_NAME = "paygate.vault.v1.VaultService"
SCHEMA = "vault"


async def build_app(settings: Settings, *, jobs: Callable[[CardVault], Jobs] = Jobs) -> ServiceApp:
    """The vault service, ready to run. `jobs` builds its background jobs (tests slow them)."""
    app = ServiceApp("tokenization-vault", settings)
    pool = await create_pool(settings, SCHEMA)
    app.on_shutdown(pool.close)
    app.add_dependency_check("postgres", lambda: check_pool(pool))
    vault = await open_vault(settings, pool)
    register(app, vault, settings, jobs(vault))
    return app


async def open_vault(settings: Settings, pool: asyncpg.Pool) -> CardVault:
    """The vault over its schema, keysets created on first use and opened with the master key."""
    kek = KeyEncryptionKey(settings.secret("encryption_key"))
    vault = CardVault(pool, Keyring(kek), cvv_ttl_seconds=settings.vault_cvv_ttl_seconds)
    await vault.start()
    return vault


def register(app: ServiceApp, vault: CardVault, settings: Settings, jobs: Jobs) -> None:
    app.add_service(
        SERVICE_NAME,
        vault_pb2_grpc.add_VaultServiceServicer_to_server,
        VaultServicer(vault, service_keys(settings)),
    )
    app.add_background_task("reencryption", jobs.run_reencryption)
    app.add_background_task("cvv-purge", jobs.run_cvv_purge)
