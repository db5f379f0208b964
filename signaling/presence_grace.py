"""Presence grace: a device that drops without saying goodbye stays present for a moment.

A page refresh, a network switch or a node draining closes a connection that comes back a
second later. Releasing it at once would tell every co-member "offline", "left", then
"online", "joined". Instead, a connection that ends without the client saying goodbye
(close 1000, or Socket.IO's DISCONNECT) keeps its presence and its rooms for
``presence_grace`` seconds: only its typing is cleared and this node stops writing to it.
If the user reconnects and rejoins meanwhile, the user never looked absent, so the release
when the grace ends is silent; otherwise it is announced then.

The grace is a timer of the shared state, so it ends even if this node is gone by then,
and on whichever node fires it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from signaling.protocol import HubError
from signaling.state.models import RemoteConnection

if TYPE_CHECKING:
    from signaling.state.delivery import Delivery
    from signaling.state.timers import TimerStore
    from signaling.typing_indicators import TypingService
    from signaling.websocket import Connection

log = logging.getLogger("switchboard.presence")

#: The timer kind; its parts are the connection id, the user id and the rooms.
PRESENCE_GRACE = "presence_grace"

ReleaseHook = Callable[["Connection | RemoteConnection"], Awaitable[None]]


class PresenceGrace:
    def __init__(
        self,
        *,
        timers: TimerStore,
        delivery: Delivery,
        typing: TypingService,
        release: Sequence[ReleaseHook],
        grace: float,
    ) -> None:
        self.timers = timers
        self.delivery = delivery
        self.typing = typing
        self.hooks = tuple(release)
        self.grace = grace

    async def connection_ended(self, conn: Connection) -> None:
        """The hub's disconnect: release now, or hold the device for the grace."""
        if not self.grace or conn.said_goodbye:
            await self.release(conn)
            return
        rooms = sorted(conn.rooms)
        try:
            await self.timers.arm(PRESENCE_GRACE, [conn.id, conn.user_id, *rooms], self.grace)
        except HubError:  # the shared state is away: no timer to count on, release now
            await self.release(conn)
            return
        for room_id in rooms:
            await self.typing.clear(conn, room_id)
            await self.delivery.room_left(room_id, conn.id)

    async def release(self, conn: Connection | RemoteConnection) -> None:
        """The device is gone: its presence first (its audience is the rooms it is still
        in), then its rooms. With the shared state away, a hook's work is deferred (the
        state redoes it when it is back); that must not stop the hooks after it."""
        for hook in self.hooks:
            try:
                await hook(conn)
            except HubError as exc:
                log.warning("release deferred", extra={"conn": conn.id, "code": exc.code})

    async def expired(self, conn_id: str, user_id: str, *rooms: str) -> None:
        """The grace is over (on any node): release the held device."""
        await self.release(RemoteConnection(conn_id, user_id, set(rooms)))
