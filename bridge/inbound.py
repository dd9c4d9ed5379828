"""What a client may send on its connection, packet by packet (pure): why a packet is refused, or ``None``.

The API is text only: requests are Socket.IO EVENT packets (and CONNECT/DISCONNECT). Binary
packets and packets announcing attachments (BINARY_EVENT, BINARY_ACK) are refused from their
first character, before python-socketio decodes them or waits for (and keeps) the attachments
they announce; so are packets it could not decode or dispatch.
"""
from __future__ import annotations

from typing import Any

from engineio import packet as eio_packet
from socketio import packet as sio_packet

BINARY = "binary"
ATTACHMENTS = "attachments"
MALFORMED = "malformed"
REASONS = (BINARY, ATTACHMENTS, MALFORMED)

_EIO_KINDS = frozenset(str(k) for k in range(len(eio_packet.packet_names)))
_SIO_ACCEPTED = frozenset(str(k) for k in (sio_packet.CONNECT, sio_packet.DISCONNECT, sio_packet.EVENT))
_SIO_ATTACHED = frozenset(str(k) for k in (sio_packet.BINARY_EVENT, sio_packet.BINARY_ACK))


def eio_refusal(frame: Any) -> str | None:
    """Why an Engine.IO packet received as a websocket frame is refused."""
    if not isinstance(frame, str):
        return BINARY
    if frame[:1] not in _EIO_KINDS:
        return MALFORMED
    return None


def sio_refusal(data: Any) -> str | None:
    """Why a Socket.IO packet (an Engine.IO MESSAGE's data) is refused."""
    if not isinstance(data, str):
        return BINARY
    kind = data[:1]
    if kind in _SIO_ATTACHED:
        return ATTACHMENTS
    if kind not in _SIO_ACCEPTED:
        return MALFORMED
    try:
        pkt = sio_packet.Packet(encoded_packet=data)
    except (ValueError, TypeError, IndexError, RecursionError):
        return MALFORMED
    if pkt.attachment_count:
        return ATTACHMENTS
    if pkt.packet_type == sio_packet.EVENT and not (
            isinstance(pkt.data, list) and pkt.data and isinstance(pkt.data[0], str)):
        return MALFORMED  # an event is ["name", ...args]
    return None
