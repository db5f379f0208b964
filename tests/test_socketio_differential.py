"""One client script, two servers: socket.io-client against the Node Socket.IO service we
replace (``benchmarks/peers/socketio-server.mjs``) and against Switchboard's
``/socket.io/`` sees the same events in the same order, each carrying at least the fields
the old service sent, for the flows both support."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from benchmarks.signaling import PEERS
from signaling.tokens import mint_token
from tests.conftest import SECRET
from tests.redis_server import free_port
from tests.sio_driver import NodeSocketIO

STATE_KINDS = ("memory",)
#: What the driver reports about the connection itself, not events of the application.
TRANSPORT_EVENTS = {"transport", "upgrade", "connect", "disconnect", "reconnect_attempt"}


@pytest.fixture
async def reference() -> AsyncIterator[str]:
    """The replaced service, run from the benchmark peers."""
    port = free_port()
    env = {**os.environ, "PORT": str(port), "JWT_SECRET": SECRET}
    proc = await asyncio.create_subprocess_exec("node", str(PEERS / "socketio-server.mjs"), env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(base + "/socket.io/?EIO=4&transport=polling"):
                        break
                await asyncio.sleep(0.05)
        yield base
    finally:
        proc.kill()
        await proc.wait()


async def script(base: str) -> dict[str, list[tuple[str, Any]]]:
    """The flows both servers support, as the old service's web client runs them."""
    sio = await NodeSocketIO.start()
    seen: dict[str, list[tuple[str, Any]]] = {"alice": [], "bob": []}
    try:
        opts = {"transports": ["websocket"]}
        for user in ("alice", "bob"):
            await sio.connected(user, base, mint_token(SECRET, user, rooms=["team"]), **opts)
        await sio.emit("alice", "room:join", {"roomId": "team"}, ack=True)
        await sio.emit("bob", "room:join", {"roomId": "team"}, ack=True)
        await sio.expect("alice", "room:member-joined")
        await sio.emit("bob", "message:typing", {"conversationId": "team", "isTyping": True})
        await sio.expect("alice", "user:typing")
        # Switchboard also ends a typing indicator by itself (timeout, leaving); the old
        # service relays only what clients send, so the script stops typing explicitly.
        await sio.emit("bob", "message:typing", {"conversationId": "team", "isTyping": False})
        await sio.expect("alice", "user:typing")
        started = await sio.emit(
            "alice", "call:initiate", {"callType": "video", "participants": ["bob"]}, ack=True
        )
        call_id = started["callId"]
        await sio.expect("bob", "call:incoming")
        await sio.emit("bob", "call:accept", {"callId": call_id}, ack=True)
        await sio.expect("alice", "call:accepted")
        offer = {"callId": call_id, "to": "bob", "sdp": {"type": "offer", "sdp": "v=0"}}
        await sio.emit("alice", "call:offer", offer, ack=True)
        await sio.expect("bob", "call:offer")
        answer = {"callId": call_id, "to": "alice", "sdp": {"type": "answer", "sdp": "v=0"}}
        await sio.emit("bob", "call:answer", answer, ack=True)
        await sio.expect("alice", "call:answer")
        ice = {"callId": call_id, "to": "bob", "candidate": {"candidate": "", "sdpMid": "0"}}
        await sio.emit("alice", "call:ice-candidate", ice, ack=True)
        await sio.expect("bob", "call:ice-candidate")
        await sio.emit("alice", "call:end", {"callId": call_id}, ack=True)
        await sio.expect("bob", "call:ended")
        refused = await sio.emit("bob", "call:accept", {"callId": "call_nope"}, ack=True)
        assert refused["error"]["code"] == "call_not_found"
        sio.disconnect("bob")
        await sio.expect("alice", "room:member-left")
        await asyncio.sleep(0.2)
        for user in seen:
            seen[user] = [
                (name, args[0] if args else None)
                for name, args in sio.log[user]
                if name not in TRANSPORT_EVENTS
            ]
    finally:
        await sio.close()
    return seen


async def test_same_event_sequence_as_the_replaced_service(hub: Any, reference: str) -> None:
    theirs = await script(reference)
    ours = await script(hub.base)
    for user in ("alice", "bob"):
        assert [n for n, _ in ours[user]] == [n for n, _ in theirs[user]], user
        for (name, mine), (_, old) in zip(ours[user], theirs[user], strict=True):
            if isinstance(old, dict):
                missing = set(old) - set(mine)
                assert not missing, (user, name, missing)
