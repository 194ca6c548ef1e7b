"""`python -m vault`: the tokenization vault service; `python -m vault rotate-keys`: key rotation.

python -m vault                 serve gRPC (VaultService), re-encrypt and purge in the background
python -m vault rotate-keys     add a new primary card-data key; running replicas start using
                                it at once and move older ciphertexts to it in the background
python -m vault reencrypt       move every ciphertext to the primary key now, then destroy the
                                keys nothing uses any more (what the background job does)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable

import asyncpg

from gateway_core.config import ConfigError
from gateway_core.db import create_pool
from gateway_core.server import run_service
from vault.app import SCHEMA, build_app, open_vault
from vault.crypto import CryptoError
from vault.service import CardVault
from vault.settings import Settings, get_settings


async def main() -> None:
    app = await build_app(get_settings())
    await app.run()


async def _rotate_keys(vault: CardVault) -> None:
    keys = await vault.rotate_keys()
    print(f"new primary key {keys.primary_key_id}; keys that decrypt: {list(keys.key_ids)}")
    print("running vault replicas now encrypt under it and re-encrypt older data in the background")


async def _reencrypt(vault: CardVault) -> None:
    keys = await vault.current_keys()
    print(f"moving card data to primary key {keys.primary_key_id} ...", flush=True)
    total = 0
    while moved := await vault.reencrypt_batch(500):
        total += moved
        print(f"  {total} cards re-encrypted", flush=True)
    retired = await vault.retire_unused_keys()
    print(f"done: {total} cards moved; keys destroyed: {list(retired) or 'none'}")


async def _run_command(settings: Settings, command: Callable[[CardVault], Awaitable[None]]) -> None:
    pool = await create_pool(settings.model_copy(update={"db_max_idle_conns": 1}), SCHEMA)
    try:
        await command(await open_vault(settings, pool))
    finally:
        await pool.close()


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m vault")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("rotate-keys", help="add a new primary key to the card-data keyset")
    commands.add_parser("reencrypt", help="move all card data to the primary key now")
    args = parser.parse_args(argv)
    command = {"rotate-keys": _rotate_keys, "reencrypt": _reencrypt}[args.command]
    try:
        asyncio.run(_run_command(get_settings(), command))
    except (ConfigError, CryptoError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"error: cannot reach the vault's database: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1:
        sys.exit(cli(sys.argv[1:]))
    run_service(main)
