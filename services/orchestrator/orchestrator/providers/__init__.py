"""Clients for the payment providers (today: the sandbox, reached over the network)."""
