"""The group calls this node hosts: who is in them, how participants join, resume and
leave, the media summary kept in each room's record, and moving calls off a draining node.

Every operation names a participant (``PA_...``) and arrives from the node holding that
participant's WebSocket, through :class:`media.relay.NodeRelay` (directly when it is this
node). Events go back to the participants' WebSockets through the fan-out, wherever they
are; the notices that end a participant's session (``sfu:left``, ``sfu:rejoin``) go
through the WebSocket's node, so it forgets the session too (see :mod:`media.signaling`).

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

from media import aiortc_hooks, ice, rtp_writer
from media.group_call import GroupCall
from media.load import CpuMeter
from media.participant import Participant
from media.recording.recordings import Recordings
from media.recording.upload import S3Target, S3Uploader
from signaling.protocol import ErrorCode, HubError
from signaling.state.delivery import node_of

if TYPE_CHECKING:
    from config.sfu import SfuSettings
    from media.placement import Placement
    from signaling.metrics import HubMetrics
    from signaling.room_lifecycle import RoomLifecycle
    from signaling.state.delivery import Fanout
    from signaling.state.media_hosts import MediaHosts
    from signaling.state.models import RoomInfo
    from signaling.state.nodes import NodeRegistry
    from signaling.state.room_records import RoomRecords
    from signaling.webhooks.outbox import WebhookOutbox
    from turn.credentials import IceServers

log = logging.getLogger("switchboard.sfu")

MIGRATE_CLOSE_DELAY = 3.0


def uploader(s: SfuSettings) -> S3Uploader | None:
    """The S3-compatible upload of finished recordings, if a bucket is configured."""
    if not s.recording_s3_bucket:
        return None
    secret = s.recording_s3_secret_key
    return S3Uploader(
        S3Target(
            bucket=s.recording_s3_bucket,
            prefix=s.recording_s3_prefix,
            endpoint_url=s.recording_s3_endpoint,
            region=s.recording_s3_region,
            access_key=s.recording_s3_access_key,
            secret_key=secret.get_secret_value() if secret is not None else None,
            keep_local=s.recording_s3_keep_local,
        )
    )


#: Tells the WebSocket's node that a participant's session ended, and with which event.
SessionEnded = Callable[[Participant, str, dict[str, Any]], Awaitable[None]]


def warn_without_compiled_writer(settings: SfuSettings) -> None:
    """Say so at start when ``sfu_compiled_writer`` asks for a module the install did not
    build (no C compiler): the node forwards with the pure-Python writer."""
    if settings.sfu_compiled_writer and not rtp_writer.COMPILED_WRITER:
        log.warning(
            "the compiled RTP writer was not built (no C compiler at install): "
            "forwarding with the pure-Python one"
        )


class MediaHost:
    def __init__(
        self,
        *,
        node_id: str,
        settings: SfuSettings,
        hosts: MediaHosts,
        records: RoomRecords,
        nodes: NodeRegistry,
        lifecycle: RoomLifecycle,
        placement: Placement,
        fanout: Fanout,
        webhooks: WebhookOutbox,
        metrics: HubMetrics,
        ice_servers: IceServers,
        session_ended: SessionEnded,
    ) -> None:
        self.node = node_id
        self.settings = settings
        self.hosts = hosts
        self.records = records
        self.nodes = nodes
        self.lifecycle = lifecycle
        self.placement = placement
        self.fanout = fanout
        self.webhooks = webhooks
        self.metrics = metrics
        self.ice_servers = ice_servers
        self.session_ended = session_ended
        self.rooms: dict[str, GroupCall] = {}
        self.participants: dict[str, Participant] = {}
        self.draining = False
        self.cpu = CpuMeter()
        s = settings
        self.ice_policy = ice.IcePolicy(
            listen_ips=tuple(s.sfu_listen_ips),
            min_port=s.sfu_udp_min_port,
            max_port=s.sfu_udp_max_port,
            announced_ip=s.sfu_announced_ip,
        )
        ice.install()
        aiortc_hooks.extend_header_extensions()
        aiortc_hooks.one_fingerprint()
        aiortc_hooks.gather_in_place()
        aiortc_hooks.lazy_receive_estimators()
        warn_without_compiled_writer(s)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._joining: dict[str, int] = {}  # joins in progress, by room
        self._no_rooms = asyncio.Event()  # set whenever the last room here ends
        self.recordings = Recordings(
            directory=s.recording_dir,
            queue_size=s.recording_queue_frames,
            webhooks=webhooks,
            room=self.rooms.get,
            uploader=uploader(s),
            records=records,
        )

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
            for entry in self.ice_servers.for_user(f"sfu:{key}")
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
        info = await self.lifecycle.ensure(room_id)
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
            room = self.rooms[room_id] = GroupCall(
                room_id,
                settings=self.settings,
                fanout=self.fanout,
                webhooks=self.webhooks,
                on_empty=self._room_empty,
            )
            room.end_recording = self.recordings.end
            if info.recordings:
                await self.recordings.carry_on(room_id, info.recordings)
        participant = Participant(
            room,
            body["conn"],
            body["user"],
            body["name"],
            self._ice_servers(body["conn"]),
            self.ice_policy,
            self.fail,
        )
        participant.can_publish = info.permission(participant.user_id, "canPublish")
        participant.can_subscribe = info.permission(participant.user_id, "canSubscribe")
        participant.publish_limit = (
            info.publish_cap(participant.user_id) or info.max_publish_bitrate
        )
        others = list(room.participants.values())
        room.participants[participant.id] = participant
        self.participants[participant.id] = participant
        await room.broadcast(
            "sfu:participant-joined", {"roomId": room_id, **participant.to_wire()}, participant.id
        )
        participant.resubscribe()
        await self.record(room_id)
        await self.nodes.publish_load_now()
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
        host = await self.hosts.get(room_id)
        if host is not None:
            return host
        async with self.hosts.placement_lock(room_id):
            host = await self.hosts.get(room_id)
            if host is None:
                await self.hosts.set(room_id, self.node)
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
        await self.remove(self.participant(body), body.get("reason", "left"))
        return {"roomId": body["room"]}

    async def evict(self, body: dict[str, Any]) -> dict[str, Any]:
        """The room API removed the participant (kick, room closed)."""
        participant = self.participant(body)
        await self.session_ended(
            participant, "sfu:left", {"roomId": participant.room.id, "reason": body["reason"]}
        )
        await self.remove(participant, body["reason"])
        return {}

    async def connection_gone(self, body: dict[str, Any]) -> None:
        """The participant's WebSocket closed: a goodbye removes it, a loss detaches it."""
        participant = self.participants.get(body["participant"])
        if participant is None or body["conn"] not in (participant.conn_id, participant.lost_conn):
            return  # already resumed elsewhere (or gone)
        participant.lost_conn = None  # closed for sure: never re-attach to it
        if body["graceful"] or not self.settings.sfu_reconnect_grace:
            await self.remove(participant, "disconnected")
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
            lambda: self.spawn(self.remove(participant, "disconnected")),
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

    async def fail(self, participant: Participant, reason: str) -> None:
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
        await self.remove(participant, reason)

    async def remove(self, participant: Participant, reason: str) -> None:
        if self.participants.get(participant.id) is participant:
            del self.participants[participant.id]
        await participant.room.remove(participant, reason)
        await self.record(participant.room.id)
        with contextlib.suppress(HubError):
            await self.nodes.publish_load_now()

    # -- the room record's media summary --------------------------------------------------

    async def record(self, room_id: str) -> None:
        """Keep this node's part of the room record's media summary current, so the room
        API on any node can list the group call's participants and tracks."""
        node = self.node

        def write(info: RoomInfo) -> None:
            room = self.rooms.get(room_id)
            if room is None or not room.participants:
                info.media.pop(node, None)
            else:
                info.media[node] = {
                    "participants": [p.summary() for p in room.participants.values()]
                }

        try:
            await self.records.update(room_id, write)
        except KeyError:  # the room was closed meanwhile
            return
        except HubError as exc:  # shared state away: the summary catches up on the next change
            log.warning("media summary not recorded", extra={"room": room_id, "code": exc.code})
            return
        if room_id not in self.rooms:
            await self.lifecycle.check_empty(room_id)

    # -- rooms ending here ----------------------------------------------------------------

    def _room_empty(self, room: GroupCall) -> None:
        if self.rooms.get(room.id) is room:
            del self.rooms[room.id]
            self.spawn(self._release(room.id))
            if not self.rooms:
                self._no_rooms.set()

    async def _release(self, room_id: str) -> None:
        """Give the room's placement up, unless a join is bringing it back to life here."""
        try:
            async with self.hosts.placement_lock(room_id):
                if room_id not in self.rooms and not self._joining.get(room_id):
                    await self.hosts.release(room_id, self.node)
        except HubError as exc:  # state away: the next placement finds a host without room
            log.warning("room host not released", extra={"room": room_id, "code": exc.code})

    # -- draining: no new rooms, calls finish, then the rest moves --------------------------

    async def drain(self, deadline: float) -> None:
        """Take no new rooms; wait up to ``deadline`` seconds for the calls here to end,
        then move the rest to other nodes (their participants re-join there)."""
        if not self.draining:
            self.draining = True
            log.info("draining media", extra={"rooms": len(self.rooms), "deadline": deadline})
            with contextlib.suppress(HubError):
                await self.nodes.publish_load_now()
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
        self.metrics.sfu_relocations.labels("drained").inc()
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
        await self.record(room_id)
        # Close the old connections a little later: a client tears its side down when it
        # reads sfu:rejoin, and one that sees the server hang up first may lose what it
        # was sending (aiortc stops a sender's track when its transport closes).
        await asyncio.sleep(MIGRATE_CLOSE_DELAY)
        await room.close("room_moved")

    def spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
            await room.close("node_stopping")
            # Take this node's part out of the room record (best effort: the state may be
            # away), so the room can finish once the others are gone too.
            with contextlib.suppress(Exception):
                await self.record(room.id)
            with contextlib.suppress(Exception):
                await self.hosts.release(room.id, self.node)
