"""Engine configuration: one typed object, read once (CLI > environment > .env > defaults)."""
from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TypeVar

from engine.protocol import ProtocolError, validate_symbol
from engine.timeframes import TIMEFRAMES

DEFAULT_SYMBOLS = ("EURUSD", "GBPUSD", "USDJPY", "XAUUSD", "BTCUSD")
DEFAULT_TIMEFRAMES = ("M1", "M5", "M15", "H1")
SOURCES = ("sim", "replay", "mt5")
SECRET_KEYS = frozenset({"MT5_PASSWORD", "BRIDGE_TOKEN"})
T = TypeVar("T")


class ConfigError(ValueError):
    """A setting that cannot be used; the message names the setting."""


def read_dotenv(path: str | os.PathLike[str]) -> dict[str, str]:
    """Parse a ``.env`` file: ``KEY=VALUE`` lines, ``#`` comments, optional quotes, ``export``."""
    values: dict[str, str] = {}
    p = Path(path)
    if not p.is_file():
        return values
    for lineno, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ConfigError(f"{p}:{lineno}: expected KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        else:
            value = value.split(" #", 1)[0].rstrip()
        values[key] = value
    return values


def layered_env(
    environ: Mapping[str, str] | None = None, dotenv: str | os.PathLike[str] | None = ".env"
) -> dict[str, str]:
    """The environment over ``.env``: what the process environment sets wins."""
    merged = read_dotenv(dotenv) if dotenv else {}
    merged.update(os.environ if environ is None else environ)
    return merged


def _csv(value: str | Sequence[str]) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    return tuple(s.strip() for s in items if s.strip())


class Settings:
    """A settings dataclass whose fields name their variables in ``env`` metadata."""

    @classmethod
    def load(
        cls: type[T],
        overrides: Mapping[str, object] | None = None,
        environ: Mapping[str, str] | None = None,
        dotenv: str | os.PathLike[str] | None = ".env",
    ) -> T:
        """Defaults, then ``.env``, then the environment, then ``overrides`` (CLI flags)."""
        env = layered_env(environ, dotenv)
        types = {f.name: f.type for f in fields(cls)}
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(f.metadata["env"])
            if raw not in (None, ""):
                values[f.name] = _convert(f.metadata["env"], f.type, raw)
        for name, value in (overrides or {}).items():
            if value is not None:
                values[name] = _convert(name, types[name], value)
        return cls(**values)


@dataclass(frozen=True)
class EngineConfig(Settings):
    """Every engine setting; ``ENV_NAME`` in each field's metadata is its variable."""

    source: str = field(default="sim", metadata={"env": "SOURCE"})
    symbols: tuple[str, ...] = field(default=DEFAULT_SYMBOLS, metadata={"env": "SYMBOLS"})
    timeframes: tuple[str, ...] = field(default=DEFAULT_TIMEFRAMES, metadata={"env": "TIMEFRAMES"})
    seed: int = field(default=42, metadata={"env": "SIM_SEED"})
    # Sim ticks per second over all symbols; 0 means as fast as possible.
    rate: float = field(default=100.0, metadata={"env": "SIM_RATE"})
    replay_file: str = field(default="", metadata={"env": "REPLAY_FILE"})
    # Replay speed factor; 0 means as fast as possible.
    replay_speed: float = field(default=1.0, metadata={"env": "REPLAY_SPEED"})
    replay_symbol: str = field(default="", metadata={"env": "REPLAY_SYMBOL"})
    bus_endpoint: str = field(default="tcp://127.0.0.1:5555", metadata={"env": "BUS_ENDPOINT"})
    bus_pub_endpoint: str = field(default="tcp://127.0.0.1:5557", metadata={"env": "BUS_PUB_ENDPOINT"})
    rpc_endpoint: str = field(default="tcp://127.0.0.1:5556", metadata={"env": "RPC_ENDPOINT"})
    # "embedded": run the XSUB/XPUB proxy here; "external": publish into a bus run elsewhere.
    bus_mode: str = field(default="embedded", metadata={"env": "BUS_MODE"})
    hwm: int = field(default=100_000, metadata={"env": "BUS_HWM"})
    max_candles: int = field(default=1000, metadata={"env": "MAX_CANDLES"})
    forming_throttle_ms: int = field(default=250, metadata={"env": "FORMING_THROTTLE_MS"})
    book_interval_ms: int = field(default=250, metadata={"env": "BOOK_INTERVAL_MS"})
    account_interval_ms: int = field(default=1000, metadata={"env": "ACCOUNT_INTERVAL_MS"})
    summary_interval_ms: int = field(default=2000, metadata={"env": "SUMMARY_INTERVAL_MS"})
    health_interval_ms: int = field(default=1000, metadata={"env": "HEALTH_INTERVAL_MS"})
    mt5_login: int = field(default=0, metadata={"env": "MT5_LOGIN"})
    mt5_password: str = field(default="", repr=False, metadata={"env": "MT5_PASSWORD"})
    mt5_server: str = field(default="", metadata={"env": "MT5_SERVER"})
    mt5_path: str = field(default="", metadata={"env": "MT5_PATH"})
    mt5_poll_ms: int = field(default=5, metadata={"env": "MT5_POLL_MS"})
    log_level: str = field(default="INFO", metadata={"env": "LOG_LEVEL"})
    log_file: str = field(default="", metadata={"env": "LOG_FILE"})
    # Optional CURVE (engine.security): as a server for the bus and RPC ...
    curve_server_secret: str = field(default="", metadata={"env": "CURVE_SERVER_SECRET"})
    curve_clients_dir: str = field(default="", metadata={"env": "CURVE_CLIENTS_DIR"})
    # ... and as a client of an external bus (BUS_MODE=external).
    curve_client_secret: str = field(default="", metadata={"env": "CURVE_CLIENT_SECRET"})
    curve_server_key: str = field(default="", metadata={"env": "CURVE_SERVER_KEY"})

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ConfigError(f"SOURCE must be one of {', '.join(SOURCES)}, got {self.source!r}")
        if self.bus_mode not in ("embedded", "external"):
            raise ConfigError(f"BUS_MODE must be 'embedded' or 'external', got {self.bus_mode!r}")
        if not self.symbols:
            raise ConfigError("SYMBOLS must name at least one symbol")
        for symbol in self.symbols:
            try:
                validate_symbol(symbol)
            except ProtocolError as exc:
                raise ConfigError(f"SYMBOLS: {exc}") from None
        if len(set(self.symbols)) != len(self.symbols):
            raise ConfigError("SYMBOLS lists a symbol twice")
        for tf in self.timeframes:
            if tf not in TIMEFRAMES:
                raise ConfigError(f"TIMEFRAMES: unknown {tf!r}; valid: {', '.join(TIMEFRAMES)}")
        if not self.timeframes:
            raise ConfigError("TIMEFRAMES must name at least one timeframe")
        if self.rate < 0 or self.replay_speed < 0:
            raise ConfigError("SIM_RATE and REPLAY_SPEED must be >= 0 (0 = as fast as possible)")
        if not 1 <= self.max_candles <= 100_000:
            raise ConfigError("MAX_CANDLES must be between 1 and 100000")
        if self.hwm < 0:
            raise ConfigError("BUS_HWM must be >= 0 (0 = unlimited)")
        if self.source == "replay" and not self.replay_file:
            raise ConfigError("the replay source needs REPLAY_FILE (or --replay-file)")


def _convert(name: str, type_name: object, raw: object) -> object:
    """Turn a string (env) or CLI value into the field's type, naming the setting on failure."""
    try:
        if type_name in ("tuple[str, ...]",):
            return _csv(raw)  # type: ignore[arg-type]
        if type_name == "int":
            return int(raw)  # type: ignore[arg-type]
        if type_name == "float":
            return float(raw)  # type: ignore[arg-type]
        return str(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: cannot use {raw!r} as {type_name}") from None


def add_cli_arguments(parser: argparse.ArgumentParser, cls: type = EngineConfig) -> None:
    """``--flag`` for each setting of ``cls`` except the secrets, which come only from env or .env."""
    for f in fields(cls):
        if f.metadata["env"] in SECRET_KEYS:
            continue
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            default=None,
            help=f"env {f.metadata['env']} (default: {_shown_default(f.default)})",
        )


def _shown_default(value: object) -> str:
    return ",".join(value) if isinstance(value, tuple) else str(value)
