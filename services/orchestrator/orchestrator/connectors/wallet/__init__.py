"""Wallet payments (Paytm, PhonePe, Google Pay, Amazon Pay)."""

from orchestrator.connectors.wallet.connector import WALLETS, WalletConnector
from orchestrator.connectors.wallet.details import WalletDetails

__all__ = ["WALLETS", "WalletConnector", "WalletDetails"]
