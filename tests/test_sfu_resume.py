"""A lost WebSocket does not end a group call session: the media stays up for the
reconnect grace, and ``sfu:resume`` from a new connection takes it over."""

from __future__ import annotations

import asyncio

import pytest

from signaling.client import RequestError
from tests.sfu_helpers import SFU, participant, sfu_of, wait_until

STATE_KINDS = ("memory",)  # across nodes: tests/test_cluster_media.py


def packets_from(client, other) -> int:
    return sum(r.counter.packets for r in client.remote_of(other.participant_id) if r.counter)


async def test_lost_websocket_keeps_media_until_resumed(hub_factory):
    hub = await hub_factory(**SFU, sfu_reconnect_grace=5.0)
    alice, _ = await participant(hub, "alice", "r", video=False, decode=False)
    bob, _ = await participant(hub, "bob", "r", video=False, decode=False)
    await wait_until(lambda: packets_from(bob, alice) > 10 and packets_from(alice, bob) > 10, 10)
    publisher, subscriber = alice.publisher, alice.subscriber
    await alice.hub.ws.close(code=4000)  # not a goodbye: a lost connection
    await alice.hub.closed.wait()
    before = packets_from(bob, alice)
    await bob.hub.expect_none("sfu:participant-left", within=1.0)
    assert packets_from(bob, alice) > before + 20  # media never stopped
    detached = sfu_of(hub).media.participants[alice.participant_id]
    assert detached.conn_id is None

    new_hub = await hub.connect("alice")
    # A stranger (another user) cannot take the session, nor can a wrong token.
    mallory = await hub.connect("mallory")
    steal = {
        "roomId": "r",
        "participantId": alice.participant_id,
        "resumeToken": alice.resume_token,
    }
    for client, data in ((mallory, steal), (new_hub, {**steal, "resumeToken": "w" * 24})):
        with pytest.raises(RequestError) as err:
            await client.request("sfu:resume", data)
        assert err.value.code == "resume_failed"
    with pytest.raises(RequestError) as err:
        await new_hub.request("sfu:resume", {"roomId": "r", "participantId": "x"})
    assert err.value.code == "invalid_payload"

    ack = await alice.resume(new_hub)
    assert ack["resumed"] is True and ack["participantId"] == alice.participant_id
    assert alice.publisher is publisher and alice.subscriber is subscriber
    assert detached.conn_id == new_hub.ready["connectionId"]
    # Resuming twice on one connection is refused; signaling works again.
    with pytest.raises(RequestError) as err:
        await new_hub.request("sfu:resume", steal)
    assert err.value.code == "invalid_state"
    stats = await new_hub.request("sfu:stats", {"roomId": "r"})
    assert stats["participants"] == 2
    received = packets_from(alice, bob)
    await asyncio.sleep(0.5)
    assert packets_from(alice, bob) > received
    await bob.hub.expect_none("sfu:participant-left", within=0.2)
    for c in (alice, bob):
        await c.close()
    await mallory.close()


async def test_unresumed_session_ends_after_the_grace(hub_factory):
    # 2 s of grace against 0.5 s watched: the close handshake before the watch may take
    # a while on a loaded machine (with 1 s the participant left inside the watch once).
    hub = await hub_factory(**SFU, sfu_reconnect_grace=2.0)
    alice, _ = await participant(hub, "alice", "g", video=False, decode=False)
    bob, _ = await participant(hub, "bob", "g", video=False, decode=False)
    await alice.hub.ws.close(code=4000)
    await bob.hub.expect_none("sfu:participant-left", within=0.5)
    left = await bob.hub.expect("sfu:participant-left", timeout=4)
    assert left["participantId"] == alice.participant_id and left["reason"] == "disconnected"
    new_hub = await hub.connect("alice")
    with pytest.raises(RequestError) as err:
        await alice.resume(new_hub)
    assert err.value.code == "resume_failed"
    # A goodbye (close code 1000) leaves at once, no grace.
    carol, _ = await participant(hub, "carol", "g", video=False, decode=False)
    await carol.hub.close()
    left = await bob.hub.expect("sfu:participant-left", timeout=1)
    assert left["userId"] == "carol"
    await alice.close()
    await bob.close()
    await carol.close()
