"""paygate.payments.v1.PaymentMethodService: cards customers save with a merchant.

The card goes to the vault at once; this service keeps the token and display data only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import asyncpg
from google.protobuf import empty_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from gateway_core.auth import RpcContext, caller_from_context
from gateway_core.errors import NotFound
from gateway_core.ids import new_id
from orchestrator.providers.vault import VaultClient
from orchestrator.servicers.validation import validate_tokenize, validate_user_id
from paygate.payments.v1 import payment_methods_pb2, payment_methods_pb2_grpc, payments_pb2


class PaymentMethodServicer(payment_methods_pb2_grpc.PaymentMethodServiceServicer):
    def __init__(self, pool: asyncpg.Pool, vault: VaultClient) -> None:
        self._pool = pool
        self._vault = vault

    async def TokenizePaymentMethod(
        self, request: payment_methods_pb2.TokenizePaymentMethodRequest, context: RpcContext
    ) -> payment_methods_pb2.SavedPaymentMethod:
        caller = caller_from_context(context)
        validate_tokenize(request)
        card = await self._vault.tokenize(
            merchant_id=caller.merchant_id,
            user_id=request.user_id,
            card_number=request.details.card_number,
            expiry_month=request.details.expiry_month,
            expiry_year=request.details.expiry_year,
            cvv=request.details.cvv,
            holder_name=request.details.holder_name,
            field_prefix="details.",
        )
        row = await self._pool.fetchrow(
            "INSERT INTO saved_payment_methods (payment_method_id, merchant_id, user_id, token,"
            " fingerprint, last4, brand, issuer, expiry_month, expiry_year, holder_name,"
            " display_name) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
            " ON CONFLICT (merchant_id, user_id, fingerprint) DO UPDATE"
            " SET expiry_month = EXCLUDED.expiry_month, expiry_year = EXCLUDED.expiry_year"
            " RETURNING *",
            new_id("PM"),
            caller.merchant_id,
            request.user_id,
            card.token,
            card.fingerprint,
            card.last4,
            card.brand,
            card.issuer,
            card.expiry_month,
            card.expiry_year,
            card.holder_name,
            f"**** **** **** {card.last4}",
        )
        assert row is not None
        return _saved(row)

    async def ListUserPaymentMethods(
        self, request: payment_methods_pb2.ListUserPaymentMethodsRequest, context: RpcContext
    ) -> payment_methods_pb2.ListUserPaymentMethodsResponse:
        caller = caller_from_context(context)
        validate_user_id(request.user_id)
        rows = await self._pool.fetch(
            "SELECT * FROM saved_payment_methods WHERE merchant_id = $1 AND user_id = $2"
            " ORDER BY created_at, payment_method_id",
            caller.merchant_id,
            request.user_id,
        )
        return payment_methods_pb2.ListUserPaymentMethodsResponse(
            payment_methods=[_saved(r) for r in rows]
        )

    async def DeletePaymentMethod(
        self, request: payment_methods_pb2.DeletePaymentMethodRequest, context: RpcContext
    ) -> empty_pb2.Empty:
        caller = caller_from_context(context)
        validate_user_id(request.user_id)
        token = await self._pool.fetchval(
            "DELETE FROM saved_payment_methods WHERE payment_method_id = $1"
            " AND merchant_id = $2 AND user_id = $3 RETURNING token",
            request.payment_method_id,
            caller.merchant_id,
            request.user_id,
        )
        if token is None:
            raise NotFound(
                f"payment method {request.payment_method_id} not found",
                reason="PAYMENT_METHOD_NOT_FOUND",
            )
        await self._vault.delete(token)
        return empty_pb2.Empty()


def _saved(row: Mapping[str, Any]) -> payment_methods_pb2.SavedPaymentMethod:
    created = Timestamp()
    created.FromDatetime(row["created_at"])
    return payment_methods_pb2.SavedPaymentMethod(
        payment_method_id=row["payment_method_id"],
        user_id=row["user_id"],
        type=payments_pb2.CARD,
        token=row["token"],
        display_name=row["display_name"],
        card=payments_pb2.CardSummary(
            last4=row["last4"],
            brand=row["brand"],
            issuer=row["issuer"],
            expiry_month=row["expiry_month"],
            expiry_year=row["expiry_year"],
        ),
        fingerprint=row["fingerprint"],
        created_at=created,
    )
