"""The live dashboard, served by the bridge from its own origin (so CORS defaults hold).

``/`` is ``bridge/dashboard/index.html``; ``/static/`` its script and style sheet;
``/static/vendor/socket.io.min.js`` the Socket.IO browser client from npm: in a checkout the one
``npm ci`` installed in ``bridge/js`` (``make install`` runs it), in an installed package the copy
its build made in ``bridge/dashboard/socket.io-client/`` (setup.py). Nothing third-party is
committed: when neither holds the client the script answers 404 with how to get it, and the page
says so.

The page renders data only as text; its Content-Security-Policy is the second line of defence:
scripts from this origin only (nothing inline), its socket to this host only, no plugins, no
base URL, no framing.
"""
from __future__ import annotations

import re
from pathlib import Path

from aiohttp import web

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboard"
# Where the client is looked for, in order: a checkout's live npm install first (so a newer
# `npm ci` wins over the copy of the last build), then the package's copy (only that one exists
# in an installed wheel, which has no bridge/js).
SOCKETIO_DIRS = (Path(__file__).resolve().parent / "js" / "node_modules" / "socket.io-client" / "dist",
                 DASHBOARD_DIR / "socket.io-client")
VENDOR_FILES = ("socket.io.min.js", "socket.io.min.js.map")
MISSING_CLIENT = ("// The Socket.IO browser client is not installed. In a checkout run `npm ci` in "
                  "bridge/js (or `make install`, which does it when npm is present); a package built "
                  "by `pip install .` carries it only when npm was on PATH at build time.\n")
NO_CACHE = {"Cache-Control": "no-cache"}
NOSNIFF = {"X-Content-Type-Options": "nosniff"}
# A Host header fit to name in the policy: a DNS name or IP (IPv6 in brackets), an optional port.
_HOST = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


def content_security_policy(host: str | None) -> str:
    """The page's policy. ``connect-src`` names ``ws:``/``wss:`` on ``host`` (the Host the page was
    asked for) besides ``'self'``, which older browsers do not match against websockets."""
    sockets = f" ws://{host} wss://{host}" if host and _HOST.fullmatch(host) else ""
    return ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            f"connect-src 'self'{sockets}; object-src 'none'; base-uri 'none'; form-action 'self'; "
            "frame-ancestors 'none'")


def page_headers(host: str | None) -> dict[str, str]:
    """Headers of the page itself: its policy, no caching, no framing, no referrer."""
    return {**NO_CACHE, **NOSNIFF, "Content-Security-Policy": content_security_policy(host),
            "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"}


def socketio_client_file(name: str, dirs: tuple[Path, ...] = SOCKETIO_DIRS) -> Path | None:
    """The first of ``dirs`` holding the client file ``name`` (one of ``VENDOR_FILES``), else None."""
    if name not in VENDOR_FILES:
        return None
    return next((d / name for d in dirs if (d / name).is_file()), None)


def add_dashboard(app: web.Application, dashboard_dir: Path = DASHBOARD_DIR,
                  socketio_dist: Path | None = None) -> None:
    """Register ``/``, ``/static/...`` and ``/static/vendor/...`` on ``app``; the client is served
    from ``socketio_dist`` when given, else from the first of ``SOCKETIO_DIRS`` that holds it."""
    socketio_dirs = SOCKETIO_DIRS if socketio_dist is None else (socketio_dist,)

    async def index(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(dashboard_dir / "index.html", headers=page_headers(request.host))

    async def vendor(request: web.Request) -> web.StreamResponse:
        path = socketio_client_file(request.match_info["name"], socketio_dirs)
        if path is not None:
            return web.FileResponse(path, headers=NOSNIFF)
        return web.Response(status=404, text=MISSING_CLIENT, content_type="application/javascript", headers=NOSNIFF)

    async def static(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        path = dashboard_dir / name
        if name.startswith(".") or "/" in name or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers={**NO_CACHE, **NOSNIFF})

    app.router.add_get("/", index)
    app.router.add_get("/static/vendor/{name}", vendor)
    app.router.add_get("/static/{name}", static)
