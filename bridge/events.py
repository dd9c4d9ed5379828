"""Client events: each declared once (``ClientEvent``), and the Socket.IO namespace that
dispatches every one of them the same way.

``ClientNamespace`` is python-socketio's documented extension point, an ``AsyncNamespace`` whose
``trigger_event`` receives every event of the default namespace. For each client event it takes a
token from the client's bucket, finds the declaration, checks the payload against the declared
fields (``bridge.validation``, pure), runs the handler and sends the reply event and the same
payload as the acknowledgement; a refused request gets ``error {code, message, event}`` both ways.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import socketio

from bridge.validation import (RATE_LIMITED, ClientError, Context, Field, Request, event_name, parse_request,
                               unknown_event)

if TYPE_CHECKING:
    from bridge.server import Bridge

# Names python-socketio gives its own connect and disconnect calls: never a declared event's.
LIFECYCLE = frozenset({"connect", "disconnect"})
# A client is told it is rate limited at most this often, not once per flooded request.
RATE_LIMITED_EVERY_S = 1.0

Handler = Callable[["Bridge", str, Request], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class ClientEvent:
    """One event a client may send: its payload's ``fields``, the ``handler`` that answers it
    (``(bridge, sid, request) -> payload``), the ``reply`` event that carries the payload, and
    whether the reply is ``large`` (then encoded one at a time, taking turns with the flush)."""

    name: str
    fields: tuple[Field, ...]
    reply: str
    handler: Handler
    large: bool = False

    def parse(self, args: tuple[Any, ...], ctx: Context) -> Request:
        return parse_request(self.name, self.fields, args, ctx)


class EventTable:
    """The declared client events, in declaration order."""

    def __init__(self, events: tuple[ClientEvent, ...] = ()) -> None:
        self._events: dict[str, ClientEvent] = {}
        for event in events:
            self.declare(event)

    def declare(self, event: ClientEvent) -> None:
        if event.name in self._events or event.name in LIFECYCLE:
            raise ValueError(f"client event {event.name!r} is taken")
        self._events[event.name] = event

    def event(self, name: str, *fields: Field, reply: str, large: bool = False) -> Callable[[Handler], Handler]:
        """Declare the decorated handler as the client event ``name``."""
        def declare(handler: Handler) -> Handler:
            self.declare(ClientEvent(name, fields, reply, handler, large))
            return handler
        return declare

    def find(self, name: object) -> ClientEvent:
        """The declaration of ``name``; ``ClientError(bad_request)`` listing the valid ones if none."""
        declared = self._events.get(name) if isinstance(name, str) else None
        if declared is None:
            raise unknown_event(name, self._events)
        return declared

    def copy(self) -> EventTable:
        return EventTable(tuple(self._events.values()))

    def __iter__(self) -> Iterator[ClientEvent]:
        return iter(self._events.values())


class ClientNamespace(socketio.AsyncNamespace):
    """The bridge's default namespace: connect and disconnect go to the bridge, every other event
    to ``answer``. Dispatch is by the declared table, never by looking up a method named after
    what the client sent (as ``AsyncNamespace``'s own ``on_<event>`` lookup would)."""

    def __init__(self, bridge: Bridge, events: EventTable) -> None:
        super().__init__("/")
        self.bridge = bridge
        self.events = events
        # Large replies are encoded one at a time (a get_candles(1000) reply takes milliseconds):
        # many clients' requests arriving together then take turns with the flush instead of all
        # running in one pass of the event loop ahead of it.
        self._reply_turn = asyncio.Semaphore(1)

    async def trigger_event(self, event: str, *args: Any) -> Any:
        sid = args[0]
        # python-socketio calls connect while the client is pre-connected (the server does not
        # set always_connect) and disconnect once it is no longer connected; a client's own event
        # of either name is an unknown event, even one whose task runs after its disconnect began
        # (then the sid is in neither state for connect, and a second disconnect changes nothing).
        manager = self.server.manager
        if event == "connect" and manager.is_pre_connected(sid, self.namespace):
            return await self.bridge.on_connect(*args)
        if event == "disconnect" and not manager.is_connected(sid, self.namespace):
            return await self.bridge.on_disconnect(*args)
        return await self.answer(event, sid, *args[1:])

    async def answer(self, event: str, sid: str, *args: Any) -> Any:
        """Rate limit, validate, answer (reply event + acknowledgement)."""
        bridge = self.bridge
        client = bridge.clients.get(sid)
        if client is None:
            return None
        now = time.monotonic()
        if not client.bucket.take(now):
            bridge.rate_limited += 1
            config = bridge.config
            error = ClientError(RATE_LIMITED, f"more than {config.rate_limit_per_s:g} requests/s "
                                f"(burst {config.rate_limit_burst}); slow down", event_name(event))
            if now - client.limited_at >= RATE_LIMITED_EVERY_S:
                client.limited_at = now
                await self.send_error(sid, error)
            return error.payload()
        try:
            declared = self.events.find(event)
            request = declared.parse(args, await bridge.request_context())
            payload = await declared.handler(bridge, sid, request)
        except ClientError as error:
            await self.send_error(sid, error)
            return error.payload()
        if declared.large:
            async with self._reply_turn:
                if sid not in bridge.clients:
                    return None  # gone meanwhile (disconnected over its budget, say): no work for it
                await self.emit(declared.reply, payload, to=sid)
        else:
            await self.emit(declared.reply, payload, to=sid)
        return payload

    async def send_error(self, sid: str, error: ClientError) -> None:
        self.bridge.errors_sent += 1
        await self.emit("error", error.payload(), to=sid)
