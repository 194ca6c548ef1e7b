"""paygate.vault.v1.VaultService (DESIGN.md §6).

Not implemented yet: every method answers UNIMPLEMENTED (the generated base class's behaviour).
The card-vault issue fills it in: Tink AEAD encryption under a keyset wrapped by the master key,
keyed fingerprints, random tokens, the short-lived CVV, audited Detokenize and key rotation.
"""

from __future__ import annotations

from paygate.vault.v1 import vault_pb2_grpc


class VaultServicer(vault_pb2_grpc.VaultServiceServicer):
    """Tokenizes cards and hands card data back to the orchestrator only."""
