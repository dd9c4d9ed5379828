"""Market sources behind one interface (``base.MarketSource``): sim, replay and mt5."""
from __future__ import annotations

from engine.config import EngineConfig
from engine.sources.base import MarketSource, SourceError


def create_source(config: EngineConfig) -> MarketSource:
    """The source ``config.source`` names, configured (not started)."""
    if config.source == "sim":
        from engine.sources.sim import SimSource

        return SimSource(config.symbols, seed=config.seed, rate=config.rate)
    if config.source == "replay":
        from engine.sources.replay import ReplaySource

        return ReplaySource(config)
    if config.source == "mt5":
        from engine.sources.mt5 import MT5Source

        return MT5Source(config)
    raise SourceError(f"unknown source {config.source!r}")


__all__ = ["MarketSource", "SourceError", "create_source"]
