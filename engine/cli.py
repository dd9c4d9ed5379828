"""``mt5-engine``: run the engine (with its embedded bus), or only the bus (``--bus-only``)."""
from __future__ import annotations

import argparse
import logging
import sys

import zmq

from engine.bus import BusError, BusProxy
from engine.config import ConfigError, EngineConfig, add_cli_arguments
from engine.logs import setup_logging
from engine.security import CurveServer, SecurityError, load_publish_grants
from engine.service import EngineService
from engine.service_health import STDIN_FLAG, HealthReader
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
    parser.add_argument(STDIN_FLAG, dest="service_health_stdin", action="store_true",
                        help="publish the health mt5-service writes into stdin on health:service: "
                             "(mt5-service starts its engine so)")
    add_cli_arguments(parser)
    return parser.parse_args(argv)


def load_config(args: argparse.Namespace) -> EngineConfig:
    """The engine's settings: these parsed flags over the environment over the env file."""
    overrides = {k: v for k, v in vars(args).items() if k not in ("bus_only", "env_file", "service_health_stdin")}
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
        service_health = HealthReader(sys.stdin.fileno()).start() if args.service_health_stdin else None
        service = EngineService(config, source, ctx, service_health=service_health)
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
        grants = load_publish_grants(config.curve_clients_dir) if curve is not None else None
        auth = curve.start_authenticator(ctx) if curve is not None else None
        proxy = BusProxy(ctx, [config.bus_endpoint], [config.bus_pub_endpoint], config.hwm, curve, grants)
        proxy.start()
    except (BusError, SecurityError) as exc:
        print(f"mt5-engine: cannot start the bus: {exc}", file=sys.stderr)
        return 2
    stopped = StopFlag()
    stop_on_signals(stopped.set)
    if grants is None:
        rule = "CURVE off: any publisher's message is relayed"
    else:
        everything = sum(1 for grant in grants.values() if grant.everything)
        rule = f"CURVE on: each of {len(grants)} keys publishes what it is granted ({everything} every topic)"
    print(f"mt5-engine: bus only\n  subscribe: {config.bus_endpoint}\n"
          f"  publish:   {config.bus_pub_endpoint}\n  {rule}", flush=True)
    while not stopped.wait(0.2):
        pass
    proxy.stop()
    if auth is not None:
        auth.stop()
    ctx.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
