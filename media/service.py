"""The SFU's face on the hub: ``sfu:*`` events, group media toggles, cleanup on disconnect.

A connection is in at most one group call room at a time; its participant id is its
connection id, so one user can join from two devices as two participants.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiortc import RTCIceServer

from media import ice
from media.participant import Participant
from media.room import SfuRoom
from signaling import events
from signaling.protocol import ErrorCode, HubError

if TYPE_CHECKING:
    from signaling.connection import Connection
    from signaling.hub import Hub

log = logging.getLogger("switchboard.sfu")

SFU_KEY: web.AppKey[SfuService] = web.AppKey("sfu")
TOGGLE_EVENTS = {"audio": "peer:audio-toggled", "video": "peer:video-toggled"}
TOGGLE_SOURCES = {"audio": ("microphone",), "video": ("camera",), "screen": ("screen",)}


class SfuService:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.settings = hub.settings
        self.rooms: dict[str, SfuRoom] = {}
        self.by_conn: dict[str, Participant] = {}
        s = self.settings
        self.ice_policy = ice.IcePolicy(
            listen_ips=tuple(s.sfu_listen_ips),
            min_port=s.sfu_udp_min_port,
            max_port=s.sfu_udp_max_port,
            announced_ip=s.sfu_announced_ip,
        )
        ice.install()
        e = events
        hub.add_route("sfu:join", e.RoomRef, self.on_join)
        hub.add_route("sfu:leave", e.RoomRef, self.on_leave)
        hub.add_route("sfu:publish", e.SfuPublish, self.on_publish)
        hub.add_route("sfu:answer", e.SfuAnswer, self.on_answer)
        hub.add_route("sfu:ice-candidate", e.SfuIce, self.on_ice)
        hub.add_route("sfu:mute", e.SfuMute, self.on_mute)
        hub.add_route("sfu:stats", e.RoomRef, self.on_stats)
        hub.group_toggle = self.on_toggle
        hub.disconnect_hooks.append(self.connection_gone)
        hub.room_lifecycle.media = self

    def _ice_servers(self, conn: Connection) -> list[RTCIceServer]:
        """STUN/TURN for the server's own side, when ``sfu_use_ice_servers`` is on."""
        if not self.settings.sfu_use_ice_servers:
            return []
        return [
            RTCIceServer(
                urls=entry["urls"],
                username=entry.get("username"),
                credential=entry.get("credential"),
            )
            for entry in self.settings.ice_servers(f"sfu:{conn.id}")
        ]

    def _participant(self, conn: Connection, room_id: str) -> Participant:
        participant = self._in_room(conn, room_id)
        if participant is None:
            raise HubError(ErrorCode.NOT_IN_ROOM, f"not in group call room '{room_id}'")
        return participant

    # -- events ---------------------------------------------------------------------------

    async def on_join(self, conn: Connection, payload: events.RoomRef) -> dict[str, Any]:
        room_id = payload.roomId
        if not conn.principal.may_join(room_id):
            raise HubError(ErrorCode.FORBIDDEN, f"token does not allow joining room '{room_id}'")
        current = self.by_conn.get(conn.id)
        if current is not None:
            raise HubError(
                ErrorCode.INVALID_STATE, f"already in group call room '{current.room.id}'"
            )
        info = await self.hub.room_lifecycle.ensure(room_id)
        room = self.rooms.get(room_id)
        capacity = min(self.settings.sfu_room_capacity, info.capacity or 1 << 30)
        if room is not None and len(room.participants) >= capacity:
            raise HubError(ErrorCode.ROOM_FULL, f"room '{room_id}' is full ({capacity})")
        if room is None:
            room = self.rooms[room_id] = SfuRoom(room_id, self.hub, self._room_empty)
        participant = Participant(room, conn, self._ice_servers(conn), self.ice_policy, self._fail)
        participant.can_publish = info.permission(conn.user_id, "canPublish")
        participant.can_subscribe = info.permission(conn.user_id, "canSubscribe")
        others = list(room.participants.values())
        room.participants[participant.id] = participant
        self.by_conn[conn.id] = participant
        await room.broadcast(
            "sfu:participant-joined", {"roomId": room_id, **participant.to_wire()}, participant.id
        )
        participant.resubscribe()
        await self._record(room_id)
        log.info("sfu join", extra={"room": room_id, "conn": conn.id, "user": conn.user_id})
        return {
            "roomId": room_id,
            "participantId": participant.id,
            "canPublish": participant.can_publish,
            "canSubscribe": participant.can_subscribe,
            "participants": [p.to_wire() for p in others],
            "tracks": [t.info.to_wire(t.muted) for t in room.tracks_for(participant)],
            "iceServers": self.settings.ice_servers(conn.user_id),
        }

    async def on_leave(self, conn: Connection, payload: events.RoomRef) -> dict[str, Any]:
        participant = self._participant(conn, payload.roomId)
        await self._remove(participant, "left")
        return {"roomId": payload.roomId}

    async def on_publish(self, conn: Connection, payload: events.SfuPublish) -> dict[str, Any]:
        participant = self._participant(conn, payload.roomId)
        if not participant.can_publish:
            raise HubError(ErrorCode.FORBIDDEN, "you may not publish in this room")
        answer, added, removed = await participant.publish(payload.sdp, dict(payload.sources))
        room = participant.room
        await room.announce_unpublished(removed, exclude=participant.id)
        await room.announce_published(added, exclude=participant.id)
        if added or removed:
            room.resubscribe_all(exclude=participant.id)
            await self._record(room.id)
        return {
            "roomId": room.id,
            "sdp": answer,
            "tracks": [t.info.to_wire(t.muted) for t in participant.tracks.values()],
        }

    async def on_answer(self, conn: Connection, payload: events.SfuAnswer) -> dict[str, Any]:
        participant = self._participant(conn, payload.roomId)
        await participant.answer(payload.sdp)
        return {}

    async def on_ice(self, conn: Connection, payload: events.SfuIce) -> dict[str, Any]:
        participant = self._participant(conn, payload.roomId)
        candidate = payload.candidate.model_dump() if payload.candidate is not None else None
        await participant.add_ice_candidate(payload.target, candidate)
        return {}

    async def on_mute(self, conn: Connection, payload: events.SfuMute) -> dict[str, Any]:
        participant = self._participant(conn, payload.roomId)
        track = next(
            (t for t in participant.tracks.values() if t.info.track_id == payload.trackId), None
        )
        if track is None:
            raise HubError(ErrorCode.INVALID_STATE, f"you publish no track '{payload.trackId}'")
        if track.blocked and not payload.muted:
            raise HubError(ErrorCode.FORBIDDEN, "this track was muted by the server")
        await self._set_muted(participant, [track], payload.muted)
        return {"trackId": track.info.track_id, "muted": track.muted}

    async def on_toggle(
        self, conn: Connection, room_id: str, kind: str, enabled: bool
    ) -> dict[str, Any]:
        """``media:toggle-*`` and ``screen:share-*`` with a roomId: tell the whole room."""
        participant = self._participant(conn, room_id)
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

    async def on_stats(self, conn: Connection, payload: events.RoomRef) -> dict[str, Any]:
        participant = self._participant(conn, payload.roomId)
        stats = participant.room.stats()
        stats["subscriptions"] = [s.stats() for s in participant.slots if s.track is not None]
        return stats

    # -- what the room API does (through control commands on this node) -------------------

    def _in_room(self, conn: Connection, room_id: str) -> Participant | None:
        participant = self.by_conn.get(conn.id)
        if participant is None or participant.room.id != room_id or participant.closed:
            return None
        return participant

    async def evict(self, conn: Connection, room_id: str, reason: str) -> None:
        participant = self._in_room(conn, room_id)
        if participant is not None:
            await self.hub.to_conns([conn.id], "sfu:left", {"roomId": room_id, "reason": reason})
            await self._remove(participant, reason)

    async def apply_permissions(
        self, conn: Connection, room_id: str, permissions: dict[str, bool]
    ) -> None:
        participant = self._in_room(conn, room_id)
        if participant is None:
            return
        publish, subscribe = permissions["canPublish"], permissions["canSubscribe"]
        if publish != participant.can_publish:
            participant.can_publish = publish
            # Revoking publishing stops forwarding at once; granting it back lifts that.
            await self._block(participant, list(participant.tracks.values()), not publish)
        if subscribe != participant.can_subscribe:
            participant.can_subscribe = subscribe
            participant.resubscribe()
        await self.hub.to_conns(
            [conn.id],
            "sfu:permissions-updated",
            {"roomId": room_id, "canPublish": publish, "canSubscribe": subscribe},
        )
        await self._record(room_id)

    async def server_mute(self, conn: Connection, room_id: str, track_id: str, muted: bool) -> None:
        participant = self._in_room(conn, room_id)
        if participant is None:
            return
        tracks = [t for t in participant.tracks.values() if t.info.track_id == track_id]
        await self._block(participant, tracks, muted)
        await self._record(room_id)

    async def _block(self, participant: Participant, tracks: list[Any], blocked: bool) -> None:
        for track in tracks:
            track.block(blocked)
        await self._set_muted(participant, tracks, blocked, by="server")

    async def _record(self, room_id: str) -> None:
        """Keep this node's part of the room record's media summary current, so the room
        API on any node can list the group call's participants and tracks."""
        node = self.hub.state.node_id

        def write(info: Any) -> None:
            room = self.rooms.get(room_id)
            if room is None or not room.participants:
                info.media.pop(node, None)
            else:
                info.media[node] = {
                    "participants": [p.summary() for p in room.participants.values()]
                }

        try:
            await self.hub.state.update_room(room_id, write)
        except KeyError:  # the room was closed meanwhile
            return
        except HubError as exc:  # shared state away: the summary catches up on the next change
            log.warning("media summary not recorded", extra={"room": room_id, "code": exc.code})
            return
        if room_id not in self.rooms:
            await self.hub.room_lifecycle.check_empty(room_id)

    # -- helpers --------------------------------------------------------------------------

    async def _set_muted(
        self, participant: Participant, tracks: list[Any], muted: bool, by: str = "participant"
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

    async def _fail(self, participant: Participant, reason: str) -> None:
        """The server gives up on a participant (ICE never completed, no answer, failure)."""
        if participant.closed:
            return
        log.warning(
            "sfu participant dropped",
            extra={"room": participant.room.id, "conn": participant.id, "reason": reason},
        )
        await self.hub.to_conns(
            [participant.id], "sfu:left", {"roomId": participant.room.id, "reason": reason}
        )
        await self._remove(participant, reason)

    async def _remove(self, participant: Participant, reason: str) -> None:
        if self.by_conn.get(participant.id) is participant:
            del self.by_conn[participant.id]
        await participant.room.remove(participant, reason)
        await self._record(participant.room.id)

    def _room_empty(self, room: SfuRoom) -> None:
        if self.rooms.get(room.id) is room:
            del self.rooms[room.id]

    async def connection_gone(self, conn: Connection) -> None:
        participant = self.by_conn.get(conn.id)
        if participant is not None:
            await self._remove(participant, "disconnected")

    async def stop(self) -> None:
        rooms = list(self.rooms.values())
        self.rooms.clear()
        self.by_conn.clear()
        for room in rooms:
            await room.close()
            # Take this node's part out of the room record (best effort: the state may be
            # away), so the room can finish once the others are gone too.
            with contextlib.suppress(Exception):
                await self._record(room.id)
