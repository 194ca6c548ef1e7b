"""Net banking payments: a redirect to the customer's bank."""

from orchestrator.connectors.netbanking.connector import NetBankingConnector
from orchestrator.connectors.netbanking.details import NetBankingDetails

__all__ = ["NetBankingConnector", "NetBankingDetails"]
