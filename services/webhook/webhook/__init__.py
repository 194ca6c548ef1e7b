"""The webhook service: merchants' endpoints and signed, retried event deliveries."""
