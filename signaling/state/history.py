"""Room history: the events worth recovering, numbered per room, so a client that was
away gets what it missed (Centrifugo's offset + epoch model).

A recorded event carries ``"position": {"room", "epoch", "offset"}`` in its ``data``: the
room, the ``epoch`` (a random name of the history's current life: a history that expired
or was lost starts a new one) and the ``offset`` (1, 2, ... in the one order every node
delivers the room's events in). A client
rejoining with the last ``(epoch, offset)`` it saw gets every recorded event after it with
``recovered: true``, or ``recovered: false`` if the epoch changed or the events it missed
are no longer kept (beyond ``history_size`` events or ``history_ttl`` seconds): then it
reloads from the chat backend. Never a partial recovery.

The envelope is built once, with fixed-width places for the epoch and the offset, so the
shared store can fill them in the same step that numbers, keeps and publishes the event.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

EPOCH_LENGTH = 8
OFFSET_WIDTH = 20


@dataclass(frozen=True, slots=True)
class Position:
    epoch: str
    offset: int

    def to_wire(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "offset": self.offset}


@dataclass(frozen=True, slots=True)
class Recovery:
    position: Position
    recovered: bool
    #: The missed events' envelopes (JSON ``{"type", "data"}``), oldest first.
    publications: list[bytes] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Template:
    """An event's envelope around its epoch and offset: ``head + epoch + middle + offset
    (right-aligned in OFFSET_WIDTH) + tail``; its length does not depend on them."""

    head: bytes
    middle: bytes
    tail: bytes

    @classmethod
    def of(cls, room_id: str, type_: str, data: dict[str, Any]) -> Template:
        body = orjson.dumps({"type": type_, "data": data})  # ends with "}}"
        head = body[:-2]
        separator = b"" if head.endswith(b"{") else b","
        room = orjson.dumps(room_id)
        return cls(
            head + separator + b'"position":{"room":' + room + b',"epoch":"',
            b'","offset":',
            b"}}}",
        )

    @property
    def length(self) -> int:
        return len(self.head) + EPOCH_LENGTH + len(self.middle) + OFFSET_WIDTH + len(self.tail)

    def fill(self, epoch: str, offset: int) -> bytes:
        return b"".join((self.head, epoch.encode(), self.middle, b"%20d" % offset, self.tail))


def entry(exclude_user: str | None, envelope: bytes) -> bytes:
    """A kept event: who it was not sent to (``<length>:<user>``), then the envelope."""
    user = (exclude_user or "").encode()
    return b"%d:" % len(user) + user + envelope


def parse_entry(raw: bytes) -> tuple[str, bytes]:
    colon = raw.index(b":")
    length = int(raw[:colon])
    return raw[colon + 1 : colon + 1 + length].decode(), raw[colon + 1 + length :]


def offset_of(envelope: bytes) -> int:
    return int(envelope[-(OFFSET_WIDTH + 3) : -3])


def recovery(position: Position, kept: Iterable[bytes], since: Position, user_id: str) -> Recovery:
    """What a client that saw up to ``since`` gets, from the kept entries (oldest first)."""
    if since.epoch != position.epoch or since.offset > position.offset:
        return Recovery(position, False)
    missed: list[bytes] = []
    first = position.offset + 1
    for raw in kept:
        excluded, envelope = parse_entry(raw)
        offset = offset_of(envelope)
        first = min(first, offset)
        if offset > since.offset and excluded != user_id:
            missed.append(envelope)
    if since.offset + 1 < first:
        return Recovery(position, False)  # some of what it missed is no longer kept
    return Recovery(position, True, missed)


class RoomHistory(ABC):
    """Reading a room's history (recording is part of the fan-out:
    :meth:`signaling.state.delivery.Fanout.to_room_recorded`)."""

    size: int = 100
    ttl: float = 300.0

    def configure(self, *, size: int, ttl: float) -> None:
        self.size, self.ttl = size, ttl

    @abstractmethod
    async def position(self, room_id: str) -> Position:
        """The room's current epoch and last offset (``("", 0)`` with no history)."""

    @abstractmethod
    async def recover(self, room_id: str, since: Position, user_id: str) -> Recovery: ...
