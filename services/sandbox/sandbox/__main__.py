"""`python -m sandbox`: the simulated providers (gRPC and their HTTP pages)."""

from __future__ import annotations

from gateway_core.server import ServiceApp, run_service
from sandbox.app import Sandbox
from sandbox.settings import Settings, get_settings


def build_app(settings: Settings) -> ServiceApp:
    """The simulated providers, ready to run."""
    app = ServiceApp("sandbox", settings)
    Sandbox(settings).register(app)
    return app


async def main() -> None:
    await build_app(get_settings()).run()


if __name__ == "__main__":
    run_service(main)
