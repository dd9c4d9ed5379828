"""Engine configuration: one typed object, read once (CLI > environment > .env > defaults)."""
from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from engine.logs import LOG_LEVELS
from engine.protocol import validate_symbol
from engine.symbol_masks import is_group_mask, validate_entry
from engine.timeframes import TIMEFRAMES

DEFAULT_SYMBOLS = ("EURUSD", "GBPUSD", "USDJPY", "XAUUSD", "BTCUSD")
DEFAULT_TIMEFRAMES = ("M1", "M5", "M15", "H1")
SOURCES = ("sim", "replay", "mt5")
REPLAY_STARTS = ("now", "paused")
# Where the mt5 source finds the MetaTrader5 package: imported in this process (Windows), or
# in the Python of an RPyC classic server (a terminal under Wine, engine.sources.mt5_remote).
MT5_BACKENDS = ("local", "rpyc")
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
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read it: {exc}") from None
    for lineno, line in enumerate(text.splitlines(), 1):
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


# Rules for settings. Each field names its variable and its rules in its metadata
# (``setting("ENV", rule, ...)``); a rule raises ValueError saying what is wrong with a value,
# and ``check_fields`` runs them all, naming the variable. A float must also be finite.
Rule = Callable[[Any], object]

DAY_MS = 86_400_000
C_INT_MAX = 2**31 - 1  # ZeroMQ socket options (high-water marks) are C ints


def setting(env: str, *rules: Rule) -> dict[str, object]:
    """A field's metadata: the variable that sets it and the rules its value must follow."""
    return {"env": env, "rules": rules}


def between(low: int, high: int) -> Rule:
    def rule(value: float) -> None:
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}, got {value!r}")
    return rule


def at_least(low: float) -> Rule:
    def rule(value: float) -> None:
        if not value >= low:
            raise ValueError(f"must be >= {low}, got {value!r}")
    return rule


def above(low: float) -> Rule:
    def rule(value: float) -> None:
        if not value > low:
            raise ValueError(f"must be > {low}, got {value!r}")
    return rule


def at_most(high: float) -> Rule:
    def rule(value: float) -> None:
        if not value <= high:
            raise ValueError(f"must be <= {high}, got {value!r}")
    return rule


def one_of(*choices: str) -> Rule:
    def rule(value: str) -> None:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {value!r}")
    return rule


def finite(value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {value!r}")


def endpoint(value: str) -> None:
    """A ZeroMQ endpoint the processes can use: ``tcp://HOST:PORT`` (1..65535), ``ipc://PATH``
    or ``inproc://NAME``."""
    scheme, sep, address = value.partition("://")
    if not sep or scheme not in ("tcp", "ipc", "inproc") or not address or not address.isprintable():
        raise ValueError(f"must be tcp://HOST:PORT, ipc://PATH or inproc://NAME, got {value!r}")
    if scheme != "tcp":
        return
    host, colon, port = address.rpartition(":")
    if not colon or not host or any(c.isspace() for c in host):
        raise ValueError(f"must be tcp://HOST:PORT, got {value!r}")
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(f"port {port!r} is not in 1..65535 in {value!r}")


def host_name(value: str) -> None:
    if len(value) > 253 or not value.isprintable() or any(c.isspace() for c in value):
        raise ValueError(f"must be a host name or address, got {value!r}")


def non_empty(value: str) -> None:
    if not value:
        raise ValueError("must not be empty")


def symbol_list(value: tuple[str, ...]) -> None:
    if not value:
        raise ValueError("must name at least one symbol")
    for symbol in value:
        validate_entry(symbol)
    if len(set(value)) != len(value):
        raise ValueError("lists a symbol twice")


def optional_symbol(value: str) -> None:
    if value:
        validate_symbol(value)


def timeframe_list(value: tuple[str, ...]) -> None:
    if not value:
        raise ValueError("must name at least one timeframe")
    for tf in value:
        if tf not in TIMEFRAMES:
            raise ValueError(f"unknown {tf!r}; valid: {', '.join(TIMEFRAMES)}")
    if len(set(value)) != len(value):
        raise ValueError("lists a timeframe twice")


def log_level(value: str) -> None:
    if value.upper() not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}, got {value!r}")


def writable_file(value: str) -> None:
    """Empty, or a file this process can append to: opened (created if need be) and closed, so
    a path it cannot write stops it at start-up, before any child or socket exists."""
    if not value:
        return
    try:
        with open(value, "a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise ValueError(f"cannot write {value!r}: {exc.strerror or exc}") from None


INTERVAL_MS = between(1, DAY_MS)
CANDLE_COUNT = between(1, 100_000)
HWM = between(0, C_INT_MAX)


def check_fields(settings: object) -> None:
    """Every field's rules (floats: finite first); ``ConfigError`` naming the first variable
    whose value breaks one."""
    for f in fields(settings):  # type: ignore[arg-type]
        rules = f.metadata.get("rules", ())
        if f.type == "float":
            rules = (finite, *rules)
        value = getattr(settings, f.name)
        for rule in rules:
            try:
                rule(value)
            except ValueError as exc:
                raise ConfigError(f"{f.metadata['env']}: {exc}") from None


class Settings:
    """A settings dataclass whose fields name their variables and rules in their metadata."""

    def __post_init__(self) -> None:
        check_fields(self)

    @classmethod
    def load(
        cls: type[T],
        overrides: Mapping[str, object] | None = None,
        environ: Mapping[str, str] | None = None,
        dotenv: str | os.PathLike[str] | None = ".env",
    ) -> T:
        """Defaults, then ``.env``, then the environment, then ``overrides`` (CLI flags)."""
        env = layered_env(environ, dotenv)
        by_name = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
        values: dict[str, object] = {}
        for f in by_name.values():
            raw = env.get(f.metadata["env"])
            if raw not in (None, ""):
                values[f.name] = _convert(f.metadata["env"], f.type, raw)
        for name, value in (overrides or {}).items():
            if value is not None:
                values[name] = _convert(by_name[name].metadata["env"], by_name[name].type, value)
        return cls(**values)


@dataclass(frozen=True)
class EngineConfig(Settings):
    """Every engine setting; each field's metadata names its variable and the rules it follows."""

    source: str = field(default="sim", metadata=setting("SOURCE", one_of(*SOURCES)))
    symbols: tuple[str, ...] = field(default=DEFAULT_SYMBOLS, metadata=setting("SYMBOLS", symbol_list))
    timeframes: tuple[str, ...] = field(default=DEFAULT_TIMEFRAMES,
                                        metadata=setting("TIMEFRAMES", timeframe_list))
    seed: int = field(default=42, metadata=setting("SIM_SEED", at_least(0)))
    # Sim ticks per second over all symbols; 0 means as fast as possible.
    rate: float = field(default=100.0, metadata=setting("SIM_RATE", at_least(0)))
    replay_file: str = field(default="", metadata=setting("REPLAY_FILE"))
    # Replay speed factor; 0 means as fast as possible.
    replay_speed: float = field(default=1.0, metadata=setting("REPLAY_SPEED", at_least(0)))
    replay_symbol: str = field(default="", metadata=setting("REPLAY_SYMBOL", optional_symbol))
    # "paused": load the file and publish nothing until the RPC op replay's start (slow joiners).
    replay_start: str = field(default="now", metadata=setting("REPLAY_START", one_of(*REPLAY_STARTS)))
    # While a replay plays the bus drops nothing; a subscriber that reads nothing this long is
    # cut off, so one dead bot cannot hold the others.
    replay_stall_s: float = field(default=10.0, metadata=setting("REPLAY_STALL_S", above(0), at_most(3600)))
    bus_endpoint: str = field(default="tcp://127.0.0.1:5555", metadata=setting("BUS_ENDPOINT", endpoint))
    bus_pub_endpoint: str = field(default="tcp://127.0.0.1:5557",
                                  metadata=setting("BUS_PUB_ENDPOINT", endpoint))
    rpc_endpoint: str = field(default="tcp://127.0.0.1:5556", metadata=setting("RPC_ENDPOINT", endpoint))
    # "embedded": run the XSUB/XPUB proxy here; "external": publish into a bus run elsewhere.
    bus_mode: str = field(default="embedded", metadata=setting("BUS_MODE", one_of("embedded", "external")))
    hwm: int = field(default=100_000, metadata=setting("BUS_HWM", HWM))
    max_candles: int = field(default=1000, metadata=setting("MAX_CANDLES", CANDLE_COUNT))
    # Recent ticks kept per symbol for gap repair and date ranges (engine.tick_journal): about
    # 24 bytes a tick, allocated as a symbol's ticks come.
    tick_journal: int = field(default=100_000, metadata=setting("TICK_JOURNAL", between(1, 10_000_000)))
    # A recording (mt5-recorder's directory) that answers tick and bar ranges the source keeps
    # no store for; it may not exist yet.
    record_dir: str = field(default="", metadata=setting("RECORD_DIR"))
    # 0: every forming update is published.
    forming_throttle_ms: int = field(default=250, metadata=setting("FORMING_THROTTLE_MS", between(0, DAY_MS)))
    book_interval_ms: int = field(default=250, metadata=setting("BOOK_INTERVAL_MS", INTERVAL_MS))
    account_interval_ms: int = field(default=1000, metadata=setting("ACCOUNT_INTERVAL_MS", INTERVAL_MS))
    # Positions, pending orders and deals (position:/order:/deal: topics and RPC); 0 turns the
    # account's activity off everywhere. Polled with the account, the open sets republished
    # every ACCOUNT_SNAPSHOT_MS.
    account_streams: bool = field(default=True, metadata=setting("ACCOUNT_STREAMS"))
    account_snapshot_ms: int = field(default=5000, metadata=setting("ACCOUNT_SNAPSHOT_MS", INTERVAL_MS))
    summary_interval_ms: int = field(default=2000, metadata=setting("SUMMARY_INTERVAL_MS", INTERVAL_MS))
    health_interval_ms: int = field(default=1000, metadata=setting("HEALTH_INTERVAL_MS", INTERVAL_MS))
    mt5_login: int = field(default=0, metadata=setting("MT5_LOGIN", between(0, 2**63 - 1)))
    mt5_password: str = field(default="", repr=False, metadata=setting("MT5_PASSWORD"))
    mt5_server: str = field(default="", metadata=setting("MT5_SERVER"))
    mt5_path: str = field(default="", metadata=setting("MT5_PATH"))
    mt5_poll_ms: int = field(default=5, metadata=setting("MT5_POLL_MS", INTERVAL_MS))
    # How long initialize() may take: the package's own default, as starting a terminal and
    # logging in takes tens of seconds when cold.
    mt5_timeout_ms: int = field(default=60_000, metadata=setting("MT5_TIMEOUT_MS", between(1_000, 600_000)))
    # Start the terminal in portable mode (its data folder beside terminal64.exe).
    mt5_portable: bool = field(default=False, metadata=setting("MT5_PORTABLE"))
    mt5_backend: str = field(default="local", metadata=setting("MT5_BACKEND", one_of(*MT5_BACKENDS)))
    # The RPyC classic server of MT5_BACKEND=rpyc (18812 is rpyc's and mt5linux's default port).
    mt5_host: str = field(default="127.0.0.1", metadata=setting("MT5_HOST", non_empty, host_name))
    mt5_port: int = field(default=18812, metadata=setting("MT5_PORT", between(1, 65535)))
    log_level: str = field(default="INFO", metadata=setting("LOG_LEVEL", log_level))
    log_file: str = field(default="", metadata=setting("LOG_FILE", writable_file))
    # Optional CURVE (engine.security): as a server for the bus and RPC ...
    curve_server_secret: str = field(default="", metadata=setting("CURVE_SERVER_SECRET"))
    curve_clients_dir: str = field(default="", metadata=setting("CURVE_CLIENTS_DIR"))
    # ... and as a client of an external bus (BUS_MODE=external).
    curve_client_secret: str = field(default="", metadata=setting("CURVE_CLIENT_SECRET"))
    curve_server_key: str = field(default="", metadata=setting("CURVE_SERVER_KEY"))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.source == "replay" and not self.replay_file:
            raise ConfigError("REPLAY_FILE: the replay source needs a file (or --replay-file)")
        masks = [s for s in self.symbols if is_group_mask(s)]
        if masks and self.source != "mt5":
            raise ConfigError(f"SYMBOLS: group masks ({masks[0]}) are resolved by an MT5 terminal; "
                              f"the {self.source} source needs plain names")


_TYPE_WORDS = {"int": "an integer", "float": "a number", "bool": "a flag (1/0, true/false, yes/no, on/off)"}


def _convert(name: str, type_name: object, raw: object) -> object:
    """Turn a string (env) or CLI value into the field's type, naming the setting on failure."""
    try:
        if type_name in ("tuple[str, ...]",):
            return _csv(raw)  # type: ignore[arg-type]
        if type_name == "int":
            return int(raw)  # type: ignore[arg-type]
        if type_name == "float":
            return float(raw)  # type: ignore[arg-type]
        if type_name == "bool":
            return _flag(raw)
        return str(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: cannot use {raw!r} as {_TYPE_WORDS.get(str(type_name), type_name)}") from None


_FLAG_WORDS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False,
               "off": False}


def _flag(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    word = str(raw).strip().lower()
    if word not in _FLAG_WORDS:
        raise ValueError(word)
    return _FLAG_WORDS[word]


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
