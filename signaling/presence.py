"""Presence: per-device statuses, aggregated per user, announced to room co-members.

Announcements happen only when the user's *visible* aggregate changes, so a second device
connecting or a device going away while another stays online is silent. Their audience,
the user's rooms, is read alongside the change (on Redis in the same write and round
trip, :mod:`signaling.overlap`), whether or not it turns out to be needed: a set read
costs Redis little, a round trip of its own costs the node a write and a wake-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from signaling.overlap import overlapped
from signaling.protocol import ErrorCode, HubError

if TYPE_CHECKING:
    from signaling.events import PresenceQuery, PresenceUpdate
    from signaling.state.delivery import Fanout
    from signaling.state.membership import MembershipStore
    from signaling.state.models import PresenceChange, RemoteConnection
    from signaling.state.presence import PresenceStore
    from signaling.webhooks.outbox import WebhookOutbox
    from signaling.websocket import Connection


class PresenceService:
    def __init__(
        self,
        *,
        store: PresenceStore,
        membership: MembershipStore,
        fanout: Fanout,
        webhooks: WebhookOutbox,
        max_query: int,
        overlap: bool,
    ) -> None:
        self.store = store
        self.overlap = overlap  # the change and its audience read side by side
        self.membership = membership
        self.fanout = fanout
        self.webhooks = webhooks
        self.max_query = max_query

    async def device_connected(self, conn: Connection) -> None:
        await self._set(conn.user_id, conn.id, conn.status)

    async def device_gone(self, conn: Connection | RemoteConnection) -> None:
        await self._set(conn.user_id, conn.id, None)

    async def on_update(self, conn: Connection, payload: PresenceUpdate) -> dict[str, Any]:
        conn.status = payload.status
        change = await self._set(conn.user_id, conn.id, payload.status)
        return {"deviceStatus": payload.status, **change.after.to_wire()}

    async def on_query(self, conn: Connection, payload: PresenceQuery) -> dict[str, Any]:
        wanted = list(dict.fromkeys(payload.userIds))
        if len(wanted) > self.max_query:
            raise HubError(
                ErrorCode.INVALID_PAYLOAD, f"data.userIds: at most {self.max_query} users per query"
            )
        principal = conn.principal
        allowed, denied = [], []
        for user_id in wanted:
            if (
                user_id == principal.user_id
                or principal.may_see_presence_of(user_id)
                or await self.membership.share_a_room(principal.user_id, user_id)
            ):
                allowed.append(user_id)
            else:
                denied.append(user_id)
        found = await self.store.get(allowed)
        return {"users": [found[u].to_wire() for u in allowed], "denied": denied}

    async def _set(self, user_id: str, conn_id: str, status: str | None) -> PresenceChange:
        """Set one device's status and announce the user's change, if any, to its rooms."""
        change, rooms = await overlapped(
            self.overlap,
            self.store.set_device(user_id, conn_id, status),
            self.membership.rooms_of(user_id),
        )
        if change.changed:
            self.webhooks.emit("presence_changed", f"user:{user_id}", change.after.to_wire())
            if rooms:
                await self.fanout.to_rooms(
                    rooms, "presence:changed", change.after.to_wire(), exclude_user=user_id
                )
        return change
