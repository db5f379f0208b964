"""1:1 and mesh call signaling: ringing, answer on one device, relay, timeouts, grace period."""

from __future__ import annotations

import asyncio

import pytest

from signaling.client import RequestError

OFFER = {"type": "offer", "sdp": "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n"}
ANSWER = {"type": "answer", "sdp": "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\n"}
CANDIDATE = {
    "candidate": "candidate:1 1 udp 2122260223 127.0.0.1 5000 typ host",
    "sdpMid": "0",
    "sdpMLineIndex": 0,
}


async def ring(hub, callee_devices: int = 1, call_type: str = "video"):
    caller = await hub.connect("alice", token=hub.token("alice", name="Alice"))
    devices = [
        await hub.connect("bob", token=hub.token("bob", name="Bob")) for _ in range(callee_devices)
    ]
    ack = await caller.request(
        "call:initiate",
        {"conversationId": "dm-ab", "callType": call_type, "participants": ["bob"]},
    )
    call_id = ack["callId"]
    for device in devices:
        incoming = await device.expect("call:incoming")
        assert incoming["callId"] == call_id
        assert incoming["from"] == {"userId": "alice", "name": "Alice"}
        assert incoming["callType"] == call_type
    return caller, devices, call_id


async def test_full_call_exchange(hub, http):
    caller, (phone, laptop), call_id = await ring(hub, callee_devices=2)
    accepted = await laptop.request("call:accept", {"callId": call_id})
    assert accepted["state"] == "active"
    assert (await caller.expect("call:accepted"))["userId"] == "bob"
    stop = await phone.expect("call:cancelled")
    assert stop == {"callId": call_id, "reason": "answered_elsewhere"}

    await caller.request("call:offer", {"callId": call_id, "to": "bob", "sdp": OFFER})
    got = await laptop.expect("call:offer")
    assert got == {"callId": call_id, "from": "alice", "sdp": OFFER}
    await laptop.request("call:answer", {"callId": call_id, "to": "alice", "sdp": ANSWER})
    assert (await caller.expect("call:answer"))["sdp"] == ANSWER
    for _ in range(3):
        await caller.send(
            "call:ice-candidate", {"callId": call_id, "to": "bob", "candidate": CANDIDATE}
        )
        await laptop.send(
            "call:ice-candidate", {"callId": call_id, "to": "alice", "candidate": CANDIDATE}
        )
    for _ in range(3):
        assert (await laptop.expect("call:ice-candidate"))["candidate"] == CANDIDATE
        assert (await caller.expect("call:ice-candidate"))["from"] == "bob"
    # The phone that did not answer sees none of the relay traffic.
    await phone.expect_none("call:offer", within=0.1)
    await phone.expect_none("call:ice-candidate", within=0.0)

    await caller.request("media:toggle-audio", {"callId": call_id, "enabled": False})
    assert await laptop.expect("peer:audio-toggled") == {
        "callId": call_id,
        "userId": "alice",
        "enabled": False,
    }
    await laptop.request("media:toggle-video", {"callId": call_id, "enabled": False})
    assert (await caller.expect("peer:video-toggled"))["enabled"] is False
    await caller.request("screen:share-start", {"callId": call_id})
    assert await laptop.expect("screen:sharing-started") == {"callId": call_id, "userId": "alice"}
    await caller.request("screen:share-stop", {"callId": call_id})
    await laptop.expect("screen:sharing-stopped")

    token = hub.token("bob")
    async with http.get(
        f"{hub.base}/api/calls/{call_id}/status", headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        status = await resp.json()
        assert resp.status == 200 and status["active"] is True
        states = {p["userId"]: p for p in status["participants"]}
        assert states["alice"]["audio"] is False and states["alice"]["screen"] is False

    ended = await laptop.request("call:end", {"callId": call_id})
    assert ended["state"] == "ended"
    done = await caller.expect("call:ended")
    assert done["reason"] == "hangup" and done["duration"] >= 0
    async with http.get(
        f"{hub.base}/api/calls/{call_id}/status", headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        assert (await resp.json())["active"] is False


async def test_reject_ends_one_to_one(hub):
    caller, (phone, laptop), call_id = await ring(hub, callee_devices=2)
    await phone.request("call:reject", {"callId": call_id, "reason": "busy"})
    rejected = await caller.expect("call:rejected")
    assert rejected == {"callId": call_id, "userId": "bob", "reason": "busy"}
    assert (await caller.expect("call:ended"))["reason"] == "rejected"
    assert (await laptop.expect("call:cancelled"))["reason"] == "rejected_elsewhere"
    with pytest.raises(RequestError) as err:
        await laptop.request("call:accept", {"callId": call_id})
    assert err.value.code == "invalid_state"


async def test_ring_timeout_becomes_missed(hub):
    caller, (bob,), call_id = await ring(hub)
    missed = await bob.expect("call:missed", timeout=3)
    assert missed["callId"] == call_id and missed["from"]["userId"] == "alice"
    ended = await caller.expect("call:ended", timeout=1)
    assert ended["reason"] == "no_answer"


async def test_caller_cancels_while_ringing(hub):
    caller, (bob,), call_id = await ring(hub)
    await caller.request("call:end", {"callId": call_id})
    assert (await bob.expect("call:ended"))["reason"] == "cancelled"
    await bob.expect_none("call:missed", within=1.2)


async def test_incoming_redelivered_to_late_device(hub):
    _caller, _devices, call_id = await ring(hub)
    late = await hub.connect("bob")
    assert (await late.expect("call:incoming"))["callId"] == call_id


async def test_relay_only_between_participants(hub):
    caller, (bob,), call_id = await ring(hub)
    mallory = await hub.connect("mallory")
    with pytest.raises(RequestError) as err:
        await mallory.request("call:offer", {"callId": call_id, "to": "bob", "sdp": OFFER})
    assert err.value.code == "not_in_call"
    with pytest.raises(RequestError) as err:
        await caller.request("call:offer", {"callId": call_id, "to": "mallory", "sdp": OFFER})
    assert err.value.code == "not_in_call"
    with pytest.raises(RequestError) as err:
        await caller.request(
            "call:ice-candidate", {"callId": "call_nope", "to": "bob", "candidate": CANDIDATE}
        )
    assert err.value.code == "call_not_found"
    # The callee must accept before sending; the caller may send an early offer to all devices.
    with pytest.raises(RequestError) as err:
        await bob.request("call:answer", {"callId": call_id, "to": "alice", "sdp": ANSWER})
    assert err.value.code == "not_in_call"
    await caller.request("call:offer", {"callId": call_id, "to": "bob", "sdp": OFFER})
    assert (await bob.expect("call:offer"))["from"] == "alice"
    with pytest.raises(RequestError) as err:
        await caller.request("call:offer", {"callId": call_id, "to": "bob", "sdp": 42})
    assert err.value.code == "invalid_payload"
    await mallory.expect_none("call:offer", within=0.1)


async def test_reconnect_within_grace_period(hub):
    caller, (bob,), call_id = await ring(hub)
    await bob.request("call:accept", {"callId": call_id})
    await caller.expect("call:accepted")
    await bob.close()
    lost = await caller.expect("call:peer-disconnected")
    assert lost["userId"] == "bob"

    bob2 = await hub.connect("bob")
    resumed = await bob2.request("call:reconnected", {"callId": call_id})
    assert resumed["state"] == "active"
    assert resumed["iceServers"] == bob2.ready["iceServers"]  # made anew, as for an accept
    assert (await caller.expect("call:peer-reconnected"))["userId"] == "bob"
    await caller.request("call:offer", {"callId": call_id, "to": "bob", "sdp": OFFER})
    assert (await bob2.expect("call:offer"))["sdp"] == OFFER
    # Past the (0.8 s) grace period nothing ends: bob is back.
    await caller.expect_none("call:ended", within=1.2)


async def test_reconnect_after_grace_period(hub, http):
    caller, (bob,), call_id = await ring(hub)
    await bob.request("call:accept", {"callId": call_id})
    await bob.close()
    await caller.expect("call:peer-disconnected")
    ended = await caller.expect("call:ended", timeout=3)
    assert ended["reason"] == "connection_lost"
    bob2 = await hub.connect("bob")
    with pytest.raises(RequestError) as err:
        await bob2.request("call:reconnected", {"callId": call_id})
    assert err.value.code == "invalid_state"


async def test_group_call_mesh(hub):
    alice = await hub.connect("alice")
    bob = await hub.connect("bob")
    carol = await hub.connect("carol")
    ack = await alice.request(
        "call:initiate", {"callType": "audio", "participants": ["bob", "carol", "alice"]}
    )
    call_id = ack["callId"]
    assert ack["offline"] == []
    await bob.expect("call:incoming")
    await carol.expect("call:incoming")
    await bob.request("call:accept", {"callId": call_id})
    await alice.expect("call:accepted")
    await carol.request("call:accept", {"callId": call_id})
    assert {
        (await alice.expect("call:accepted"))["userId"],
        (await bob.expect("call:accepted"))["userId"],
    } == {"carol"}
    await bob.request("call:offer", {"callId": call_id, "to": "carol", "sdp": "v=0 bob"})
    assert (await carol.expect("call:offer"))["from"] == "bob"
    await alice.request("call:end", {"callId": call_id})
    left = await bob.expect("call:participant-left")
    assert left == {"callId": call_id, "userId": "alice", "reason": "hangup"}
    await carol.request("call:end", {"callId": call_id})
    assert (await bob.expect("call:ended"))["reason"] == "hangup"


async def test_initiate_validation(hub_factory, http):
    hub = await hub_factory(max_call_participants=3)
    alice = await hub.connect("alice", rooms=("dm-*",))
    for data, code in [
        ({"callType": "audio", "participants": ["alice"]}, "invalid_payload"),
        ({"callType": "hologram", "participants": ["bob"]}, "invalid_payload"),
        ({"callType": "audio", "participants": ["b", "c", "d"]}, "too_many_participants"),
        ({"callType": "audio", "participants": ["b"], "conversationId": "x"}, "forbidden"),
    ]:
        with pytest.raises(RequestError) as err:
            await alice.request("call:initiate", data)
        assert err.value.code == code, data
    ack = await alice.request("call:initiate", {"callType": "audio", "participants": ["zed"]})
    assert ack["offline"] == ["zed"]

    url = f"{hub.base}/api/calls/{ack['callId']}/status"
    for headers, status in [
        ({}, 401),
        ({"Authorization": f"Bearer {hub.token('mallory')}"}, 403),
        ({"Authorization": f"Bearer {hub.token('zed')}"}, 200),
    ]:
        async with http.get(url, headers=headers) as resp:
            assert resp.status == status
    async with http.get(
        f"{hub.base}/api/calls/call_missing/status",
        headers={"Authorization": f"Bearer {hub.token('zed')}"},
    ) as resp:
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "call_not_found"
    await asyncio.sleep(0)
