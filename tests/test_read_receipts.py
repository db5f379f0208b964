"""Read receipts: announced to the other members at once, then merged per throttle window;
refused outside the room; flushed when the reader leaves; webhooked when asked."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from signaling.client import RequestError
from tests.conftest import unrecorded
from tests.webhook_receiver import Receiver


async def test_first_read_is_announced_then_merged(hub_factory: Any) -> None:
    hub = await hub_factory(read_receipt_throttle=0.8)
    alice = await hub.connect_in("alice", "dm")
    bob = await hub.connect_in("bob", "dm")
    ack = await alice.request("message:read", {"conversationId": "dm", "messageIds": ["m1"]})
    assert ack["conversationId"] == "dm" and ack["timestamp"] > 0
    first = await bob.expect("messages:read")
    assert unrecorded(first) == {
        "userId": "alice",
        "conversationId": "dm",
        "messageIds": ["m1"],
        "timestamp": ack["timestamp"],
    }
    for ids in (["m2"], ["m3", "m2"], ["m4"]):
        await alice.request("message:read", {"conversationId": "dm", "messageIds": ids})
    await bob.expect_none("messages:read", within=0.2)
    merged = await bob.expect("messages:read", timeout=2)
    assert merged["messageIds"] == ["m2", "m3", "m4"]
    assert not [e for e in alice.events if e["type"] == "messages:read"]  # not to the reader


async def test_receipts_need_the_room_and_valid_ids(hub: Any) -> None:
    alice = await hub.connect_in("alice", "dm")
    with pytest.raises(RequestError) as refused:
        await alice.request("message:read", {"conversationId": "other", "messageIds": ["m"]})
    assert refused.value.code == "not_in_room"
    for bad in ([], ["x" * 129], [5], ["m"] * 101):
        with pytest.raises(RequestError) as refused:
            await alice.request("message:read", {"conversationId": "dm", "messageIds": bad})
        assert refused.value.code == "invalid_payload"


async def test_pending_receipts_are_announced_when_the_reader_leaves(hub_factory: Any) -> None:
    hub = await hub_factory(read_receipt_throttle=30)
    alice = await hub.connect_in("alice", "dm")
    bob = await hub.connect_in("bob", "dm")
    await alice.request("message:read", {"conversationId": "dm", "messageIds": ["m1"]})
    await bob.expect("messages:read")
    await alice.request("message:read", {"conversationId": "dm", "messageIds": ["m2"]})
    await alice.close()
    late = await bob.expect("messages:read", timeout=3)
    assert late["messageIds"] == ["m2"]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.close()


async def test_receipts_reach_the_backend_as_webhooks(hub_factory: Any, receiver: Receiver):
    hub = await hub_factory(
        webhook_urls=[receiver.url],
        webhook_events=["messages_read"],
        read_receipt_throttle=0,
    )
    alice = await hub.connect_in("alice", "dm")
    await alice.request("message:read", {"conversationId": "dm", "messageIds": ["m9"]})
    delivered = await receiver.wait_for(lambda d: any(e["type"] == "messages_read" for e in d))
    (event,) = [e for e in delivered if e["type"] == "messages_read"]
    assert event["userId"] == "alice" and event["messageIds"] == ["m9"]
    assert event["conversationId"] == "dm"
