"""gRPC servicers: translate wire messages to domain calls; no business rules live here."""
