"""The media node's side of group calls: the SFU rooms this node hosts.

Every operation names a participant (``PA_...``) and arrives from the node holding that
participant's WebSocket, through :class:`media.relay.NodeRelay` (directly when it is this
node). Events go back to the participants' WebSockets through the hub, wherever they are;
the notices that end a participant's session (``sfu:left``, ``sfu:rejoin``) go through
the WebSocket's node, so it forgets the session too (see :mod:`media.signaling`).

A participant whose signaling connection is lost without a goodbye is detached, not
removed: its media keeps flowing for ``sfu_reconnect_grace`` seconds, within which a
``sfu:resume`` from a new connection (on any node) takes it over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiortc import RTCIceServer

from media import ice
from media.load import CpuMeter
from media.participant import Participant
from media.room import SfuRoom
from signaling.protocol import ErrorCode, HubError
from signaling.state.base import node_of

if TYPE_CHECKING:
    from media.placement import Placement
    from signaling.hub import Hub

log = logging.getLogger("switchboard.sfu")

TOGGLE_EVENTS = {"audio": "peer:audio-toggled", "video": "peer:video-toggled"}
TOGGLE_SOURCES = {"audio": ("microphone",), "video": ("camera",), "screen": ("screen",)}
MIGRATE_CLOSE_DELAY = 3.0
#: Tells the WebSocket's node that a participant's session ended, and with which event.
SessionEnded = Callable[[Participant, str, dict[str, Any]], Awaitable[None]]


class SfuService:
    def __init__(self, hub: Hub, placement: Placement, session_ended: SessionEnded) -> None:
        self.hub = hub
        self.settings = hub.settings
        self.placement = placement
        self.session_ended = session_ended
        self.rooms: dict[str, SfuRoom] = {}
        self.participants: dict[str, Participant] = {}
        self.draining = False
        self.cpu = CpuMeter()
        s = self.settings
        self.ice_policy = ice.IcePolicy(
            listen_ips=tuple(s.sfu_listen_ips),
            min_port=s.sfu_udp_min_port,
            max_port=s.sfu_udp_max_port,
            announced_ip=s.sfu_announced_ip,
        )
        ice.install()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._joining: dict[str, int] = {}  # joins in progress, by room
        self._no_rooms = asyncio.Event()  # set whenever the last room here ends
        hub.state.load_provider = self.load

    @property
    def node(self) -> str:
        return self.hub.state.node_id

    def load(self) -> dict[str, Any]:
        """What this node's heartbeat publishes (see :mod:`media.load`)."""
        s = self.settings
        return {
            "cpu": round(self.cpu.read(), 3),
            "rooms": len(self.rooms),
            "participants": len(self.participants),
            "tracks": sum(
                1 for p in self.participants.values() for slot in p.slots if slot.track is not None
            ),
            "draining": self.draining,
            "hostsMedia": s.sfu_host_rooms,
            "limits": {
                "rooms": s.sfu_max_rooms,
                "participants": s.sfu_max_participants,
                "cpu": s.sfu_max_cpu,
            },
            "mediaAddress": s.sfu_announced_ip or ",".join(s.sfu_listen_ips) or "*",
            "udpPorts": f"{s.sfu_udp_min_port}-{s.sfu_udp_max_port}",
        }

    def _ice_servers(self, key: str) -> list[RTCIceServer]:
        """STUN/TURN for the server's own side, when ``sfu_use_ice_servers`` is on."""
        if not self.settings.sfu_use_ice_servers:
            return []
        return [
            RTCIceServer(
                urls=entry["urls"],
                username=entry.get("username"),
                credential=entry.get("credential"),
            )
            for entry in self.settings.ice_servers(f"sfu:{key}")
        ]

    def participant(self, body: dict[str, Any]) -> Participant:
        participant = self.participants.get(body["participant"])
        if participant is None or participant.closed or participant.room.id != body["room"]:
            raise HubError(ErrorCode.NOT_IN_ROOM, f"not in group call room '{body['room']}'")
        return participant

    # -- joining, resuming, leaving --------------------------------------------------------

    async def join(self, body: dict[str, Any]) -> dict[str, Any]:
        room_id = body["room"]
        self._joining[room_id] = self._joining.get(room_id, 0) + 1
        try:
            return await self._join(room_id, body)
        finally:
            self._joining[room_id] -= 1
            if not self._joining[room_id]:
                del self._joining[room_id]

    async def _join(self, room_id: str, body: dict[str, Any]) -> dict[str, Any]:
        host = await self._claim(room_id)
        if host != self.node:
            return {"moved": host}
        info = await self.hub.room_lifecycle.ensure(room_id)
        room = self.rooms.get(room_id)
        capacity = min(self.settings.sfu_room_capacity, info.capacity or 1 << 30)
        if room is not None and len(room.participants) >= capacity:
            raise HubError(ErrorCode.ROOM_FULL, f"room '{room_id}' is full ({capacity})")
        limit = self.settings.sfu_max_participants
        if limit and len(self.participants) >= limit:
            raise HubError(
                ErrorCode.NO_CAPACITY,
                f"media node '{self.node}' hosting room '{room_id}' is at its participant "
                f"limit ({limit}); try again later",
            )
        if room is None:
            room = self.rooms[room_id] = SfuRoom(room_id, self.hub, self._room_empty)
        participant = Participant(
            room,
            body["conn"],
            body["user"],
            body["name"],
            self._ice_servers(body["conn"]),
            self.ice_policy,
            self._fail,
        )
        participant.can_publish = info.permission(participant.user_id, "canPublish")
        participant.can_subscribe = info.permission(participant.user_id, "canSubscribe")
        others = list(room.participants.values())
        room.participants[participant.id] = participant
        self.participants[participant.id] = participant
        await room.broadcast(
            "sfu:participant-joined", {"roomId": room_id, **participant.to_wire()}, participant.id
        )
        participant.resubscribe()
        await self._record(room_id)
        await self.hub.state.publish_load_now()
        log.info(
            "sfu join",
            extra={"room": room_id, "conn": body["conn"], "participant": participant.id},
        )
        return {**self._welcome(participant), "participants": [p.to_wire() for p in others]}

    def _welcome(self, participant: Participant) -> dict[str, Any]:
        room = participant.room
        return {
            "roomId": room.id,
            "participantId": participant.id,
            "resumeToken": participant.resume_token,
            "mediaNode": self.node,
            "canPublish": participant.can_publish,
            "canSubscribe": participant.can_subscribe,
            "tracks": [t.info.to_wire(t.muted) for t in room.tracks_for(participant)],
        }

    async def _claim(self, room_id: str) -> str:
        """The room's media node, claimed by this node if nobody holds it (the previous
        host released it after the room emptied, just before this join)."""
        host = await self.hub.state.get_room_host(room_id)
        if host is not None:
            return host
        async with self.hub.state.placement_lock(room_id):
            host = await self.hub.state.get_room_host(room_id)
            if host is None:
                await self.hub.state.set_room_host(room_id, self.node)
                host = self.node
        return host

    async def resume(self, body: dict[str, Any]) -> dict[str, Any]:
        participant = self.participants.get(body["participant"])
        if (
            participant is None
            or participant.closed
            or participant.room.id != body["room"]
            or participant.user_id != body["user"]
            or participant.resume_token != body["token"]
        ):
            raise HubError(
                ErrorCode.RESUME_FAILED,
                f"no group call session to resume in room '{body['room']}'; join again",
            )
        await participant.attach(body["conn"])
        log.info("sfu resume", extra={"room": participant.room.id, "conn": body["conn"]})
        others = [
            p.to_wire() for p in participant.room.participants.values() if p is not participant
        ]
        return {**self._welcome(participant), "participants": others, "resumed": True}

    async def leave(self, body: dict[str, Any]) -> dict[str, Any]:
        await self._remove(self.participant(body), body.get("reason", "left"))
        return {"roomId": body["room"]}

    async def connection_gone(self, body: dict[str, Any]) -> None:
        """The participant's WebSocket closed: a goodbye removes it, a loss detaches it."""
        participant = self.participants.get(body["participant"])
        if participant is None or body["conn"] not in (participant.conn_id, participant.lost_conn):
            return  # already resumed elsewhere (or gone)
        participant.lost_conn = None  # closed for sure: never re-attach to it
        if body["graceful"] or not self.settings.sfu_reconnect_grace:
            await self._remove(participant, "disconnected")
        else:
            self.detach(participant)

    def detach(self, participant: Participant) -> None:
        if participant.closed or participant.conn_id is None:
            return
        log.info(
            "sfu participant detached; media kept for the reconnect grace",
            extra={"room": participant.room.id, "participant": participant.id},
        )
        participant.conn_id = None
        participant.grace = asyncio.get_running_loop().call_later(
            self.settings.sfu_reconnect_grace,
            lambda: self.spawn(self._remove(participant, "disconnected")),
        )

    async def check_connections(self, live: set[str]) -> None:
        """Detach participants whose WebSocket's node left the live set; re-attach them if
        it comes back without having been declared dead (a late heartbeat, not a death:
        their sockets are still open; a reaped node closes them, which detaches again)."""
        for participant in list(self.participants.values()):
            conn = participant.conn_id
            if conn is not None and node_of(conn) not in live:
                participant.lost_conn = conn
                self.detach(participant)
            elif conn is None and participant.lost_conn and node_of(participant.lost_conn) in live:
                lost, participant.lost_conn = participant.lost_conn, None
                await participant.attach(lost)

    # -- media operations -------------------------------------------------------------------

    async def publish(self, body: dict[str, Any]) -> dict[str, Any]:
        participant = self.participant(body)
        if not participant.can_publish:
            raise HubError(ErrorCode.FORBIDDEN, "you may not publish in this room")
        answer, added, removed = await participant.publish(body["sdp"], body["sources"])
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

    async def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        await self.participant(body).answer(body["sdp"])
        return {}

    async def ice_candidate(self, body: dict[str, Any]) -> dict[str, Any]:
        await self.participant(body).add_ice_candidate(body["target"], body["candidate"])
        return {}

    async def mute(self, body: dict[str, Any]) -> dict[str, Any]:
        participant = self.participant(body)
        track = next(
            (t for t in participant.tracks.values() if t.info.track_id == body["trackId"]), None
        )
        if track is None:
            raise HubError(ErrorCode.INVALID_STATE, f"you publish no track '{body['trackId']}'")
        if track.blocked and not body["muted"]:
            raise HubError(ErrorCode.FORBIDDEN, "this track was muted by the server")
        await self._set_muted(participant, [track], body["muted"])
        return {"trackId": track.info.track_id, "muted": track.muted}

    async def toggle(self, body: dict[str, Any]) -> dict[str, Any]:
        """``media:toggle-*`` and ``screen:share-*`` with a roomId: tell the whole room."""
        participant = self.participant(body)
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
        participant = self.participant(body)
        stats = participant.room.stats()
        stats["mediaNode"] = self.node
        stats["subscriptions"] = [s.stats() for s in participant.slots if s.track is not None]
        return stats

    # -- what the room API does ---------------------------------------------------------------

    async def evict(self, body: dict[str, Any]) -> dict[str, Any]:
        participant = self.participant(body)
        await self.session_ended(
            participant, "sfu:left", {"roomId": participant.room.id, "reason": body["reason"]}
        )
        await self._remove(participant, body["reason"])
        return {}

    async def apply_permissions(self, body: dict[str, Any]) -> dict[str, Any]:
        participant = self.participant(body)
        permissions = body["permissions"]
        publish, subscribe = permissions["canPublish"], permissions["canSubscribe"]
        if publish != participant.can_publish:
            participant.can_publish = publish
            # Revoking publishing stops forwarding at once; granting it back lifts that.
            await self._block(participant, list(participant.tracks.values()), not publish)
        if subscribe != participant.can_subscribe:
            participant.can_subscribe = subscribe
            participant.resubscribe()
        await participant.room.send(
            [participant],
            "sfu:permissions-updated",
            {"roomId": participant.room.id, "canPublish": publish, "canSubscribe": subscribe},
        )
        await self._record(participant.room.id)
        return {}

    async def server_mute(self, body: dict[str, Any]) -> dict[str, Any]:
        participant = self.participant(body)
        tracks = [t for t in participant.tracks.values() if t.info.track_id == body["trackId"]]
        await self._block(participant, tracks, body["muted"])
        await self._record(participant.room.id)
        return {}

    async def _block(self, participant: Participant, tracks: list[Any], blocked: bool) -> None:
        for track in tracks:
            track.block(blocked)
        await self._set_muted(participant, tracks, blocked, by="server")

    async def _record(self, room_id: str) -> None:
        """Keep this node's part of the room record's media summary current, so the room
        API on any node can list the group call's participants and tracks."""
        node = self.node

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

    # -- draining: no new rooms, calls finish, then the rest moves --------------------------

    async def drain(self, deadline: float) -> None:
        """Take no new rooms; wait up to ``deadline`` seconds for the calls here to end,
        then move the rest to other nodes (their participants re-join there)."""
        if not self.draining:
            self.draining = True
            log.info("draining media", extra={"rooms": len(self.rooms), "deadline": deadline})
            with contextlib.suppress(HubError):
                await self.hub.state.publish_load_now()
        if self.rooms:
            self._no_rooms.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._no_rooms.wait(), deadline)
        await asyncio.gather(*(self.migrate(r, "migrating") for r in list(self.rooms)))

    async def migrate(self, room_id: str, reason: str) -> None:
        room = self.rooms.get(room_id)
        if room is None:
            return
        try:
            target, _ = await self.placement.host_for(room_id, avoid=self.node)
        except HubError as exc:
            log.warning("room not migrated", extra={"room": room_id, "code": exc.code})
            return
        self.hub.metrics.sfu_relocations.labels("drained").inc()
        log.info("room migrating", extra={"room": room_id, "node": target})
        del self.rooms[room_id]
        for participant in list(room.participants.values()):
            self.participants.pop(participant.id, None)
            await self.session_ended(
                participant,
                "sfu:rejoin",
                {"roomId": room_id, "reason": reason, "mediaNode": target},
            )
            participant.conn_id = None  # nothing more goes to it from here (no sfu:left later)
        await self._record(room_id)
        # Close the old connections a little later: a client tears its side down when it
        # reads sfu:rejoin, and one that sees the server hang up first may lose what it
        # was sending (aiortc stops a sender's track when its transport closes).
        await asyncio.sleep(MIGRATE_CLOSE_DELAY)
        await room.close()

    # -- helpers --------------------------------------------------------------------------

    def spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
            extra={"room": participant.room.id, "participant": participant.id, "reason": reason},
        )
        await self.session_ended(
            participant, "sfu:left", {"roomId": participant.room.id, "reason": reason}
        )
        await self._remove(participant, reason)

    async def _remove(self, participant: Participant, reason: str) -> None:
        if self.participants.get(participant.id) is participant:
            del self.participants[participant.id]
        await participant.room.remove(participant, reason)
        await self._record(participant.room.id)
        with contextlib.suppress(HubError):
            await self.hub.state.publish_load_now()

    def _room_empty(self, room: SfuRoom) -> None:
        if self.rooms.get(room.id) is room:
            del self.rooms[room.id]
            self.spawn(self._release(room.id))
            if not self.rooms:
                self._no_rooms.set()

    async def _release(self, room_id: str) -> None:
        """Give the room's placement up, unless a join is bringing it back to life here."""
        try:
            async with self.hub.state.placement_lock(room_id):
                if room_id not in self.rooms and not self._joining.get(room_id):
                    await self.hub.state.release_room_host(room_id, self.node)
        except HubError as exc:  # state away: the next placement finds a host without room
            log.warning("room host not released", extra={"room": room_id, "code": exc.code})

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        rooms = list(self.rooms.values())
        self.rooms.clear()
        self.participants.clear()
        for room in rooms:
            # Participants connected through other nodes re-join wherever the room goes.
            for participant in list(room.participants.values()):
                with contextlib.suppress(Exception):
                    await self.session_ended(
                        participant,
                        "sfu:rejoin",
                        {"roomId": room.id, "reason": "media_node_stopping", "mediaNode": None},
                    )
            await room.close()
            # Take this node's part out of the room record (best effort: the state may be
            # away), so the room can finish once the others are gone too.
            with contextlib.suppress(Exception):
                await self._record(room.id)
            with contextlib.suppress(Exception):
                await self.hub.state.release_room_host(room.id, self.node)
