"""Typing state in process memory; each record carries its own expiry on the event loop."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from signaling.state.handler import Reports
from signaling.state.memory.delivery import LocalDelivery
from signaling.state.typing_indicators import TYPING_TIMER, Announce, Announcement, TypingStore

#: The event loop may run a timer a little before its deadline by the clock the record
#: uses (uvloop's timers have millisecond resolution): that close counts as expired.
EARLY_TOLERANCE = 0.005


@dataclass(slots=True)
class _Typing:
    conn_id: str
    name: str
    expires_at: float
    last_sent: float
    expiry: asyncio.TimerHandle | None = None


class MemoryTyping(TypingStore):
    def __init__(self, reports: Reports, delivery: LocalDelivery) -> None:
        self._reports = reports
        self._delivery = delivery
        self._typing: dict[tuple[str, str], _Typing] = {}

    def _announced(self, room_id: str, announcement: Announcement | None) -> Announce:
        """Write the announcement (encoded once, by the service) to the room's sockets."""
        if announcement is None:
            return Announce.NEEDED
        started = time.perf_counter()
        frame, exclude = announcement.frame, announcement.exclude_user
        count = self._delivery.write_room(room_id, frame, exclude)
        self._delivery.metrics.observe(announcement.type_, started, count)
        return Announce.SENT

    async def stop_announced(
        self, room_id: str, user_id: str, announcement: Announcement
    ) -> Announce:
        if await self.stop(room_id, user_id, None) is None:
            return Announce.NONE
        return self._announced(room_id, announcement)

    def _arm(self, room_id: str, user_id: str, record: _Typing, delay: float) -> None:
        if record.expiry is not None:
            record.expiry.cancel()
        record.expiry = asyncio.get_running_loop().call_later(
            delay, self._reports.timer_fired, TYPING_TIMER, [room_id, user_id]
        )

    async def start(
        self,
        room_id: str,
        user_id: str,
        conn_id: str,
        name: str,
        timeout: float,
        throttle: float,
        announcement: Announcement | None = None,
    ) -> Announce:
        now = time.monotonic()
        current = self._typing.get((room_id, user_id))
        if current is None:
            record = self._typing[(room_id, user_id)] = _Typing(conn_id, name, now + timeout, now)
            self._arm(room_id, user_id, record, timeout)
            return self._announced(room_id, announcement)
        current.expires_at = now + timeout
        current.conn_id = conn_id
        self._arm(room_id, user_id, current, timeout)
        if now - current.last_sent < throttle:
            return Announce.NONE
        current.last_sent = now
        return self._announced(room_id, announcement)

    async def stop(self, room_id: str, user_id: str, conn_id: str | None) -> str | None:
        current = self._typing.get((room_id, user_id))
        if current is None or (conn_id is not None and current.conn_id != conn_id):
            return None
        del self._typing[(room_id, user_id)]
        if current.expiry is not None:
            current.expiry.cancel()
        return current.name

    async def expire(self, room_id: str, user_id: str) -> str | None:
        current = self._typing.get((room_id, user_id))
        if current is None:
            return None
        left = current.expires_at - time.monotonic()
        if left > EARLY_TOLERANCE:
            self._arm(room_id, user_id, current, left)
            return None
        del self._typing[(room_id, user_id)]
        return current.name

    def close(self) -> None:
        for record in self._typing.values():
            if record.expiry is not None:
                record.expiry.cancel()
        self._typing.clear()
