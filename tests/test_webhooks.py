"""Signed webhooks to a real local HTTP receiver: what is sent, signatures, retries after
errors and timeouts, order per room, and that a stuck receiver never slows the hub."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from signaling.webhooks import WebhookVerificationError, sign, verify
from tests.conftest import API_SECRET
from tests.webhook_receiver import Receiver, independent_signature

FAST_HOOKS = {
    "webhook_timeout": 0.3,
    "webhook_backoff_initial": 0.05,
    "webhook_backoff_max": 0.2,
    "webhook_retry_for": 20.0,
}


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.close()


@pytest.fixture
async def hooked(hub_factory, receiver):
    return await hub_factory(webhook_urls=[receiver.url], **FAST_HOOKS)


def _room_events(delivered, room):
    return [
        (e["type"], e.get("userId"))
        for e in delivered
        if e.get("roomId") == room
        or e.get("room", {}).get("roomId") == room
        or (e.get("call") or {}).get("conversationId") == room
    ]


async def test_room_lifecycle_is_delivered_signed_and_in_order(hooked, receiver, http):
    api = hooked.api(http)
    await api.post("/rooms", {"roomId": "team", "metadata": {"k": 1}})
    alice = await hooked.connect_in("alice", "team")
    bob = await hooked.connect_in("bob", "team")
    ack = await alice.request(
        "call:initiate", {"participants": ["bob"], "callType": "video", "conversationId": "team"}
    )
    await bob.expect("call:incoming")
    await bob.request("call:accept", {"callId": ack["callId"]})
    await asyncio.sleep(0.05)
    await alice.request("call:end", {"callId": ack["callId"]})
    await bob.request("room:leave", {"roomId": "team"})
    await api.delete("/rooms/team", params={"reason": "done"})

    expected = [
        ("room_started", None),
        ("participant_joined", "alice"),
        ("participant_joined", "bob"),
        ("call_started", None),
        ("call_ended", None),
        ("participant_left", "bob"),
        ("participant_left", "alice"),
        ("room_finished", None),
    ]
    delivered = await receiver.wait_for(lambda d: len(_room_events(d, "team")) >= len(expected))
    assert _room_events(delivered, "team") == expected
    by_type = {e["type"]: e for e in delivered}
    assert by_type["room_started"]["room"]["metadata"] == {"k": 1}
    assert by_type["call_ended"]["reason"] == "hangup" and by_type["call_ended"]["duration"] > 0
    assert by_type["call_ended"]["call"]["callId"] == ack["callId"]
    assert by_type["room_finished"]["reason"] == "done"
    assert by_type["participant_left"]["reason"] in ("left", "closed", "done")

    ids = set()
    for attempt in receiver.attempts:
        headers = {k.lower(): v for k, v in attempt.headers.items()}
        assert headers["webhook-signature"] == independent_signature(
            API_SECRET, headers, attempt.body
        )
        assert verify(API_SECRET, headers, attempt.body) == attempt.event["id"]
        assert headers["webhook-id"] == attempt.event["id"]
        assert abs(int(headers["webhook-timestamp"]) - time.time()) < 30
        ids.add(attempt.event["id"])
    assert len(ids) == len(receiver.attempts)  # nothing was sent twice


async def test_retried_after_errors_and_timeouts(hub_factory, receiver, http):
    def behaviour(event, attempt):
        if event["type"] == "participant_joined":
            return {1: 500, 2: 503}.get(attempt, 200)
        if event["type"] == "participant_left":
            return 2.0 if attempt == 1 else 200  # first attempt outlives the 0.3 s timeout
        return 200

    receiver.behaviour = behaviour
    hub = await hub_factory(webhook_urls=[receiver.url], **FAST_HOOKS)
    alice = await hub.connect_in("alice", "r1")
    await alice.request("room:leave", {"roomId": "r1"})
    await receiver.wait_for(lambda d: any(e["type"] == "participant_left" for e in d))
    joined = [a for a in receiver.attempts if a.event["type"] == "participant_joined"]
    assert [a.status for a in joined] == [500, 503, 200]
    assert [a.headers["webhook-attempt"] for a in joined] == ["1", "2", "3"]
    assert len({a.event["id"] for a in joined}) == 1  # the same event, retried
    left = [a for a in receiver.attempts if a.event["type"] == "participant_left"]
    assert [a.status for a in left] == [0, 200]
    # In order: the join was delivered before the leave.
    assert _room_events(receiver.delivered, "r1") == [
        ("room_started", None),
        ("participant_joined", "alice"),
        ("participant_left", "alice"),
    ]
    metrics = await (await http.get(hub.base + "/metrics")).text()
    assert 'switchboard_webhooks_total{outcome="retried"} 3.0' in metrics


async def test_order_per_room_survives_failures(hub_factory, receiver):
    # Every third first attempt fails: later events of the same room must wait for it.
    receiver.behaviour = lambda event, attempt: (
        500 if attempt == 1 and hash(event["id"]) % 3 == 0 else 200
    )
    hub = await hub_factory(webhook_urls=[receiver.url], **FAST_HOOKS)
    users = [f"u{i}" for i in range(8)]
    for user in users:
        await hub.connect_in(user, "room-a")
        await hub.connect_in(user, "room-b")
    delivered = await receiver.wait_for(
        lambda d: len([e for e in d if e["type"] == "participant_joined"]) == 16
    )
    for room in ("room-a", "room-b"):
        joins = [u for t, u in _room_events(delivered, room) if t == "participant_joined"]
        assert joins == users, room


async def test_missed_call_and_presence_opt_in(hub_factory, receiver):
    hub = await hub_factory(
        webhook_urls=[receiver.url],
        webhook_events=["call_missed", "call_ended", "presence_changed"],
        **FAST_HOOKS,
    )
    alice = await hub.connect("alice")
    bob = await hub.connect("bob")
    await alice.request("call:initiate", {"participants": ["bob"], "callType": "audio"})
    await bob.expect("call:incoming")
    await bob.close()
    delivered = await receiver.wait_for(
        lambda d: any(e["type"] == "call_ended" for e in d), timeout=5
    )
    missed = [e for e in delivered if e["type"] == "call_missed"]
    assert [e["userId"] for e in missed] == ["bob"]
    ended = next(e for e in delivered if e["type"] == "call_ended")
    assert ended["reason"] == "no_answer" and ended["duration"] == 0
    presence = [(e["userId"], e["status"]) for e in delivered if e["type"] == "presence_changed"]
    assert ("alice", "online") in presence and ("bob", "offline") in presence
    # Only the chosen events were sent.
    assert {e["type"] for e in delivered} <= {"call_missed", "call_ended", "presence_changed"}


async def test_stuck_receiver_never_slows_the_hub(hub_factory, receiver):
    receiver.behaviour = lambda event, attempt: 4.0  # outlives the 3 s timeout
    hub = await hub_factory(webhook_urls=[receiver.url], **{**FAST_HOOKS, "webhook_timeout": 3.0})
    await hub.connect_in("first", "room0")
    for _ in range(100):
        if receiver.attempts:
            break
        await asyncio.sleep(0.05)
    assert receiver.attempts, "the first delivery never started"
    # While deliveries hang, the hub answers as usual and keeps queueing.
    clients = [await hub.connect_in(f"user{i}", f"room{i % 3}") for i in range(12)]
    for client in clients:
        assert "serverTime" in await client.request("ping")
    assert receiver.delivered == []
    assert len(receiver.attempts) <= hub.settings.webhook_concurrency


def test_verify_helper_refuses_tampering_and_replays():
    body = b'{"id":"evt_1","type":"room_started"}'
    now = int(time.time())
    headers = sign(API_SECRET, "evt_1", now, body)
    assert verify(API_SECRET, headers, body) == "evt_1"
    with pytest.raises(WebhookVerificationError):
        verify(API_SECRET, headers, body.replace(b"room", b"ROOM"))
    with pytest.raises(WebhookVerificationError):
        verify("another-secret", headers, body)
    with pytest.raises(WebhookVerificationError, match="tolerance"):
        verify(API_SECRET, sign(API_SECRET, "evt_1", now - 3600, body), body)
    with pytest.raises(WebhookVerificationError, match="missing"):
        verify(API_SECRET, {}, body)
    # Key rotation: several signatures, one matches.
    rotated = {**headers, "webhook-signature": "v1,bogus " + headers["webhook-signature"]}
    assert verify(API_SECRET, rotated, body) == "evt_1"
