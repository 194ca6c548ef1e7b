"""Card acquirers and their 3-D Secure ACS: registered so the mesh is complete and healthy;
every method answers UNIMPLEMENTED until the cards issue builds them."""

from __future__ import annotations

from paygate.sandbox.v1 import cards_pb2_grpc


class CardAcquirerServicer(cards_pb2_grpc.CardAcquirerServiceServicer):
    pass
