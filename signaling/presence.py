"""Presence: per-device statuses, aggregated per user, announced to room co-members.

Announcements happen only when the user's *visible* aggregate changes, so a second device
connecting or a device going away while another stays online is silent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from signaling.protocol import ErrorCode, HubError

if TYPE_CHECKING:
    from signaling.connection import Connection
    from signaling.events import PresenceQuery, PresenceUpdate
    from signaling.hub import Hub
    from signaling.state.models import PresenceChange, RemoteConnection


class PresenceService:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def device_connected(self, conn: Connection) -> None:
        change = await self.hub.state.set_device_status(conn.user_id, conn.id, conn.status)
        await self._announce(change)

    async def device_gone(self, conn: Connection | RemoteConnection) -> None:
        change = await self.hub.state.set_device_status(conn.user_id, conn.id, None)
        await self._announce(change)

    async def on_update(self, conn: Connection, payload: PresenceUpdate) -> dict[str, Any]:
        conn.status = payload.status
        change = await self.hub.state.set_device_status(conn.user_id, conn.id, payload.status)
        await self._announce(change)
        return {"deviceStatus": payload.status, **change.after.to_wire()}

    async def on_query(self, conn: Connection, payload: PresenceQuery) -> dict[str, Any]:
        limit = self.hub.settings.max_presence_query
        wanted = list(dict.fromkeys(payload.userIds))
        if len(wanted) > limit:
            raise HubError(
                ErrorCode.INVALID_PAYLOAD, f"data.userIds: at most {limit} users per query"
            )
        principal = conn.principal
        allowed, denied = [], []
        for user_id in wanted:
            if (
                user_id == principal.user_id
                or principal.may_see_presence_of(user_id)
                or await self.hub.state.shares_room(principal.user_id, user_id)
            ):
                allowed.append(user_id)
            else:
                denied.append(user_id)
        found = await self.hub.state.get_presence(allowed)
        return {"users": [found[u].to_wire() for u in allowed], "denied": denied}

    async def _announce(self, change: PresenceChange) -> None:
        if not change.changed:
            return
        user_id = change.after.user_id
        self.hub.webhooks.emit("presence_changed", f"user:{user_id}", change.after.to_wire())
        rooms = await self.hub.state.rooms_of_user(user_id)
        if rooms:
            await self.hub.to_rooms(
                rooms, "presence:changed", change.after.to_wire(), exclude_user=user_id
            )
