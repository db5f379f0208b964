"""Socket.IO connection-state recovery, mapped onto room history.

socket.io-client (4.6+) remembers the ``pid`` of its session (from ``40{"sid","pid"}``)
and the last string argument of the last event it received (the event's *offset*); when
its transport drops, it reconnects with ``{"pid", "offset"}`` in the CONNECT auth and
learns from the reply's ``pid`` whether the session was recovered. Here an event's
offset is its place in its room's history, ``"<epoch>:<offset>"``, the same for every
recipient (a broadcast stays one frame).

One offset names one room, but a session is in several rooms. So each session keeps a
:class:`RecoveryLog`: the last recorded events it was sent, in order, and where each of
its rooms started. A transport is in order, so the client's offset says what it
received in *every* room: everything sent up to that event. When the session drops, the
log is saved (:class:`signaling.state.session_snapshots.SessionSnapshots`) for the
recovery window; the client's reconnect, on any node, takes it back, rejoins the rooms
and replays each room's history from there, all rooms or none (``recovered: false`` and
nothing replayed if any room's history no longer reaches back).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson

from signaling.protocol import HubError
from signaling.socketio.recovery_log import RecoveryLog, resume_positions
from signaling.socketio.session import FINAL_CLOSES
from signaling.state.history import Position, Recovery

if TYPE_CHECKING:
    from signaling.socketio.session import SioConnection
    from signaling.state.session_snapshots import SessionSnapshots
    from signaling.websocket import Connection

log = logging.getLogger("switchboard.socketio")

#: The longest ``pid`` or offset a client's CONNECT may bring (ours are shorter).
MAX_ID = 64


def _offset(auth: Any) -> str | None:
    found = auth.get("offset") if isinstance(auth, dict) else None
    return found if isinstance(found, str) and len(found) <= MAX_ID else None


class SessionRecovery:
    """Resumes sessions: saves a dropped session's log, and on a reconnect carrying its
    ``pid`` rejoins its rooms and replays what the client missed."""

    def __init__(
        self,
        *,
        snapshots: SessionSnapshots,
        resume_room: Callable[[Connection, str, Position | None], Awaitable[Recovery]],
        window: float,
    ) -> None:
        self.snapshots = snapshots
        self.resume_room = resume_room
        self.window = window

    def new_log(self, auth: Any) -> RecoveryLog:
        return RecoveryLog(_offset(auth))

    async def connect(self, conn: SioConnection, auth: Any) -> None:
        """Answer the CONNECT of a held connection (the hub has it already): with the
        ``pid`` it brought if its session resumed, else with a new one."""
        pid = auth.get("pid") if isinstance(auth, dict) else None
        missed: list[bytes] | None = None
        if isinstance(pid, str) and 0 < len(pid) <= MAX_ID:
            try:
                raw = await self.snapshots.take(conn.user_id, pid)
            except HubError as exc:
                log.warning("session not resumed", extra={"conn": conn.id, "code": exc.code})
                raw = None
            if raw is not None:
                missed = await self._rejoin(conn, orjson.loads(raw), _offset(auth))
        resumed = missed is not None
        conn.resumed(pid if resumed else secrets.token_urlsafe(12), missed or [])
        log.info("Socket.IO session", extra={"conn": conn.id, "recovered": resumed})

    async def _rejoin(
        self, conn: SioConnection, snapshot: dict[str, Any], offset: str | None
    ) -> list[bytes] | None:
        """Rejoin the snapshot's rooms (whatever happens: the client keeps them); what was
        missed in all of them, or ``None`` if any room cannot say."""
        positions = resume_positions(snapshot, offset)
        recovered = positions is not None
        missed: list[bytes] = []
        for room_id in snapshot["rooms"]:
            since = positions.get(room_id) if positions is not None else None
            try:
                found = await self.resume_room(
                    conn, room_id, Position(*since) if since is not None else None
                )
            except HubError as exc:
                log.info("room not resumed", extra={"room": room_id, "code": exc.code})
                recovered = False
                continue
            recovered = recovered and found.recovered
            missed.extend(found.publications)
        return missed if recovered else None

    def snapshot(self, conn: SioConnection) -> bytes | None:
        """What a session that just dropped leaves to resume (read before its rooms are
        released); ``None`` for one its client ended or that must not come back."""
        log_ = conn.recovery
        if log_ is None or conn.pid is None or conn.session.left:
            return None  # no Socket.IO DISCONNECT: a transport closed, even by the client
        if conn.close_code in FINAL_CLOSES:
            return None
        return log_.snapshot(conn.rooms)

    async def save(self, conn: SioConnection, snapshot: bytes) -> None:
        assert conn.pid is not None
        try:
            await self.snapshots.save(conn.user_id, conn.pid, snapshot, self.window)
        except Exception:
            log.warning("session not saved for recovery", extra={"conn": conn.id}, exc_info=True)
