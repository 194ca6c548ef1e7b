"""Net banking payments: a redirect to the customer's bank."""

from orchestrator.connectors.netbanking.connector import NetBankingConnector, NetBankingDetails

__all__ = ["NetBankingConnector", "NetBankingDetails"]
