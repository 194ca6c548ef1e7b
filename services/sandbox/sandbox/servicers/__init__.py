"""The simulated providers' gRPC faces: each checks requests, calls its provider's state class
(sandbox.upi, sandbox.acquirers and sandbox.acs, sandbox.wallets, sandbox.netbanking,
sandbox.disputes), turns the answer into protobuf, and adds what takes time (timers, faults)."""
