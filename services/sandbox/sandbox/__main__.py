"""`python -m sandbox`: the simulated providers (gRPC and their HTTP pages)."""

from __future__ import annotations

from gateway_core.config import get_settings
from gateway_core.server import ServiceApp, run_service
from sandbox.app import Sandbox


async def main() -> None:
    settings = get_settings()
    app = ServiceApp("sandbox", settings)
    Sandbox(settings).register(app)
    await app.run()


if __name__ == "__main__":
    run_service(main)
