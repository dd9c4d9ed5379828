import pytest

from engine.config import ConfigError, EngineConfig, read_dotenv


def test_defaults_bind_to_loopback_and_serve_the_five_symbols():
    cfg = EngineConfig.load(environ={}, dotenv=None)
    assert cfg.source == "sim"
    assert cfg.symbols == ("EURUSD", "GBPUSD", "USDJPY", "XAUUSD", "BTCUSD")
    assert cfg.timeframes == ("M1", "M5", "M15", "H1")
    for endpoint in (cfg.bus_endpoint, cfg.bus_pub_endpoint, cfg.rpc_endpoint):
        assert endpoint.startswith("tcp://127.0.0.1:")


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
        ({"max_candles": "many"}, "max_candles"),
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
