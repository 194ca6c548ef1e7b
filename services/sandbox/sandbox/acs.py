"""The 3-D Secure 2 access control server (ACS): the card issuer's side of 3DS.

`Acs` holds the authentications and their rules (plain, synchronous). A card either
authenticates frictionless at once, or needs a challenge: the customer's browser is sent to
the ACS page (sandbox.web serves it), types the OTP, and the ACS both calls the gateway back,
signed, and sends the browser to the return URL. An authentication that nobody completes
expires. The ACS belongs to the issuer, so the three acquirers share it: a value issued while
authenticating through one gateway is honoured by another after a failover.

State lives in memory, keyed by the authentication id (the 3DS transaction id) and the
gateway's payment id: this is a simulator.
"""

from __future__ import annotations

import base64
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from urllib.parse import quote

from gateway_core.errors import AlreadyExists, NotFound
from gateway_core.ids import new_id
from gateway_core.logging import get_logger
from sandbox import magic
from sandbox.callbacks import ProviderCallback, return_url
from sandbox.cards import Card

log = get_logger(__name__)

PROVIDER = "acs"
OTP_INVALID = "OTP_INVALID"
CUSTOMER_CANCELLED = "CUSTOMER_CANCELLED"
CHALLENGE_EXPIRED = "CHALLENGE_EXPIRED"

# The challenge page on the sandbox's HTTP server (sandbox.web serves it).
PAGE_ROUTE = "/acs/{authentication_id}"

Clock = Callable[[], float]


class AuthenticationStatus(StrEnum):
    CHALLENGE_REQUIRED = "CHALLENGE_REQUIRED"
    AUTHENTICATED = "AUTHENTICATED"
    FAILED = "FAILED"


@dataclass
class Authentication:
    authentication_id: str  # the 3DS transaction id, also in the challenge URL
    gateway: str
    payment_id: str
    merchant_id: str
    card: Card
    amount_paisa: int
    currency: str
    return_url: str
    callback_url: str
    created_at: float
    # Set while a challenge waits for the customer.
    expires_at: float | None
    challenged: bool
    status: AuthenticationStatus
    eci: str = ""
    authentication_value: str = ""
    failure_code: str = ""
    finished_at: float | None = None

    @property
    def callback_status(self) -> str:
        """The outcome as callbacks and the return URL name it."""
        if self.status is AuthenticationStatus.AUTHENTICATED:
            return "SUCCESS"
        if self.status is AuthenticationStatus.FAILED:
            return "EXPIRED" if self.failure_code == CHALLENGE_EXPIRED else "FAILED"
        return "PENDING"

    def return_to(self) -> str:
        """The return URL with the outcome added to its query; the ACS page without one."""
        if not self.return_url:
            return page_path(self.authentication_id)
        return return_url(
            self.return_url,
            [
                ("payment_id", self.payment_id),
                ("three_ds_transaction_id", self.authentication_id),
                ("status", self.callback_status),
            ],
        )

    def to_callback(self) -> ProviderCallback:
        return ProviderCallback(
            provider=PROVIDER,
            transaction_ref=self.payment_id,
            provider_txn_id=self.authentication_id,
            status=self.callback_status,
            amount_paisa=self.amount_paisa,
            occurred_at=datetime.fromtimestamp(self.finished_at or self.created_at, UTC),
            response_code=self.failure_code,
            extra={
                "three_ds_transaction_id": self.authentication_id,
                "eci": self.eci,
                "authentication_value": self.authentication_value,
                "protocol_version": magic.THREE_DS_PROTOCOL_VERSION,
            },
        )


class Acs:
    """Authentications by id and by payment. `on_final(authentication)` runs once, when a
    challenge ends (OTP, cancel or expiry); a frictionless one is final in its own answer."""

    def __init__(
        self,
        on_final: Callable[[Authentication], None],
        clock: Clock = time.time,
        challenge_ttl_seconds: float = magic.ACS_CHALLENGE_TTL_SECONDS,
    ) -> None:
        self._on_final = on_final
        self._clock = clock
        self._ttl = challenge_ttl_seconds
        self._by_id: dict[str, Authentication] = {}
        self._by_payment: dict[str, Authentication] = {}

    def now(self) -> float:
        return self._clock()

    def authenticate(
        self,
        gateway: str,
        payment_id: str,
        merchant_id: str,
        card: Card,
        amount_paisa: int,
        currency: str,
        *,
        challenge_requested: bool,
        return_url: str,
        callback_url: str,
    ) -> tuple[Authentication, bool]:
        """Authenticate once per payment; a repeated call answers the authentication as it
        stands. Returns it and whether this call created it."""
        known = self._by_payment.get(payment_id)
        if known is not None:
            if (known.card.fingerprint, known.amount_paisa, known.currency) != (
                card.fingerprint,
                amount_paisa,
                currency,
            ):
                raise AlreadyExists(
                    f"payment {payment_id} was authenticated with other details",
                    reason="DUPLICATE_PAYMENT_ID",
                )
            self.settle(known)
            return known, False
        now = self._clock()
        challenge = challenge_requested or magic.requires_challenge(card.outcome)
        authentication = Authentication(
            authentication_id=new_id("TDS"),
            gateway=gateway,
            payment_id=payment_id,
            merchant_id=merchant_id,
            card=card,
            amount_paisa=amount_paisa,
            currency=currency,
            return_url=return_url,
            callback_url=callback_url,
            created_at=now,
            expires_at=now + self._ttl if challenge else None,
            challenged=challenge,
            status=AuthenticationStatus.CHALLENGE_REQUIRED,
        )
        if not challenge:
            _authenticate(authentication, now)
        self._by_id[authentication.authentication_id] = authentication
        self._by_payment[payment_id] = authentication
        log.info(
            "3ds authentication started",
            payment_id=payment_id,
            three_ds_transaction_id=authentication.authentication_id,
            card=card.masked,
            status=authentication.status.value,
        )
        return authentication, True

    def get(self, authentication_id: str) -> Authentication:
        authentication = self._by_id.get(authentication_id)
        if authentication is None:
            raise NotFound(
                f"no 3-D Secure authentication {authentication_id}",
                reason="AUTHENTICATION_NOT_FOUND",
            )
        self.settle(authentication)
        return authentication

    def submit_otp(self, authentication_id: str, otp: str) -> Authentication:
        """The customer's OTP from the challenge page; once final, later ones change nothing."""
        authentication = self.get(authentication_id)
        if authentication.status is not AuthenticationStatus.CHALLENGE_REQUIRED:
            return authentication
        now = self._clock()
        if hmac.compare_digest(otp.strip().encode(), magic.ACS_OTP.encode()):
            _authenticate(authentication, now)
        else:
            _fail(authentication, now, OTP_INVALID)
        self._finished(authentication)
        return authentication

    def cancel(self, authentication_id: str) -> Authentication:
        """The customer gave up on the challenge page."""
        authentication = self.get(authentication_id)
        if authentication.status is AuthenticationStatus.CHALLENGE_REQUIRED:
            _fail(authentication, self._clock(), CUSTOMER_CANCELLED)
            self._finished(authentication)
        return authentication

    def settle(self, authentication: Authentication, as_of: float = 0.0) -> None:
        """Expire a challenge nobody completed in time (by now, or by `as_of` if later)."""
        if authentication.status is not AuthenticationStatus.CHALLENGE_REQUIRED:
            return
        expires_at = authentication.expires_at
        if expires_at is not None and expires_at <= max(self._clock(), as_of):
            _fail(authentication, expires_at, CHALLENGE_EXPIRED)
            self._finished(authentication)

    def verify(
        self,
        payment_id: str,
        three_ds_transaction_id: str,
        card: Card,
        amount_paisa: int,
        eci: str,
        authentication_value: str,
    ) -> bool:
        """Whether 3-D Secure data sent to an acquirer is what this ACS issued: an
        authenticated authentication of this payment, card and amount."""
        authentication = (
            self._by_id.get(three_ds_transaction_id)
            if three_ds_transaction_id
            else self._by_payment.get(payment_id)
        )
        if authentication is None:
            return False
        return (
            authentication.status is AuthenticationStatus.AUTHENTICATED
            and authentication.payment_id == payment_id
            and authentication.card.fingerprint == card.fingerprint
            and authentication.amount_paisa == amount_paisa
            and (not eci or eci == authentication.eci)
            and hmac.compare_digest(
                authentication_value.encode(), authentication.authentication_value.encode()
            )
        )

    def _finished(self, authentication: Authentication) -> None:
        log.info(
            "3ds challenge finished",
            payment_id=authentication.payment_id,
            three_ds_transaction_id=authentication.authentication_id,
            card=authentication.card.masked,
            status=authentication.callback_status,
            failure_code=authentication.failure_code,
        )
        self._on_final(authentication)


def page_path(authentication_id: str) -> str:
    return PAGE_ROUTE.format(authentication_id=quote(authentication_id, safe=""))


def _authenticate(authentication: Authentication, at: float) -> None:
    authentication.status = AuthenticationStatus.AUTHENTICATED
    authentication.finished_at = at
    authentication.expires_at = None
    authentication.eci = magic.ECI_AUTHENTICATED.get(
        authentication.card.brand, magic.ECI_AUTHENTICATED_DEFAULT
    )
    # CAVV/AAV: 20 bytes, base64, as issuers send them.
    authentication.authentication_value = base64.b64encode(secrets.token_bytes(20)).decode()


def _fail(authentication: Authentication, at: float, failure_code: str) -> None:
    authentication.status = AuthenticationStatus.FAILED
    authentication.finished_at = at
    authentication.expires_at = None
    authentication.failure_code = failure_code
