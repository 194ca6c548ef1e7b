"""Wallet payments (Paytm, PhonePe, Google Pay, Amazon Pay)."""

from orchestrator.connectors.wallet.connector import WALLETS, WalletConnector, WalletDetails

__all__ = ["WALLETS", "WalletConnector", "WalletDetails"]
