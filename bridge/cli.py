"""``mt5-bridge``: serve the Socket.IO API of the bus to web clients."""
from __future__ import annotations

import argparse
import logging
import sys

from aiohttp import web

from bridge.config import BridgeConfig, add_cli_arguments
from bridge.hosts import WILDCARD_BINDS
from bridge.server import Bridge
from engine.config import ConfigError
from engine.logs import setup_logging
from engine.security import SecurityError

log = logging.getLogger("bridge")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="mt5-bridge",
        description="Relay the bus (ticks, candles, book, indicators, account) to Socket.IO clients.",
    )
    parser.add_argument("--env-file", default=".env", help="settings file (default: .env)")
    add_cli_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if k != "env_file"}
    try:
        config = BridgeConfig.load(overrides, dotenv=args.env_file)
    except ConfigError as exc:
        print(f"mt5-bridge: configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.log_level, config.log_file)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    try:
        bridge = Bridge(config)
    except SecurityError as exc:
        print(f"mt5-bridge: configuration error: {exc}", file=sys.stderr)
        return 2
    if config.ws_host in WILDCARD_BINDS and not config.ws_allowed_hosts:
        log.warning("bridge: WS_HOST=%s listens on every interface but answers only under localhost "
                    "and 127.0.0.1: list the names clients use in WS_ALLOWED_HOSTS", config.ws_host)
    print(f"mt5-bridge: http://{config.ws_host}:{config.ws_port} (Socket.IO, GET /health)\n"
          f"  bus: {config.bus_endpoint}  rpc: {config.rpc_endpoint}  "
          f"auth: {'token' if config.token else 'none'}  batch: {config.batch_interval_ms} ms", flush=True)
    try:
        web.run_app(bridge.app, host=config.ws_host, port=config.ws_port, print=None,
                    handle_signals=True, shutdown_timeout=2.0)
    except OSError as exc:
        print(f"mt5-bridge: cannot serve on {config.ws_host}:{config.ws_port}: {exc}", file=sys.stderr)
        return 2
    log.info("bridge: stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
