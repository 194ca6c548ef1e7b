"""paygate.vault.v1.VaultService (DESIGN.md §6): the card vault's gRPC face.

Every method first checks the caller's service identity (`x-service-token`, see
`gateway_core.service_auth`): only the services in `CALLERS` may call it, whatever the network
allows. Requests for card data (Detokenize, ReleaseCvv) are audited whether they are allowed,
refused or invalid. Errors name fields, never their values.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from google.protobuf import empty_pb2

from gateway_core.auth import RpcContext
from gateway_core.cards import contains_card_number, validate_card
from gateway_core.config import Settings
from gateway_core.errors import FieldViolation, GatewayError, InvalidArgument
from gateway_core.limits import MAX_HOLDER_NAME_CHARS, MAX_USER_ID_CHARS
from gateway_core.logging import get_logger
from gateway_core.service_auth import claimed_service, verify_service_token
from paygate.vault.v1 import vault_pb2, vault_pb2_grpc
from vault.repository import TOKEN_FORMAT
from vault.service import DETOKENIZE, RELEASE_CVV, Access, CardVault, NewCard

log = get_logger(__name__)

AUDIENCE = "tokenization-vault"
ORCHESTRATOR = "orchestrator"
# Who may call what. Card data goes to the orchestrator alone (DESIGN.md §6); it is also the only
# service that holds tokens, so it is the only caller of everything else too. Key rotation for
# humans goes through `python -m vault rotate-keys` inside the vault's own deployment.
CALLERS: Mapping[str, frozenset[str]] = {
    "Tokenize": frozenset({ORCHESTRATOR}),
    "Detokenize": frozenset({ORCHESTRATOR}),
    "GetCard": frozenset({ORCHESTRATOR}),
    "DeleteToken": frozenset({ORCHESTRATOR}),
    "ReleaseCvv": frozenset({ORCHESTRATOR}),
    "RotateKeys": frozenset({ORCHESTRATOR}),
}
MAX_MERCHANT_ID = 64
MAX_AUDIT_FIELD = 200


def service_keys(settings: Settings) -> dict[str, str]:
    """The HS256 keys of the services the vault trusts, by service name."""
    return {ORCHESTRATOR: settings.secret("orchestrator_service_key")}


class VaultServicer(vault_pb2_grpc.VaultServiceServicer):
    """Tokenizes cards and hands card data back to the orchestrator only."""

    def __init__(self, vault: CardVault, service_keys: Mapping[str, str]) -> None:
        self._vault = vault
        self._service_keys = dict(service_keys)

    async def Tokenize(
        self, request: vault_pb2.TokenizeRequest, context: RpcContext
    ) -> vault_pb2.TokenizeResponse:
        self._caller("Tokenize", context)
        new = _new_card(request, datetime.now(UTC))
        record = await self._vault.tokenize(new)
        return vault_pb2.TokenizeResponse(
            token=record.token,
            last4=record.last4,
            brand=record.brand,
            issuer=record.issuer,
            fingerprint=record.fingerprint,
            expiry_month=record.expiry_month,
            expiry_year=record.expiry_year,
            holder_name=record.holder_name,
        )

    async def Detokenize(
        self, request: vault_pb2.DetokenizeRequest, context: RpcContext
    ) -> vault_pb2.DetokenizeResponse:
        access = await self._card_data_access(
            DETOKENIZE, "Detokenize", request.token, request.payment_id, request.reason, context
        )
        revealed = await self._vault.detokenize(request.token, access)
        log.info(
            "card detokenized",
            token=request.token,
            payment_id=access.payment_id,
            caller=access.caller,
        )
        return vault_pb2.DetokenizeResponse(
            card_number=revealed.card_number,
            expiry_month=revealed.expiry_month,
            expiry_year=revealed.expiry_year,
            holder_name=revealed.holder_name,
            cvv=revealed.cvv,
        )

    async def GetCard(
        self, request: vault_pb2.GetCardRequest, context: RpcContext
    ) -> vault_pb2.Card:
        self._caller("GetCard", context)
        _check_token(request.token)
        record = await self._vault.card(request.token)
        return record.to_proto()

    async def DeleteToken(
        self, request: vault_pb2.DeleteTokenRequest, context: RpcContext
    ) -> empty_pb2.Empty:
        caller = self._caller("DeleteToken", context)
        _check_token(request.token)
        await self._vault.delete(request.token)
        log.info("card token deleted", token=request.token, caller=caller)
        return empty_pb2.Empty()

    async def ReleaseCvv(
        self, request: vault_pb2.ReleaseCvvRequest, context: RpcContext
    ) -> empty_pb2.Empty:
        access = await self._card_data_access(
            RELEASE_CVV, "ReleaseCvv", request.token, request.payment_id, "", context
        )
        await self._vault.release_cvv(request.token, access)
        return empty_pb2.Empty()

    async def RotateKeys(
        self, request: vault_pb2.RotateKeysRequest, context: RpcContext
    ) -> vault_pb2.RotateKeysResponse:
        caller = self._caller("RotateKeys", context)
        keys = await self._vault.rotate_keys()
        log.info("key rotation requested", caller=caller, primary_key_id=keys.primary_key_id)
        return vault_pb2.RotateKeysResponse(
            primary_key_id=keys.primary_key_id, key_ids=list(keys.key_ids)
        )

    def _caller(self, method: str, context: RpcContext) -> str:
        allowed = CALLERS[method]
        trusted = {name: key for name, key in self._service_keys.items() if name in allowed}
        return verify_service_token(context, AUDIENCE, trusted)

    async def _card_data_access(
        self,
        action: str,
        method: str,
        token: str,
        payment_id: str,
        reason: str,
        context: RpcContext,
    ) -> Access:
        """The verified caller of a request for card data; every refusal is audited first."""
        try:
            caller = self._caller(method, context)
        except GatewayError as refused:
            access = Access(caller="", payment_id=payment_id, reason=reason)
            await self._vault.audit_refusal(
                action, token, access, refused.reason, claimed_caller=claimed_service(context)
            )
            log.warning(
                "card data request refused",
                action=action,
                token=token if TOKEN_FORMAT.fullmatch(token) else "(not a token)",
                claimed_caller=claimed_service(context),
                refusal=refused.reason,
            )
            raise
        access = Access(caller=caller, payment_id=payment_id, reason=reason)
        problems = _card_data_violations(
            token, payment_id, reason, require_reason=action == DETOKENIZE
        )
        if problems:
            await self._vault.audit_bad_request(action, token, access)
            raise InvalidArgument.for_fields(problems)
        return access


def _new_card(request: vault_pb2.TokenizeRequest, now: datetime) -> NewCard:
    """The request's card, every field checked; all violations reported at once."""
    problems: list[FieldViolation] = []
    merchant_id = request.merchant_id.strip()
    if not merchant_id:
        problems.append(FieldViolation("merchant_id", "is required"))
    elif len(merchant_id) > MAX_MERCHANT_ID or contains_card_number(merchant_id):
        problems.append(FieldViolation("merchant_id", "is not a merchant id"))
    if len(request.user_id) > MAX_USER_ID_CHARS:
        problems.append(
            FieldViolation("user_id", f"must be at most {MAX_USER_ID_CHARS} characters")
        )
    elif contains_card_number(request.user_id):
        problems.append(FieldViolation("user_id", "must not contain a card number"))
    holder_name = " ".join(request.holder_name.split())
    if len(holder_name) > MAX_HOLDER_NAME_CHARS:
        problems.append(
            FieldViolation("holder_name", f"must be at most {MAX_HOLDER_NAME_CHARS} characters")
        )
    elif any(ch.isdigit() for ch in holder_name):
        problems.append(FieldViolation("holder_name", "must not contain digits"))
    try:
        card = validate_card(
            request.card_number, request.expiry_month, request.expiry_year, request.cvv, now
        )
    except InvalidArgument as exc:
        # The card's own violations first: they are what a client most likely got wrong.
        raise InvalidArgument.for_fields(
            [*exc.field_violations, *problems],
            reason=exc.reason if not problems else "INVALID_CARD",
        ) from None
    if problems:
        raise InvalidArgument.for_fields(problems)
    return NewCard(
        merchant_id=merchant_id, user_id=request.user_id, holder_name=holder_name, card=card
    )


def _check_token(token: str) -> None:
    if not token:
        raise InvalidArgument.for_fields([FieldViolation("token", "is required")])
    if not TOKEN_FORMAT.fullmatch(token):
        raise InvalidArgument.for_fields([FieldViolation("token", "is not a card token")])


def _card_data_violations(
    token: str, payment_id: str, reason: str, *, require_reason: bool
) -> list[FieldViolation]:
    problems: list[FieldViolation] = []
    if not token:
        problems.append(FieldViolation("token", "is required"))
    elif not TOKEN_FORMAT.fullmatch(token):
        problems.append(FieldViolation("token", "is not a card token"))
    if not payment_id.strip():
        problems.append(FieldViolation("payment_id", "is required (it is recorded in the audit)"))
    elif len(payment_id) > MAX_AUDIT_FIELD:
        problems.append(
            FieldViolation("payment_id", f"must be at most {MAX_AUDIT_FIELD} characters")
        )
    if require_reason and not reason.strip():
        problems.append(FieldViolation("reason", "is required (it is recorded in the audit)"))
    elif len(reason) > MAX_AUDIT_FIELD:
        problems.append(FieldViolation("reason", f"must be at most {MAX_AUDIT_FIELD} characters"))
    return problems
