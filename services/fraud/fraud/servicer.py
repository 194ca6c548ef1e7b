"""paygate.fraud.v1.FraudService (DESIGN.md §5).

Not implemented yet: every method answers UNIMPLEMENTED (the generated base class's behaviour).
The fraud-scoring issue fills in CheckTransaction: YAML rules, Redis velocity windows, device
risk and the ML model.
"""

from __future__ import annotations

from paygate.fraud.v1 import fraud_pb2_grpc


class FraudServicer(fraud_pb2_grpc.FraudServiceServicer):
    """Scores payments for the orchestrator."""
