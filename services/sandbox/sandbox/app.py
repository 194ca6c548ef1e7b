"""The sandbox put together: every simulated provider, their shared callback sender and the
HTTP server, wired into one ServiceApp (gRPC and HTTP in one process and event loop)."""

from __future__ import annotations

import secrets

from gateway_core.server import ServiceApp
from paygate.sandbox.v1 import (
    cards_pb2_grpc,
    disputes_pb2_grpc,
    netbanking_pb2_grpc,
    upi_pb2_grpc,
    wallets_pb2_grpc,
)
from sandbox import magic, netbanking, upi, wallets
from sandbox.acquirers import Acquirers
from sandbox.acs import Acs, Authentication
from sandbox.callbacks import CallbackSender
from sandbox.disputes import DisputeDesk
from sandbox.netbanking import BankPayment, NetBanks
from sandbox.servicers.cards import CardAcquirerServicer
from sandbox.servicers.disputes import DisputeNetworkServicer
from sandbox.servicers.netbanking import NetBankingServicer
from sandbox.servicers.upi import UpiCoreServicer
from sandbox.servicers.wallets import WalletProviderServicer
from sandbox.settings import Settings
from sandbox.settlements import CARD, NET_BANKING, UPI, WALLET, ProviderInfo, SettlementReports
from sandbox.upi import UpiSwitch, UpiTransaction
from sandbox.wallets import WalletBook
from sandbox.web import SandboxWeb

# Every simulated provider, as payments name it, with its method: the settlement files' list.
PROVIDERS: tuple[ProviderInfo, ...] = (
    ProviderInfo(upi.PROVIDER, UPI),
    *(ProviderInfo(gateway, CARD) for gateway in magic.CARD_GATEWAYS),
    *(ProviderInfo(wallets.provider_name(wallet), WALLET) for wallet in magic.WALLETS),
    ProviderInfo(netbanking.PROVIDER, NET_BANKING),
)


class Sandbox:
    """Build inside the running event loop; `register` hands everything to a ServiceApp."""

    def __init__(
        self,
        settings: Settings,
        callbacks: CallbackSender | None = None,
        *,
        acs_challenge_ttl_seconds: float = magic.ACS_CHALLENGE_TTL_SECONDS,
    ) -> None:
        self.callbacks = callbacks or CallbackSender(
            settings.callback_secrets(), settings.gateway_public_url
        )
        self.upi = UpiSwitch(
            settings.sandbox_upi_approval_delay_ms / 1000, on_final=self._upi_final
        )
        self.banks = NetBanks(on_final=self._bank_final)
        self.wallets = WalletBook()
        self.acs = Acs(on_final=self._acs_final, challenge_ttl_seconds=acs_challenge_ttl_seconds)
        self.acquirers = Acquirers(self.acs)
        self.disputes = DisputeDesk(
            self.acquirers,
            self.upi,
            self.callbacks,
            respond_within_seconds=settings.sandbox_dispute_respond_within_seconds,
            decision_delay_seconds=settings.sandbox_dispute_decision_delay_ms / 1000,
        )
        self._chargeback_delay = settings.sandbox_chargeback_delay_ms / 1000
        self.settlements = SettlementReports(
            PROVIDERS,
            (self.upi, self.acquirers, self.wallets, self.banks, self.disputes),
            cycle_days=settings.sandbox_settlement_cycle_days,
            # Settlement ids and UTRs differ from one sandbox run to the next, as a
            # restarted sandbox's books do.
            salt=secrets.token_hex(16),
        )
        self.web = SandboxWeb(
            settings.server_host,
            settings.sandbox_http_port,
            self.upi,
            self.banks,
            self.acs,
            books=(self.upi, self.wallets, self.banks, self.acquirers),
            settlements=self.settlements,
            report_keys=settings.report_keys(),
            disputes=self.disputes,
        )
        self._upi_servicer = UpiCoreServicer(self.upi)
        self._card_servicer = CardAcquirerServicer(
            self.acquirers,
            self.acs,
            settings.sandbox_public_url,
            on_chargeback_capture=lambda gateway, payment_id: self.disputes.raise_later(
                gateway, payment_id, self._chargeback_delay
            ),
        )
        self._dispute_servicer = DisputeNetworkServicer(self.disputes)
        self._wallet_servicer = WalletProviderServicer(self.wallets)
        self._netbanking_servicer = NetBankingServicer(self.banks, settings.sandbox_public_url)

    def register(self, app: ServiceApp) -> None:
        app.add_service(
            "paygate.sandbox.v1.UpiCoreService",
            upi_pb2_grpc.add_UpiCoreServiceServicer_to_server,
            self._upi_servicer,
        )
        app.add_service(
            "paygate.sandbox.v1.CardAcquirerService",
            cards_pb2_grpc.add_CardAcquirerServiceServicer_to_server,
            self._card_servicer,
        )
        app.add_service(
            "paygate.sandbox.v1.WalletProviderService",
            wallets_pb2_grpc.add_WalletProviderServiceServicer_to_server,
            self._wallet_servicer,
        )
        app.add_service(
            "paygate.sandbox.v1.NetBankingService",
            netbanking_pb2_grpc.add_NetBankingServiceServicer_to_server,
            self._netbanking_servicer,
        )
        app.add_service(
            "paygate.sandbox.v1.DisputeNetworkService",
            disputes_pb2_grpc.add_DisputeNetworkServiceServicer_to_server,
            self._dispute_servicer,
        )
        app.add_background_task("http", self.web.serve)
        app.on_shutdown(self.aclose)

    async def aclose(self) -> None:
        """Stop the UPI and ACS timers, then the callback deliveries still pending."""
        await self._upi_servicer.aclose()
        await self._card_servicer.aclose()
        await self._wallet_servicer.aclose()
        await self.disputes.aclose()
        await self.callbacks.aclose()

    def _upi_final(self, txn: UpiTransaction) -> None:
        self.callbacks.send(txn.to_callback(), txn.callback_url)

    def _bank_final(self, payment: BankPayment) -> None:
        self.callbacks.send(payment.to_callback(), payment.callback_url)

    def _acs_final(self, authentication: Authentication) -> None:
        self.callbacks.send(authentication.to_callback(), authentication.callback_url)
