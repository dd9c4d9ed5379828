"""Bridge configuration: one typed object, read once (CLI > environment > .env > defaults)."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from bridge.hosts import HostRule, default_hosts
from engine.config import DEFAULT_TIMEFRAMES, ConfigError, Settings
from engine.config import add_cli_arguments as add_settings_arguments
from engine.timeframes import TIMEFRAMES
from indicators.series import Periods

_PERIODS = Periods()


@dataclass(frozen=True)
class BridgeConfig(Settings):
    """Every bridge setting; ``env`` in each field's metadata names its variable."""

    ws_host: str = field(default="127.0.0.1", metadata={"env": "WS_HOST"})
    ws_port: int = field(default=8765, metadata={"env": "WS_PORT"})
    bus_endpoint: str = field(default="tcp://127.0.0.1:5555", metadata={"env": "BUS_ENDPOINT"})
    rpc_endpoint: str = field(default="tcp://127.0.0.1:5556", metadata={"env": "RPC_ENDPOINT"})
    # The engine's timeframes (same variable as the engine's): what clients may subscribe to.
    timeframes: tuple[str, ...] = field(default=DEFAULT_TIMEFRAMES, metadata={"env": "TIMEFRAMES"})
    batch_interval_ms: int = field(default=50, metadata={"env": "BATCH_INTERVAL_MS"})
    # Client groups flushed in turn, each every BATCH_INTERVAL_MS: spreads the writes of a flush.
    batch_phases: int = field(default=4, metadata={"env": "BATCH_PHASES"})
    cache_ttl_seconds: float = field(default=30.0, metadata={"env": "CACHE_TTL_SECONDS"})
    max_candles: int = field(default=1000, metadata={"env": "MAX_CANDLES"})
    # The indicator workers' periods (same variables as theirs): what get_indicators computes.
    ind_sma: int = field(default=_PERIODS.sma, metadata={"env": "IND_SMA"})
    ind_ema: int = field(default=_PERIODS.ema, metadata={"env": "IND_EMA"})
    ind_rsi: int = field(default=_PERIODS.rsi, metadata={"env": "IND_RSI"})
    ind_macd: str = field(default=_PERIODS.macd_text, metadata={"env": "IND_MACD"})
    token: str = field(default="", repr=False, metadata={"env": "BRIDGE_TOKEN"})
    # Comma-separated origins allowed to connect besides the bridge's own host; '*' = any.
    cors_origins: tuple[str, ...] = field(default=(), metadata={"env": "CORS_ORIGINS"})
    # The names (name[:port], port defaulting to WS_PORT) clients may reach the bridge under, as
    # the Host header says: a DNS-rebinding page's own name is refused. Empty = WS_HOST,
    # localhost and 127.0.0.1; '*' = any (only behind a proxy that checks Host itself).
    ws_allowed_hosts: tuple[str, ...] = field(default=(), metadata={"env": "WS_ALLOWED_HOSTS"})
    # An Engine.IO session that has not joined the Socket.IO namespace this long is closed.
    session_join_timeout_ms: int = field(default=10_000, metadata={"env": "SESSION_JOIN_TIMEOUT_MS"})
    # Token bucket per client: sustained requests per second and burst size.
    rate_limit_per_s: float = field(default=20.0, metadata={"env": "RATE_LIMIT_PER_S"})
    rate_limit_burst: int = field(default=40, metadata={"env": "RATE_LIMIT_BURST"})
    # Bytes waiting to reach one client: above soft, its stream updates are conflated (it gets the
    # latest state once it catches up); above hard, it is disconnected as a slow consumer. The hard
    # bound is the client's whole budget: replies and acknowledgements count in it as pushes do.
    client_buffer_soft: int = field(default=256 * 1024, metadata={"env": "CLIENT_BUFFER_SOFT_BYTES"})
    client_buffer_hard: int = field(default=4 * 1024 * 1024, metadata={"env": "CLIENT_BUFFER_HARD_BYTES"})
    max_message_bytes: int = field(default=16384, metadata={"env": "MAX_MESSAGE_BYTES"})
    rpc_timeout_ms: int = field(default=2000, metadata={"env": "RPC_TIMEOUT_MS"})
    # No health:engine: for this long (or an RPC timeout) turns the bridge 'degraded'.
    engine_stale_ms: int = field(default=3000, metadata={"env": "ENGINE_STALE_MS"})
    # Optional CURVE for the bus and RPC (engine.security): this client's secret key file and
    # the server's public key file, set together or not at all.
    curve_client_secret: str = field(default="", metadata={"env": "CURVE_CLIENT_SECRET"})
    curve_server_key: str = field(default="", metadata={"env": "CURVE_SERVER_KEY"})
    log_level: str = field(default="INFO", metadata={"env": "LOG_LEVEL"})
    log_file: str = field(default="", metadata={"env": "LOG_FILE"})

    def __post_init__(self) -> None:
        if not 0 < self.ws_port < 65536:
            raise ConfigError(f"WS_PORT must be 1..65535, got {self.ws_port}")
        if not 1 <= self.batch_interval_ms <= 10_000:
            raise ConfigError("BATCH_INTERVAL_MS must be between 1 and 10000")
        if not 1 <= self.batch_phases <= 32:
            raise ConfigError("BATCH_PHASES must be between 1 and 32")
        if not 1 <= self.max_candles <= 100_000:
            raise ConfigError("MAX_CANDLES must be between 1 and 100000")
        if self.cache_ttl_seconds < 0:
            raise ConfigError("CACHE_TTL_SECONDS must be >= 0")
        if self.rate_limit_per_s <= 0 or self.rate_limit_burst < 1:
            raise ConfigError("RATE_LIMIT_PER_S must be > 0 and RATE_LIMIT_BURST >= 1")
        if not 1 <= self.client_buffer_soft <= self.client_buffer_hard:
            raise ConfigError("need 1 <= CLIENT_BUFFER_SOFT_BYTES <= CLIENT_BUFFER_HARD_BYTES")
        if self.rpc_timeout_ms < 1 or self.engine_stale_ms < 1 or self.max_message_bytes < 256:
            raise ConfigError("RPC_TIMEOUT_MS, ENGINE_STALE_MS >= 1 and MAX_MESSAGE_BYTES >= 256")
        if not self.timeframes:
            raise ConfigError("TIMEFRAMES must name at least one timeframe")
        for tf in self.timeframes:
            if tf not in TIMEFRAMES:
                raise ConfigError(f"TIMEFRAMES: unknown {tf!r}; valid: {', '.join(TIMEFRAMES)}")
        _ = self.periods  # refuses bad IND_* values at start-up
        _ = self.host_rule  # refuses WS_ALLOWED_HOSTS entries that are not hosts
        if not 100 <= self.session_join_timeout_ms <= 600_000:
            raise ConfigError("SESSION_JOIN_TIMEOUT_MS must be between 100 and 600000")

    @property
    def periods(self) -> Periods:
        """The indicator periods; ``ConfigError`` when they are not valid ones."""
        try:
            return Periods.parse(self.ind_sma, self.ind_ema, self.ind_rsi, self.ind_macd)
        except ValueError as exc:
            raise ConfigError(f"IND_SMA/IND_EMA/IND_RSI/IND_MACD: {exc}") from None

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
