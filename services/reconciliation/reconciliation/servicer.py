"""paygate.reconciliation.v1.ReconciliationService (DESIGN.md §8).

Not implemented yet: every method answers UNIMPLEMENTED (the generated base class's behaviour),
which Envoy returns as HTTP 501. The reconciliation issue fills in settlement file ingestion,
matching and reports; the disputes and analytics issues fill in the rest.
"""

from __future__ import annotations

from paygate.reconciliation.v1 import reconciliation_pb2_grpc


class ReconciliationServicer(reconciliation_pb2_grpc.ReconciliationServiceServicer):
    """Reconciles provider settlements with our books and reports on payments."""
