"""Declared schemas of every inbound event's ``data``, validated strictly (no coercion).

Unknown fields are ignored rather than refused, so clients ported from the Socket.IO
service may keep sending the extra fields they used to.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

RoomId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:@\-]{1,128}$")]
UserId = Annotated[str, StringConstraints(min_length=1, max_length=128)]
CallId = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Status = Literal["online", "away", "dnd", "invisible"]
#: An SDP grows by about a kilobyte per media section (aiortc's answers by 1.3 kB): a
#: full group call room (50 participants, a microphone and a camera each) subscribes to
#: 98 sections.
MAX_SDP = 200_000


class Payload(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class Empty(Payload):
    pass


class PresenceUpdate(Payload):
    status: Status


class PresenceQuery(Payload):
    userIds: list[UserId] = Field(min_length=1, max_length=1000)


class SessionRefresh(Payload):
    token: Annotated[str, StringConstraints(min_length=1, max_length=8192)]


class RoomRef(Payload):
    roomId: RoomId


class RecoverFrom(Payload):
    epoch: Annotated[str, StringConstraints(max_length=16)]
    offset: Annotated[int, Field(ge=0)]


class RoomJoin(RoomRef):
    recover: RecoverFrom | None = None


class MessageTyping(Payload):
    conversationId: RoomId
    isTyping: bool


MessageId = Annotated[str, StringConstraints(min_length=1, max_length=128)]


class MessageSend(Payload):
    conversationId: RoomId
    tempId: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    content: Annotated[str, StringConstraints(max_length=65536)] = ""
    messageType: Annotated[str, StringConstraints(min_length=1, max_length=32)] = "text"
    replyTo: MessageId | None = None
    metadata: dict[str, Any] | None = None


class MessageRead(Payload):
    conversationId: RoomId
    messageIds: list[MessageId] = Field(min_length=1, max_length=100)


class CallInitiate(Payload):
    conversationId: RoomId | None = None
    callType: Literal["audio", "video"]
    participants: list[UserId] = Field(min_length=1, max_length=64)


class CallRef(Payload):
    callId: CallId


class CallReject(CallRef):
    reason: Annotated[str, StringConstraints(max_length=200)] | None = None


class SessionDescription(Payload):
    type: Literal["offer", "answer", "pranswer", "rollback"]
    sdp: Annotated[str, StringConstraints(max_length=MAX_SDP)] = ""


class IceCandidate(Payload):
    candidate: Annotated[str, StringConstraints(max_length=2048)]
    sdpMid: Annotated[str, StringConstraints(max_length=64)] | None = None
    sdpMLineIndex: Annotated[int, Field(ge=0, le=1024)] | None = None
    usernameFragment: Annotated[str, StringConstraints(max_length=256)] | None = None


class CallSdp(CallRef):
    to: UserId
    sdp: SessionDescription | Annotated[str, StringConstraints(min_length=1, max_length=MAX_SDP)]


class CallIce(CallRef):
    to: UserId
    candidate: IceCandidate | Annotated[str, StringConstraints(max_length=2048)] | None


class CallOrRoomRef(Payload):
    """A 1:1 call (``callId``) or a group call room on the SFU (``roomId``), exactly one."""

    callId: CallId | None = None
    roomId: RoomId | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> CallOrRoomRef:
        if (self.callId is None) == (self.roomId is None):
            raise ValueError("give exactly one of callId and roomId")
        return self


class MediaToggle(CallOrRoomRef):
    enabled: bool


TrackId = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Sdp = Annotated[str, StringConstraints(min_length=1, max_length=MAX_SDP)]
Mid = Annotated[str, StringConstraints(min_length=1, max_length=32)]
Source = Literal["camera", "microphone", "screen", "screen-audio"]


class SfuPublish(RoomRef):
    sdp: Sdp
    sources: dict[Mid, Source] = Field(default_factory=dict, max_length=16)


class SfuAnswer(RoomRef):
    sdp: Sdp


class SfuIce(RoomRef):
    target: Literal["publisher", "subscriber"]
    candidate: IceCandidate | None


class SfuResume(RoomRef):
    participantId: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    resumeToken: Annotated[str, StringConstraints(min_length=1, max_length=64)]


class SfuMute(RoomRef):
    trackId: TrackId
    muted: bool


class TrackSubscription(Payload):
    """What a subscriber needs of one remote video: the size it is shown at, whether it is
    visible at all, optionally a quality (overrides the size) and a frame rate."""

    trackId: TrackId
    width: Annotated[int, Field(ge=0, le=16384)] | None = None
    height: Annotated[int, Field(ge=0, le=16384)] | None = None
    visible: bool = True
    quality: Literal["low", "medium", "high"] | None = None
    fps: Annotated[int, Field(ge=1, le=120)] | None = None


class SfuSubscription(RoomRef):
    tracks: Annotated[list[TrackSubscription], Field(min_length=1, max_length=100)]


def describe(error: ValidationError, limit: int = 3, root: str = "data") -> str:
    """Turn pydantic's report into one precise line: ``data.field: what is wrong``."""
    parts = []
    for item in error.errors(include_url=False)[:limit]:
        loc = ".".join(str(p) for p in (root, *item["loc"]))
        parts.append(f"{loc}: {item['msg']}")
    more = error.error_count() - limit
    if more > 0:
        parts.append(f"(+{more} more)")
    return "; ".join(parts)
