"""The message proxy against a real local backend that can be slow, refuse, fail, answer
garbage, time out or be gone, and that sees duplicate tempIds."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from signaling.client import RequestError
from tests.cluster import Cluster
from tests.conftest import API_SECRET, unrecorded
from tests.message_backend import MessageBackend
from tests.redis_server import RedisServer, free_port


@pytest.fixture
async def proxied(hub_factory: Any, backend: MessageBackend) -> Any:
    return await hub_factory(message_backend_url=backend.url, message_backend_timeout=1.0)


def send(temp_id: str, content: str = "hello", room: str = "dm") -> dict[str, Any]:
    return {"conversationId": room, "tempId": temp_id, "content": content}


async def test_without_a_backend_messages_are_refused(hub: Any) -> None:
    alice = await hub.connect_in("alice", "dm")
    with pytest.raises(RequestError) as refused:
        await alice.request("message:send", send("t1"))
    assert refused.value.code == "messages_disabled"


async def test_message_is_persisted_then_broadcast(proxied: Any, backend: MessageBackend):
    alice = await proxied.connect_in("alice", "dm")
    bob = await proxied.connect_in("bob", "dm")
    ack = await alice.request("message:send", {**send("t1"), "metadata": {"k": 1}})
    assert ack == {"tempId": "t1"}
    sent = await alice.expect("message:sent")
    assert sent == {"tempId": "t1", "messageId": "msg_1"}
    new = await bob.expect("message:new")
    assert unrecorded(new) == {
        "id": "msg_1",
        "senderId": "alice",
        "content": "hello",
        "messageType": "text",
        "conversationId": "dm",
        "tempId": "t1",
    }
    ((headers, request),) = backend.requests
    assert request["userId"] == "alice" and request["connectionId"] == alice.ready["connectionId"]
    assert request["requestId"].startswith("req_") and request["metadata"] == {"k": 1}
    assert headers["webhook-id"] == request["requestId"]
    assert headers["Idempotency-Key"] == "alice:t1"


@pytest.mark.parametrize(
    ("mode", "code"),
    [
        ("refuse", "content_rejected"),
        ("fail", "backend_error"),
        ("garbage", "backend_invalid_response"),
        ("slow", "backend_timeout"),
    ],
)
async def test_backend_failures_reach_the_sender_only(
    proxied: Any, backend: MessageBackend, mode: str, code: str
) -> None:
    backend.mode = "ok" if mode == "slow" else mode
    backend.delay = 2.0 if mode == "slow" else 0.0
    alice = await proxied.connect_in("alice", "dm")
    bob = await proxied.connect_in("bob", "dm")
    await alice.request("message:send", send("t1"))
    error = await alice.expect("message:error", timeout=4)
    assert error["tempId"] == "t1" and error["code"] == code and error["message"]
    await bob.expect_none("message:new", within=0.2)
    # Not persisted: the same tempId may be tried again, and goes through.
    backend.mode, backend.delay = "ok", 0.0
    await alice.request("message:send", send("t1"))
    assert (await alice.expect("message:sent", timeout=3))["tempId"] == "t1"
    assert (await bob.expect("message:new"))["tempId"] == "t1"


async def test_unreachable_backend(hub_factory: Any) -> None:
    hub = await hub_factory(message_backend_url=f"http://127.0.0.1:{free_port()}/m")
    alice = await hub.connect_in("alice", "dm")
    await alice.request("message:send", send("t1"))
    assert (await alice.expect("message:error"))["code"] == "backend_unavailable"


async def test_slow_backend_blocks_nothing_else(proxied: Any, backend: MessageBackend) -> None:
    alice = await proxied.connect_in("alice", "dm")
    bob = await proxied.connect_in("bob", "dm")
    backend.delay = 0.9  # under the 1 s timeout
    await alice.request("message:send", send("t1"))
    await alice.request("message:typing", {"conversationId": "dm", "isTyping": True})
    assert (await bob.expect("user:typing", timeout=0.6))["userId"] == "alice"
    assert not [e for e in bob.events if e["type"] == "message:new"]
    assert (await bob.expect("message:new", timeout=3))["id"] == "msg_1"


async def test_resent_temp_id_never_duplicates(proxied: Any, backend: MessageBackend) -> None:
    alice = await proxied.connect_in("alice", "dm")
    bob = await proxied.connect_in("bob", "dm")
    await alice.request("message:send", send("t1"))
    first = await alice.expect("message:sent")
    await alice.close()
    again = await proxied.connect_in("alice", "dm")  # reconnected; the ack had been lost
    ack = await again.request("message:send", send("t1"))
    assert ack == {"tempId": "t1", "duplicate": True}
    assert await again.expect("message:sent") == first
    # And twice while the first is still with the backend.
    backend.delay = 0.3
    await again.request("message:send", send("t2"))
    await again.request("message:send", send("t2"))
    sent = [await again.expect("message:sent") for _ in range(2)]
    assert sent[0] == sent[1] and sent[0]["tempId"] == "t2"
    assert len(backend.requests) == 2 and len(backend.persisted) == 2
    await asyncio.sleep(0.2)
    assert [m["tempId"] for m in bob.take("message:new")] == ["t1", "t2"]


async def test_busy_backend_is_back_pressure(hub_factory: Any, backend: MessageBackend) -> None:
    hub = await hub_factory(
        message_backend_url=backend.url, message_backend_concurrency=1, message_backend_queue=1
    )
    backend.delay = 0.5
    alice = await hub.connect_in("alice", "dm")
    await alice.request("message:send", send("t1"))
    await alice.request("message:send", send("t2"))  # waits for the slot
    with pytest.raises(RequestError) as refused:
        await alice.request("message:send", send("t3"))
    assert refused.value.code == "unavailable" and "tempId" in refused.value.message
    sent = [(await alice.expect("message:sent", timeout=3))["tempId"] for _ in range(2)]
    assert sent == ["t1", "t2"]
    await alice.request("message:send", send("t3"))
    assert (await alice.expect("message:sent", timeout=3))["tempId"] == "t3"


async def test_bad_sends_are_refused(proxied: Any) -> None:
    alice = await proxied.connect_in("alice", "dm")
    cases = [
        (send("t1", room="elsewhere"), "not_in_room"),
        (send("t1", content="x" * 17_000), "invalid_payload"),
        ({"conversationId": "dm", "content": "no temp id"}, "invalid_payload"),
        ({**send("t1"), "metadata": "not an object"}, "invalid_payload"),
    ]
    for data, code in cases:
        with pytest.raises(RequestError) as refused:
            await alice.request("message:send", data)
        assert refused.value.code == code


async def test_resend_to_another_node_never_duplicates(
    tmp_path: Path, redis_server: RedisServer, backend: MessageBackend
) -> None:
    cluster = Cluster(tmp_path, redis_server.url)
    env = {"SWITCHBOARD_MESSAGE_BACKEND_URL": backend.url, "SWITCHBOARD_API_SECRET": API_SECRET}
    try:
        a, b = await asyncio.gather(cluster.start("a", **env), cluster.start("b", **env))
        bob = await b.connect("bob", "dm")
        alice = await a.connect("alice", "dm")
        await alice.request("message:send", send("t1"))
        first = await alice.expect("message:sent")
        await alice.close()
        again = await b.connect("alice", "dm")  # reconnected to the other node
        assert (await again.request("message:send", send("t1")))["duplicate"] is True
        assert await again.expect("message:sent") == first
        # A resend while the first is still with the backend waits for its outcome.
        backend.delay = 0.5
        await again.request("message:send", send("t2"))
        other = await a.connect("alice", "dm")
        await other.request("message:send", send("t2"))
        sent = [await again.expect("message:sent", timeout=3), await other.expect("message:sent")]
        assert sent[0] == sent[1]
        assert len(backend.requests) == 2
        await asyncio.sleep(0.2)
        assert [m["tempId"] for m in bob.take("message:new")] == ["t1", "t2"]
    finally:
        await cluster.close()
