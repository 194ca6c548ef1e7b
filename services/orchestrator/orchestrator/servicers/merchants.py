"""paygate.merchants.v1.MerchantService (admin only; Envoy enforces the role, and so do we).

The one exception is inside the mesh: a merchant's own record may be read as that merchant
(GetMerchant), which is how the webhook service learns the name to put on a receipt without
acting as an admin. Envoy still refuses every MerchantService call without the admin role.
"""

from __future__ import annotations

import re

import asyncpg

from gateway_core.auth import RpcContext, caller_from_context, require_admin
from gateway_core.errors import AlreadyExists, NotFound, PermissionDenied, invalid_field
from gateway_core.ids import new_id
from orchestrator import ledger_store
from orchestrator.repository import Repository
from orchestrator.servicers.validation import validate_create_merchant
from orchestrator.servicers.wire import merchant_message
from orchestrator.settings import Settings
from paygate.merchants.v1 import merchants_pb2, merchants_pb2_grpc

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200


class MerchantServicer(merchants_pb2_grpc.MerchantServiceServicer):
    def __init__(self, repo: Repository, settings: Settings) -> None:
        self._repo = repo
        self._vpa_domain = settings.merchant_vpa_domain

    async def CreateMerchant(
        self, request: merchants_pb2.CreateMerchantRequest, context: RpcContext
    ) -> merchants_pb2.Merchant:
        require_admin(context)
        validate_create_merchant(request)
        merchant_id = new_id("MER")
        vpa = request.vpa or self._assign_vpa(request.name, merchant_id)
        try:
            record = await self._repo.create_merchant(
                merchant_id=merchant_id,
                name=request.name.strip(),
                email=request.email,
                vpa=vpa,
                category=request.category,
            )
        except asyncpg.UniqueViolationError as exc:
            raise AlreadyExists(
                f"VPA {vpa} belongs to another merchant", reason="VPA_TAKEN"
            ) from exc
        return merchant_message(record)

    async def GetMerchant(
        self, request: merchants_pb2.GetMerchantRequest, context: RpcContext
    ) -> merchants_pb2.Merchant:
        caller = caller_from_context(context)
        if not caller.is_admin and caller.merchant_id != request.merchant_id:
            raise PermissionDenied("this operation needs the admin role", reason="ADMIN_REQUIRED")
        record = await self._repo.get_merchant(request.merchant_id)
        if record is None:
            raise NotFound(f"merchant {request.merchant_id} not found", reason="MERCHANT_NOT_FOUND")
        return merchant_message(record)

    async def ListMerchants(
        self, request: merchants_pb2.ListMerchantsRequest, context: RpcContext
    ) -> merchants_pb2.ListMerchantsResponse:
        require_admin(context)
        if request.page_size < 0 or request.page_size > MAX_PAGE_SIZE:
            raise invalid_field("page_size", f"must be between 1 and {MAX_PAGE_SIZE}")
        limit = request.page_size or DEFAULT_PAGE_SIZE
        records = await self._repo.list_merchants(limit=limit + 1, after_id=request.page_token)
        page = records[:limit]
        return merchants_pb2.ListMerchantsResponse(
            merchants=[merchant_message(r) for r in page],
            next_page_token=page[-1].merchant_id if len(records) > limit else "",
        )

    async def GetMerchantBalance(
        self, request: merchants_pb2.GetMerchantBalanceRequest, context: RpcContext
    ) -> merchants_pb2.MerchantBalance:
        require_admin(context)
        if await self._repo.get_merchant(request.merchant_id) is None:
            raise NotFound(f"merchant {request.merchant_id} not found", reason="MERCHANT_NOT_FOUND")
        currency = request.currency or "INR"
        balance = await ledger_store.merchant_balance(
            self._repo.pool, request.merchant_id, currency
        )
        return merchants_pb2.MerchantBalance(
            merchant_id=request.merchant_id,
            currency=currency,
            payable_paisa=balance.payable_paisa,
            captured_paisa=balance.captured_paisa,
            fees_paisa=balance.fees_paisa,
            tax_paisa=balance.tax_paisa,
            refunded_paisa=balance.refunded_paisa,
        )

    def _assign_vpa(self, name: str, merchant_id: str) -> str:
        handle = re.sub(r"[^a-z0-9]+", "", name.lower())[:20] or "merchant"
        return f"{handle}.{merchant_id[-6:].lower()}@{self._vpa_domain}"
