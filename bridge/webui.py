"""The live dashboard, served by the bridge from its own origin (so CORS defaults hold).

``/`` is ``bridge/dashboard/index.html``; ``/static/`` its script and style sheet;
``/static/vendor/socket.io.min.js`` the Socket.IO browser client from npm
(``bridge/js/node_modules/socket.io-client/dist/``, installed by ``npm ci`` in ``bridge/js``,
which ``make install`` runs). Nothing third-party is copied into the repository: when that client
is not installed the script answers 404 with how to install it, and the page says so.
"""
from __future__ import annotations

from pathlib import Path

from aiohttp import web

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboard"
SOCKETIO_DIST = Path(__file__).resolve().parent / "js" / "node_modules" / "socket.io-client" / "dist"
VENDOR_FILES = ("socket.io.min.js", "socket.io.min.js.map")
MISSING_CLIENT = ("// The Socket.IO browser client is not installed: run `npm ci` in bridge/js "
                  "(or `make install`, which does it when npm is present).\n")
NO_CACHE = {"Cache-Control": "no-cache"}


def add_dashboard(app: web.Application, dashboard_dir: Path = DASHBOARD_DIR,
                  socketio_dist: Path = SOCKETIO_DIST) -> None:
    """Register ``/``, ``/static/...`` and ``/static/vendor/...`` on ``app``."""

    async def index(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(dashboard_dir / "index.html", headers=NO_CACHE)

    async def vendor(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        path = socketio_dist / name
        if name in VENDOR_FILES and path.is_file():
            return web.FileResponse(path)
        return web.Response(status=404, text=MISSING_CLIENT, content_type="application/javascript")

    async def static(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        path = dashboard_dir / name
        if name.startswith(".") or "/" in name or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers=NO_CACHE)

    app.router.add_get("/", index)
    app.router.add_get("/static/vendor/{name}", vendor)
    app.router.add_get("/static/{name}", static)
