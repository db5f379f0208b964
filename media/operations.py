"""What a group call participant does with its media, on the room's media node: publish,
answer, ICE, mute and toggles, statistics, and what the room API changes about it
(permissions, server mute). Who is in which call is :class:`media.host.MediaHost`'s."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from media.forwarder import Preference
from media.ice import selected_pair
from signaling.protocol import ErrorCode, HubError

if TYPE_CHECKING:
    from media.host import MediaHost
    from media.participant import Participant
    from media.published_track import PublishedTrack

TOGGLE_EVENTS = {"audio": "peer:audio-toggled", "video": "peer:video-toggled"}
TOGGLE_SOURCES = {"audio": ("microphone",), "video": ("camera",), "screen": ("screen",)}


class MediaOps:
    def __init__(self, host: MediaHost) -> None:
        self.host = host

    async def publish(self, body: dict[str, Any]) -> dict[str, Any]:
        participant = self.host.participant(body)
        if not participant.can_publish:
            raise HubError(ErrorCode.FORBIDDEN, "you may not publish in this room")
        answer, added, removed = await participant.publish(body["sdp"], body["sources"])
        room = participant.room
        await room.announce_unpublished(removed, exclude=participant.id)
        await room.announce_published(added, exclude=participant.id)
        if added or removed:
            room.resubscribe_all(exclude=participant.id)
            await self.host.record(room.id)
        return {
            "roomId": room.id,
            "sdp": answer,
            "tracks": [t.info.to_wire(t.muted) for t in participant.tracks.values()],
            "mids": {mid: t.info.track_id for mid, t in participant.tracks.items()},
        }

    async def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        await self.host.participant(body).answer(body["sdp"])
        return {}

    async def ice_candidate(self, body: dict[str, Any]) -> dict[str, Any]:
        await self.host.participant(body).add_ice_candidate(body["target"], body["candidate"])
        return {}

    async def mute(self, body: dict[str, Any]) -> dict[str, Any]:
        participant = self.host.participant(body)
        track = next(
            (t for t in participant.tracks.values() if t.info.track_id == body["trackId"]), None
        )
        if track is None:
            raise HubError(ErrorCode.INVALID_STATE, f"you publish no track '{body['trackId']}'")
        if track.blocked and not body["muted"]:
            raise HubError(ErrorCode.FORBIDDEN, "this track was muted by the server")
        await self._set_muted(participant, [track], body["muted"])
        return {"trackId": track.info.track_id, "muted": track.muted}

    async def subscription(self, body: dict[str, Any]) -> dict[str, Any]:
        """What a subscriber needs of remote videos (size, visibility, quality, frame rate):
        its forwarders pick the layers; unknown tracks are reported, not an error (a track
        may have gone while the request was on its way)."""
        participant = self.host.participant(body)
        known = {t.info.track_id for t in participant.room.tracks_for(participant)}
        applied, unknown = [], []
        for entry in body["tracks"]:
            track_id = entry["trackId"]
            if track_id not in known:
                unknown.append(track_id)
                continue
            participant.prefer(
                track_id,
                Preference(
                    width=entry.get("width"),
                    height=entry.get("height"),
                    visible=entry.get("visible", True),
                    quality=entry.get("quality"),
                    fps=entry.get("fps"),
                ),
            )
            applied.append(track_id)
        return {"applied": applied, "unknown": unknown}

    async def toggle(self, body: dict[str, Any]) -> dict[str, Any]:
        """``media:toggle-*`` and ``screen:share-*`` with a roomId: tell the whole room."""
        participant = self.host.participant(body)
        kind, enabled = body["kind"], body["enabled"]
        room = participant.room
        tracks = [t for t in participant.tracks.values() if t.info.source in TOGGLE_SOURCES[kind]]
        if kind != "screen":
            if enabled and any(t.blocked for t in tracks):
                raise HubError(ErrorCode.FORBIDDEN, "this track was muted by the server")
            await self._set_muted(participant, tracks, not enabled)
            out = TOGGLE_EVENTS[kind]
            data: dict[str, Any] = {"roomId": room.id, "enabled": enabled}
        else:
            out = "screen:sharing-started" if enabled else "screen:sharing-stopped"
            data = {"roomId": room.id}
        data.update(participantId=participant.id, userId=participant.user_id)
        await room.broadcast(out, data, participant.id)
        return {}

    async def stats(self, body: dict[str, Any]) -> dict[str, Any]:
        participant = self.host.participant(body)
        stats = participant.room.stats()
        stats["mediaNode"] = self.host.node
        stats["subscriptions"] = [s.stats() for s in participant.slots if s.track is not None]
        # what this participant's downlink allows, from its REMB or transport feedback
        stats["bandwidth"] = participant.downlink.stats()
        stats["publishCap"] = participant.publish_cap
        # How this participant reaches the server: direct (host, srflx/prflx) or relayed.
        stats["connection"] = {
            "publisher": selected_pair(participant.publisher) if participant.publisher else None,
            "subscriber": selected_pair(participant.subscriber),
        }
        return stats

    async def room_media(self, body: dict[str, Any]) -> dict[str, Any]:
        """The room API's live view of a room's media on this node: every published track
        with its statistics (and, for simulcast, each layer's size, bitrate and viewers)."""
        room = self.host.rooms.get(body["room"])
        if room is None:
            return {"mediaNode": self.host.node, "tracks": []}
        return {"mediaNode": self.host.node, "tracks": [t.stats() for t in room.tracks()]}

    # -- what the room API changes -------------------------------------------------------------

    async def apply_permissions(self, body: dict[str, Any]) -> dict[str, Any]:
        participant = self.host.participant(body)
        permissions = body["permissions"]
        publish, subscribe = permissions["canPublish"], permissions["canSubscribe"]
        if publish != participant.can_publish:
            participant.can_publish = publish
            # Revoking publishing stops forwarding at once; granting it back lifts that.
            await self._block(participant, list(participant.tracks.values()), not publish)
        if subscribe != participant.can_subscribe:
            participant.can_subscribe = subscribe
            participant.resubscribe()
        participant.cap_publishing(permissions.get("maxPublishBitrate", 0))
        await participant.room.send(
            [participant],
            "sfu:permissions-updated",
            {
                "roomId": participant.room.id,
                "canPublish": publish,
                "canSubscribe": subscribe,
                "maxPublishBitrate": participant.publish_cap,
            },
        )
        await self.host.record(participant.room.id)
        return {}

    async def server_mute(self, body: dict[str, Any]) -> dict[str, Any]:
        participant = self.host.participant(body)
        tracks = [t for t in participant.tracks.values() if t.info.track_id == body["trackId"]]
        await self._block(participant, tracks, body["muted"])
        await self.host.record(participant.room.id)
        return {}

    async def _block(
        self, participant: Participant, tracks: list[PublishedTrack], blocked: bool
    ) -> None:
        for track in tracks:
            track.block(blocked)
        await self._set_muted(participant, tracks, blocked, by="server")

    async def _set_muted(
        self,
        participant: Participant,
        tracks: list[PublishedTrack],
        muted: bool,
        by: str = "participant",
    ) -> None:
        for track in tracks:
            if track.muted == muted:
                continue
            track.muted = muted
            await participant.room.broadcast(
                "sfu:track-muted",
                {
                    "roomId": participant.room.id,
                    "trackId": track.info.track_id,
                    "participantId": participant.id,
                    "muted": muted,
                    "by": by,
                },
            )
