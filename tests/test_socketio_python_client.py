"""A second independent Socket.IO client: python-socketio's ``AsyncClient`` (PyPI), over
the default transports (polling, then the upgrade) and WebSocket only."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import socketio


class Recorder:
    """Buffers every event a python-socketio client receives."""

    def __init__(self, client: socketio.AsyncClient) -> None:
        self.events: list[tuple[str, Any]] = []
        self._arrived = asyncio.Event()

        @client.on("*")
        async def any_event(event: str, data: Any = None) -> None:
            self.events.append((event, data))
            self._arrived.set()

    async def expect(self, event: str, timeout: float = 5.0) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for i, (name, data) in enumerate(self.events):
                if name == event:
                    del self.events[i]
                    return data
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"no {event} (buffered: {[n for n, _ in self.events]})")
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                pass


@pytest.mark.parametrize("transports", [None, ["websocket"]], ids=["default", "websocket"])
async def test_python_socketio_client(hub: Any, transports: list[str] | None) -> None:
    client = socketio.AsyncClient(reconnection=False)
    events = Recorder(client)
    kwargs = {"transports": transports} if transports else {}
    await client.connect(hub.base, auth={"token": hub.token("alice", rooms=["r1"])}, **kwargs)
    try:
        ready = await events.expect("session:ready")
        assert ready["userId"] == "alice" and ready["connectionId"] == client.get_sid()
        joined = await client.call("room:join", {"roomId": "r1"}, timeout=5)
        assert joined["roomId"] == "r1"
        refused = await client.call("room:join", {"roomId": "r2"}, timeout=5)
        assert refused["error"]["code"] == "forbidden"
        bob = await hub.connect_in("bob", "r1", rooms=("r1",))
        assert (await events.expect("room:member-joined"))["userId"] == "bob"
        await bob.send("message:typing", {"conversationId": "r1", "isTyping": True})
        assert (await events.expect("user:typing"))["userId"] == "bob"
        await client.emit("message:typing", {"conversationId": "r1", "isTyping": True})
        assert (await bob.expect("user:typing"))["userId"] == "alice"
        await client.emit("call:initiate", {"callType": "audio", "participants": ["bob"]})
        initiated = await events.expect("call:initiated")
        incoming = await bob.expect("call:incoming")
        assert incoming["callId"] == initiated["callId"]
        if transports is None:
            assert client.transport() == "websocket"  # upgraded
    finally:
        await client.disconnect()
    gone = await bob.expect("presence:changed", where=lambda d: d["status"] == "offline")
    assert gone["userId"] == "alice"


async def test_python_socketio_refused_token(hub: Any) -> None:
    client = socketio.AsyncClient(reconnection=False)
    refusals: list[Any] = []
    client.on("connect_error", refusals.append)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(hub.base, auth={"token": "garbage"}, transports=["websocket"])
    assert refusals and "token_malformed" in repr(refusals[0])
