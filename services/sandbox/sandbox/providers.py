"""Card acquirers, wallets and net banking: registered so the mesh is complete and healthy;
every method answers UNIMPLEMENTED until the payments-core and cards issues build them."""

from __future__ import annotations

from paygate.sandbox.v1 import cards_pb2_grpc, netbanking_pb2_grpc, wallets_pb2_grpc


class CardAcquirerServicer(cards_pb2_grpc.CardAcquirerServiceServicer):
    pass


class WalletProviderServicer(wallets_pb2_grpc.WalletProviderServiceServicer):
    pass


class NetBankingServicer(netbanking_pb2_grpc.NetBankingServiceServicer):
    pass
