"""paygate.payments.v1.PaymentMethodService: saved cards.

Every method answers UNIMPLEMENTED (HTTP 501) until the cards issue builds the vault flow.
"""

from __future__ import annotations

from paygate.payments.v1 import payment_methods_pb2_grpc


class PaymentMethodServicer(payment_methods_pb2_grpc.PaymentMethodServiceServicer):
    pass
