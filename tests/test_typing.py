"""Typing indicators: delivered to the other members, throttled, and expired by the server."""

from __future__ import annotations

import asyncio

import pytest

from signaling.client import RequestError


async def pair(hub):
    alice = await hub.connect_in("alice", "chat-1", token=hub.token("alice", name="Alice"))
    bob = await hub.connect_in("bob", "chat-1")
    await alice.expect("room:member-joined")
    return alice, bob


async def test_typing_reaches_others_and_expires(hub):
    alice, bob = await pair(hub)
    await alice.request("message:typing", {"conversationId": "chat-1", "isTyping": True})
    typing = await bob.expect("user:typing")
    assert typing == {
        "userId": "alice",
        "username": "Alice",
        "conversationId": "chat-1",
        "isTyping": True,
    }
    await alice.expect_none("user:typing", within=0.0)
    # No refresh: the server clears it by itself after typing_timeout (0.4 s here).
    stopped = await bob.expect("user:typing", timeout=2.0)
    assert stopped["isTyping"] is False


async def test_typing_stop_and_repeats_are_throttled(hub):
    alice, bob = await pair(hub)
    for _ in range(5):
        await alice.send("message:typing", {"conversationId": "chat-1", "isTyping": True})
    assert (await bob.expect("user:typing"))["isTyping"] is True
    await bob.expect_none("user:typing", within=0.1)
    await asyncio.sleep(0.15)
    # After typing_throttle (0.2 s) a refresh is re-broadcast once.
    await alice.send("message:typing", {"conversationId": "chat-1", "isTyping": True})
    assert (await bob.expect("user:typing"))["isTyping"] is True
    await alice.request("message:typing", {"conversationId": "chat-1", "isTyping": False})
    assert (await bob.expect("user:typing"))["isTyping"] is False
    # Stopping twice is not re-broadcast.
    await alice.request("message:typing", {"conversationId": "chat-1", "isTyping": False})
    await bob.expect_none("user:typing", within=0.2)


async def test_typing_cleared_on_disconnect(hub):
    alice, bob = await pair(hub)
    await alice.request("message:typing", {"conversationId": "chat-1", "isTyping": True})
    assert (await bob.expect("user:typing"))["isTyping"] is True
    await alice.close()
    assert (await bob.expect("user:typing", timeout=0.3))["isTyping"] is False


async def test_typing_requires_joined_conversation(hub):
    alice = await hub.connect("alice")
    with pytest.raises(RequestError) as err:
        await alice.request("message:typing", {"conversationId": "chat-1", "isTyping": True})
    assert err.value.code == "not_in_room"
    await alice.request("room:join", {"roomId": "chat-1"})
    with pytest.raises(RequestError) as err:
        await alice.request("message:typing", {"conversationId": "chat-1", "isTyping": "yes"})
    assert err.value.code == "invalid_payload" and "isTyping" in err.value.message


async def test_leaving_asks_the_store_only_where_the_device_typed(hub, monkeypatch):
    # On Redis every question is a round trip: a device that never typed in a room, or
    # said it stopped, owns no typing state there, and its leaving asks nothing.
    asked: list[str] = []
    store = hub.hub.typing.store
    stop = store.stop

    async def counting_stop(room_id: str, user_id: str, conn_id: str | None) -> str | None:
        if conn_id is not None:  # a device's own state (a stop said aloud ends anyone's)
            asked.append(room_id)
        return await stop(room_id, user_id, conn_id)

    monkeypatch.setattr(store, "stop", counting_stop)
    alice, bob = await pair(hub)
    await bob.request("room:join", {"roomId": "chat-2"})
    await alice.request("room:join", {"roomId": "chat-2"})
    await alice.request("message:typing", {"conversationId": "chat-1", "isTyping": True})
    await alice.request("message:typing", {"conversationId": "chat-2", "isTyping": True})
    await alice.request("message:typing", {"conversationId": "chat-2", "isTyping": False})
    await bob.close()
    await alice.close()
    # bob never typed; alice stopped in chat-2 and still types in chat-1, which is cleared
    await asyncio.sleep(0.2)
    assert asked == ["chat-1"]
