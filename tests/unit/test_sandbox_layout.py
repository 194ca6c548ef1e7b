"""Each simulated provider's state lives apart from its wire: the state modules (their books,
pending flows, refunds) import nothing of gRPC, protobuf or HTTP servers; the servicers
(sandbox.servicers) and the HTTP server (sandbox.web) translate requests into calls on them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import sandbox

PACKAGE = Path(sandbox.__file__).parent
STATE_MODULES = (
    "acquirers",
    "acs",
    "books",
    "cards",
    "disputes",
    "magic",
    "netbanking",
    "refunds",
    "settlements",
    "upi",
    "wallets",
)
WIRE_PACKAGES = ("grpc", "google.protobuf", "paygate", "aiohttp", "gateway_core.auth")


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, and every name it imports from one (`module.name`)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


@pytest.mark.parametrize("module", STATE_MODULES)
def test_a_state_module_knows_nothing_of_the_wire(module: str) -> None:
    imports = imported_modules(PACKAGE / f"{module}.py")

    wire = sorted(
        name
        for name in imports
        if any(name == w or name.startswith(f"{w}.") for w in WIRE_PACKAGES)
        or name.startswith("sandbox.servicers")
        or name == "sandbox.web"
    )
    assert wire == []


def test_every_grpc_servicer_lives_in_sandbox_servicers() -> None:
    # app.py only registers the servicers with the server.
    outside = sorted(
        path.name
        for path in PACKAGE.glob("*.py")
        if path.stem != "app" and any(name.endswith("_pb2_grpc") for name in imported_modules(path))
    )
    assert outside == []
