"""UPI payments through the UPI switch (UPI Core)."""

from orchestrator.connectors.upi.connector import UpiConnector, UpiDetails

__all__ = ["UpiConnector", "UpiDetails"]
