"""What one Socket.IO session was sent, so that its client can resume it: see
:mod:`signaling.socketio.recovery` for how connection-state recovery uses it."""

from __future__ import annotations

from collections import deque
from typing import Any

import orjson

from signaling.socketio.packets import Mark

#: Recorded events a session remembers having sent. Only those the client may not have
#: received when the transport dropped matter (a send buffer's worth at most).
CAPACITY = 256


class RecoveryLog:
    """What one Socket.IO session was sent, for its client to resume from."""

    __slots__ = ("_base", "_evicted", "_last", "_sent", "capacity", "held", "held_bytes", "origin")

    def __init__(self, origin: str | None, *, capacity: int = CAPACITY) -> None:
        #: The offset the client reconnected with (what it had before this session).
        self.origin = origin
        self.capacity = capacity
        self._sent: deque[Mark] = deque()
        #: Where each room's view starts: the position read when it was joined, moved on as
        #: events are forgotten.
        self._base: dict[str, tuple[str, int]] = {}
        #: The last offset sent per room: a recorded event is written once, even when it
        #: arrives both live and from history.
        self._last: dict[str, tuple[str, int]] = {}
        self._evicted = False
        #: While the session resumes, packets written to it wait here (in order).
        self.held: list[tuple[bytes, bytes | None, Mark | None]] | None = None
        self.held_bytes = 0

    def joined(self, room_id: str, epoch: str, offset: int) -> None:
        """The room was joined at this position: the client has it up to there."""
        self._base[room_id] = (epoch, offset)

    def record(self, mark: Mark) -> bool:
        """Note a recorded event about to be written; ``False`` if it already was."""
        _, room, epoch, offset = mark
        last = self._last.get(room)
        if last is not None and last[0] == epoch and last[1] >= offset:
            return False
        self._last[room] = (epoch, offset)
        sent = self._sent
        if len(sent) >= self.capacity:
            _, old_room, old_epoch, old_offset = sent.popleft()
            self._base[old_room] = (old_epoch, old_offset)
            self._evicted = True
        sent.append(mark)
        return True

    def snapshot(self, rooms: set[str]) -> bytes:
        """What the next session needs to resume this one in ``rooms``."""
        return orjson.dumps(
            {
                "origin": self.origin,
                "evicted": self._evicted,
                "rooms": sorted(rooms),
                "base": {room: self._base[room] for room in rooms if room in self._base},
                "sent": list(self._sent),
            }
        )


def resume_positions(snapshot: dict[str, Any], offset: Any) -> dict[str, tuple[str, int]] | None:
    """Where the client is in each room of the snapshot, given the last offset it received;
    ``None`` if that cannot be known (the offset is not one this session sent, or events
    it may have missed were already forgotten)."""
    sent: list[list[Any]] = snapshot["sent"]
    tokens = [entry[0] for entry in sent]
    if offset in tokens:
        received = len(tokens) - 1 - tokens[::-1].index(offset)
    elif offset == snapshot["origin"] and not snapshot["evicted"]:
        received = -1  # nothing this session sent reached the client
    else:
        return None
    positions: dict[str, tuple[str, int]] = {}
    for room in snapshot["rooms"]:
        seen = [entry for entry in sent[: received + 1] if entry[1] == room]
        if seen:
            positions[room] = (seen[-1][2], seen[-1][3])
            continue
        base = snapshot["base"].get(room)
        if base is None:
            return None  # dropped while joining, before the room's position was read
        epoch, at = base[0], base[1]
        unseen = [entry for entry in sent[received + 1 :] if entry[1] == room]
        if unseen and unseen[0][2] == epoch:
            at = min(at, unseen[0][3] - 1)  # sent live before the join's position was read
        positions[room] = (epoch, at)
    return positions
