"""Room API commands applied to this node's sockets (kick, close, mute, permissions).

The room API may run on any node; it sends a command through the delivery to every node
holding a socket of the users concerned, and the state backend reports it to each of
those nodes (``BackendHandler.control``), which runs it here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from signaling.membership import MembershipService
    from signaling.state.delivery import Delivery
    from signaling.websocket import Connection


class MediaControl(Protocol):
    """What the SFU offers the room API for a connection's group call participant."""

    async def evict(self, conn: Connection, room_id: str, reason: str) -> None: ...

    async def apply_permissions(
        self, conn: Connection, room_id: str, permissions: dict[str, bool]
    ) -> None: ...

    async def server_mute(
        self, conn: Connection, room_id: str, track_id: str, muted: bool
    ) -> None: ...


class RoomControl:
    def __init__(
        self, *, delivery: Delivery, membership: MembershipService, media: MediaControl
    ) -> None:
        self.delivery = delivery
        self.membership = membership
        self.media = media

    async def apply(self, users: list[str], command: dict[str, Any]) -> None:
        room_id = command["roomId"]
        for user_id in users:
            for conn in self.delivery.local_connections_of(user_id):
                await self._apply(conn, room_id, command)  # type: ignore[arg-type]

    async def _apply(self, conn: Connection, room_id: str, command: dict[str, Any]) -> None:
        op = command["op"]
        if op == "remove":
            reason = command["reason"]
            if room_id in conn.rooms:
                conn.send(command["event"], {"roomId": room_id, "reason": reason})
                await self.membership.leave(conn, room_id, reason)
            await self.media.evict(conn, room_id, reason)
        elif op == "permissions":
            await self.media.apply_permissions(conn, room_id, command["permissions"])
        elif op == "mute":
            await self.media.server_mute(conn, room_id, command["trackId"], command["muted"])
