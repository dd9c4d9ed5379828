"""Bridge configuration: one typed object, read once (CLI > environment > .env > defaults)."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from bridge.hosts import HostRule, default_hosts
from engine.config import (
    CANDLE_COUNT,
    DEFAULT_TIMEFRAMES,
    INTERVAL_MS,
    ConfigError,
    above,
    at_least,
    between,
    endpoint,
    host_name,
    log_level,
    setting,
    timeframe_list,
    writable_file,
)
from engine.config import add_cli_arguments as add_settings_arguments
from indicators.series import IndicatorSettings


@dataclass(frozen=True)
class BridgeConfig(IndicatorSettings):
    """Every bridge setting; each field's metadata names its variable and the rules it follows.

    The indicator set (``INDICATORS``, and the old ``IND_*`` periods) is the workers' own
    settings: the bridge checks their ``ind:`` payloads against its keys and ``get_indicators``
    computes it."""

    ws_host: str = field(default="127.0.0.1", metadata=setting("WS_HOST", host_name))
    ws_port: int = field(default=8765, metadata=setting("WS_PORT", between(1, 65535)))
    bus_endpoint: str = field(default="tcp://127.0.0.1:5555", metadata=setting("BUS_ENDPOINT", endpoint))
    rpc_endpoint: str = field(default="tcp://127.0.0.1:5556", metadata=setting("RPC_ENDPOINT", endpoint))
    # The engine's timeframes (same variable as the engine's): what clients may subscribe to.
    timeframes: tuple[str, ...] = field(default=DEFAULT_TIMEFRAMES,
                                        metadata=setting("TIMEFRAMES", timeframe_list))
    batch_interval_ms: int = field(default=50, metadata=setting("BATCH_INTERVAL_MS", between(1, 10_000)))
    # Client groups flushed in turn, each every BATCH_INTERVAL_MS: spreads the writes of a flush.
    batch_phases: int = field(default=4, metadata=setting("BATCH_PHASES", between(1, 32)))
    cache_ttl_seconds: float = field(default=30.0, metadata=setting("CACHE_TTL_SECONDS", at_least(0)))
    max_candles: int = field(default=1000, metadata=setting("MAX_CANDLES", CANDLE_COUNT))
    token: str = field(default="", repr=False, metadata=setting("BRIDGE_TOKEN"))
    # Comma-separated origins allowed to connect besides the bridge's own host; '*' = any.
    cors_origins: tuple[str, ...] = field(default=(), metadata=setting("CORS_ORIGINS"))
    # The names (name[:port], port defaulting to WS_PORT) clients may reach the bridge under, as
    # the Host header says: a DNS-rebinding page's own name is refused. Empty = WS_HOST,
    # localhost and 127.0.0.1; '*' = any (only behind a proxy that checks Host itself).
    ws_allowed_hosts: tuple[str, ...] = field(default=(), metadata=setting("WS_ALLOWED_HOSTS"))
    # An Engine.IO session that has not joined the Socket.IO namespace this long is closed.
    session_join_timeout_ms: int = field(default=10_000,
                                         metadata=setting("SESSION_JOIN_TIMEOUT_MS", between(100, 600_000)))
    # Token bucket per client: sustained requests per second and burst size.
    rate_limit_per_s: float = field(default=20.0, metadata=setting("RATE_LIMIT_PER_S", above(0)))
    rate_limit_burst: int = field(default=40, metadata=setting("RATE_LIMIT_BURST", at_least(1)))
    # Clients' own indicator sets (get_indicators with indicators) are computed in the event loop:
    # all of them together get this many values per second (bridge.api.indicator_work: a value
    # sent 0.8 to 1.2 us on the development machine, quiet to busy), so 200k is 16 to 24% of
    # one core, with a burst of the largest one request.
    indicator_budget_values_per_s: int = field(default=200_000,
                                               metadata=setting("INDICATOR_BUDGET_VALUES_PER_S", at_least(1)))
    # Bytes waiting to reach one client: above soft, its stream updates are conflated (it gets the
    # latest state once it catches up); above hard, it is disconnected as a slow consumer. The hard
    # bound is the client's whole budget: replies and acknowledgements count in it as pushes do.
    client_buffer_soft: int = field(default=256 * 1024, metadata=setting("CLIENT_BUFFER_SOFT_BYTES", at_least(1)))
    client_buffer_hard: int = field(default=4 * 1024 * 1024, metadata=setting("CLIENT_BUFFER_HARD_BYTES", at_least(1)))
    # 1: deliver through python-engineio internals (bridge/transport.py) when its start-up
    # self-test passes; 0: python-engineio's public API only (slower, same behaviour but no
    # conflation above CLIENT_BUFFER_SOFT_BYTES).
    fast_path: bool = field(default=True, metadata=setting("BRIDGE_FAST_PATH"))
    max_message_bytes: int = field(default=16384, metadata=setting("MAX_MESSAGE_BYTES", at_least(256)))
    rpc_timeout_ms: int = field(default=2000, metadata=setting("RPC_TIMEOUT_MS", INTERVAL_MS))
    # No health:engine: for this long (or an RPC timeout) turns the bridge 'degraded'.
    engine_stale_ms: int = field(default=3000, metadata=setting("ENGINE_STALE_MS", INTERVAL_MS))
    # Optional CURVE for the bus and RPC (engine.security): this client's secret key file and
    # the server's public key file, set together or not at all.
    curve_client_secret: str = field(default="", metadata=setting("CURVE_CLIENT_SECRET"))
    curve_server_key: str = field(default="", metadata=setting("CURVE_SERVER_KEY"))
    log_level: str = field(default="INFO", metadata=setting("LOG_LEVEL", log_level))
    log_file: str = field(default="", metadata=setting("LOG_FILE", writable_file))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.client_buffer_soft > self.client_buffer_hard:
            raise ConfigError("CLIENT_BUFFER_SOFT_BYTES: must be <= CLIENT_BUFFER_HARD_BYTES, got "
                              f"{self.client_buffer_soft} > {self.client_buffer_hard}")
        _ = self.host_rule  # refuses WS_ALLOWED_HOSTS entries that are not hosts

    @property
    def host_rule(self) -> HostRule:
        """The ``Host`` and ``Origin`` rule; ``ConfigError`` for a ``WS_ALLOWED_HOSTS`` entry that is not a host."""
        try:
            return HostRule.build(self.ws_allowed_hosts or default_hosts(self.ws_host), self.ws_port,
                                  self.cors_origins)
        except ValueError as exc:
            raise ConfigError(f"WS_ALLOWED_HOSTS: {exc}") from None


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """``--flag`` for each setting except the token, which comes only from env or .env."""
    add_settings_arguments(parser, BridgeConfig)
