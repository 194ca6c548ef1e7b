"""The orchestrator: payments, their state machine, providers, and the event outbox."""
