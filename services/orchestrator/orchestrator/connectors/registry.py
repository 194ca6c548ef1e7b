"""Which connector serves which payment method: the one place that lists the methods."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import grpc

from gateway_core.errors import InvalidArgument
from orchestrator.connectors.base import (
    DetailsType,
    PaymentBooks,
    PaymentConnector,
    provider_callback_url,
)
from orchestrator.connectors.card import CardConnector
from orchestrator.connectors.card.client import ACS_PROVIDER, AcquirerClient
from orchestrator.connectors.card.routing import CircuitBreaker, RoutingTable
from orchestrator.connectors.netbanking import NetBankingConnector
from orchestrator.connectors.netbanking.client import PROVIDER_NAME as NETBANKING_PROVIDER
from orchestrator.connectors.netbanking.client import NetBankingClient
from orchestrator.connectors.upi import UpiConnector
from orchestrator.connectors.upi.client import PROVIDER_NAME as UPI_PROVIDER
from orchestrator.connectors.upi.client import UpiCoreClient
from orchestrator.connectors.wallet import WalletConnector
from orchestrator.connectors.wallet.client import WalletClient
from orchestrator.providers.vault import VaultClient
from orchestrator.settings import Settings

# The connector types by PaymentMethod name: what validation needs before any instance exists.
CONNECTOR_TYPES: Mapping[str, type[PaymentConnector]] = {
    connector.method: connector
    for connector in (UpiConnector, CardConnector, WalletConnector, NetBankingConnector)
}
METHODS: tuple[str, ...] = tuple(CONNECTOR_TYPES)
# What each method's payments keep, by PaymentMethod name.
DETAILS_TYPES: Mapping[str, DetailsType] = {
    method: connector.details_type for method, connector in CONNECTOR_TYPES.items()
}
MANUAL_CAPTURE_METHODS: tuple[str, ...] = tuple(
    sorted(method for method, connector in CONNECTOR_TYPES.items() if connector.manual_capture)
)


class Connectors:
    """The running service's connectors, one per method."""

    def __init__(self, connectors: Iterable[PaymentConnector]) -> None:
        self._by_method = {connector.method: connector for connector in connectors}

    def __getitem__(self, method: str) -> PaymentConnector:
        connector = self._by_method.get(method)
        if connector is None:
            raise InvalidArgument(f"{method} payments are not available", reason="BAD_METHOD")
        return connector


def build_connectors(
    settings: Settings,
    channel: Callable[[str], grpc.aio.Channel],
    *,
    vault: VaultClient,
    books: PaymentBooks,
) -> Connectors:
    """Every method's connector, wired to its provider's endpoint (`channel(address)`)."""
    public = settings.gateway_public_url
    return Connectors(
        [
            UpiConnector(
                UpiCoreClient(channel(settings.upi_core_endpoint)),
                callback_url=provider_callback_url(public, UPI_PROVIDER),
            ),
            WalletConnector(WalletClient(channel(_wallet_endpoint(settings)))),
            NetBankingConnector(
                NetBankingClient(channel(settings.netbanking_endpoint)),
                callback_url=provider_callback_url(public, NETBANKING_PROVIDER),
                default_return_url=f"{public}/health",
            ),
            CardConnector(
                vault,
                AcquirerClient(channel(settings.card_acquirer_endpoint)),
                RoutingTable.load(Path(settings.card_routing_config_path)),
                CircuitBreaker(),
                books,
                callback_url=provider_callback_url(public, ACS_PROVIDER),
                default_return_url=f"{public.rstrip('/')}/health",
            ),
        ]
    )


def _wallet_endpoint(settings: Settings) -> str:
    """Every wallet provider sits behind one endpoint today (the sandbox in development)."""
    endpoints = set(settings.wallet_api_endpoints.values())
    if len(endpoints) != 1:
        raise ValueError("WALLET_API_ENDPOINTS must point every wallet at one endpoint for now")
    return endpoints.pop()
