"""Posting matched settlement lines to the orchestrator's ledger.

Each MATCHED payment or refund line moves its money from "receivable from the provider" to
"bank" through the orchestrator's internal SettlementLedgerService (never routed by Envoy;
the orchestrator trusts only reconciliation's service identity). The call is idempotent per
line (`line_key` = the file's SHA-256 and the line number), so a line posted twice, by a retry
or by two replicas, is booked once. Only what the ledger booked is posted: a wallet's held
debit waits for its capture, and a voided hold and its void (money that came and went back
before the gateway captured it) move nothing in the ledger. Lines are claimed with FOR UPDATE
SKIP LOCKED, so replicas share the work; a line whose call fails for a passing reason (the
orchestrator is down, a timeout) stays unposted and is tried again. A line the ledger refuses
for good (it does not hold what the line settles, say) keeps the refusal in `post_error`, is
not tried again, and is logged: the ledger is the authority on money, and a person must look.
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import grpc

from gateway_core.errors import GatewayError
from gateway_core.logging import get_logger
from paygate.ledger.v1 import settlement_pb2, settlement_pb2_grpc

log = get_logger(__name__)

BATCH_LINES = 200
CONCURRENCY = 8
IDLE_SECONDS = 2.0
RETRY_MAX_SECONDS = 30.0
CALL_TIMEOUT_SECONDS = 10.0
# The ledger's answers that no retry changes.
REFUSED_FOR_GOOD = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
    }
)

_CLAIM = """
SELECT l.settlement_file_id, l.line_number, l.type, l.payment_id, l.refund_id,
       l.amount_paisa, l.fee_paisa, l.tax_paisa,
       f.provider, f.checksum_sha256, f.settlement_id, f.utr
FROM settlement_lines l JOIN settlement_files f USING (settlement_file_id)
WHERE l.outcome = 'MATCHED' AND l.posted_at IS NULL AND l.type IN ('payment', 'refund')
  AND l.post_error IS NULL
  -- Only what the ledger has booked: a capture (a wallet's held debit waits for its capture;
  -- a voided one, and its void, never move money in the ledger), or a real refund.
  AND CASE l.type
      WHEN 'payment' THEN EXISTS (
          SELECT 1 FROM book_payments b WHERE b.payment_id = l.payment_id
            AND (b.status IN ('SUCCESS', 'PARTIALLY_REFUNDED', 'REFUNDED')
                 OR EXISTS (SELECT 1 FROM book_refunds r
                            WHERE r.payment_id = b.payment_id AND r.kind = 'REVERSAL')))
      ELSE EXISTS (
          SELECT 1 FROM book_refunds r WHERE r.refund_id = l.refund_id AND r.kind <> 'VOID')
  END
ORDER BY l.settlement_file_id, l.line_number
LIMIT $1
FOR UPDATE OF l SKIP LOCKED
"""


def line_key(checksum_sha256: str, line_number: int) -> str:
    """The ledger's idempotency key of one settlement line."""
    return f"{checksum_sha256}:{line_number}"


class LedgerPoster:
    def __init__(
        self, pool: asyncpg.Pool, stub: settlement_pb2_grpc.SettlementLedgerServiceAsyncStub
    ) -> None:
        self._pool = pool
        self._stub = stub
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Post pending lines forever: promptly after a run, every IDLE_SECONDS otherwise."""
        delay = 1.0
        while True:
            try:
                posted = await self.post_pending()
                delay = 1.0
            except (GatewayError, asyncpg.PostgresError, OSError) as exc:
                log.warning("ledger posting failed; retrying", error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)
                continue
            if posted:
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), IDLE_SECONDS)

    async def post_pending(self) -> int:
        """Post every matched line not posted yet, in batches; how many were posted."""
        total = 0
        while posted := await self._post_batch():
            total += posted
        return total

    async def _post_batch(self) -> int:
        async with self._pool.acquire() as conn, conn.transaction():
            lines = await conn.fetch(_CLAIM, BATCH_LINES)
            if not lines:
                return 0
            gate = asyncio.Semaphore(CONCURRENCY)

            async def post(line: asyncpg.Record) -> tuple[str, int, str]:
                async with gate:
                    reply = await self._stub.PostSettlementLine(
                        settlement_pb2.PostSettlementLineRequest(
                            line_key=line_key(line["checksum_sha256"], line["line_number"]),
                            provider=line["provider"],
                            payment_id=line["payment_id"] or "",
                            refund_id=line["refund_id"] or "",
                            type=line["type"].upper(),
                            amount_paisa=line["amount_paisa"],
                            fee_paisa=line["fee_paisa"],
                            tax_paisa=line["tax_paisa"],
                            settlement_id=line["settlement_id"],
                            utr=line["utr"],
                        ),
                        timeout=CALL_TIMEOUT_SECONDS,
                    )
                return line["settlement_file_id"], line["line_number"], reply.journal_id

            results = await asyncio.gather(*(post(line) for line in lines), return_exceptions=True)
            done = [r for r in results if isinstance(r, tuple)]
            if done:
                await conn.executemany(
                    "UPDATE settlement_lines SET posted_at = now(), journal_id = $3"
                    " WHERE settlement_file_id = $1 AND line_number = $2",
                    done,
                )
            refused = [
                (
                    line["settlement_file_id"],
                    line["line_number"],
                    f"{r.grpc_code.name}: {r.message}",
                )
                for line, r in zip(lines, results, strict=True)
                if isinstance(r, GatewayError) and r.grpc_code in REFUSED_FOR_GOOD
            ]
            for file_id, line_number, error in refused:
                log.error(
                    "the ledger refused a settlement line",
                    settlement_file_id=file_id,
                    line_number=line_number,
                    error=error,
                )
            if refused:
                await conn.executemany(
                    "UPDATE settlement_lines SET post_error = $3"
                    " WHERE settlement_file_id = $1 AND line_number = $2",
                    refused,
                )
            failures = [
                r
                for r in results
                if isinstance(r, BaseException)
                and not (isinstance(r, GatewayError) and r.grpc_code in REFUSED_FOR_GOOD)
            ]
        if failures:
            raise failures[0]
        return len(done) + len(refused)
