"""`python -m sandbox`: the simulated providers."""

from __future__ import annotations

from gateway_core.config import get_settings
from gateway_core.server import ServiceApp, run_service
from paygate.sandbox.v1 import (
    cards_pb2_grpc,
    netbanking_pb2_grpc,
    upi_pb2_grpc,
    wallets_pb2_grpc,
)
from sandbox.providers import CardAcquirerServicer, NetBankingServicer, WalletProviderServicer
from sandbox.upi import UpiCoreServicer


async def main() -> None:
    app = ServiceApp("sandbox", get_settings())
    app.add_service(
        "paygate.sandbox.v1.UpiCoreService",
        upi_pb2_grpc.add_UpiCoreServiceServicer_to_server,
        UpiCoreServicer(),
    )
    app.add_service(
        "paygate.sandbox.v1.CardAcquirerService",
        cards_pb2_grpc.add_CardAcquirerServiceServicer_to_server,
        CardAcquirerServicer(),
    )
    app.add_service(
        "paygate.sandbox.v1.WalletProviderService",
        wallets_pb2_grpc.add_WalletProviderServiceServicer_to_server,
        WalletProviderServicer(),
    )
    app.add_service(
        "paygate.sandbox.v1.NetBankingService",
        netbanking_pb2_grpc.add_NetBankingServiceServicer_to_server,
        NetBankingServicer(),
    )
    await app.run()


if __name__ == "__main__":
    run_service(main)
