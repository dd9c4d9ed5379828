"""Which ``Host`` and ``Origin`` a request may carry: the defence against DNS rebinding and foreign pages.

A page on ``evil.example`` whose name the attacker re-points at 127.0.0.1 reaches the bridge with
``Host: evil.example:PORT`` and a matching ``Origin``; a same-host Origin check alone lets it in.
So the ``Host`` must be one of the names the bridge is served under (``WS_ALLOWED_HOSTS``), and an
``Origin``, when a request carries one, must be that same host or one of ``CORS_ORIGINS``.
``guard_middleware`` applies both to every HTTP request, websocket upgrades included, before
anything else handles it.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web

from engine.logs import RateLimitedLog

ANY = "*"
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
LOOPBACK_NAMES = ("localhost", "127.0.0.1")
WILDCARD_BINDS = ("0.0.0.0", "::", "")


def host_key(value: str, default_port: int) -> str | None:
    """``name:port`` (lower case, IPv6 in brackets) for a ``Host`` value or ``name[:port]``
    setting; ``None`` when it is not one (a scheme, a path, user info, a bad port)."""
    value = value.strip().lower()
    if not value or any(c in value for c in "/@?# \t\\"):
        return None
    parts = urlsplit(f"//{value}")
    try:
        port = parts.port
    except ValueError:
        return None
    name = parts.hostname
    if not name:
        return None
    if ":" in name:  # IPv6, given in brackets
        name = f"[{name}]"
    return f"{name}:{port if port is not None else default_port}"


def origin_host(origin: str) -> str | None:
    """The ``name:port`` an ``Origin`` (``scheme://host[:port]``) names, or ``None``."""
    parts = urlsplit(origin.strip())
    default = DEFAULT_PORTS.get(parts.scheme.lower())
    if default is None or parts.path not in ("", "/") or parts.query or parts.fragment:
        return None
    return host_key(parts.netloc, default)


def default_hosts(bind: str) -> tuple[str, ...]:
    """The names a bridge bound to ``bind`` is served under when ``WS_ALLOWED_HOSTS`` is empty."""
    own = () if bind in WILDCARD_BINDS else (f"[{bind}]" if ":" in bind else bind,)
    return (*own, *LOOPBACK_NAMES)


@dataclass(frozen=True)
class HostRule:
    """The allowed ``Host`` keys (``ANY`` in them allows every host) and extra allowed origins."""

    hosts: frozenset[str]
    origins: frozenset[str]

    @classmethod
    def build(cls, hosts: Iterable[str], port: int, origins: Iterable[str]) -> HostRule:
        """From settings: ``hosts`` as ``name[:port]`` (port defaults to ``port``), or ``*``.
        Raises ``ValueError`` naming an entry that is not a host."""
        keys = set()
        for entry in hosts:
            key = ANY if entry.strip() == ANY else host_key(entry, port)
            if key is None:
                raise ValueError(f"{entry!r} is not a host name or address (with an optional :port)")
            keys.add(key)
        return cls(frozenset(keys), frozenset(o.strip() for o in origins))

    def host_ok(self, host: str | None) -> bool:
        if ANY in self.hosts:
            return True
        return host is not None and host_key(host, DEFAULT_PORTS["http"]) in self.hosts

    def origin_ok(self, origin: str, host: str | None) -> bool:
        """An ``Origin`` is allowed when it is listed (``*``: any) or the request's own host, that
        host being one the bridge is served under."""
        if ANY in self.origins or origin in self.origins:
            return True
        own = host_key(host, DEFAULT_PORTS["http"]) if host is not None else None
        return own is not None and self.host_ok(host) and origin_host(origin) == own


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def guard_middleware(rule: HostRule, refused: Counter[str],
                     bad_input: RateLimitedLog) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """An aiohttp middleware refusing a foreign ``Host`` (421) or ``Origin`` (403), counted in ``refused``."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = request.headers.get("Host")
        if not rule.host_ok(host):
            refused["host"] += 1
            bad_input.warning("host", "bridge: refused a request for host %r (not in WS_ALLOWED_HOSTS)", host)
            return web.Response(status=421, text="misdirected request: this host name is not served here\n")
        origin = request.headers.get("Origin")
        if origin is not None and not rule.origin_ok(origin, host):
            refused["origin"] += 1
            bad_input.warning("origin", "bridge: refused a request from origin %r (not this host nor in "
                              "CORS_ORIGINS)", origin)
            return web.Response(status=403, text="forbidden: this origin may not use the bridge\n")
        return await handler(request)

    return guard
