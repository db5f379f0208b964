"""A media node's load as its heartbeat publishes it, and the measure placement ranks by.

The measure (lower is better)::

    score = cpu + TRACK_COST * forwarded_tracks + PARTICIPANT_COST * participants
                + ROOM_COST * rooms

- ``cpu``: the process's CPU use over the last heartbeat interval, in cores (1.0 = one
  core busy), aiortc's threads included.
- ``forwarded_tracks``: outgoing streams (one per subscriber per track): the per-packet
  work of an SFU.
- ``participants``: peer connections kept alive (ICE, DTLS, RTCP), two each.
- ``rooms``: rooms placed there, including the ones this node placed in the last two
  heartbeat intervals (their first participants may not have arrived yet).

CPU alone reacts late: a room placed a moment ago shows no CPU yet, so a burst of calls
would all land on the node that was idle at the last beat. The counts predict the cost
before it shows. Their weights come from the media benchmark (about 14,000 packets per
CPU-second; a forwarded 500 kbps video with its audio is about 100 packets a second, so
about 0.007 of a core; a participant's two idle connections cost about 0.005; a new room
is priced as the few participants it is about to get).

A node takes no new room when it hosts no media (``sfu_host_rooms`` off: a signaling-only
node), while draining, or when any configured limit is reached
(``sfu_max_rooms``, ``sfu_max_participants``, ``sfu_max_cpu``; 0 means no limit).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

TRACK_COST = 0.007
PARTICIPANT_COST = 0.005
ROOM_COST = 0.02


class CpuMeter:
    """CPU used by this process between two readings, in cores."""

    def __init__(self) -> None:
        self._cpu = time.process_time()
        self._wall = time.monotonic()
        self.last = 0.0

    def read(self) -> float:
        cpu, wall = time.process_time(), time.monotonic()
        if wall - self._wall >= 0.5:  # a shorter window says more about noise than load
            self.last = (cpu - self._cpu) / (wall - self._wall)
            self._cpu, self._wall = cpu, wall
        return self.last


@dataclass(frozen=True, slots=True)
class NodeLoad:
    node: str
    cpu: float = 0.0
    rooms: int = 0
    participants: int = 0
    tracks: int = 0
    draining: bool = False
    max_rooms: int = 0
    max_participants: int = 0
    max_cpu: float = 0.0
    media: bool = True

    @classmethod
    def from_wire(cls, node: str, data: dict[str, Any]) -> NodeLoad:
        limits = data.get("limits") or {}
        return cls(
            node=node,
            cpu=float(data.get("cpu", 0.0)),
            rooms=int(data.get("rooms", 0)),
            participants=int(data.get("participants", 0)),
            tracks=int(data.get("tracks", 0)),
            draining=bool(data.get("draining", False)),
            max_rooms=int(limits.get("rooms", 0)),
            max_participants=int(limits.get("participants", 0)),
            max_cpu=float(limits.get("cpu", 0.0)),
            media=bool(data.get("hostsMedia", False)),
        )

    @property
    def score(self) -> float:
        return (
            self.cpu
            + TRACK_COST * self.tracks
            + PARTICIPANT_COST * self.participants
            + ROOM_COST * self.rooms
        )

    def full(self) -> str | None:
        """Why the node takes no new room, or ``None`` if it does."""
        if not self.media:
            return "hosts no group call media (sfu_host_rooms is off)"
        if self.draining:
            return "draining"
        if self.max_rooms and self.rooms >= self.max_rooms:
            return f"at its room limit ({self.max_rooms})"
        if self.max_participants and self.participants >= self.max_participants:
            return f"at its participant limit ({self.max_participants})"
        if self.max_cpu and self.cpu >= self.max_cpu:
            return f"at its CPU limit ({self.cpu:.2f} of {self.max_cpu:g} cores)"
        return None


def least_loaded(loads: list[NodeLoad], exclude: set[str] | None = None) -> NodeLoad | None:
    """The open node with the lowest score (ties: fewer rooms, then the node id)."""
    open_ = [n for n in loads if n.full() is None and n.node not in (exclude or set())]
    if not open_:
        return None
    return min(open_, key=lambda n: (round(n.score, 3), n.rooms, n.node))


def with_rooms(load: NodeLoad, extra: int) -> NodeLoad:
    return dataclasses.replace(load, rooms=load.rooms + extra) if extra else load
