"""Plain data kept in the hub state. Dataclasses with dict round-trips, so a shared store
(Redis) can hold the same records the in-memory store does."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

DeviceStatus = Literal["online", "away", "dnd", "invisible"]
VisibleStatus = Literal["online", "away", "dnd", "offline"]

# When a user's devices disagree, the first status in this list wins: a privacy choice
# (invisible) beats do-not-disturb, which beats being active; a user is only away when
# every device is idle.
STATUS_PRECEDENCE: tuple[DeviceStatus, ...] = ("invisible", "dnd", "online", "away")


def now_ms() -> int:
    return int(time.time() * 1000)


def aggregate_status(device_statuses: Iterable[str]) -> VisibleStatus:
    """What others see of a user with these device statuses (invisible shows as offline)."""
    present = set(device_statuses)
    for status in STATUS_PRECEDENCE:
        if status in present:
            return "offline" if status == "invisible" else status
    return "offline"


@dataclass(slots=True, frozen=True)
class PresenceInfo:
    user_id: str
    status: VisibleStatus
    last_seen: int | None

    def to_wire(self) -> dict[str, Any]:
        return {"userId": self.user_id, "status": self.status, "lastSeen": self.last_seen}


@dataclass(slots=True, frozen=True)
class PresenceChange:
    before: PresenceInfo
    after: PresenceInfo

    @property
    def changed(self) -> bool:
        return self.before.status != self.after.status


@dataclass(slots=True)
class RemoteConnection:
    """A connection whose node is gone, as the shared state recorded it.

    It has the attributes the services' disconnect paths read from a live connection, so a
    surviving node can take it out of presence, rooms and calls the same way.
    """

    id: str
    user_id: str
    rooms: set[str] = field(default_factory=set)
    closed: bool = True
    #: where it may have typing state: not known (a live connection tracks it)
    typed_in: set[str] | None = None


@dataclass(slots=True, frozen=True)
class Member:
    user_id: str
    name: str


CallState = Literal["ringing", "active", "ended"]
ParticipantState = Literal["ringing", "joined", "reconnecting", "left", "rejected", "missed"]


@dataclass(slots=True)
class CallParticipant:
    user_id: str
    name: str
    role: Literal["caller", "callee"]
    state: ParticipantState
    conn_id: str | None = None
    audio: bool = True
    video: bool = True
    screen: bool = False
    joined_at: int | None = None
    left_reason: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return {
            "userId": self.user_id,
            "name": self.name,
            "role": self.role,
            "state": self.state,
            "audio": self.audio,
            "video": self.video,
            "screen": self.screen,
        }


@dataclass(slots=True)
class Call:
    id: str
    call_type: Literal["audio", "video"]
    caller_id: str
    conversation_id: str | None
    created_at: int
    participants: dict[str, CallParticipant] = field(default_factory=dict)
    state: CallState = "ringing"
    answered_at: int | None = None
    ended_at: int | None = None
    end_reason: str | None = None
    #: Bumped by every shared write, so re-publishing after a Redis restart keeps the
    #: newest copy any node holds.
    version: int = 0

    def in_state(self, *states: str) -> list[CallParticipant]:
        return [p for p in self.participants.values() if p.state in states]

    def to_wire(self) -> dict[str, Any]:
        return {
            "callId": self.id,
            "callType": self.call_type,
            "conversationId": self.conversation_id,
            "callerId": self.caller_id,
            "state": self.state,
            "createdAt": self.created_at,
            "answeredAt": self.answered_at,
            "endedAt": self.ended_at,
            "endReason": self.end_reason,
            "participants": [p.to_wire() for p in self.participants.values()],
        }

    def to_dict(self) -> dict[str, Any]:
        """What ``dataclasses.asdict`` gives (every field is a scalar or a participant of
        scalars), built directly: records are written on every call transition."""
        out = {name: getattr(self, name) for name in _CALL_FIELDS}
        out["participants"] = {
            user: {name: getattr(p, name) for name in _PARTICIPANT_FIELDS}
            for user, p in self.participants.items()
        }
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Call:
        parts = {k: CallParticipant(**v) for k, v in raw["participants"].items()}
        return cls(**{**raw, "participants": parts})


_CALL_FIELDS = tuple(f.name for f in fields(Call) if f.name != "participants")
_PARTICIPANT_FIELDS = tuple(f.name for f in fields(CallParticipant))

RoomType = Literal["chat", "conference"]


@dataclass(slots=True)
class RoomInfo:
    """A room's record: what the chat backend configured (or the defaults of a room that
    was opened by a first join), plus the per-user permissions and each node's summary of
    the group call media it hosts for the room (so any node can describe the room)."""

    id: str
    created_at: int
    type: RoomType = "chat"
    capacity: int | None = None
    empty_timeout: float = 300.0
    metadata: dict[str, Any] = field(default_factory=dict)
    created_by: Literal["api", "join"] = "join"
    permissions: dict[str, dict[str, Any]] = field(default_factory=dict)
    media: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: bits/s any one participant may publish in the room's group call (0: no cap)
    max_publish_bitrate: int = 0
    #: whole-room recordings running (their latest ids): whichever media node hosts the
    #: room's group call next carries them on
    recordings: list[str] = field(default_factory=list)

    def permission(self, user_id: str, name: str) -> bool:
        return bool(self.permissions.get(user_id, {}).get(name, True))

    def publish_cap(self, user_id: str) -> int:
        """The user's own publish cap in bits/s (0: none of its own; the room's applies)."""
        return int(self.permissions.get(user_id, {}).get("maxPublishBitrate", 0))

    def media_participants(self) -> list[dict[str, Any]]:
        """Group call participants over every node hosting some of the room's media."""
        return [p for node in self.media.values() for p in node.get("participants", [])]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RoomInfo:
        return cls(**raw)
