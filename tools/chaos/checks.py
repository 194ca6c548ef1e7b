"""What the chaos run proves, as plain functions of what was observed: each takes the facts
(the client's own records, the gateway's tables, the providers' books, Kafka, the webhook
receiver) and returns a `Check` that passes or names the payments it caught.

They hold no I/O, so tests/unit/test_chaos_checks.py feeds them hand-made facts (a lost
payment, a double charge, an unbalanced ledger, a missing event) and sees each one fail.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from chaos.load import AckedPayment, AckedRefund, Answer
from chaos.schedule import Journey

# Statuses a payment stays in for good (or until a refund).
FINAL = frozenset({"SUCCESS", "FAILED", "EXPIRED", "CANCELLED", "PARTIALLY_REFUNDED", "REFUNDED"})
CAPTURED = frozenset({"SUCCESS", "PARTIALLY_REFUNDED", "REFUNDED"})
# A held authorization waits for the merchant until its own deadline (AUTHORIZATION_TTL).
HELD = "AUTHORIZED"
# Events per payment status: the orchestrator's own table (orchestrator/domain/states.py).
PAYMENT_EVENT = {
    "CREATED": "payment.created",
    "PENDING": "payment.pending",
    "REQUIRES_ACTION": "payment.requires_action",
    "AUTHORIZED": "payment.authorized",
    "CAPTURING": "payment.capturing",
    "SUCCESS": "payment.success",
    "FAILED": "payment.failed",
    "EXPIRED": "payment.expired",
    "CANCELLING": "payment.cancelling",
    "CANCELLED": "payment.cancelled",
    "PARTIALLY_REFUNDED": "payment.partially_refunded",
    "REFUNDED": "payment.refunded",
}
REFUND_EVENT = {"PROCESSED": "refund.processed", "FAILED": "refund.failed"}
WALLET = "WALLET"
SHOWN = 8  # offending ids printed per check


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    counts: str  # what was checked, in numbers
    offenders: tuple[str, ...] = ()  # payment (or refund) ids
    problems: tuple[str, ...] = ()  # what is wrong, in words


def _check(name: str, counts: str, problems: Iterable[tuple[str, str]]) -> Check:
    found = list(problems)
    ids = tuple(dict.fromkeys(pid for pid, _ in found if pid))
    return Check(name, not found, counts, ids, tuple(text for _, text in found))


# -- the gateway's records ------------------------------------------------------------------


@dataclass(frozen=True)
class PaymentRow:
    payment_id: str
    merchant_id: str
    amount_paisa: int
    method: str
    status: str
    chaos_key: str  # metadata.chaos_key: the Idempotency-Key the load created it with
    created_at: float  # Unix seconds
    updated_at: float
    expires_at: float | None
    operation_from: str = ""  # CAPTURING / CANCELLING: the status the operation started from


@dataclass(frozen=True)
class RefundRow:
    refund_id: str
    payment_id: str
    amount_paisa: int
    status: str  # PENDING, PROCESSED, FAILED
    kind: str  # REFUND or REVERSAL
    created_at: float
    processed_at: float | None = None


@dataclass(frozen=True)
class JournalRow:
    journal_id: str
    kind: str  # capture, refund, adjustment, settlement, chargeback
    payment_id: str
    refund_id: str
    amount_paisa: int  # the money it moves (its debits)
    sum_paisa: int  # its postings' sum: 0 when balanced
    lines: int


@dataclass(frozen=True)
class HistoryRow:
    payment_id: str
    to_status: str
    at: float  # Unix seconds


@dataclass(frozen=True)
class EventKey:
    """One event, as both Kafka and a webhook delivery identify it."""

    type: str
    payment_id: str
    refund_id: str
    sequence: int


@dataclass(frozen=True)
class KafkaEvent:
    event_id: str
    merchant_id: str
    key: EventKey


@dataclass
class Gateway:
    """The orchestrator's tables, read after the run (read-only)."""

    payments: dict[str, PaymentRow] = field(default_factory=dict)
    refunds: dict[str, RefundRow] = field(default_factory=dict)
    journals: list[JournalRow] = field(default_factory=list)
    history: list[HistoryRow] = field(default_factory=list)
    ledger_problems: list[str] = field(default_factory=list)  # ledger_store.check_invariants


# -- the checks -----------------------------------------------------------------------------


def acknowledged_writes_kept(
    payments: list[AckedPayment],
    refunds: list[AckedRefund],
    captures: set[str],
    gateway: Gateway,
) -> Check:
    """Every payment, refund and capture acknowledged to the client (a 2xx) is there, with
    the amount and method it was acknowledged with (no acknowledged write lost)."""

    def problems() -> Iterable[tuple[str, str]]:
        for ack in payments:
            row = gateway.payments.get(ack.payment_id)
            if row is None:
                yield ack.payment_id, f"{ack.payment_id} was acknowledged and is gone"
            elif (row.amount_paisa, row.method, row.merchant_id) != (
                ack.amount_paisa,
                ack.method,
                ack.merchant_id,
            ):
                yield (
                    ack.payment_id,
                    f"{ack.payment_id} acknowledged as {ack.amount_paisa} {ack.method} of"
                    f" {ack.merchant_id}, now {row.amount_paisa} {row.method} of"
                    f" {row.merchant_id}",
                )
        for ack_refund in refunds:
            refund = gateway.refunds.get(ack_refund.refund_id)
            if refund is None or refund.payment_id != ack_refund.payment_id:
                yield ack_refund.payment_id, f"refund {ack_refund.refund_id} acknowledged, is gone"
            elif refund.amount_paisa != ack_refund.amount_paisa:
                yield (
                    ack_refund.payment_id,
                    f"refund {ack_refund.refund_id} acknowledged for {ack_refund.amount_paisa},"
                    f" now {refund.amount_paisa}",
                )
        for payment_id in sorted(captures):
            captured = gateway.payments.get(payment_id)
            if captured is None or captured.status not in CAPTURED:
                status = captured.status if captured else "missing"
                yield payment_id, f"{payment_id}'s capture was acknowledged; it is {status}"

    counts = f"{len(payments)} payments, {len(refunds)} refunds, {len(captures)} captures"
    return _check("acknowledged writes kept", counts, problems())


def nothing_stuck(gateway: Gateway, now: float, grace: float) -> Check:
    """No payment (or refund) is still in flight past its deadline plus `grace` seconds, the
    inquiry schedule's allowance: an unfinished payment's deadline is its `expires_at`; a
    capture's or cancel's is when it started; a held authorization waits for the merchant."""

    def problems() -> Iterable[tuple[str, str]]:
        for row in gateway.payments.values():
            if row.status in FINAL:
                continue
            if row.status in ("CAPTURING", "CANCELLING"):
                deadline = row.updated_at
            else:
                deadline = row.expires_at if row.expires_at is not None else row.created_at
            if now > deadline + grace:
                late = now - deadline
                yield row.payment_id, f"{row.payment_id} still {row.status}, {late:.0f} s past"
        for refund in gateway.refunds.values():
            if refund.status == "PENDING" and now > refund.created_at + grace:
                yield refund.payment_id, f"refund {refund.refund_id} still PENDING"

    open_count = sum(1 for row in gateway.payments.values() if row.status not in FINAL)
    counts = f"{len(gateway.payments)} payments, {open_count} not final, grace {grace:.0f} s"
    return _check("nothing left in flight", counts, problems())


def one_payment_per_key(gateway: Gateway) -> Check:
    """No Idempotency-Key produced two payments (the load puts its key in metadata)."""
    by_key: dict[str, list[str]] = defaultdict(list)
    for row in gateway.payments.values():
        if row.chaos_key:
            by_key[row.chaos_key].append(row.payment_id)
    problems = [
        (payment_id, f"key {key} made {len(ids)} payments: {', '.join(sorted(ids))}")
        for key, ids in by_key.items()
        if len(ids) > 1
        for payment_id in sorted(ids)
    ]
    return _check("one payment per idempotency key", f"{len(by_key)} keys", problems)


@dataclass(frozen=True)
class BookPayment:
    provider: str
    payment_id: str
    charged_paisa: int
    refunded_paisa: int


@dataclass(frozen=True)
class BookRefund:
    provider: str
    refund_id: str
    amount_paisa: int
    status: str


@dataclass
class Books:
    """The providers' own books (the sandbox's GET /books)."""

    payments: dict[tuple[str, str], BookPayment] = field(default_factory=dict)
    refunds: dict[str, BookRefund] = field(default_factory=dict)

    @classmethod
    def from_document(cls, document: Mapping[str, list[dict[str, object]]]) -> Books:
        books = cls()
        books.add(document)
        return books

    def add(self, document: Mapping[str, list[dict[str, object]]]) -> None:
        """Entries of a later reading replace those of an earlier one."""
        for p in document["payments"]:
            entry = BookPayment(
                str(p["provider"]),
                str(p["payment_id"]),
                _int(p["charged_paisa"]),
                _int(p["refunded_paisa"]),
            )
            self.payments[(entry.provider, entry.payment_id)] = entry
        for r in document["refunds"]:
            refund = BookRefund(
                str(r["provider"]), str(r["refund_id"]), _int(r["amount_paisa"]), str(r["status"])
            )
            self.refunds[refund.refund_id] = refund


def _int(value: object) -> int:
    return int(str(value))


def ledger_net(journals: Iterable[JournalRow]) -> dict[str, int]:
    """What the ledger says the customer paid and was not given back, per payment."""
    net: dict[str, int] = defaultdict(int)
    for journal in journals:
        if journal.kind == "capture":
            net[journal.payment_id] += journal.amount_paisa
        elif journal.kind == "refund":
            net[journal.payment_id] -= journal.amount_paisa
    return net


def touched_between(gateway: Gateway, start: float, end: float) -> set[str]:
    """Payments whose status changed, or that got a refund, between `start` and `end`."""
    touched = {step.payment_id for step in gateway.history if start <= step.at <= end}
    for refund in gateway.refunds.values():
        times = (refund.created_at, refund.processed_at or refund.created_at)
        if any(start <= at <= end for at in times):
            touched.add(refund.payment_id)
    return touched


def books_agree(books: Books, gateway: Gateway, excluded: set[str]) -> Check:
    """The providers' books agree with the gateway's one for one: for every payment, what the
    providers hold (charged less refunded) is what the ledger booked (captures less refunds),
    plus a wallet's debit held for an uncaptured authorization; every processed refund is at
    its provider for the same amount, and the other way round. Payments in `excluded` were in
    flight at a provider when it lost its memory (the sandbox killed): skipped, and counted."""
    expected = ledger_net(gateway.journals)
    for row in gateway.payments.values():
        holding = row.status in ("AUTHORIZED", "CAPTURING") or (
            row.status == "CANCELLING" and row.operation_from == "AUTHORIZED"
        )
        if row.method == WALLET and holding:
            expected[row.payment_id] += row.amount_paisa
    held: dict[str, int] = defaultdict(int)

    def problems() -> Iterable[tuple[str, str]]:
        for entry in books.payments.values():
            if entry.payment_id not in gateway.payments and entry.charged_paisa:
                yield (
                    entry.payment_id,
                    (f"{entry.provider} charged {entry.payment_id}, which the gateway lacks"),
                )
            held[entry.payment_id] += entry.charged_paisa - entry.refunded_paisa
        for payment_id in sorted(set(held) | set(expected)):
            if payment_id in excluded or held[payment_id] == expected[payment_id]:
                continue
            row = gateway.payments.get(payment_id)
            yield (
                payment_id,
                (
                    f"{payment_id} ({row.status if row else 'unknown'}): the providers hold"
                    f" {held[payment_id]} paisa, the gateway's books say {expected[payment_id]}"
                ),
            )
        for refund in gateway.refunds.values():
            if refund.status != "PROCESSED" or refund.payment_id in excluded:
                continue
            theirs = books.refunds.get(refund.refund_id)
            if theirs is None or theirs.status != "PROCESSED":
                yield (
                    refund.payment_id,
                    f"refund {refund.refund_id} PROCESSED; the provider has none",
                )
            elif theirs.amount_paisa != refund.amount_paisa:
                yield (
                    refund.payment_id,
                    (
                        f"refund {refund.refund_id} PROCESSED for {refund.amount_paisa}; the"
                        f" provider refunded {theirs.amount_paisa}"
                    ),
                )
        for refund_id, theirs in books.refunds.items():
            # A wallet's void is a refund at the wallet; the gateway records it as the cancel.
            if theirs.status != "PROCESSED" or refund_id.startswith("VOID_"):
                continue
            ours = gateway.refunds.get(refund_id)
            if ours is not None and ours.payment_id in excluded:
                continue
            if ours is None or ours.status != "PROCESSED":
                payment_id = ours.payment_id if ours else ""
                yield (
                    payment_id,
                    (
                        f"{theirs.provider} refunded {refund_id} ({theirs.amount_paisa} paisa); the"
                        f" gateway has it {ours.status if ours else 'not at all'}"
                    ),
                )

    found = list(problems())
    counts = f"{len(books.payments)} provider entries, {len(books.refunds)} refunds"
    if excluded:
        counts += f", {len(excluded)} skipped (provider restarted)"
    return _check("provider books agree", counts, found)


def ledger_exact(gateway: Gateway) -> Check:
    """The ledger balances (each journal sums to zero over two lines or more, and the
    orchestrator's own invariants hold), every captured payment has exactly one capture
    journal for its amount, every processed refund exactly one refund journal for its amount,
    and nothing else has one."""
    captures: dict[str, list[JournalRow]] = defaultdict(list)
    refunds: dict[str, list[JournalRow]] = defaultdict(list)
    reversed_ = {r.payment_id for r in gateway.refunds.values() if r.kind == "REVERSAL"}

    def problems() -> Iterable[tuple[str, str]]:
        for journal in gateway.journals:
            if journal.sum_paisa != 0 or journal.lines < 2:
                yield (
                    journal.payment_id,
                    (
                        f"journal {journal.journal_id} is unbalanced: sum {journal.sum_paisa},"
                        f" {journal.lines} lines"
                    ),
                )
            if journal.kind == "capture":
                captures[journal.payment_id].append(journal)
            elif journal.kind == "refund":
                refunds[journal.refund_id].append(journal)
        for row in gateway.payments.values():
            should = row.status in CAPTURED or row.payment_id in reversed_
            found = captures.pop(row.payment_id, [])
            if should and len(found) != 1:
                yield (
                    row.payment_id,
                    (f"{row.payment_id} ({row.status}) has {len(found)} capture journals"),
                )
            elif not should and found:
                yield row.payment_id, f"{row.payment_id} ({row.status}) has a capture journal"
            elif found and found[0].amount_paisa != row.amount_paisa:
                yield (
                    row.payment_id,
                    (f"{row.payment_id} captured {found[0].amount_paisa} of {row.amount_paisa}"),
                )
        for payment_id in captures:
            yield payment_id, f"a capture journal for {payment_id}, which the gateway lacks"
        for refund in gateway.refunds.values():
            posted = refunds.pop(refund.refund_id, [])
            if refund.status == "PROCESSED" and len(posted) != 1:
                yield (
                    refund.payment_id,
                    (f"refund {refund.refund_id} has {len(posted)} refund journals"),
                )
            elif refund.status != "PROCESSED" and posted:
                yield refund.payment_id, f"refund {refund.refund_id} ({refund.status}) is posted"
            elif posted and posted[0].amount_paisa != refund.amount_paisa:
                yield (
                    refund.payment_id,
                    (
                        f"refund {refund.refund_id} posted {posted[0].amount_paisa} of"
                        f" {refund.amount_paisa}"
                    ),
                )
        for refund_id, posted in refunds.items():
            yield posted[0].payment_id, f"a refund journal for unknown refund {refund_id}"
        for problem in gateway.ledger_problems:
            yield "", problem

    counts = f"{len(gateway.journals)} journals"
    return _check("ledger balanced, postings once", counts, problems())


def expected_events(gateway: Gateway) -> Counter[tuple[str, str, str]]:
    """(type, payment id, refund id) of every event the gateway's history says it owes."""
    owed: Counter[tuple[str, str, str]] = Counter()
    for step in gateway.history:
        owed[(PAYMENT_EVENT[step.to_status], step.payment_id, "")] += 1
    for refund in gateway.refunds.values():
        owed[("refund.created", refund.payment_id, refund.refund_id)] += 1
        if refund.status in REFUND_EVENT:
            owed[(REFUND_EVENT[refund.status], refund.payment_id, refund.refund_id)] += 1
    return owed


def events_published(
    gateway: Gateway, events: Iterable[KafkaEvent], unread: Iterable[str] = ()
) -> Check:
    """Every state change (a status history row, a refund made and settled) has its event on
    Kafka, counted once per event id however often it was published, and no event is extra.
    `unread`: partitions that could not be read to their end, each a failure."""
    unique = {event.event_id: event for event in events}
    published: Counter[tuple[str, str, str]] = Counter(
        (e.key.type, e.key.payment_id, e.key.refund_id)
        for e in unique.values()
        if e.key.payment_id in gateway.payments
    )
    owed = expected_events(gateway)

    def problems() -> Iterable[tuple[str, str]]:
        for note in unread:
            yield "", note
        for key in sorted(set(owed) | set(published)):
            event_type, payment_id, refund_id = key
            if owed[key] != published[key]:
                what = f"{event_type} of {refund_id or payment_id}"
                yield payment_id, f"{what}: {owed[key]} owed, {published[key]} on Kafka"

    counts = f"{sum(owed.values())} owed, {len(unique)} distinct on Kafka"
    return _check("every change on Kafka", counts, problems())


def webhooks_delivered(
    events: Iterable[KafkaEvent], subscribed: set[str], delivered: Iterable[EventKey]
) -> Check:
    """Every event of a merchant subscribed to everything reached its endpoint (at least once;
    a delivery is known by the event's type, payment, refund and sequence)."""
    owed = {e.key: e for e in events if e.merchant_id in subscribed}
    received = set(delivered)
    missing = [key for key in owed if key not in received]
    problems = [
        (key.payment_id, f"{key.type} of {key.refund_id or key.payment_id} (#{key.sequence})")
        for key in sorted(missing, key=lambda k: (k.payment_id, k.sequence, k.type))
    ]
    counts = f"{len(owed)} events owed, {len(received)} distinct received"
    return _check("webhooks delivered", counts, problems)


@dataclass(frozen=True)
class Window:
    """When a fault was in force: from its injection to its heal, plus recovery."""

    name: str
    start: float  # Unix seconds
    end: float


def errors_clean(
    answers: Iterable[Answer],
    envoy_down: Iterable[Window],
    forgotten: AbstractSet[str] = frozenset(),
) -> Check:
    """Every error answer was clean: a JSON google.rpc.Status with a retryable status (429,
    502, 503, 504, or a 409 for work still in progress); no request hung past the client's
    timeout; and the only requests left without an answer were those sent while Envoy
    itself was down. A provider's refusal about a payment it `forgot` (the sandbox
    restarted: a capture of an authorization it no longer knows) is its answer, not a fault
    of the gateway's, as long as it is a clean JSON error."""
    down = list(envoy_down)
    seen = list(answers)

    def problems() -> Iterable[tuple[str, str]]:
        for answer in seen:
            if answer.ok:
                continue
            what = f"{answer.op} of journey {answer.journey}"
            if answer.timed_out:
                yield answer.payment_id, f"{what} hung for {answer.seconds:.0f} s"
            elif answer.status is None:
                end = answer.started + answer.seconds
                if not any(w.start <= end and answer.started <= w.end for w in down):
                    yield answer.payment_id, f"{what}: no answer ({answer.reason})"
            elif not answer.retryable and not (
                answer.payment_id in forgotten and answer.json_error and answer.status < 500
            ):
                yield answer.payment_id, f"{what}: {answer.status} {answer.reason}".rstrip()
            elif not answer.json_error:
                yield answer.payment_id, f"{what}: {answer.status} without a JSON error body"

    errors = sum(1 for a in seen if not a.ok)
    slowest = max((a.seconds for a in seen), default=0.0)
    counts = f"{len(seen)} requests, {errors} errors, slowest {slowest:.1f} s"
    return _check("errors clean, no hangs", counts, problems())


def every_method_exercised(payments: Iterable[AckedPayment], gateway: Gateway) -> Check:
    """The load did what it claims: each kind of journey captured money at least once (so
    the other checks did not pass on nothing)."""
    tally: Counter[Journey] = Counter(
        ack.journey
        for ack in payments
        if ack.payment_id in gateway.payments
        and gateway.payments[ack.payment_id].status in CAPTURED
    )
    missing = [("", f"no {journey} journey succeeded") for journey in Journey if not tally[journey]]
    counts = ", ".join(f"{journey.name.lower()} {tally[journey]}" for journey in Journey)
    return _check("every method exercised", counts, missing)
