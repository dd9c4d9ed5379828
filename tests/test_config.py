from dataclasses import fields

import pytest

from bridge.config import BridgeConfig
from engine.config import ConfigError, EngineConfig, endpoint, read_dotenv
from indicators.worker import WorkerConfig

COMPONENTS = (EngineConfig, BridgeConfig, WorkerConfig)


def test_defaults_bind_to_loopback_and_serve_the_five_symbols():
    cfg = EngineConfig.load(environ={}, dotenv=None)
    assert cfg.source == "sim"
    assert cfg.symbols == ("EURUSD", "GBPUSD", "USDJPY", "XAUUSD", "BTCUSD")
    assert cfg.timeframes == ("M1", "M5", "M15", "H1")
    for address in (cfg.bus_endpoint, cfg.bus_pub_endpoint, cfg.rpc_endpoint):
        assert address.startswith("tcp://127.0.0.1:")


def test_cli_beats_environment_beats_dotenv_beats_defaults(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("# comment\nMAX_CANDLES=500\nSIM_SEED=1\nexport SIM_RATE='250'\nLOG_LEVEL=DEBUG # inline\n")
    cfg = EngineConfig.load({"seed": "3"}, environ={"SIM_SEED": "2", "MAX_CANDLES": "700"}, dotenv=dotenv)
    assert (cfg.seed, cfg.max_candles, cfg.rate, cfg.log_level) == (3, 700, 250.0, "DEBUG")


def test_password_comes_from_env_and_never_shows_in_repr(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text('MT5_PASSWORD="s3cr3t-pass"\nMT5_LOGIN=123\n')
    cfg = EngineConfig.load(environ={}, dotenv=dotenv)
    assert cfg.mt5_password == "s3cr3t-pass" and cfg.mt5_login == 123
    assert "s3cr3t-pass" not in repr(cfg)


def test_symbol_with_colon_is_refused_at_start_up():
    with pytest.raises(ConfigError, match="':'"):
        EngineConfig.load({"symbols": "EURUSD,US30:cash"}, environ={}, dotenv=None)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"source": "bloomberg"}, "SOURCE"),
        ({"timeframes": "M1,M7"}, "TIMEFRAMES"),
        ({"max_candles": "0"}, "MAX_CANDLES"),
        ({"max_candles": "many"}, "MAX_CANDLES"),
        ({"rate": "-5"}, "SIM_RATE"),
        ({"symbols": "EURUSD,EURUSD"}, "twice"),
        ({"source": "replay"}, "REPLAY_FILE"),
    ],
)
def test_bad_settings_are_refused_naming_the_setting(overrides, message):
    with pytest.raises(ConfigError, match=message):
        EngineConfig.load(overrides, environ={}, dotenv=None)


def test_malformed_dotenv_line_names_file_and_line(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("GOOD=1\nthis is not a setting\n")
    with pytest.raises(ConfigError, match=r"\.env:2"):
        read_dotenv(dotenv)


@pytest.mark.parametrize("value", ["tcp://127.0.0.1:1", "tcp://127.0.0.1:65535", "tcp://*:5555",
                                   "tcp://[::1]:5555", "tcp://eth0:5555", "ipc:///tmp/bus.sock", "inproc://bus"])
def test_endpoints_that_zeromq_can_use_pass(value):
    endpoint(value)


@pytest.mark.parametrize("value, why", [
    ("tcp://127.0.0.1:99999", "not in 1..65535"), ("tcp://127.0.0.1:0", "not in 1..65535"),
    ("tcp://127.0.0.1:*", "not in 1..65535"), ("tcp://127.0.0.1:55x", "not in 1..65535"),
    ("tcp://127.0.0.1", "tcp://HOST:PORT"), ("tcp://:5555", "tcp://HOST:PORT"),
    ("tcp://my host:5555", "tcp://HOST:PORT"), ("udp://127.0.0.1:5555", "ipc://PATH"),
    ("127.0.0.1:5555", "ipc://PATH"), ("ipc://", "ipc://PATH"), ("inproc://a\nb", "inproc://NAME"),
])
def test_endpoints_zeromq_would_refuse_or_misread_are_refused(value, why):
    with pytest.raises(ValueError, match=why.replace("*", "[*]").replace(".", "[.]")):
        endpoint(value)


@pytest.mark.parametrize("env, message", [
    ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL: must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'LOUD'"),
    ({"SIM_RATE": "nan"}, "SIM_RATE: must be a finite number, got nan"),
    ({"SIM_RATE": "inf"}, "SIM_RATE: must be a finite number, got inf"),
    ({"REPLAY_SPEED": "-inf"}, "REPLAY_SPEED: must be a finite number, got -inf"),
    ({"HEALTH_INTERVAL_MS": "0"}, "HEALTH_INTERVAL_MS: must be between 1 and 86400000, got 0"),
    ({"BOOK_INTERVAL_MS": "-1"}, "BOOK_INTERVAL_MS: must be between 1 and 86400000, got -1"),
    ({"MT5_POLL_MS": "0"}, "MT5_POLL_MS: must be between 1 and 86400000, got 0"),
    ({"BUS_HWM": str(2**31)}, "BUS_HWM: must be between 0 and 2147483647"),
    ({"SIM_SEED": "-1"}, "SIM_SEED: must be >= 0, got -1"),
    ({"BUS_PUB_ENDPOINT": "tcp://127.0.0.1:99999"}, "BUS_PUB_ENDPOINT: port '99999' is not in 1..65535"),
    ({"BUS_MODE": "both"}, "BUS_MODE: must be one of embedded, external, got 'both'"),
    ({"TIMEFRAMES": "M1,M1"}, "TIMEFRAMES: lists a timeframe twice"),
    ({"REPLAY_SYMBOL": "EUR:USD"}, "REPLAY_SYMBOL: symbol 'EUR:USD' contains ':'"),
    ({"HEALTH_INTERVAL_MS": "1.5"}, "HEALTH_INTERVAL_MS: cannot use '1.5' as an integer"),
    ({"SYMBOLS": "EURUSD*"}, "SYMBOLS: group masks (EURUSD*) are resolved by an MT5 terminal; the sim"),
    ({"SOURCE": "mt5", "SYMBOLS": "EUR!USD"}, "SYMBOLS: group mask 'EUR!USD': '!' comes once, in front"),
    ({"SOURCE": "mt5", "SYMBOLS": "!"}, "SYMBOLS: group mask '!': '!' comes once, in front"),
    ({"SOURCE": "mt5", "SYMBOLS": "EUR:*"}, "SYMBOLS: symbol 'EUR:' contains ':'"),
])
def test_engine_settings_name_their_variable_and_the_rule(env, message):
    with pytest.raises(ConfigError) as refused:
        EngineConfig.load(environ=env, dotenv=None)
    assert str(refused.value).startswith(message)


@pytest.mark.parametrize("env, message", [
    ({"RATE_LIMIT_PER_S": "nan"}, "RATE_LIMIT_PER_S: must be a finite number, got nan"),
    ({"RATE_LIMIT_PER_S": "0"}, "RATE_LIMIT_PER_S: must be > 0, got 0.0"),
    ({"WS_PORT": "99999"}, "WS_PORT: must be between 1 and 65535, got 99999"),
    ({"WS_HOST": "a b"}, "WS_HOST: must be a host name or address, got 'a b'"),
    ({"CACHE_TTL_SECONDS": "inf"}, "CACHE_TTL_SECONDS: must be a finite number, got inf"),
    ({"ENGINE_STALE_MS": "0"}, "ENGINE_STALE_MS: must be between 1 and 86400000, got 0"),
    ({"CLIENT_BUFFER_SOFT_BYTES": "10", "CLIENT_BUFFER_HARD_BYTES": "5"},
     "CLIENT_BUFFER_SOFT_BYTES: must be <= CLIENT_BUFFER_HARD_BYTES, got 10 > 5"),
])
def test_bridge_settings_name_their_variable_and_the_rule(env, message):
    with pytest.raises(ConfigError) as refused:
        BridgeConfig.load(environ=env, dotenv=None)
    assert str(refused.value).startswith(message)


@pytest.mark.parametrize("env, message", [
    ({"IND_SHARD": "2/2"}, "IND_SHARD: '2/2': need 0 <= i < n"),
    ({"IND_SHARD": "half"}, "IND_SHARD: must look like 0/2, got 'half'"),
    ({"RPC_ENDPOINT": "tcp://127.0.0.1:99999"}, "RPC_ENDPOINT: port '99999' is not in 1..65535"),
    ({"MAX_CANDLES": "0"}, "MAX_CANDLES: must be between 1 and 100000, got 0"),
    ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL: must be one of"),
])
def test_worker_settings_name_their_variable_and_the_rule(env, message):
    with pytest.raises(ConfigError) as refused:
        WorkerConfig.load(environ=env, dotenv=None)
    assert str(refused.value).startswith(message)


@pytest.mark.parametrize("component", COMPONENTS, ids=lambda c: c.__name__)
def test_every_numeric_setting_of_every_component_has_a_rule(component):
    """Each int setting refuses -1 and each float setting NaN and infinity, naming its variable:
    a setting added without a rule fails here."""
    numeric = [f for f in fields(component) if f.type in ("int", "float")]
    assert numeric
    for f in numeric:
        env = f.metadata["env"]
        for bad in ("-1",) if f.type == "int" else ("nan", "inf", "-1"):
            with pytest.raises(ConfigError, match=env):
                component.load(environ={env: bad}, dotenv=None)


@pytest.mark.parametrize("component", COMPONENTS, ids=lambda c: c.__name__)
def test_every_component_checks_its_endpoints_log_level_and_log_file(component, tmp_path):
    names = {f.metadata["env"] for f in fields(component)}
    endpoints = {n for n in names if n.endswith("_ENDPOINT")}
    assert endpoints and {"LOG_LEVEL", "LOG_FILE"} <= names
    for env in sorted(endpoints):
        with pytest.raises(ConfigError, match=f"^{env}: port '0' is not in 1..65535"):
            component.load(environ={env: "tcp://127.0.0.1:0"}, dotenv=None)
    with pytest.raises(ConfigError, match="^LOG_LEVEL: "):
        component.load(environ={"LOG_LEVEL": "verbose"}, dotenv=None)
    assert component.load(environ={"LOG_LEVEL": "debug"}, dotenv=None).log_level == "debug"
    with pytest.raises(ConfigError, match="^LOG_FILE: cannot write .*No such file or directory"):
        component.load(environ={"LOG_FILE": str(tmp_path / "missing" / "x.log")}, dotenv=None)
    with pytest.raises(ConfigError, match="^LOG_FILE: cannot write .*Is a directory"):
        component.load(environ={"LOG_FILE": str(tmp_path)}, dotenv=None)
    log_file = tmp_path / f"{component.__name__}.log"
    assert component.load(environ={"LOG_FILE": str(log_file)}, dotenv=None).log_file == str(log_file)
    assert log_file.is_file()


def test_a_dotenv_that_is_not_utf8_is_refused_naming_the_file(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_bytes(b"SYMBOLS=EUR\xff\n")
    with pytest.raises(ConfigError, match=r"\.env: cannot read it"):
        read_dotenv(dotenv)


def test_mt5_symbols_may_be_group_masks():
    cfg = EngineConfig.load(environ={"SOURCE": "mt5", "SYMBOLS": "EURUSD*, GBPUSD* ,!*.pro,XAUUSD.pro"},
                            dotenv=None)
    assert cfg.symbols == ("EURUSD*", "GBPUSD*", "!*.pro", "XAUUSD.pro")


def test_mt5_flags_and_the_initialize_timeout_are_checked():
    assert EngineConfig.load(environ={"MT5_PORTABLE": "yes"}, dotenv=None).mt5_portable is True
    assert EngineConfig.load(environ={"MT5_PORTABLE": "0"}, dotenv=None).mt5_portable is False
    assert EngineConfig.load(environ={}, dotenv=None).mt5_timeout_ms == 60_000
    with pytest.raises(ConfigError, match="^MT5_PORTABLE: cannot use 'maybe' as a flag"):
        EngineConfig.load(environ={"MT5_PORTABLE": "maybe"}, dotenv=None)
    with pytest.raises(ConfigError, match="^MT5_TIMEOUT_MS: must be between 1000 and 600000"):
        EngineConfig.load(environ={"MT5_TIMEOUT_MS": "10"}, dotenv=None)
