"""The WebSocket side of group calls: ``sfu:*`` events from this node's clients, routed to
the node hosting each room's media.

A client may be connected to any node. On ``sfu:join`` this node finds the room's media
node (placing the room if it has none, see :mod:`media.placement`) and remembers the
session (connection -> room, media node, participant). Every later request of that
session is relayed to the media node and its answer becomes the client's ``ack`` or
``error``; events from the media node reach the client through the fan-out, and
the client's ICE candidates carry the media node's own addresses, so media flows between
the client and that node directly.

This node also watches the cluster: when a session's media node dies, the room is placed
on a live node and the client is told to ``sfu:rejoin``; when a participant hosted here
loses its WebSocket's node, it is detached (media kept) until it resumes or the grace ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from media.admin import node_out
from media.host import MediaHost
from media.operations import MediaOps
from media.placement import Placement
from media.relay import NodeRelay
from signaling.api.models import NodeList
from signaling.background import cancel_and_wait
from signaling.protocol import ErrorCode, HubError
from signaling.state.delivery import node_of

if TYPE_CHECKING:
    from config.sfu import SfuSettings
    from media.participant import Participant
    from signaling import events
    from signaling.metrics import HubMetrics
    from signaling.room_lifecycle import RoomLifecycle
    from signaling.state.delivery import Fanout
    from signaling.state.media_hosts import MediaHosts
    from signaling.state.models import RoomInfo
    from signaling.state.nodes import NodeRegistry
    from signaling.state.room_records import RoomRecords
    from signaling.webhooks.outbox import WebhookOutbox
    from signaling.websocket import Connection
    from turn.credentials import IceServers

log = logging.getLogger("switchboard.sfu")

MOVED_RETRIES = 3


@dataclass(slots=True)
class Session:
    room_id: str
    host: str
    participant_id: str


class SfuSignaling:
    """This node's group call signaling, and (through :attr:`media` and :attr:`ops`) the
    calls whose media it hosts."""

    def __init__(
        self,
        *,
        settings: SfuSettings,
        heartbeat_interval: float,
        nodes: NodeRegistry,
        hosts: MediaHosts,
        records: RoomRecords,
        lifecycle: RoomLifecycle,
        fanout: Fanout,
        webhooks: WebhookOutbox,
        metrics: HubMetrics,
        ice_servers: IceServers,
    ) -> None:
        self.settings = settings
        self.heartbeat_interval = heartbeat_interval
        self.nodes = nodes
        self.hosts = hosts
        self.records = records
        self.lifecycle = lifecycle
        self.fanout = fanout
        self.metrics = metrics
        self.ice_servers = ice_servers
        self.placement = Placement(nodes, hosts, 2 * heartbeat_interval)
        self.relay = NodeRelay(nodes, metrics, settings.sfu_relay_timeout, self._on_relayed)
        self.media = MediaHost(
            node_id=nodes.node_id,
            settings=settings,
            hosts=hosts,
            records=records,
            nodes=nodes,
            lifecycle=lifecycle,
            placement=self.placement,
            fanout=fanout,
            webhooks=webhooks,
            metrics=metrics,
            ice_servers=ice_servers,
            session_ended=self._session_ended,
        )
        self.ops = MediaOps(self.media)
        self.sessions: dict[str, Session] = {}  # by connection id
        self._watcher: asyncio.Task[None] | None = None
        host, ops = self.media, self.ops
        self._host_ops = {
            "join": host.join,
            "resume": host.resume,
            "leave": host.leave,
            "evict": host.evict,
            "publish": ops.publish,
            "answer": ops.answer,
            "ice": ops.ice_candidate,
            "mute": ops.mute,
            "subscription": ops.subscription,
            "toggle": ops.toggle,
            "stats": ops.stats,
            "room-media": ops.room_media,
            "permissions": ops.apply_permissions,
            "server-mute": ops.server_mute,
            "record-start": host.recordings.start,
            "record-stop": host.recordings.stop,
            "record-list": host.recordings.list,
        }

    # The media node's rooms, for tests and the room API's statistics.
    @property
    def rooms(self) -> dict[str, Any]:
        return self.media.rooms

    def start(self) -> None:
        self._watcher = asyncio.create_task(self._watch(), name="sfu-cluster-watch")

    async def stop(self) -> None:
        await cancel_and_wait(self._watcher)
        await self.media.stop()

    # -- relayed operations ---------------------------------------------------------------

    async def _on_relayed(self, op: str, body: dict[str, Any]) -> dict[str, Any] | None:
        handler = self._host_ops.get(op)
        if handler is not None:
            return await handler(body)
        if op == "conn-gone":
            await self.media.connection_gone(body)
        elif op == "session-ended":
            await self._deliver_session_end(body)
        elif op == "drain":
            self.media.spawn(self.media.drain(float(body["deadline"])))
        else:
            raise HubError(ErrorCode.INTERNAL_ERROR, f"unknown relayed operation '{op}'")
        return None

    async def _to_host(self, conn: Connection, room_id: str, op: str, **body: Any) -> Any:
        session = self.sessions.get(conn.id)
        if session is None or session.room_id != room_id:
            raise HubError(ErrorCode.NOT_IN_ROOM, f"not in group call room '{room_id}'")
        body.update(room=room_id, participant=session.participant_id)
        return await self.relay.call(session.host, op, body)

    # -- client events ----------------------------------------------------------------------

    async def on_join(self, conn: Connection, payload: events.RoomRef) -> dict[str, Any]:
        room_id = payload.roomId
        if not conn.principal.may_join(room_id):
            raise HubError(ErrorCode.FORBIDDEN, f"token does not allow joining room '{room_id}'")
        current = self.sessions.get(conn.id)
        if current is not None:
            raise HubError(
                ErrorCode.INVALID_STATE, f"already in group call room '{current.room_id}'"
            )
        await self.lifecycle.ensure(room_id)
        body = {
            "room": room_id,
            "conn": conn.id,
            "user": conn.user_id,
            "name": conn.name,
        }
        for _ in range(MOVED_RETRIES):
            host, _ = await self.placement.host_for(room_id)
            result = await self.relay.call(host, "join", body)
            if "moved" not in result:
                break
        else:
            raise HubError(ErrorCode.UNAVAILABLE, f"room '{room_id}' is moving; retry shortly")
        self.sessions[conn.id] = Session(room_id, host, result["participantId"])
        if conn.closed:  # gone while joining: its disconnect clean-up already ran
            await self.connection_gone(conn)
        result["iceServers"] = self.ice_servers.for_user(conn.user_id)
        return result

    async def on_resume(self, conn: Connection, payload: events.SfuResume) -> dict[str, Any]:
        room_id = payload.roomId
        if conn.id in self.sessions:
            raise HubError(ErrorCode.INVALID_STATE, "this connection is already in a group call")
        host = await self.hosts.get(room_id)
        if host is None or host not in await self.nodes.live_nodes():
            raise HubError(
                ErrorCode.RESUME_FAILED,
                f"room '{room_id}' lost its media node; join again",
            )
        body = {
            "room": room_id,
            "participant": payload.participantId,
            "token": payload.resumeToken,
            "conn": conn.id,
            "user": conn.user_id,
        }
        result = await self.relay.call(host, "resume", body)
        self.sessions[conn.id] = Session(room_id, host, payload.participantId)
        result["iceServers"] = self.ice_servers.for_user(conn.user_id)
        return result

    async def on_leave(self, conn: Connection, payload: events.RoomRef) -> dict[str, Any]:
        result = await self._to_host(conn, payload.roomId, "leave", reason="left")
        self.sessions.pop(conn.id, None)
        return result

    async def on_publish(self, conn: Connection, payload: events.SfuPublish) -> dict[str, Any]:
        sources = dict(payload.sources)
        return await self._to_host(
            conn, payload.roomId, "publish", sdp=payload.sdp, sources=sources
        )

    async def on_answer(self, conn: Connection, payload: events.SfuAnswer) -> dict[str, Any]:
        return await self._to_host(conn, payload.roomId, "answer", sdp=payload.sdp)

    async def on_ice(self, conn: Connection, payload: events.SfuIce) -> dict[str, Any]:
        candidate = payload.candidate.model_dump() if payload.candidate is not None else None
        return await self._to_host(
            conn, payload.roomId, "ice", target=payload.target, candidate=candidate
        )

    async def on_mute(self, conn: Connection, payload: events.SfuMute) -> dict[str, Any]:
        return await self._to_host(
            conn, payload.roomId, "mute", trackId=payload.trackId, muted=payload.muted
        )

    async def on_subscription(
        self, conn: Connection, payload: events.SfuSubscription
    ) -> dict[str, Any]:
        tracks = [t.model_dump(exclude_none=True) for t in payload.tracks]
        return await self._to_host(conn, payload.roomId, "subscription", tracks=tracks)

    async def on_stats(self, conn: Connection, payload: events.RoomRef) -> dict[str, Any]:
        return await self._to_host(conn, payload.roomId, "stats")

    async def on_toggle(
        self, conn: Connection, room_id: str, kind: str, enabled: bool
    ) -> dict[str, Any]:
        return await self._to_host(conn, room_id, "toggle", kind=kind, enabled=enabled)

    async def connection_gone(self, conn: Connection) -> None:
        session = self.sessions.pop(conn.id, None)
        if session is None:
            return
        # A client that said goodbye (close code 1000) leaves at once; a lost connection,
        # or one the server closed (drain, restart), may resume on any node.
        body = {
            "room": session.room_id,
            "participant": session.participant_id,
            "conn": conn.id,
            "graceful": conn.said_goodbye,
        }
        with contextlib.suppress(HubError):
            await self.relay.notify(session.host, "conn-gone", body)

    # -- what the room API does (control commands run on the WebSocket's node) -------------

    def _in_room(self, conn: Connection, room_id: str) -> bool:
        session = self.sessions.get(conn.id)
        return session is not None and session.room_id == room_id

    async def evict(self, conn: Connection, room_id: str, reason: str) -> None:
        if self._in_room(conn, room_id):
            with contextlib.suppress(HubError):
                await self._to_host(conn, room_id, "evict", reason=reason)

    async def apply_permissions(
        self, conn: Connection, room_id: str, permissions: dict[str, bool]
    ) -> None:
        if self._in_room(conn, room_id):
            await self._to_host(conn, room_id, "permissions", permissions=permissions)

    async def server_mute(self, conn: Connection, room_id: str, track_id: str, muted: bool) -> None:
        if self._in_room(conn, room_id):
            await self._to_host(conn, room_id, "server-mute", trackId=track_id, muted=muted)

    # -- session ends (from the media node) -------------------------------------------------

    async def _session_ended(
        self, participant: Participant, type_: str, data: dict[str, Any]
    ) -> None:
        """Called on the media node: the WebSocket's node forgets the session and tells
        the client, in that order (a ``sfu:join`` the client sends next must not find the
        old session)."""
        if participant.conn_id is None:
            return
        body = {
            "conn": participant.conn_id,
            "participant": participant.id,
            "type": type_,
            "data": data,
        }
        with contextlib.suppress(HubError):
            await self.relay.notify(node_of(participant.conn_id), "session-ended", body)

    async def _deliver_session_end(self, body: dict[str, Any]) -> None:
        conn_id = body["conn"]
        session = self.sessions.get(conn_id)
        if session is not None and session.participant_id != body["participant"]:
            return  # a newer session of this connection; the notice is stale
        self.sessions.pop(conn_id, None)
        await self.fanout.to_conns([conn_id], body["type"], body["data"])

    # -- the cluster watch ----------------------------------------------------------------------

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                live = set(await self.nodes.live_nodes())
            except HubError:
                continue  # shared state away: no verdict on anyone
            except Exception:
                log.exception("cluster watch failed")
                continue
            await self.media.check_connections(live)
            lost: dict[tuple[str, str], list[str]] = {}
            for conn_id, session in self.sessions.items():
                if session.host not in live:
                    lost.setdefault((session.room_id, session.host), []).append(conn_id)
            for (room_id, dead), conns in lost.items():
                try:
                    await self._host_lost(room_id, dead, conns)
                except Exception:
                    log.exception("moving a room off a dead node failed", extra={"room": room_id})

    async def _host_lost(self, room_id: str, dead: str, conns: list[str]) -> None:
        """Place the room on a live node and tell this node's clients in the room to
        re-join (their media reconnects there). The dead node's part of the room record
        is the reaper's to drop (:meth:`_host_reaped`)."""
        target: str | None
        try:
            target, placed = await self.placement.host_for(room_id, avoid=dead)
        except HubError as exc:
            log.warning("room not re-placed", extra={"room": room_id, "code": exc.code})
            target, placed = None, False
        if placed:
            self.metrics.sfu_relocations.labels("node_lost").inc()
            log.warning(
                "media node lost; room moved", extra={"room": room_id, "from": dead, "to": target}
            )

        told = [c for c in conns if (s := self.sessions.get(c)) is not None and s.host == dead]
        for conn_id in told:
            del self.sessions[conn_id]
        data = {"roomId": room_id, "reason": "media_node_lost", "mediaNode": target}
        await self.fanout.to_conns(told, "sfu:rejoin", data)

    async def host_reaped(self, dead: str, rooms: list[str]) -> None:
        """Run by the node that reaps ``dead``, after its connections left: the rooms it
        hosted lose it as media node and its part of the media summary. A room with
        participants connected elsewhere was already moved by their nodes' cluster watch
        (its host record names the new node, so the compare-and-delete leaves it alone);
        one whose participants were all connected through the dead node would otherwise
        keep a call that is gone, and never reach its empty timeout."""

        def forget(info: RoomInfo) -> None:
            info.media.pop(dead, None)

        for room_id in rooms:
            try:
                await self.hosts.release(room_id, dead)
                await self.records.update(room_id, forget)
            except KeyError:  # the room record is gone already
                continue
            except HubError as exc:
                extra = {"room": room_id, "code": exc.code}
                log.warning("dead media node's room not released", extra=extra)
                continue
            with contextlib.suppress(HubError):
                await self.lifecycle.check_empty(room_id)

    # -- draining -----------------------------------------------------------------------------

    async def drain_node(self, node: str, deadline: float) -> bool:
        """Tell ``node`` (this one or another) to drain; ``False`` if it is not alive."""
        if node not in await self.nodes.live_nodes():
            return False
        return await self.relay.notify(node, "drain", {"deadline": deadline})

    async def room_media(self, room_id: str) -> dict[str, Any] | None:
        """A room's live media statistics from its media node (``None``: no group call)."""
        host = await self.hosts.get(room_id)
        if host is None:
            return None
        return await self.relay.call(host, "room-media", {"room": room_id})

    async def recordings(self, room_id: str, op: str, **body: Any) -> dict[str, Any]:
        """Start, stop or list recordings where the room's group call is. Without a group
        call, this node answers from the recordings it kept (a finished one may be on the
        node that hosted the call)."""
        host = await self.hosts.get(room_id)
        if host is None:
            if op == "start":
                raise HubError(ErrorCode.ROOM_NOT_FOUND, f"room '{room_id}' has no group call")
            host = self.nodes.node_id
        return await self.relay.call(host, f"record-{op}", {"room": room_id, **body})

    async def list_nodes(self) -> NodeList:
        """The live nodes with the load they last published, as placement ranks them."""
        nodes = await self.nodes.live_nodes()
        return NodeList(nodes=[node_out(name, data) for name, data in sorted(nodes.items())])
