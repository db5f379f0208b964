"""Recording a room's group call, or one track of it (``/rooms/{roomId}/recordings``).

The recording runs on the media node hosting the room, whichever node the request
reaches: these handlers only relay (:class:`signaling.api.endpoints.MediaAdmin`).
"""

from __future__ import annotations

from signaling.api.endpoints import Context
from signaling.api.models import RecordingList, RecordingOut, RecordingStart


async def start_recording(ctx: Context) -> RecordingOut:
    """Start recording the room's group call (every VP8 and Opus track, including those
    published later), or one track with `trackId`. Files are written as received,
    never transcoded."""
    body: RecordingStart = ctx.body
    room = await ctx.api.lifecycle.room(ctx.params["roomId"])
    found = await ctx.api.media.recordings(room.id, "start", trackId=body.trackId)
    return RecordingOut.model_validate(found)


async def list_recordings(ctx: Context) -> RecordingList:
    """The room's recordings on its media node: running ones first, then finished ones."""
    room = await ctx.api.lifecycle.room(ctx.params["roomId"])
    found = await ctx.api.media.recordings(room.id, "list")
    return RecordingList.model_validate(found)


async def stop_recording(ctx: Context) -> RecordingOut:
    """Stop a recording; answers once its files and manifest are complete."""
    room = await ctx.api.lifecycle.room(ctx.params["roomId"])
    found = await ctx.api.media.recordings(room.id, "stop", recordingId=ctx.params["recordingId"])
    return RecordingOut.model_validate(found)
