"""Read receipts: ``message:read`` from a member becomes ``messages:read`` for the
conversation's other members, and (opt-in) a ``messages_read`` webhook so the chat backend
can persist them.

Clients mark messages read as they scroll, often one by one. The first read of a
connection in a conversation is announced at once; further reads within
``read_receipt_throttle`` seconds are merged into one announcement at the end of that
window, so a conversation hears at most one receipt per reader per window.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from signaling.protocol import ErrorCode, HubError

if TYPE_CHECKING:
    from signaling.events import MessageRead
    from signaling.state.delivery import Fanout
    from signaling.webhooks.outbox import WebhookOutbox
    from signaling.websocket import Connection

log = logging.getLogger("switchboard.receipts")

#: Message ids merged into one announcement at most; more are announced at once.
MAX_MERGED = 1000


@dataclass(slots=True)
class _Window:
    user_id: str
    ids: dict[str, None] = field(default_factory=dict)  # ordered, without repeats
    read_at: int = 0
    timer: asyncio.TimerHandle | None = None


class ReadReceipts:
    def __init__(self, *, fanout: Fanout, webhooks: WebhookOutbox, throttle: float) -> None:
        self.fanout = fanout
        self.webhooks = webhooks
        self.throttle = throttle
        self._windows: dict[tuple[str, str], _Window] = {}
        self._sending: set[asyncio.Task[None]] = set()

    async def on_read(self, conn: Connection, payload: MessageRead) -> dict[str, Any]:
        room_id = payload.conversationId
        if room_id not in conn.rooms:
            raise HubError(
                ErrorCode.NOT_IN_ROOM, f"join conversation '{room_id}' before sending receipts"
            )
        ids = list(dict.fromkeys(payload.messageIds))
        now = int(time.time() * 1000)
        key = (conn.id, room_id)
        window = self._windows.get(key)
        if window is None or self.throttle == 0:
            await self._announce(conn.user_id, room_id, ids, now)
            if self.throttle:
                self._open(key, conn.user_id)
        else:
            window.ids.update(dict.fromkeys(ids))
            window.read_at = now
            if len(window.ids) >= MAX_MERGED:
                self._close(key)
        return {"conversationId": room_id, "timestamp": now}

    async def connection_closed(self, conn: Connection) -> None:
        """Announce what a closing connection had read but not yet announced."""
        for key in [k for k in self._windows if k[0] == conn.id]:
            window = self._windows.pop(key)
            if window.timer is not None:
                window.timer.cancel()
            if window.ids:
                try:
                    await self._announce(window.user_id, key[1], list(window.ids), window.read_at)
                except HubError as exc:  # the shared state is away: these receipts are lost
                    log.warning("read receipts not announced", extra={"code": exc.code})

    def _open(self, key: tuple[str, str], user_id: str) -> None:
        window = self._windows[key] = _Window(user_id)
        window.timer = asyncio.get_running_loop().call_later(self.throttle, self._close, key)

    def _close(self, key: tuple[str, str]) -> None:
        """The window is over: announce what it merged, and open the next one if it did."""
        window = self._windows.pop(key, None)
        if window is None:
            return
        if window.timer is not None:
            window.timer.cancel()
        if not window.ids:
            return
        self._open(key, window.user_id)
        task = asyncio.ensure_future(
            self._announce(window.user_id, key[1], list(window.ids), window.read_at)
        )
        self._sending.add(task)
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("announcing read receipts failed", exc_info=task.exception())

    async def _announce(self, user_id: str, room_id: str, ids: list[str], read_at: int) -> None:
        data = {
            "userId": user_id,
            "conversationId": room_id,
            "messageIds": ids,
            "timestamp": read_at,
        }
        await self.fanout.to_room_recorded(room_id, "messages:read", data, exclude_user=user_id)
        self.webhooks.emit("messages_read", f"room:{room_id}", data)
