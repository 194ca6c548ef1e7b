"""The reconciliation service: settlement files, discrepancies, disputes and analytics."""
