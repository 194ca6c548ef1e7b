"""Client for the tokenization vault. The orchestrator holds tokens, never card numbers: a
PAN exists here only in the Detokenize answer, passed straight on to an acquirer call."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from gateway_core.errors import FieldViolation, InvalidArgument
from orchestrator.providers.base import call_provider
from paygate.vault.v1 import vault_pb2, vault_pb2_grpc

TIMEOUT_SECONDS = 3.0
NAME = "the card vault"


@dataclass(frozen=True)
class CardMeta:
    token: str
    merchant_id: str
    last4: str
    brand: str
    issuer: str
    fingerprint: str
    expiry_month: str
    expiry_year: str
    holder_name: str


class VaultClient:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = vault_pb2_grpc.VaultServiceStub(channel)

    async def tokenize(
        self,
        *,
        merchant_id: str,
        user_id: str,
        card_number: str,
        expiry_month: str,
        expiry_year: str,
        cvv: str,
        holder_name: str,
        field_prefix: str,
    ) -> CardMeta:
        """Raw card in, token out. The vault's field errors are renamed to where the card sat
        in the caller's request (e.g. `payment_details.card.card_number`)."""
        try:
            reply = await call_provider(
                NAME,
                self._stub.Tokenize(
                    vault_pb2.TokenizeRequest(
                        merchant_id=merchant_id,
                        user_id=user_id,
                        card_number=card_number,
                        expiry_month=expiry_month,
                        expiry_year=expiry_year,
                        cvv=cvv,
                        holder_name=holder_name,
                    ),
                    timeout=TIMEOUT_SECONDS,
                ),
            )
        except InvalidArgument as exc:
            raise InvalidArgument(
                exc.message,
                reason=exc.reason,
                field_violations=[
                    FieldViolation(f"{field_prefix}{v.field}", v.description)
                    for v in exc.field_violations
                ],
            ) from None
        return CardMeta(
            token=reply.token,
            merchant_id=merchant_id,
            last4=reply.last4,
            brand=vault_pb2.CardBrand.Name(reply.brand),
            issuer=reply.issuer,
            fingerprint=reply.fingerprint,
            expiry_month=reply.expiry_month,
            expiry_year=reply.expiry_year,
            holder_name=reply.holder_name,
        )

    async def card(self, token: str) -> CardMeta:
        reply = await call_provider(
            NAME, self._stub.GetCard(vault_pb2.GetCardRequest(token=token), timeout=TIMEOUT_SECONDS)
        )
        return CardMeta(
            token=reply.token,
            merchant_id=reply.merchant_id,
            last4=reply.last4,
            brand=vault_pb2.CardBrand.Name(reply.brand),
            issuer=reply.issuer,
            fingerprint=reply.fingerprint,
            expiry_month=reply.expiry_month,
            expiry_year=reply.expiry_year,
            holder_name=reply.holder_name,
        )

    async def detokenize(
        self, token: str, *, payment_id: str, reason: str
    ) -> vault_pb2.DetokenizeResponse:
        reply: vault_pb2.DetokenizeResponse = await call_provider(
            NAME,
            self._stub.Detokenize(
                vault_pb2.DetokenizeRequest(token=token, payment_id=payment_id, reason=reason),
                timeout=TIMEOUT_SECONDS,
            ),
        )
        return reply

    async def release_cvv(self, token: str, payment_id: str) -> None:
        await call_provider(
            NAME,
            self._stub.ReleaseCvv(
                vault_pb2.ReleaseCvvRequest(token=token, payment_id=payment_id),
                timeout=TIMEOUT_SECONDS,
            ),
        )

    async def delete(self, token: str) -> None:
        await call_provider(
            NAME,
            self._stub.DeleteToken(
                vault_pb2.DeleteTokenRequest(token=token), timeout=TIMEOUT_SECONDS
            ),
        )
