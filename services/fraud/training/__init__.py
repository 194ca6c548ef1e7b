"""Offline training of the fraud model (see train.py and REPORT.md)."""
