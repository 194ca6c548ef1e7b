"""The HTTP side of the web service: the checkout page and the dashboard, behind Envoy.

Every answer carries a strict Content-Security-Policy (scripts and styles from this origin
only, no inline script, no framing), no referrer (a checkout URL is a credential), and no
caching. Templates are Jinja2 with autoescaping; static files are served from the package.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from gateway_core.logging import get_logger
from gateway_core.money import format_inr

log = get_logger(__name__)

PACKAGE = Path(__file__).resolve().parent
STATIC_DIR = PACKAGE / "static"
# Browser libraries installed by npm at build time (services/web/package.json), never a CDN.
VENDOR_DIRS = {"uplot": PACKAGE.parent / "node_modules" / "uplot" / "dist"}
TEMPLATES_DIR = PACKAGE / "templates"
HEALTH_PATH = "/health"

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        # The UPI QR code comes as a data: PNG.
        "img-src 'self' data:",
        # fetch() and the status WebSocket, to this origin only.
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    if not response.prepared:
        response.headers.update(SECURITY_HEADERS)
        if not request.path.startswith("/static/"):
            response.headers["Cache-Control"] = "no-store"
    return response


def templates() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["inr"] = format_inr
    return environment


def render(
    environment: jinja2.Environment, name: str, status: int = 200, **context: Any
) -> web.Response:
    return web.Response(
        text=environment.get_template(name).render(**context),
        status=status,
        content_type="text/html",
        charset="utf-8",
    )


def application(*subapps: Callable[[web.Application], None]) -> web.Application:
    app = web.Application(middlewares=[security_headers], client_max_size=64 * 1024)
    for add_routes in subapps:
        add_routes(app)
    for name, directory in VENDOR_DIRS.items():
        if directory.is_dir():
            app.router.add_static(f"/static/vendor/{name}/", directory, append_version=False)
        else:
            log.warning("browser library missing: run `make gen`", library=name)
    app.router.add_static("/static/", STATIC_DIR, append_version=False)

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app.router.add_get(HEALTH_PATH, health)
    return app


async def serve(app: web.Application, host: str, port: int) -> None:
    # No access log: checkout URLs are credentials.
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        log.info("web pages listening", address=f"{host}:{port}")
        await asyncio.Future()
    finally:
        await runner.cleanup()
