"""UPI payments through the UPI switch (UPI Core)."""

from orchestrator.connectors.upi.connector import UpiConnector
from orchestrator.connectors.upi.details import UpiDetails

__all__ = ["UpiConnector", "UpiDetails"]
