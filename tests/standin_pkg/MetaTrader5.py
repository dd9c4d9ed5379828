"""``import MetaTrader5`` answered by the test stand-in, for processes that import the package by
name (an engine run with ``--source mt5``, an RPyC classic server): put this directory and the
repository root on ``PYTHONPATH``. The module object is one ``MT5StandIn`` terminal, so its
scripting methods (``add_symbol``, ``add_tick``, ``drop_ipc`` …) are reachable through it.
"""
import sys

from tests.mt5_standin import MT5StandIn

sys.modules[__name__] = MT5StandIn()
