"""A small asyncio client for the hub protocol, used by tests, benchmarks and scripts.

It pairs requests with their ``ack``/``error`` by id and buffers every other event so a
caller can ``expect`` an event type without racing the reader.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

_ENDS = (
    aiohttp.WSMsgType.CLOSE,
    aiohttp.WSMsgType.CLOSING,
    aiohttp.WSMsgType.CLOSED,
    aiohttp.WSMsgType.ERROR,
)


class RequestError(Exception):
    """The server answered a request with an ``error`` frame."""

    def __init__(self, code: str, message: str, data: dict[str, Any]) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.data = data


class HubClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        ws: aiohttp.ClientWebSocketResponse,
        *,
        own_session: bool,
    ) -> None:
        self.session = session
        self.ws = ws
        self._own_session = own_session
        self._ids = itertools.count(1)
        self._pending: dict[str | int, asyncio.Future[dict[str, Any]]] = {}
        self.events: list[dict[str, Any]] = []
        self._arrived = asyncio.Event()
        self.closed = asyncio.Event()
        self.ready: dict[str, Any] | None = None
        self.close_reason: str | None = None
        # Callbacks by event type; an event with a listener is handed over, not buffered.
        self.listeners: dict[str, Callable[[dict[str, Any]], None]] = {}
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(
        cls,
        url: str,
        token: str | None,
        *,
        session: aiohttp.ClientSession | None = None,
        headers: dict[str, str] | None = None,
        wait_ready: bool = True,
        **ws_options: Any,
    ) -> HubClient:
        own = session is None
        session = session or aiohttp.ClientSession()
        params = {"access_token": token} if token else None
        try:
            ws = await session.ws_connect(url, params=params, headers=headers, **ws_options)
        except BaseException:
            if own:
                await session.close()
            raise
        client = cls(session, ws, own_session=own)
        if wait_ready:
            client.ready = await client.expect("session:ready")
        return client

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code

    async def _read(self) -> None:
        try:
            while True:
                msg = await self.ws.receive()
                if msg.type is aiohttp.WSMsgType.CLOSE:
                    self.close_reason = msg.extra or ""
                if msg.type in _ENDS:
                    break
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    continue
                frame = orjson.loads(msg.data)
                id_ = frame.get("id")
                if id_ is not None and id_ in self._pending:
                    fut = self._pending.pop(id_)
                    if not fut.done():
                        fut.set_result(frame)
                    continue
                listener = self.listeners.get(frame.get("type", ""))
                if listener is not None:
                    listener(frame.get("data") or {})
                    continue
                self.events.append(frame)
                self._arrived.set()
        finally:
            self.closed.set()
            self._arrived.set()
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionError(f"closed ({self.ws.close_code})"))

    async def send(self, type_: str, data: Any = None, id_: str | int | None = None) -> None:
        frame: dict[str, Any] = {"type": type_, "data": data if data is not None else {}}
        if id_ is not None:
            frame["id"] = id_
        await self.ws.send_str(orjson.dumps(frame).decode())

    async def send_raw(self, payload: str | bytes) -> None:
        if isinstance(payload, bytes):
            await self.ws.send_bytes(payload)
        else:
            await self.ws.send_str(payload)

    async def request(self, type_: str, data: Any = None, timeout: float = 5.0) -> dict[str, Any]:
        """Send with a fresh id and return the ack's ``data``; raise :class:`RequestError`."""
        frame = await self.call(type_, data, timeout)
        if frame["type"] == "error":
            err = frame["data"]
            raise RequestError(err.get("code", ""), err.get("message", ""), err)
        return frame["data"]

    async def call(self, type_: str, data: Any = None, timeout: float = 5.0) -> dict[str, Any]:
        """Send with a fresh id and return the whole reply frame (ack or error)."""
        id_ = f"r{next(self._ids)}"
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[id_] = fut
        await self.send(type_, data, id_)
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._pending.pop(id_, None)

    async def expect(
        self,
        type_: str,
        timeout: float = 5.0,
        where: Callable[[dict[str, Any]], bool] | None = None,
    ) -> dict[str, Any]:
        """Remove and return the ``data`` of the first buffered or arriving ``type_`` event."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for i, frame in enumerate(self.events):
                if frame["type"] == type_ and (where is None or where(frame["data"])):
                    del self.events[i]
                    return frame["data"]
            if self.closed.is_set():
                raise ConnectionError(f"closed ({self.ws.close_code}) while waiting for {type_}")
            remaining = deadline - loop.time()
            if remaining <= 0:
                seen = [f["type"] for f in self.events]
                raise TimeoutError(f"no '{type_}' within {timeout}s (buffered: {seen})")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)

    async def expect_none(self, type_: str, within: float = 0.3) -> None:
        """Assert that no ``type_`` event arrives within ``within`` seconds."""
        await asyncio.sleep(within)
        found = [f for f in self.events if f["type"] == type_]
        if found:
            raise AssertionError(f"unexpected {type_}: {found}")

    def take(self, type_: str) -> list[dict[str, Any]]:
        """Remove and return the data of all buffered ``type_`` events."""
        out = [f["data"] for f in self.events if f["type"] == type_]
        self.events = [f for f in self.events if f["type"] != type_]
        return out

    async def wait_closed(self, timeout: float = 5.0) -> int | None:
        await asyncio.wait_for(self.closed.wait(), timeout)
        return self.ws.close_code

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(BaseException):
            await self._reader
        if self._own_session:
            await self.session.close()
