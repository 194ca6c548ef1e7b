"""What every gateway service shares: config, bootstrap, logging, errors, storage, events."""
