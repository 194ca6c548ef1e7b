"""Simulated payment providers (UPI Core, card acquirers, wallets, banks), reached over the
network like real ones. Outcomes are deterministic, chosen by the magic values in magic.py."""
