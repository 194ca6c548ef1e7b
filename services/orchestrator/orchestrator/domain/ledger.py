"""The double-entry ledger: the chart of accounts and the journal entry of each money event.

Every money event is one journal entry of signed postings: a debit is positive, a credit is
negative, and an entry's postings sum to zero. An account's balance is the sum of its postings,
so assets (provider clearing) carry positive balances and liabilities and revenue (merchant
payable, GST payable, fee revenue) carry negative ones.

| account                                  | type      | holds                                    |
|------------------------------------------|-----------|------------------------------------------|
| provider_clearing:<provider>:<currency>  | asset     | captured money the provider owes us      |
| merchant_payable:<merchant_id>:<currency>| liability | what we owe the merchant, not yet settled|
| fee_revenue:<currency>                   | revenue   | the gateway's fees                       |
| gst_payable:<currency>                   | liability | GST on fees, owed to the government      |
| bank:<provider>:<currency>               | asset     | what the provider's settlements paid in  |
| provider_fees:<provider>:<currency>      | expense   | fees and GST the provider kept           |

Capture: Dr provider clearing (amount); Cr merchant payable (amount - fee - GST); Cr fee
revenue (fee); Cr GST payable (GST). Refund: Dr merchant payable; Cr provider clearing (fees are
not returned: see gateway_core/fees.py). Settlement of a payment (a line of the provider's
settlement file): Cr provider clearing (amount); Dr bank (amount - fee - tax); Dr provider fees
(fee + tax). Settlement of a refund: Dr provider clearing; Cr bank. Zero-amount lines (UPI has
no fee) are left out.

Dispute opened (a chargeback): the provider takes the disputed amount back from what it owes us,
and the merchant pays it and the dispute fee with its GST: Dr merchant payable (amount + fee +
GST); Cr provider clearing (amount); Cr fee revenue (fee); Cr GST payable (GST). Dispute won:
the provider gives the amount back and so does the gateway to the merchant (not the fee):
Dr provider clearing (amount); Cr merchant payable (amount). Lost or accepted: nothing more.

Builders raise ValueError on an entry that cannot be right (unbalanced, mixed currencies): that
is a bug in the caller, never a client error. migrations/0002_ledger.sql enforces the same
balance in the database.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from gateway_core.fees import Fee

_CURRENCY = re.compile(r"[A-Z]{3}")


class AccountKind(StrEnum):
    PROVIDER_CLEARING = "provider_clearing"
    MERCHANT_PAYABLE = "merchant_payable"
    FEE_REVENUE = "fee_revenue"
    GST_PAYABLE = "gst_payable"
    BANK = "bank"
    PROVIDER_FEES = "provider_fees"


class JournalKind(StrEnum):
    CAPTURE = "capture"
    REFUND = "refund"
    CHARGEBACK = "chargeback"
    CHARGEBACK_REVERSAL = "chargeback_reversal"
    SETTLEMENT = "settlement"
    ADJUSTMENT = "adjustment"


@dataclass(frozen=True)
class Account:
    kind: AccountKind
    currency: str
    owner: str = ""  # the provider or merchant the account is kept for; "" for the gateway's

    def __post_init__(self) -> None:
        if not _CURRENCY.fullmatch(self.currency):
            raise ValueError(f"currency must be an ISO 4217 code, got {self.currency!r}")
        if ":" in self.owner:
            raise ValueError(f"an account owner must not contain ':', got {self.owner!r}")

    @property
    def account_id(self) -> str:
        owner = f"{self.owner}:" if self.owner else ""
        return f"{self.kind.value}:{owner}{self.currency}"

    @property
    def merchant_id(self) -> str | None:
        return self.owner if self.kind is AccountKind.MERCHANT_PAYABLE else None


def provider_clearing(provider: str, currency: str) -> Account:
    """Money a provider has captured for us and not yet paid out (an asset)."""
    return _owned(AccountKind.PROVIDER_CLEARING, provider, currency)


def merchant_payable(merchant_id: str, currency: str) -> Account:
    """What the gateway owes a merchant and has not settled (a liability)."""
    return _owned(AccountKind.MERCHANT_PAYABLE, merchant_id, currency)


def fee_revenue(currency: str) -> Account:
    return Account(AccountKind.FEE_REVENUE, currency)


def gst_payable(currency: str) -> Account:
    """GST charged on fees, owed to the government (a liability)."""
    return Account(AccountKind.GST_PAYABLE, currency)


def bank(provider: str, currency: str) -> Account:
    """The gateway's bank account, as far as `provider`'s settlements paid into it (an asset)."""
    return _owned(AccountKind.BANK, provider, currency)


def provider_fees(provider: str, currency: str) -> Account:
    """Fees and GST `provider` kept from its settlements (an expense)."""
    return _owned(AccountKind.PROVIDER_FEES, provider, currency)


def _owned(kind: AccountKind, owner: str, currency: str) -> Account:
    if not owner:
        raise ValueError(f"a {kind} account needs its owner")
    return Account(kind, currency, owner)


@dataclass(frozen=True)
class Posting:
    account: Account
    amount_paisa: int  # debit positive, credit negative, never zero


# Journals that may name a refund: the refund itself, and the settlement of one.
_KINDS_WITH_REFUND = frozenset({JournalKind.REFUND, JournalKind.SETTLEMENT})
# Journals that belong to a dispute, and must name it.
_DISPUTE_KINDS = frozenset({JournalKind.CHARGEBACK, JournalKind.CHARGEBACK_REVERSAL})


@dataclass(frozen=True)
class JournalEntry:
    journal_id: str
    kind: JournalKind
    payment_id: str
    refund_id: str | None
    merchant_id: str
    currency: str
    postings: tuple[Posting, ...]
    dispute_id: str | None = None  # chargeback and chargeback_reversal entries only

    def __post_init__(self) -> None:
        if not self.payment_id or not self.merchant_id:
            raise ValueError(f"{self.journal_id}: payment_id and merchant_id are required")
        if self.kind is JournalKind.REFUND and self.refund_id is None:
            raise ValueError(f"{self.journal_id}: a refund entry needs its refund_id")
        if self.refund_id is not None and self.kind not in _KINDS_WITH_REFUND:
            raise ValueError(f"{self.journal_id}: a refund_id goes with refund entries only")
        if (self.dispute_id is not None) != (self.kind in _DISPUTE_KINDS):
            raise ValueError(f"{self.journal_id}: a dispute_id goes with dispute entries only")
        if len(self.postings) < 2:
            raise ValueError(f"{self.journal_id}: an entry needs at least two postings")
        for posting in self.postings:
            if posting.amount_paisa == 0:
                raise ValueError(f"{self.journal_id}: zero posting to {posting.account.account_id}")
            if posting.account.currency != self.currency:
                raise ValueError(
                    f"{self.journal_id}: {posting.account.account_id} is not in {self.currency}"
                )
        total = sum(p.amount_paisa for p in self.postings)
        if total != 0:
            raise ValueError(f"{self.journal_id}: postings sum to {total} paisa, not 0")

    @property
    def amount_paisa(self) -> int:
        """The money the entry moves: its debits (equal to its credits)."""
        return sum(p.amount_paisa for p in self.postings if p.amount_paisa > 0)


def capture_entry(
    *,
    payment_id: str,
    merchant_id: str,
    provider: str,
    currency: str,
    amount_paisa: int,
    fee: Fee,
) -> JournalEntry:
    """A captured payment: the provider owes us the amount; the merchant is owed it less the
    fee and GST, which the gateway keeps as revenue and owes to the government."""
    if amount_paisa <= 0:
        raise ValueError(f"capture of {payment_id}: amount must be positive, got {amount_paisa}")
    if fee.fee_paisa < 0 or fee.tax_paisa < 0 or fee.total > amount_paisa:
        raise ValueError(f"capture of {payment_id}: fee {fee} does not fit in {amount_paisa}")
    return _entry(
        journal_id=f"{JournalKind.CAPTURE}:{payment_id}",
        kind=JournalKind.CAPTURE,
        payment_id=payment_id,
        refund_id=None,
        merchant_id=merchant_id,
        currency=currency,
        lines=[
            (provider_clearing(provider, currency), amount_paisa),
            (merchant_payable(merchant_id, currency), -(amount_paisa - fee.total)),
            (fee_revenue(currency), -fee.fee_paisa),
            (gst_payable(currency), -fee.tax_paisa),
        ],
    )


def refund_entry(
    *,
    payment_id: str,
    refund_id: str,
    merchant_id: str,
    provider: str,
    currency: str,
    amount_paisa: int,
) -> JournalEntry:
    """A processed refund: the merchant's payable shrinks by the whole refund (fees stay
    charged) and so does what the provider owes us, as it pays the customer back."""
    if amount_paisa <= 0:
        raise ValueError(f"refund {refund_id}: amount must be positive, got {amount_paisa}")
    if not refund_id:
        raise ValueError(f"refund of {payment_id}: refund_id is required")
    return _entry(
        journal_id=f"{JournalKind.REFUND}:{payment_id}:{refund_id}",
        kind=JournalKind.REFUND,
        payment_id=payment_id,
        refund_id=refund_id,
        merchant_id=merchant_id,
        currency=currency,
        lines=[
            (merchant_payable(merchant_id, currency), amount_paisa),
            (provider_clearing(provider, currency), -amount_paisa),
        ],
    )


def emi_discount_entry(
    *,
    payment_id: str,
    merchant_id: str,
    provider: str,
    currency: str,
    discount_paisa: int,
) -> JournalEntry:
    """A no-cost EMI capture: the merchant funds the customer's interest, so the acquirer
    settles the price less that discount, and the merchant is owed that much less."""
    if discount_paisa <= 0:
        raise ValueError(f"EMI discount of {payment_id}: must be positive, got {discount_paisa}")
    return _entry(
        journal_id=f"{JournalKind.ADJUSTMENT}:{payment_id}:emi_discount",
        kind=JournalKind.ADJUSTMENT,
        payment_id=payment_id,
        refund_id=None,
        merchant_id=merchant_id,
        currency=currency,
        lines=[
            (merchant_payable(merchant_id, currency), discount_paisa),
            (provider_clearing(provider, currency), -discount_paisa),
        ],
    )


def payment_settlement_entry(
    *,
    payment_id: str,
    merchant_id: str,
    provider: str,
    currency: str,
    amount_paisa: int,
    fee: Fee,
) -> JournalEntry:
    """The provider paid out a captured payment: what it owed (provider clearing) is now in the
    bank, less the fee and GST it kept."""
    if amount_paisa <= 0:
        raise ValueError(f"settlement of {payment_id}: amount must be positive, got {amount_paisa}")
    if fee.fee_paisa < 0 or fee.tax_paisa < 0 or fee.total > amount_paisa:
        raise ValueError(f"settlement of {payment_id}: fee {fee} does not fit in {amount_paisa}")
    return _entry(
        journal_id=f"{JournalKind.SETTLEMENT}:{payment_id}",
        kind=JournalKind.SETTLEMENT,
        payment_id=payment_id,
        refund_id=None,
        merchant_id=merchant_id,
        currency=currency,
        lines=[
            (provider_clearing(provider, currency), -amount_paisa),
            (bank(provider, currency), amount_paisa - fee.total),
            (provider_fees(provider, currency), fee.total),
        ],
    )


def refund_settlement_entry(
    *,
    payment_id: str,
    refund_id: str,
    merchant_id: str,
    provider: str,
    currency: str,
    amount_paisa: int,
) -> JournalEntry:
    """The provider took a refund it paid the customer out of its settlement: the bank got that
    much less, and the refund no longer reduces what the provider owes."""
    if amount_paisa <= 0:
        raise ValueError(f"settlement of {refund_id}: amount must be positive, got {amount_paisa}")
    if not refund_id:
        raise ValueError(f"refund settlement of {payment_id}: refund_id is required")
    return _entry(
        journal_id=f"{JournalKind.SETTLEMENT}:{payment_id}:{refund_id}",
        kind=JournalKind.SETTLEMENT,
        payment_id=payment_id,
        refund_id=refund_id,
        merchant_id=merchant_id,
        currency=currency,
        lines=[
            (provider_clearing(provider, currency), amount_paisa),
            (bank(provider, currency), -amount_paisa),
        ],
    )


def dispute_opened_entry(
    *,
    payment_id: str,
    dispute_id: str,
    merchant_id: str,
    provider: str,
    currency: str,
    amount_paisa: int,
    fee: Fee,
) -> JournalEntry:
    """A chargeback: the provider keeps the disputed amount back from us; the merchant's payable
    pays for it, and for the dispute fee and its GST."""
    if amount_paisa <= 0:
        raise ValueError(f"dispute {dispute_id}: amount must be positive, got {amount_paisa}")
    if fee.fee_paisa < 0 or fee.tax_paisa < 0:
        raise ValueError(f"dispute {dispute_id}: fee {fee} must not be negative")
    return _entry(
        journal_id=f"{JournalKind.CHARGEBACK}:{payment_id}:{dispute_id}",
        kind=JournalKind.CHARGEBACK,
        payment_id=payment_id,
        refund_id=None,
        dispute_id=dispute_id,
        merchant_id=merchant_id,
        currency=currency,
        lines=[
            (merchant_payable(merchant_id, currency), amount_paisa + fee.total),
            (provider_clearing(provider, currency), -amount_paisa),
            (fee_revenue(currency), -fee.fee_paisa),
            (gst_payable(currency), -fee.tax_paisa),
        ],
    )


def dispute_won_entry(
    *,
    payment_id: str,
    dispute_id: str,
    merchant_id: str,
    provider: str,
    currency: str,
    amount_paisa: int,
) -> JournalEntry:
    """The merchant won: the provider pays the disputed amount back, and the merchant is owed
    it again. The dispute fee stays charged."""
    if amount_paisa <= 0:
        raise ValueError(f"dispute {dispute_id}: amount must be positive, got {amount_paisa}")
    return _entry(
        journal_id=f"{JournalKind.CHARGEBACK_REVERSAL}:{payment_id}:{dispute_id}",
        kind=JournalKind.CHARGEBACK_REVERSAL,
        payment_id=payment_id,
        refund_id=None,
        dispute_id=dispute_id,
        merchant_id=merchant_id,
        currency=currency,
        lines=[
            (provider_clearing(provider, currency), amount_paisa),
            (merchant_payable(merchant_id, currency), -amount_paisa),
        ],
    )


def _entry(
    *,
    journal_id: str,
    kind: JournalKind,
    payment_id: str,
    refund_id: str | None,
    merchant_id: str,
    currency: str,
    lines: list[tuple[Account, int]],
    dispute_id: str | None = None,
) -> JournalEntry:
    return JournalEntry(
        dispute_id=dispute_id,
        journal_id=journal_id,
        kind=kind,
        payment_id=payment_id,
        refund_id=refund_id,
        merchant_id=merchant_id,
        currency=currency,
        postings=tuple(Posting(account, amount) for account, amount in lines if amount != 0),
    )
