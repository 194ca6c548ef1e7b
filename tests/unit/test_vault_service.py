"""The card vault as the orchestrator meets it: the real ServiceApp on port 0, a real PostgreSQL
with the vault's migrations, and callers with and without the orchestrator's identity."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import traceback
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
import pytest_asyncio
from pydantic import SecretStr

from devstack.postgres import ScratchServer
from gateway_core.db import create_pool
from gateway_core.errors import from_rpc_error
from gateway_core.service_auth import ServiceIdentity, service_channel
from paygate.vault.v1 import vault_pb2, vault_pb2_grpc
from vault.app import build_app, open_vault
from vault.crypto import CryptoError
from vault.jobs import Jobs
from vault.service import CardVault
from vault.settings import Settings

MASTER_KEY = "vault-test-master-key-0123456789abcdef"
ORCHESTRATOR_KEY = "vault-test-orchestrator-key-0123456789abcdef"
WEBHOOK_KEY = "vault-test-webhook-key-0123456789abcdefghijk"
AUDIENCE = "tokenization-vault"
START_SECONDS = 60
CVV_TTL_SECONDS = 900

VISA = "4242424242424242"
MASTERCARD = "5555555555554444"
AMEX = "378282246310005"
V = vault_pb2


# --- a real PostgreSQL and the vault on it, once for the module -----------------------------


@pytest_asyncio.fixture(scope="module")
async def settings(postgres_server: ScratchServer, in_process_server: dict[str, Any]) -> Settings:
    """Its own database with the vault's migrations, and the vault's test keys."""
    database = await postgres_server.database("vault", "tokenization-vault")
    return Settings.model_validate(
        {
            "db_host": database.db_host,
            "db_port": database.db_port,
            "db_username": database.db_username,
            "db_password": database.db_password,
            "db_database": database.db_database,
            "db_max_idle_conns": 1,
            **in_process_server,
            "encryption_key": MASTER_KEY,
            "orchestrator_service_key": ORCHESTRATOR_KEY,
            "vault_cvv_ttl_seconds": CVV_TTL_SECONDS,
        }
    )


class RawLog(logging.Handler):
    """Every log record as the code wrote it, BEFORE gateway_core.logging masks it: the vault
    must not depend on masking (DESIGN.md §6), so card data must not reach a logger at all."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = f"{record.msg!r} {record.args!r}"
        if record.exc_info:
            text += "".join(traceback.format_exception(*record.exc_info))
        self.texts.append(text)


@dataclass
class Running:
    vault: CardVault
    jobs: Jobs
    pool: asyncpg.Pool
    address: str
    orchestrator: vault_pb2_grpc.VaultServiceAsyncStub
    channels: list[grpc.aio.Channel]
    raw_log: RawLog

    def stub(self, identity: ServiceIdentity | None) -> vault_pb2_grpc.VaultServiceAsyncStub:
        channel = (
            service_channel(self.address, identity, typed_errors=False)
            if identity is not None
            else grpc.aio.insecure_channel(self.address)
        )
        self.channels.append(channel)
        return vault_pb2_grpc.VaultServiceStub(channel)


@pytest_asyncio.fixture(scope="module")
async def running(settings: Settings) -> AsyncIterator[Running]:
    built: list[tuple[CardVault, Jobs]] = []

    def slow_jobs(vault: CardVault) -> Jobs:
        # The background loops run once at start (nothing to do) and then wait an hour: tests
        # drive each pass themselves, so "before" and "after" the job are states they choose.
        jobs = Jobs(vault, reencrypt_interval_seconds=3600, purge_interval_seconds=3600)
        built.append((vault, jobs))
        return jobs

    app = await build_app(settings, jobs=slow_jobs)
    ((vault, jobs),) = built
    # The tests' own connections, to read what the service wrote (the audit trail).
    pool = await create_pool(settings, "vault")
    raw_log = RawLog()
    logging.getLogger().addHandler(raw_log)
    run = asyncio.create_task(app.run())
    port = await asyncio.wait_for(app.wait_started(), 10)
    address = f"127.0.0.1:{port}"
    channel = service_channel(
        address, ServiceIdentity("orchestrator", ORCHESTRATOR_KEY, AUDIENCE), typed_errors=False
    )
    running = Running(
        vault, jobs, pool, address, vault_pb2_grpc.VaultServiceStub(channel), [channel], raw_log
    )
    try:
        yield running
    finally:
        for open_channel in running.channels:
            await open_channel.close(None)
        app.stop()
        await asyncio.wait_for(run, 10)
        await pool.close()
        logging.getLogger().removeHandler(raw_log)


@pytest.fixture(autouse=True)
def no_card_data_is_ever_logged(running: Running) -> Iterator[None]:
    """After every test: no log record held a test card number, not even one masking caught."""
    running.raw_log.texts.clear()
    yield
    logged = "\n".join(running.raw_log.texts)
    for number in (VISA, MASTERCARD, AMEX, "4000000000000002", "4242424242424241"):
        assert number not in logged
        assert f"{number[:4]} {number[4:8]}" not in logged


@pytest.fixture
def merchant() -> str:
    return f"MER_{uuid.uuid4().hex[:12].upper()}"


async def tokenize(
    running: Running, merchant: str, number: str = VISA, **fields: str
) -> vault_pb2.TokenizeResponse:
    values = {
        "merchant_id": merchant,
        "user_id": "cust_1",
        "card_number": number,
        "expiry_month": "12",
        "expiry_year": "30",
        "cvv": "1234" if number == AMEX else "123",
        "holder_name": "Asha Rao",
    }
    values.update(fields)
    response: vault_pb2.TokenizeResponse = await running.orchestrator.Tokenize(
        V.TokenizeRequest(**values)
    )
    return response


async def detokenize(
    stub: vault_pb2_grpc.VaultServiceAsyncStub, token: str, payment_id: str = "PAY_1"
) -> vault_pb2.DetokenizeResponse:
    request = V.DetokenizeRequest(token=token, reason="authorize", payment_id=payment_id)
    response: vault_pb2.DetokenizeResponse = await stub.Detokenize(request)
    return response


async def rpc_error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value


async def audit_rows(running: Running, token: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await running.pool.fetch(
        "SELECT * FROM detokenize_audit WHERE token = $1 ORDER BY id", token
    )
    return rows


async def key_id_of(running: Running, token: str) -> int:
    key_id: int = await running.pool.fetchval("SELECT key_id FROM cards WHERE token = $1", token)
    return key_id


# --- tokenize and detokenize ----------------------------------------------------------------


async def test_a_tokenized_card_comes_back_to_the_orchestrator(
    running: Running, merchant: str
) -> None:
    tokenized = await tokenize(running, merchant, number="4242 4242-4242 4242")

    assert tokenized.token.startswith("tok_")
    assert len(tokenized.token) == 28
    assert (tokenized.last4, tokenized.brand, tokenized.issuer) == (
        "4242",
        V.VISA,
        "PayGate Test Bank",
    )
    assert (tokenized.expiry_month, tokenized.expiry_year) == ("12", "2030")
    assert tokenized.fingerprint.startswith("fp_")
    assert tokenized.holder_name == "Asha Rao"

    card = await detokenize(running.orchestrator, tokenized.token, payment_id="PAY_A")

    assert card.card_number == VISA
    assert card.cvv == "123"
    assert (card.expiry_month, card.expiry_year, card.holder_name) == ("12", "2030", "Asha Rao")
    [audit] = await audit_rows(running, tokenized.token)
    assert (audit["action"], audit["caller"], audit["allowed"], audit["outcome"]) == (
        "DETOKENIZE",
        "orchestrator",
        True,
        "OK",
    )
    assert (audit["payment_id"], audit["reason"]) == ("PAY_A", "authorize")
    # The raw log handler sees the service's events (so its checks after each test mean something).
    assert any("card detokenized" in text for text in running.raw_log.texts)


async def test_get_card_returns_metadata_and_never_card_data(
    running: Running, merchant: str
) -> None:
    tokenized = await tokenize(running, merchant, number=AMEX, user_id="cust_9")

    card = await running.orchestrator.GetCard(V.GetCardRequest(token=tokenized.token))

    assert (card.merchant_id, card.user_id, card.last4, card.brand) == (
        merchant,
        "cust_9",
        "0005",
        V.AMEX,
    )
    assert card.fingerprint == tokenized.fingerprint
    assert card.cvv_held
    assert card.created_at.seconds > 0
    assert AMEX not in str(card)
    assert "1234" not in str(card)


async def test_the_cvv_is_gone_after_release(running: Running, merchant: str) -> None:
    tokenized = await tokenize(running, merchant)

    await running.orchestrator.ReleaseCvv(
        V.ReleaseCvvRequest(token=tokenized.token, payment_id="PAY_R")
    )

    card = await detokenize(running.orchestrator, tokenized.token)
    assert card.card_number == VISA
    assert card.cvv == ""
    metadata = await running.orchestrator.GetCard(V.GetCardRequest(token=tokenized.token))
    assert not metadata.cvv_held
    stored = await running.pool.fetchval(
        "SELECT cvv_ciphertext FROM cards WHERE token = $1", tokenized.token
    )
    assert stored is None
    actions = [(r["action"], r["payment_id"]) for r in await audit_rows(running, tokenized.token)]
    assert actions == [("RELEASE_CVV", "PAY_R"), ("DETOKENIZE", "PAY_1")]
    # Releasing again changes nothing and is not an error.
    await running.orchestrator.ReleaseCvv(
        V.ReleaseCvvRequest(token=tokenized.token, payment_id="PAY_R")
    )


async def test_the_cvv_is_gone_after_its_time_limit(running: Running, merchant: str) -> None:
    tokenized = await tokenize(running, merchant)
    held_for = await running.pool.fetchval(
        "SELECT extract(epoch FROM cvv_expires_at - created_at) FROM cards WHERE token = $1",
        tokenized.token,
    )
    assert abs(float(held_for) - CVV_TTL_SECONDS) < 5

    # Time passes: the CVV's limit is now behind us.
    await running.pool.execute(
        "UPDATE cards SET cvv_expires_at = now() - interval '1 second' WHERE token = $1",
        tokenized.token,
    )

    # Not returned even before the purge job runs...
    assert (await detokenize(running.orchestrator, tokenized.token)).cvv == ""
    # ...and the purge job deletes the ciphertext.
    assert await running.vault.purge_expired_cvvs() >= 1
    stored = await running.pool.fetchrow(
        "SELECT cvv_ciphertext, cvv_expires_at FROM cards WHERE token = $1", tokenized.token
    )
    assert stored is not None
    assert (stored["cvv_ciphertext"], stored["cvv_expires_at"]) == (None, None)
    assert (await detokenize(running.orchestrator, tokenized.token)).card_number == VISA


async def test_a_card_without_cvv_holds_none(running: Running, merchant: str) -> None:
    tokenized = await tokenize(running, merchant, cvv="")

    assert (await detokenize(running.orchestrator, tokenized.token)).cvv == ""
    assert not (
        await running.orchestrator.GetCard(V.GetCardRequest(token=tokenized.token))
    ).cvv_held


async def test_a_deleted_token_is_gone(running: Running, merchant: str) -> None:
    tokenized = await tokenize(running, merchant)

    await running.orchestrator.DeleteToken(V.DeleteTokenRequest(token=tokenized.token))

    for call in (
        running.orchestrator.GetCard(V.GetCardRequest(token=tokenized.token)),
        running.orchestrator.DeleteToken(V.DeleteTokenRequest(token=tokenized.token)),
        detokenize(running.orchestrator, tokenized.token),
    ):
        error = await rpc_error(call)
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert from_rpc_error(error).reason == "TOKEN_NOT_FOUND"
    assert [r["outcome"] for r in await audit_rows(running, tokenized.token)] == ["NOT_FOUND"]


# --- who may ask ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("identity", "code", "refusal", "claimed"),
    [
        (None, grpc.StatusCode.UNAUTHENTICATED, "SERVICE_TOKEN_MISSING", ""),
        (
            ServiceIdentity("webhook", WEBHOOK_KEY, AUDIENCE),
            grpc.StatusCode.PERMISSION_DENIED,
            "SERVICE_NOT_ALLOWED",
            "webhook",
        ),
        (
            # Claims to be the orchestrator, but signs with a key that is not the orchestrator's.
            ServiceIdentity("orchestrator", WEBHOOK_KEY, AUDIENCE),
            grpc.StatusCode.UNAUTHENTICATED,
            "SERVICE_TOKEN_INVALID",
            "orchestrator",
        ),
        (
            # The orchestrator's real token, but minted for another service.
            ServiceIdentity("orchestrator", ORCHESTRATOR_KEY, "fraud"),
            grpc.StatusCode.UNAUTHENTICATED,
            "SERVICE_TOKEN_INVALID",
            "orchestrator",
        ),
    ],
)
async def test_only_the_orchestrator_may_detokenize_and_refusals_are_audited(
    running: Running,
    merchant: str,
    identity: ServiceIdentity | None,
    code: grpc.StatusCode,
    refusal: str,
    claimed: str,
) -> None:
    tokenized = await tokenize(running, merchant)
    stranger = running.stub(identity)

    error = await rpc_error(detokenize(stranger, tokenized.token, payment_id="PAY_X"))

    assert error.code() == code
    assert from_rpc_error(error).reason == refusal
    assert VISA not in str(error)
    [audit] = await audit_rows(running, tokenized.token)
    assert (audit["allowed"], audit["outcome"], audit["caller"], audit["claimed_caller"]) == (
        False,
        refusal,
        "",
        claimed,
    )
    assert (audit["payment_id"], audit["reason"]) == ("PAY_X", "authorize")
    # The CVV is still held for the real authorization.
    assert (await detokenize(running.orchestrator, tokenized.token)).cvv == "123"


async def test_every_method_needs_the_orchestrator_identity(
    running: Running, merchant: str
) -> None:
    tokenized = await tokenize(running, merchant)
    webhook = running.stub(ServiceIdentity("webhook", WEBHOOK_KEY, AUDIENCE))
    anonymous = running.stub(None)
    token = tokenized.token

    for stub in (webhook, anonymous):
        calls = [
            stub.Tokenize(
                V.TokenizeRequest(
                    merchant_id=merchant, card_number=VISA, expiry_month="12", expiry_year="30"
                )
            ),
            stub.GetCard(V.GetCardRequest(token=token)),
            stub.DeleteToken(V.DeleteTokenRequest(token=token)),
            stub.ReleaseCvv(V.ReleaseCvvRequest(token=token, payment_id="PAY_1")),
            stub.RotateKeys(V.RotateKeysRequest()),
        ]
        for call in calls:
            error = await rpc_error(call)
            assert error.code() in (
                grpc.StatusCode.UNAUTHENTICATED,
                grpc.StatusCode.PERMISSION_DENIED,
            )
    assert (await running.orchestrator.GetCard(V.GetCardRequest(token=token))).cvv_held


async def test_an_invalid_detokenize_request_is_refused_and_audited(
    running: Running, merchant: str
) -> None:
    tokenized = await tokenize(running, merchant)

    error = await rpc_error(
        running.orchestrator.Detokenize(V.DetokenizeRequest(token=tokenized.token))
    )

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = {v.field for v in from_rpc_error(error).field_violations}
    assert fields == {"payment_id", "reason"}
    [audit] = await audit_rows(running, tokenized.token)
    assert (audit["allowed"], audit["outcome"]) == (True, "INVALID_ARGUMENT")


async def test_the_audit_trail_is_append_only(running: Running, merchant: str) -> None:
    tokenized = await tokenize(running, merchant)
    await detokenize(running.orchestrator, tokenized.token)

    for statement in (
        "UPDATE detokenize_audit SET allowed = false WHERE token = $1",
        "DELETE FROM detokenize_audit WHERE token = $1",
    ):
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await running.pool.execute(statement, tokenized.token)
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await running.pool.execute("TRUNCATE detokenize_audit")


# --- validation never echoes card data ------------------------------------------------------


async def test_an_invalid_card_is_refused_naming_fields_not_values(
    running: Running, merchant: str
) -> None:
    bad_number = "4242424242424241"
    before = await running.pool.fetchval("SELECT count(*) FROM cards")

    error = await rpc_error(
        tokenize(running, merchant, number=bad_number, expiry_month="13", cvv="98765")
    )

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = {v.field for v in from_rpc_error(error).field_violations}
    assert fields == {"card_number", "expiry_month", "cvv"}
    rendered = f"{error.details()} {error.trailing_metadata()}"
    assert bad_number not in rendered
    assert "98765" not in rendered
    assert await running.pool.fetchval("SELECT count(*) FROM cards") == before


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"user_id": "cust 4000 0000 0000 0002"}, "user_id"),
        ({"holder_name": "4000000000000002"}, "holder_name"),
        ({"merchant_id": ""}, "merchant_id"),
    ],
)
async def test_card_numbers_in_other_fields_are_refused(
    running: Running, merchant: str, fields: dict[str, str], field: str
) -> None:
    error = await rpc_error(tokenize(running, merchant, **fields))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {v.field for v in from_rpc_error(error).field_violations} == {field}
    assert "4000000000000002" not in f"{error.details()} {error.trailing_metadata()}"


# --- fingerprints --------------------------------------------------------------------------


async def test_fingerprints_match_per_card_and_merchant(running: Running, merchant: str) -> None:
    other_merchant = merchant + "_B"
    first = await tokenize(running, merchant)
    again = await tokenize(running, merchant, number="4242 4242 4242 4242", user_id="cust_2")
    elsewhere = await tokenize(running, other_merchant)
    other_card = await tokenize(running, merchant, number=MASTERCARD)

    # Tokens are never reused (see vault.service); the fingerprint tells the same card apart.
    assert first.token != again.token
    assert first.fingerprint == again.fingerprint
    assert elsewhere.fingerprint != first.fingerprint
    assert other_card.fingerprint != first.fingerprint


# --- binding ciphertexts to their rows ------------------------------------------------------


async def test_a_ciphertext_copied_into_another_row_does_not_decrypt(
    running: Running, merchant: str
) -> None:
    victim = await tokenize(running, merchant, number=MASTERCARD)
    attacker = await tokenize(running, merchant)

    await running.pool.execute(
        """
        UPDATE cards SET pan_ciphertext = (SELECT pan_ciphertext FROM cards WHERE token = $1)
        WHERE token = $2
        """,
        victim.token,
        attacker.token,
    )
    error = await rpc_error(detokenize(running.orchestrator, attacker.token))

    assert error.code() == grpc.StatusCode.DATA_LOSS
    assert MASTERCARD not in str(error)
    assert [r["outcome"] for r in await audit_rows(running, attacker.token)] == ["DECRYPT_FAILED"]
    await running.orchestrator.DeleteToken(V.DeleteTokenRequest(token=attacker.token))


# --- key rotation --------------------------------------------------------------------------


async def test_rotation_keeps_old_tokens_working_and_moves_them_to_the_new_key(
    running: Running, merchant: str
) -> None:
    old = await tokenize(running, merchant, number=MASTERCARD)
    old_key = await key_id_of(running, old.token)

    rotated = await running.orchestrator.RotateKeys(V.RotateKeysRequest())

    new_key = rotated.primary_key_id
    assert new_key != old_key
    assert {old_key, new_key} <= set(rotated.key_ids)
    # The old token still works, still under the old key...
    assert (await detokenize(running.orchestrator, old.token)).card_number == MASTERCARD
    assert await key_id_of(running, old.token) == old_key
    # ...while new tokens use the new key at once.
    new = await tokenize(running, merchant, number=AMEX)
    assert await key_id_of(running, new.token) == new_key

    moved = await running.jobs.reencrypt_all()

    assert moved >= 1
    assert await key_id_of(running, old.token) == new_key
    old_card = await detokenize(running.orchestrator, old.token)
    assert (old_card.card_number, old_card.cvv) == (MASTERCARD, "123")
    assert (await detokenize(running.orchestrator, new.token)).card_number == AMEX
    # Nothing uses the old key any more: it is destroyed.
    keys = await running.vault.current_keys()
    assert keys.key_ids == (new_key,)
    assert await running.pool.fetchval("SELECT key_ids FROM keysets") == [new_key]
    # Fingerprints do not change with the keys.
    again = await tokenize(running, merchant, number=MASTERCARD)
    assert again.fingerprint == old.fingerprint


async def test_old_keys_are_kept_while_any_ciphertext_needs_them(
    running: Running, merchant: str
) -> None:
    readable = await tokenize(running, merchant)
    tampered = await tokenize(running, merchant, number=MASTERCARD)
    await running.pool.execute(
        """
        UPDATE cards SET pan_ciphertext = (SELECT pan_ciphertext FROM cards WHERE token = $1)
        WHERE token = $2
        """,
        readable.token,
        tampered.token,
    )
    old_key = await key_id_of(running, readable.token)
    rotated = await running.vault.rotate_keys()

    # Before re-encryption, nothing may be destroyed.
    assert await running.vault.retire_unused_keys() == ()
    assert (await detokenize(running.orchestrator, readable.token)).card_number == VISA

    # A row the job cannot decrypt stays under its key, and so does the key.
    await running.jobs.reencrypt_all()
    assert await key_id_of(running, readable.token) == rotated.primary_key_id
    assert await key_id_of(running, tampered.token) == old_key
    assert set((await running.vault.current_keys()).key_ids) == {old_key, rotated.primary_key_id}

    await running.orchestrator.DeleteToken(V.DeleteTokenRequest(token=tampered.token))
    await running.jobs.reencrypt_all()
    assert (await running.vault.current_keys()).key_ids == (rotated.primary_key_id,)
    assert (await detokenize(running.orchestrator, readable.token)).card_number == VISA


async def test_the_background_job_re_encrypts_without_being_asked(
    running: Running, merchant: str
) -> None:
    old = await tokenize(running, merchant)
    await running.vault.rotate_keys()
    job = Jobs(running.vault, reencrypt_interval_seconds=0.05)
    task = asyncio.create_task(job.run_reencryption())
    try:
        keys = await running.vault.current_keys()
        async with asyncio.timeout(5):
            while await key_id_of(running, old.token) != keys.primary_key_id:
                assert (await detokenize(running.orchestrator, old.token)).card_number == VISA
                await asyncio.sleep(0.02)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert (await detokenize(running.orchestrator, old.token)).card_number == VISA


async def test_traffic_continues_while_keys_rotate_and_data_moves(
    running: Running, merchant: str
) -> None:
    existing = [await tokenize(running, merchant) for _ in range(20)]

    async def traffic(i: int) -> None:
        card = await detokenize(running.orchestrator, existing[i].token)
        assert card.card_number == VISA
        fresh = await tokenize(running, merchant, number=MASTERCARD)
        assert (await detokenize(running.orchestrator, fresh.token)).card_number == MASTERCARD
        await running.orchestrator.ReleaseCvv(
            V.ReleaseCvvRequest(token=existing[i].token, payment_id=f"PAY_{i}")
        )

    async def rotate_and_move() -> None:
        await running.vault.rotate_keys()
        await running.jobs.reencrypt_all()
        await running.vault.rotate_keys()
        await running.jobs.reencrypt_all()

    async with asyncio.timeout(15):
        await asyncio.gather(rotate_and_move(), *(traffic(i) for i in range(20)))
        await running.jobs.reencrypt_all()

    keys = await running.vault.current_keys()
    assert keys.key_ids == (keys.primary_key_id,)
    for tokenized in existing:
        assert await key_id_of(running, tokenized.token) == keys.primary_key_id
        card = await detokenize(running.orchestrator, tokenized.token)
        assert (card.card_number, card.cvv) == (VISA, "")


async def run_cli(settings: Settings, cwd: Path, *args: str) -> str:
    """`python -m vault ARGS` against the test database; its output (fails on a non-zero exit)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "APP_ENV": "local",
        "DB_HOST": settings.db_host,
        "DB_PORT": str(settings.db_port),
        "DB_USERNAME": settings.db_username,
        "DB_PASSWORD": settings.db_password,
        "DB_DATABASE": settings.db_database,
        "ENCRYPTION_KEY": MASTER_KEY,
        "LOG_LEVEL": "WARNING",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "vault",
        *args,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, output.decode()
    return output.decode()


async def test_rotate_and_reencrypt_from_the_command_line(
    running: Running, settings: Settings, merchant: str, tmp_path: Path
) -> None:
    before = await running.vault.current_keys()
    old = await tokenize(running, merchant)

    rotated = await run_cli(settings, tmp_path, "rotate-keys")

    after = await running.vault.current_keys()
    assert after.primary_key_id != before.primary_key_id
    assert f"new primary key {after.primary_key_id}" in rotated
    # The running service encrypts under the key the command added.
    tokenized = await tokenize(running, merchant)
    assert await key_id_of(running, tokenized.token) == after.primary_key_id

    moved = await run_cli(settings, tmp_path, "reencrypt")

    assert "done:" in moved
    assert await key_id_of(running, old.token) == after.primary_key_id
    assert (await running.vault.current_keys()).key_ids == (after.primary_key_id,)
    assert (await detokenize(running.orchestrator, old.token)).card_number == VISA


async def test_a_different_master_key_cannot_open_the_keysets(
    running: Running, settings: Settings
) -> None:
    wrong = settings.model_copy(update={"encryption_key": SecretStr("x" * 32)})

    with pytest.raises(CryptoError, match="ENCRYPTION_KEY"):
        await open_vault(wrong, running.pool)


# --- nothing in clear at rest ---------------------------------------------------------------


async def test_the_database_holds_no_card_number_in_clear(running: Running, merchant: str) -> None:
    numbers = [VISA, MASTERCARD, AMEX, "4000000000000002"]
    for number in numbers:
        tokenized = await tokenize(running, merchant, number=number)
        await detokenize(running.orchestrator, tokenized.token)
    await running.orchestrator.RotateKeys(V.RotateKeysRequest())
    await running.jobs.reencrypt_all()

    columns = await running.pool.fetch(
        """
        SELECT table_name, column_name, data_type FROM information_schema.columns
        WHERE table_schema = 'vault' ORDER BY table_name, ordinal_position
        """
    )
    tables = {c["table_name"] for c in columns}
    assert {"cards", "keysets", "detokenize_audit"} <= tables
    for column in columns:
        table, name = column["table_name"], column["column_name"]
        if column["data_type"] == "bytea":
            values = [
                bytes(v)
                for v in await running.pool.fetchval(
                    f'SELECT array_agg("{name}") FROM "{table}" WHERE "{name}" IS NOT NULL'  # noqa: S608
                )
                or []
            ]
            for number in numbers:
                assert not any(number.encode() in v for v in values), (table, name)
        else:
            text = await running.pool.fetchval(
                f"SELECT coalesce(string_agg(\"{name}\"::text, '|'), '') FROM \"{table}\""  # noqa: S608
            )
            for number in numbers:
                assert number not in text, (table, name)
                assert number[:12] not in text, (table, name)
