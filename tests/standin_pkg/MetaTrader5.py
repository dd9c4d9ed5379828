"""``import MetaTrader5`` answered by the test stand-in, for processes that import the package by
name (an engine run with ``--source mt5``, an RPyC classic server): put this directory and the
repository root on ``PYTHONPATH``. The module object is one ``MT5StandIn`` terminal, so its
scripting methods (``add_symbol``, ``add_tick``, ``drop_ipc`` …) are reachable through it.
With ``tests.mt5_market.market_environ`` in the environment, a market on this process' clock
ticks it from the start.
"""
import os
import sys

from tests.mt5_market import start_from_environ
from tests.mt5_standin import MT5StandIn

terminal = MT5StandIn()
start_from_environ(terminal, os.environ)
sys.modules[__name__] = terminal
