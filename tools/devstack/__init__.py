"""Developer tooling: the local stack supervisor (`python -m devstack`) and Envoy config.

`Stack` is imported on first use, so importing a small part of devstack does not pay for the
stack's clients (asyncpg, aiokafka, grpc, ...).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from devstack.stack import Stack, StackError

__all__ = ["Stack", "StackError"]


def __getattr__(name: str) -> object:
    if name in __all__:
        from devstack import stack

        return getattr(stack, name)
    raise AttributeError(f"module 'devstack' has no attribute {name!r}")
