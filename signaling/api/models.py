"""Request and response bodies of the room API. They are the single source of both the
validation and the OpenAPI document (pydantic's JSON Schema is OpenAPI 3.1's dialect)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from signaling.events import RoomId, UserId

MAX_METADATA_BYTES = 16 * 1024
MAX_EVENT_DATA_BYTES = 64 * 1024

# ``namespace:name``; the server's own namespaces and events are excluded (a pushed event
# may not impersonate them), in the pattern so the OpenAPI document says so too.
EventType = Annotated[
    str,
    StringConstraints(
        pattern=r"^(?!(session|room|presence|call|sfu|peer|screen):)"
        r"(?!(message:typing|media:toggle-audio|media:toggle-video)$)"
        r"[a-z][a-z0-9_.-]*(:[a-z0-9_.-]+)+$",
        max_length=64,
    ),
]
Reason = Annotated[str, StringConstraints(min_length=1, max_length=200)]
TrackId = Annotated[str, StringConstraints(min_length=1, max_length=64)]
CallId = Annotated[str, StringConstraints(min_length=1, max_length=64)]
NodeId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,32}$")]
RecordingId = Annotated[str, StringConstraints(pattern=r"^rec_[0-9a-f]{16}$")]


def _bounded_json(value: dict[str, Any], limit: int, what: str) -> dict[str, Any]:
    if len(orjson.dumps(value)) > limit:
        raise ValueError(f"{what} is larger than {limit} bytes as JSON")
    return value


class Body(BaseModel):
    """Request bodies: unknown fields are refused, so a typo is an error, not a no-op."""

    model_config = ConfigDict(extra="forbid")


class Out(BaseModel):
    pass


# -- errors ---------------------------------------------------------------------------------


class ErrorDetail(Out):
    code: str = Field(description="machine-readable reason, e.g. room_not_found")
    message: str


class ErrorBody(Out):
    error: ErrorDetail


# -- rooms ----------------------------------------------------------------------------------


class RoomCreate(Body):
    roomId: RoomId
    type: Literal["chat", "conference"] = "chat"
    capacity: int | None = Field(
        default=None, ge=1, le=100_000, description="most distinct members; none: no limit"
    )
    emptyTimeout: float | None = Field(
        default=None,
        ge=0,
        le=7 * 86400,
        description="seconds the room may stay empty before it is finished "
        "(default: the room_empty_timeout setting)",
    )
    metadata: dict[str, Any] = Field(default_factory=dict, description="opaque, at most 16 KiB")
    maxPublishBitrate: int = Field(
        default=0,
        ge=0,
        le=100_000_000,
        description="bits/s any one participant may publish in the group call, all its "
        "tracks together (0: no cap beyond the sfu_max_publish_bitrate setting)",
    )

    _metadata = field_validator("metadata")(
        lambda v: _bounded_json(v, MAX_METADATA_BYTES, "metadata")
    )


class RoomUpdate(Body):
    metadata: dict[str, Any] = Field(description="replaces the metadata; members are told")

    _metadata = field_validator("metadata")(
        lambda v: _bounded_json(v, MAX_METADATA_BYTES, "metadata")
    )


class TrackOut(Out):
    trackId: str
    participantId: str
    userId: str
    kind: Literal["audio", "video"]
    source: str
    codec: str
    muted: bool
    simulcast: list[str] | None = Field(
        default=None, description="a simulcast video's layers (rids), lowest first"
    )


class LayerOut(Out):
    rid: str
    width: int | None = Field(description="from the layer's last keyframe")
    height: int | None
    bitrate: int = Field(description="bits per second the publisher sends on this layer")
    packetsIn: int
    packetsLost: int
    flowing: bool = Field(description="false while the publisher pauses it (dynacast)")
    subscribers: int = Field(description="subscribers being sent this layer")


class TrackMediaOut(TrackOut):
    bitrateIn: int
    packetsIn: int
    packetsLost: int
    packetsOut: int
    subscribers: int
    keyframesRequested: int
    plisSent: int
    nacksAnswered: int
    nacksMissed: int
    layers: list[LayerOut] | None = None


class RoomMediaOut(Out):
    roomId: str
    mediaNode: str | None = Field(description="the node the group call's media is on")
    tracks: list[TrackMediaOut]


class MediaParticipantOut(Out):
    participantId: str = Field(description="the group call participant (one per device)")
    userId: str
    name: str
    canPublish: bool
    canSubscribe: bool
    tracks: list[TrackOut]


class RoomOut(Out):
    roomId: str
    type: Literal["chat", "conference"]
    capacity: int | None
    emptyTimeout: float
    metadata: dict[str, Any]
    createdAt: int = Field(description="epoch milliseconds")
    createdBy: Literal["api", "join"]
    maxPublishBitrate: int = Field(description="bits/s per publishing participant; 0: no cap")
    memberCount: int
    mediaParticipantCount: int


class RoomList(Out):
    rooms: list[RoomOut]


class ParticipantOut(Out):
    userId: str
    name: str
    status: Literal["online", "away", "dnd", "offline"]
    lastSeen: int | None
    member: bool = Field(description="joined to the room (room:join) on some device")
    canPublish: bool
    canSubscribe: bool
    media: list[MediaParticipantOut] = Field(description="the user's group call devices")


class ParticipantList(Out):
    participants: list[ParticipantOut]


class CallParticipantOut(Out):
    userId: str
    name: str
    role: Literal["caller", "callee"]
    state: Literal["ringing", "joined", "reconnecting", "left", "rejected", "missed"]
    audio: bool
    video: bool
    screen: bool


class CallOut(Out):
    callId: str
    callType: Literal["audio", "video"]
    conversationId: str | None
    callerId: str
    state: Literal["ringing", "active", "ended"]
    createdAt: int
    answeredAt: int | None
    endedAt: int | None
    endReason: str | None
    duration: float = Field(description="seconds since the answer (to the end, if ended)")
    participants: list[CallParticipantOut]


class RoomDetail(RoomOut):
    participants: list[ParticipantOut]
    calls: list[CallOut] = Field(description="1:1 / small calls of this conversation, not ended")
    media: list[MediaParticipantOut] = Field(description="the group call (SFU) session")
    mediaNode: str | None = Field(
        default=None, description="the node hosting the group call's media, while it lives"
    )


class CallList(Out):
    calls: list[CallOut]


class CloseBody(Body):
    reason: Reason = "closed"


class KickBody(Body):
    reason: Reason = "removed"


class MuteBody(Body):
    muted: bool = True


class PermissionsBody(Body):
    """Only the given permissions change; at least one is required."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    canPublish: bool = None  # type: ignore[assignment]  # absent: unchanged
    canSubscribe: bool = None  # type: ignore[assignment]
    maxPublishBitrate: int = Field(
        default=None,  # type: ignore[arg-type]
        ge=0,
        le=100_000_000,
        description="bits/s this user may publish per device, all tracks together "
        "(0: the room's cap applies)",
    )

    @model_validator(mode="after")
    def _something(self) -> PermissionsBody:
        if self.canPublish is None and self.canSubscribe is None and self.maxPublishBitrate is None:
            raise ValueError("give canPublish, canSubscribe, maxPublishBitrate or several")
        return self


class PermissionsOut(Out):
    roomId: str
    userId: str
    canPublish: bool
    canSubscribe: bool
    maxPublishBitrate: int = Field(description="the cap in force: the user's, else the room's")


class EndCallBody(Body):
    reason: Reason = "ended_by_server"


# -- messaging ------------------------------------------------------------------------------


class EventIn(Body):
    model_config = ConfigDict(extra="forbid", regex_engine="python-re")  # for the lookaheads

    type: EventType = Field(description="e.g. message:new; server namespaces are refused")
    data: dict[str, Any] = Field(default_factory=dict)

    _data = field_validator("data")(lambda v: _bounded_json(v, MAX_EVENT_DATA_BYTES, "data"))


class UsersEventIn(EventIn):
    userIds: list[UserId] = Field(min_length=1, max_length=1000)


class RoomEventIn(EventIn):
    roomId: RoomId


class BatchIn(Body):
    events: list[RoomEventIn | UsersEventIn] = Field(
        min_length=1, max_length=100, description="each with a roomId or with userIds"
    )


class Delivery(Out):
    delivered: int = Field(
        description="sockets written on this node plus messages sent to other nodes (with "
        "Redis a message to a node reaches all of its recipients' sockets there)"
    )


class BatchOut(Out):
    results: list[Delivery]


class PresenceQueryIn(Body):
    userIds: list[UserId] = Field(min_length=1, max_length=1000)


class PresenceOut(Out):
    userId: str
    status: Literal["online", "away", "dnd", "offline"]
    lastSeen: int | None = Field(description="epoch ms of the last activity")


class PresenceList(Out):
    users: list[PresenceOut]


# -- tokens ---------------------------------------------------------------------------------


class TokenIn(Body):
    userId: UserId
    name: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = None
    rooms: list[Annotated[str, StringConstraints(min_length=1, max_length=129)]] = Field(
        default_factory=lambda: ["*"],
        max_length=1000,
        description="rooms the holder may join; '*' all, 'prefix*' a prefix",
    )
    presence: list[Annotated[str, StringConstraints(min_length=1, max_length=128)]] = Field(
        default_factory=list, max_length=1000
    )
    ttl: int = Field(default=3600, ge=60, le=7 * 86400, description="lifetime in seconds")


class TokenOut(Out):
    token: str
    userId: str
    expiresAt: int = Field(description="epoch seconds")


# -- nodes (media placement) ------------------------------------------------------------


class NodeLimits(Out):
    rooms: int = Field(description="0: no limit")
    participants: int = Field(description="0: no limit")
    cpu: float = Field(description="cores; 0: no limit")


class NodeOut(Out):
    nodeId: str
    hostsMedia: bool = Field(description="whether group calls may be placed on this node")
    draining: bool
    open: bool = Field(description="takes new group call rooms now")
    reason: str | None = Field(description="why it takes no new room, if it does not")
    cpu: float = Field(description="CPU used over the last heartbeat interval, in cores")
    rooms: int
    participants: int
    tracks: int = Field(description="forwarded streams (one per subscriber per track)")
    score: float = Field(description="placement measure: lower is chosen first")
    limits: NodeLimits
    mediaAddress: str = Field(description="the address in this node's ICE candidates")
    udpPorts: str = Field(description="the UDP port range its media uses")


class NodeList(Out):
    nodes: list[NodeOut]


# -- recordings ------------------------------------------------------------------------------


class RecordingStart(Body):
    trackId: TrackId | None = Field(
        default=None, description="record this track only (default: the whole group call)"
    )


class RecordingFile(Out):
    file: str = Field(description="the file's name in the recording's directory")
    kind: Literal["audio", "video"]
    trackId: str
    participantId: str
    userId: str
    source: str
    frames: int
    duration: float = Field(description="seconds from the first frame to the last")
    size: int = Field(description="bytes")
    damaged: str | None = Field(
        description="why frames are missing (queue_overflow, write_failed: ...)"
    )
    offset: float | None = Field(
        default=None,
        description="seconds from the recording's earliest first frame to this file's "
        "(capture times from the publishers' sender reports): where to place it",
    )
    width: int | None = None
    height: int | None = None


class RecordingStorage(Out):
    bucket: str
    state: Literal["uploading", "uploaded", "failed"]
    keys: list[str] = Field(default_factory=list, description="the objects, once uploaded")
    error: str | None = None


class RecordingOut(Out):
    recordingId: str
    roomId: str
    trackId: str | None
    continues: str | None = Field(
        default=None,
        description="the recording this one carries on: the room's group call moved to "
        "another media node (a drain), and its room recording went with it",
    )
    state: Literal["recording", "stopping", "finished"]
    startedAt: int
    endedAt: int | None
    endReason: str | None = Field(description="stopped, room_ended, room_closed, track_unpublished")
    directory: str = Field(description="where the files are, on the media node")
    manifest: str | None = Field(description="manifest.json once finished")
    files: list[RecordingFile]
    duration: float
    size: int
    damaged: str | None
    storage: RecordingStorage | None = Field(
        default=None, description="the S3-compatible upload, when one is configured"
    )


class RecordingList(Out):
    recordings: list[RecordingOut]


class DrainBody(Body):
    deadline: float | None = Field(
        default=None,
        ge=0,
        le=86400,
        description="seconds calls may go on before they move (default sfu_drain_deadline)",
    )


class DrainOut(Out):
    nodeId: str
    draining: bool
    deadline: float
