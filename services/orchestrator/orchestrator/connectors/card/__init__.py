"""Card payments: vault tokens, 3-D Secure, routing and failover across acquirers, EMI."""

from orchestrator.connectors.card.connector import CardConnector
from orchestrator.connectors.card.details import CardDetails, CardInput

__all__ = ["CardConnector", "CardDetails", "CardInput"]
