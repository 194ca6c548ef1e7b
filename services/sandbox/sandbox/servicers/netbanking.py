"""Net banking's gRPC face (paygate.sandbox.v1.NetBankingService) over the banks
(sandbox.netbanking).

It checks each request, calls the banks, and adds the magic bank codes' faults: a bank that is
unreachable, or that answers the initiation too late after registering the payment
(sandbox.faults).
"""

from __future__ import annotations

from gateway_core.auth import RpcContext
from gateway_core.errors import Unavailable
from gateway_core.logging import get_logger
from paygate.sandbox.v1 import netbanking_pb2, netbanking_pb2_grpc
from sandbox import magic
from sandbox.faults import answer_late
from sandbox.magic import BANKS, DOWN_BANK, HANGING_BANK
from sandbox.netbanking import BankPayment, BankPaymentStatus, NetBanks, page_path
from sandbox.validation import CURRENCY, Violations, one_of

log = get_logger(__name__)


class NetBankingServicer(netbanking_pb2_grpc.NetBankingServiceServicer):
    def __init__(self, banks: NetBanks, sandbox_public_url: str) -> None:
        self._banks = banks
        self._public_url = sandbox_public_url.rstrip("/")

    async def InitiateNetBankingPayment(
        self, request: netbanking_pb2.InitiateNetBankingPaymentRequest, context: RpcContext
    ) -> netbanking_pb2.NetBankingPayment:
        bank_code = _bank(request.bank_code)
        problems = Violations()
        problems.required("payment_id", request.payment_id)
        problems.positive("amount_paisa", request.amount_paisa)
        problems.currency("currency", request.currency)
        problems.required("return_url", request.return_url)
        problems.http_url("return_url", request.return_url)
        problems.http_url("callback_url", request.callback_url)
        problems.raise_if_any()
        if bank_code == DOWN_BANK:
            log.warning("bank unreachable (sandbox fault bank)", bank_code=bank_code)
            raise Unavailable(
                f"bank {bank_code} is unavailable; retry shortly", reason="BANK_UNAVAILABLE"
            )
        payment, created = self._banks.initiate(
            bank_code,
            request.payment_id,
            request.amount_paisa,
            request.return_url,
            request.callback_url,
            dict(request.notes),
        )
        if created and bank_code == HANGING_BANK:
            await answer_late(
                magic.NETBANKING_HANG_SECONDS,
                "InitiateNetBankingPayment",
                bank_code=bank_code,
                payment_id=request.payment_id,
            )
        return self._proto(payment)

    async def GetNetBankingPayment(
        self, request: netbanking_pb2.GetNetBankingPaymentRequest, context: RpcContext
    ) -> netbanking_pb2.NetBankingPayment:
        bank_code = _bank(request.bank_code)
        problems = Violations()
        problems.required("payment_id", request.payment_id)
        problems.raise_if_any()
        return self._proto(self._banks.get(bank_code, request.payment_id))

    async def CancelNetBankingPayment(
        self, request: netbanking_pb2.CancelNetBankingPaymentRequest, context: RpcContext
    ) -> netbanking_pb2.NetBankingPayment:
        bank_code = _bank(request.bank_code)
        problems = Violations()
        problems.required("payment_id", request.payment_id)
        problems.raise_if_any()
        return self._proto(self._banks.cancel(bank_code, request.payment_id))

    async def ListBanks(
        self, request: netbanking_pb2.ListBanksRequest, context: RpcContext
    ) -> netbanking_pb2.ListBanksResponse:
        return netbanking_pb2.ListBanksResponse(
            banks=[netbanking_pb2.Bank(bank_code=code, name=name) for code, name in BANKS.items()]
        )

    async def RefundNetBankingPayment(
        self, request: netbanking_pb2.RefundNetBankingPaymentRequest, context: RpcContext
    ) -> netbanking_pb2.RefundNetBankingPaymentResponse:
        bank_code = _bank(request.bank_code)
        problems = Violations()
        problems.required("payment_id", request.payment_id)
        problems.required("refund_id", request.refund_id)
        problems.positive("amount_paisa", request.amount_paisa)
        problems.currency("currency", request.currency)
        problems.raise_if_any()
        refund = self._banks.refund(
            bank_code, request.payment_id, request.refund_id, request.amount_paisa
        )
        return netbanking_pb2.RefundNetBankingPaymentResponse(
            status=refund.status.value,
            bank_refund_reference=refund.provider_refund_id,
            failure_code=refund.failure_code,
        )

    def _proto(self, payment: BankPayment) -> netbanking_pb2.NetBankingPayment:
        pending = payment.status is BankPaymentStatus.PENDING
        return netbanking_pb2.NetBankingPayment(
            payment_id=payment.payment_id,
            bank_code=payment.bank_code,
            status=payment.status.value,
            redirect_url=self.page_url(payment) if pending else "",
            bank_reference=payment.bank_reference,
            amount_paisa=payment.amount_paisa,
            currency=CURRENCY,
            failure_code=payment.failure_code,
        )

    def page_url(self, payment: BankPayment) -> str:
        return f"{self._public_url}{page_path(payment.bank_code, payment.payment_id)}"


def _bank(value: str) -> str:
    return one_of("bank_code", value.strip().upper(), BANKS)
