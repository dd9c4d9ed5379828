"""The ``MetaTrader5`` package of another Python, reached through an RPyC classic server.

Traders run the terminal under Wine on Linux, with ``MetaTrader5`` importable in the Wine Python
and an RPyC *classic* server there (``mt5linux``'s, or rpyc's own ``rpyc_classic``).
``RemoteMT5`` stands in for the module in ``MT5Source``: the same functions, constants, return
shapes and error convention (``MT5_BACKEND=rpyc``).

By value, one round trip per call. A remote result is a proxy until copied, and
``rpyc.classic.obtain`` pickles it, which fails for the package's struct types (their classes
exist only where the package is) and ties numpy's pickle format to both sides' numpy versions.
So ``serve_call`` runs on the server: it calls the function, reads ``last_error()`` at once and
``encode``s both as tuples of plain values, which RPyC's own serializer carries by value
(arrays as their dtype description and bytes, structs as their field names and values). Its
source, with the codec's, is sent once per connection as text (``conn.execute``): unlike
``teleport``, which ships bytecode, that runs on any Python the server has.

A lost link looks like the package's own IPC loss: the call returns what the package returns on
failure (``None``, or ``False``), ``last_error()`` gives -10004 (-10005 on a timeout) saying why,
the connection is dropped, and the next ``initialize`` connects again.
"""
from __future__ import annotations

import datetime
import functools
import inspect
import threading
from collections import namedtuple
from typing import Any

import numpy as np
from rpyc.core.service import ClassicClient
from rpyc.core.stream import SocketStream
from rpyc.utils.factory import connect_stream

from engine.config import EngineConfig

# last_error() codes of the package's IPC family (see engine.sources.mt5.IPC_ERRORS).
IPC_INIT_FAILED = -10003
NO_IPC = -10004
IPC_TIMEOUT = -10005
SUCCESS = (1, "Success")
# What a function returns when it fails, as the package does: False for those answering
# whether they succeeded, None for the others.
FAILED_VALUE: dict[str, Any] = dict.fromkeys(
    ("initialize", "login", "symbol_select", "market_book_add", "market_book_release"), False)
CONNECT_TIMEOUT_S = 3.0
# shutdown only says goodbye before the connection is closed: a stuck server is not waited
# for longer than this (the engine's stop waits on it).
SHUTDOWN_TIMEOUT_S = 2.0
# TCP keepalive idle time and probe interval (Linux; 5 probes): a server host that vanished
# mid-message, which no request timeout sees (rpyc reads a started message to its end), is
# found within about a minute.
KEEPALIVE_S = 10
# The package gives up by itself after initialize's ``timeout`` (MT5_TIMEOUT_MS); a call that
# has not returned this much later is stuck in the server or on the network.
TIMEOUT_MARGIN_S = 5.0


# -- the codec, run on both sides (its source is sent to the server) ------------------------


def encode(value: Any) -> Any:
    """``value`` as None, bool, int, float, str, bytes or tuples of them (tagged by kind)."""
    if value is None:
        return None
    for kind in (bool, int, float, str, bytes):  # subclasses (numpy's float64, IntEnum) as the plain type
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise TypeError("cannot carry an array of Python objects by value")
        descr = value.dtype.str if value.dtype.names is None else descr_tuple(value.dtype.descr)
        return ("array", descr, tuple(value.shape), value.tobytes())
    if isinstance(value, np.generic):
        return encode(value.item())
    if hasattr(value, "_asdict"):  # the package's struct types (TerminalInfo, Tick, ...)
        fields = value._asdict()
        return ("struct", type(value).__name__, tuple(fields), tuple(encode(v) for v in fields.values()))
    if isinstance(value, tuple):
        return ("tuple", tuple(encode(v) for v in value))
    if isinstance(value, list):
        return ("list", tuple(encode(v) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple((encode(k), encode(v)) for k, v in value.items()))
    if isinstance(value, datetime.datetime):
        return ("datetime", value.isoformat())
    raise TypeError(f"cannot carry a {type(value).__name__} by value")


def decode(value: Any) -> Any:
    """What ``encode`` made, back as the value: structs as namedtuples of the same name and
    fields, arrays as writable arrays of the same dtype."""
    if type(value) is not tuple:
        return value
    kind = value[0]
    if kind == "array":
        _, descr, shape, data = value
        dtype = np.dtype(descr if isinstance(descr, str) else descr_list(descr))
        return np.frombuffer(bytearray(data), dtype).reshape(shape)
    if kind == "struct":
        _, name, fields, values = value
        return struct_type(name, fields)(*(decode(v) for v in values))
    if kind == "tuple":
        return tuple(decode(v) for v in value[1])
    if kind == "list":
        return [decode(v) for v in value[1]]
    if kind == "dict":
        return {decode(k): decode(v) for k, v in value[1]}
    if kind == "datetime":
        return datetime.datetime.fromisoformat(value[1])
    raise ValueError(f"not an encoded value: {kind!r}")


def descr_tuple(descr: list) -> tuple:
    """A structured dtype's ``descr`` (lists of field tuples) as nested tuples."""
    return tuple((f[0], f[1] if isinstance(f[1], str) else descr_tuple(f[1]), *f[2:]) for f in descr)


def descr_list(descr: tuple) -> list:
    """``descr_tuple``'s result back as the ``descr`` numpy takes."""
    return [(f[0], f[1] if isinstance(f[1], str) else descr_list(f[1]), *f[2:]) for f in descr]


@functools.lru_cache(maxsize=64)
def struct_type(name: str, fields: tuple[str, ...]) -> type:
    """The local namedtuple standing for the package's struct type ``name``."""
    return namedtuple(name, fields)


def serve_call(module: Any, name: str, args: Any, kwargs: Any) -> tuple[Any, tuple[int, str]]:
    """(On the server.) ``module.name(*args, **kwargs)`` encoded, and the ``last_error()`` it left."""
    result = getattr(module, name)(*decode(args), **dict(decode(kwargs)))
    code, message = module.last_error()
    return encode(result), (int(code), str(message))


def describe(module: Any) -> Any:
    """(On the server.) The module's constants (upper-case plain values) and function names."""
    constants = {}
    functions = []
    for name in dir(module):
        if name.startswith("_"):
            continue
        value = getattr(module, name)
        if name.isupper() and isinstance(value, (int, float, str)):
            constants[name] = value
        elif callable(value) and not isinstance(value, type):
            functions.append(name)
    return encode((constants, tuple(functions)))


SERVER_SOURCE = "\n".join([
    "from __future__ import annotations",
    "import datetime, functools",
    "from collections import namedtuple",
    "from typing import Any",
    "import numpy as np",
    "import sys",
    "import MetaTrader5",
    # A module may replace itself in sys.modules (the tests' stand-in does); an import that
    # waited for another thread's hands back the object it replaced.
    "MetaTrader5 = sys.modules['MetaTrader5']",
    *(inspect.getsource(f) for f in (encode, decode, descr_tuple, descr_list, struct_type, serve_call, describe)),
    "def call(name, args, kwargs):\n    return serve_call(MetaTrader5, name, args, kwargs)",
    "def describe_module():\n    return describe(MetaTrader5)",
])


# -- the client -----------------------------------------------------------------------------


class RemoteMT5:
    """The ``MetaTrader5`` module of an RPyC classic server at ``host:port``, by value.

    Constants (``TIMEFRAME_H1`` ...) are read once per connection and are attributes; any other
    public name is a function of the package. Calls are serialized (the package is one global
    connection, and ``last_error()`` must describe the call just made).
    """

    def __init__(self, host: str, port: int, *, timeout_s: float,
                 connect_timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        self.host = host
        self.port = port
        self._timeout_s = timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._lock = threading.RLock()
        self._conn: Any = None
        self._call: Any = None
        self._functions: frozenset[str] | None = None  # known once connected
        self._error: tuple[int, str] = SUCCESS

    def __repr__(self) -> str:
        return f"<MetaTrader5 over RPyC at {self.host}:{self.port}>"

    def __getattr__(self, name: str) -> Any:
        functions = self.__dict__.get("_functions")
        if name.startswith("_") or name.isupper() or (functions is not None and name not in functions):
            raise AttributeError(f"{self!r} has no {name!r}"
                                 + ("" if functions is not None else " (not connected yet)"))
        return functools.partial(self._api_call, name)

    def initialize(self, *args: Any, **kwargs: Any) -> bool:
        """Connect to the server if not connected, then the package's ``initialize``."""
        with self._lock:
            if self._conn is None and not self._connect():
                return False
            try:
                return bool(self._remote("initialize", args, kwargs))
            except Exception as exc:  # raised in the server's Python: no session either
                self._init_failed(exc)
                return False

    def shutdown(self) -> None:
        """The package's ``shutdown``, then the connection is closed (``initialize`` reopens it)."""
        with self._lock:
            if self._conn is not None:
                self._conn._config["sync_request_timeout"] = min(self._timeout_s, SHUTDOWN_TIMEOUT_S)
                self._remote("shutdown", (), {})
            self._disconnect()

    def last_error(self) -> tuple[int, str]:
        """The error the last call left (read on the server with that call)."""
        return self._error

    # -- internals ------------------------------------------------------------------------

    def _api_call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            if self._conn is None:
                self._error = (NO_IPC, f"No IPC connection: not connected to the RPyC server at "
                                       f"{self.host}:{self.port} (initialize connects)")
                return FAILED_VALUE.get(name)
            return self._remote(name, args, kwargs)

    def _remote(self, name: str, args: tuple, kwargs: dict[str, Any]) -> Any:
        try:
            result, self._error = self._call(name, encode(args), encode(tuple(kwargs.items())))
        except (EOFError, OSError) as exc:  # socket errors, ConnectionError, rpyc's TimeoutError
            if hasattr(exc, "_remote_tb"):  # raised by the package on the server: its own error
                raise
            self._lose(name, exc)
            return FAILED_VALUE.get(name)
        return decode(result)

    def _lose(self, name: str, exc: BaseException) -> None:
        where = f"the RPyC server at {self.host}:{self.port}"
        if isinstance(exc, TimeoutError):
            waited = self._conn._config["sync_request_timeout"]
            self._error = (IPC_TIMEOUT, f"IPC timeout: {where} did not answer {name} within {waited:g} s")
        else:
            self._error = (NO_IPC, f"No IPC connection: lost {where} ({type(exc).__name__}: {exc})")
        self._disconnect()

    def _connect(self) -> bool:
        conn = None
        try:
            stream = SocketStream.connect(self.host, self.port, timeout=self._connect_timeout_s,
                                          attempts=1, nodelay=True, keepalive=KEEPALIVE_S)
            # ClassicClient: this side controls the server's Python; the server gets no
            # access to the engine's (rpyc.classic.connect would grant it).
            conn = connect_stream(stream, ClassicClient, {"sync_request_timeout": self._timeout_s})
            conn.execute(SERVER_SOURCE)
            constants, functions = decode(conn.namespace["describe_module"]())
            self._call = conn.namespace["call"]
        except Exception as exc:  # the link, or the server's Python (no MetaTrader5 there, an
            # error in it): either way initialize fails, saying why, as the package's would
            self._conn = conn
            self._init_failed(exc)
            return False
        self.__dict__.update(constants)
        self._functions = frozenset(functions)
        self._conn = conn
        return True

    def _init_failed(self, exc: BaseException) -> None:
        """``initialize`` fails with ``exc``: -10003 saying why in one line, the link dropped."""
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else "no message"
        self._error = (IPC_INIT_FAILED, f"IPC initialize failed: cannot use the RPyC server at "
                                        f"{self.host}:{self.port}: {type(exc).__name__}: {why}")
        self._disconnect()

    def _disconnect(self) -> None:
        conn, self._conn, self._call = self._conn, None, None
        if conn is not None:
            _close(conn)


def _close(conn: Any) -> None:
    """Close ``conn`` without waiting for the server's reply to the goodbye (rpyc would wait a
    whole request timeout for it, and a stuck server never sends it)."""
    conn._config["sync_request_timeout"] = 0
    try:
        conn.close()
    except (EOFError, OSError):  # the link is already gone
        pass


def remote_module(config: EngineConfig) -> RemoteMT5:
    """The ``MetaTrader5`` module at ``MT5_HOST:MT5_PORT``; a call waits at most the package's
    own timeout plus a margin."""
    return RemoteMT5(config.mt5_host, config.mt5_port,
                     timeout_s=config.mt5_timeout_ms / 1000 + TIMEOUT_MARGIN_S)
