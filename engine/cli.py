"""``mt5-engine``: run the engine (with its embedded bus), or only the bus (``--bus-only``)."""
from __future__ import annotations

import argparse
import logging
import sys

import zmq

from engine.bus import BusError, BusProxy
from engine.config import ConfigError, EngineConfig, add_cli_arguments
from engine.logs import setup_logging
from engine.security import CurveServer, SecurityError
from engine.service import EngineService
from engine.signals import StopFlag, stop_on_signals
from engine.sources import SourceError, create_source

log = logging.getLogger("engine")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="mt5-engine",
        description="Publish MT5 market data (ticks, candles, book, account) on a ZeroMQ bus.",
    )
    parser.add_argument("--bus-only", action="store_true",
                        help="run only the XSUB/XPUB bus (for engines and workers on other hosts)")
    parser.add_argument("--env-file", default=".env", help="settings file (default: .env)")
    add_cli_arguments(parser)
    return parser.parse_args(argv)


def load_config(args: argparse.Namespace) -> EngineConfig:
    """The engine's settings: these parsed flags over the environment over the env file."""
    overrides = {k: v for k, v in vars(args).items() if k not in ("bus_only", "env_file")}
    return EngineConfig.load(overrides, dotenv=args.env_file)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = load_config(args)
    except ConfigError as exc:
        print(f"mt5-engine: configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.log_level, config.log_file)
    ctx = zmq.Context.instance()
    if args.bus_only:
        return _run_bus(config, ctx)
    try:
        source = create_source(config)
        service = EngineService(config, source, ctx)
        service.open()
    except (SourceError, BusError, OSError, ConfigError, SecurityError) as exc:
        print(f"mt5-engine: cannot start: {exc}", file=sys.stderr)
        if "service" in locals():
            service.close()
        return 2
    stop_on_signals(service.stop)
    print(
        f"mt5-engine: source={config.source} symbols={','.join(config.symbols)}\n"
        f"  subscribe (bots, workers, bridge): {config.bus_endpoint}\n"
        f"  publish (indicator workers):       {config.bus_pub_endpoint}\n"
        f"  rpc (REQ/DEALER):                  {config.rpc_endpoint}",
        flush=True,
    )
    try:
        service.run()
    finally:
        service.close()
        ctx.term()
    log.info("stopped")
    return 0


def _run_bus(config: EngineConfig, ctx: zmq.Context) -> int:
    try:
        curve = CurveServer.load(config.curve_server_secret, config.curve_clients_dir)
        auth = curve.start_authenticator(ctx) if curve is not None else None
        proxy = BusProxy(ctx, [config.bus_endpoint], [config.bus_pub_endpoint], config.hwm, curve)
        proxy.start()
    except (BusError, SecurityError) as exc:
        print(f"mt5-engine: cannot start the bus: {exc}", file=sys.stderr)
        return 2
    stopped = StopFlag()
    stop_on_signals(stopped.set)
    print(f"mt5-engine: bus only\n  subscribe: {config.bus_endpoint}\n"
          f"  publish:   {config.bus_pub_endpoint}", flush=True)
    while not stopped.wait(0.2):
        pass
    proxy.stop()
    if auth is not None:
        auth.stop()
    ctx.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
