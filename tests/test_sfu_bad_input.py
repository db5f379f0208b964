"""Group calls: bad SDP, unsupported codecs, stray ICE candidates, peers that never connect."""

from __future__ import annotations

import asyncio

import pytest
from aiortc import RTCPeerConnection

from media.synthetic import PatternTrack, ToneTrack
from signaling.client import RequestError
from tests.sfu_helpers import SFU, participant, sfu_of, wait_until

STATE_KINDS = ("memory",)  # the SFU is node-local

UNKNOWN_CODEC_OFFER = """v=0
o=- 1 1 IN IP4 0.0.0.0
s=-
t=0 0
a=group:BUNDLE 0
m=audio 9 UDP/TLS/RTP/SAVPF 9
c=IN IP4 0.0.0.0
a=mid:0
a=sendonly
a=rtcp-mux
a=ice-ufrag:abcd
a=ice-pwd:abcdefghijklmnopqrstuvwx
a=fingerprint:sha-256 {fp}
a=setup:actpass
a=rtpmap:9 AV1X/90000
""".format(fp=":".join(["AB"] * 32))


async def joined(hub, user: str, room: str = "bad"):
    client = await hub.connect(user)
    await client.request("sfu:join", {"roomId": room})
    return client


async def test_garbage_and_non_media_sdp_are_refused_and_the_connection_stays_usable(hub_factory):
    hub = await hub_factory(**SFU)
    client = await joined(hub, "alice")
    for sdp in (
        "hello",
        "v=0\r\nm=banana\r\n",
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n",
    ):
        with pytest.raises(RequestError) as err:
            await client.request("sfu:publish", {"roomId": "bad", "sdp": sdp})
        assert err.value.code == "invalid_sdp"
    with pytest.raises(RequestError) as err:
        await client.request("sfu:publish", {"roomId": "bad", "sdp": ""})
    assert err.value.code == "invalid_payload"
    with pytest.raises(RequestError) as err:
        await client.request("sfu:answer", {"roomId": "bad", "sdp": "v=0"})
    assert err.value.code == "invalid_state"
    assert (await client.request("ping"))["serverTime"] > 0


async def test_offer_with_only_unsupported_codecs_is_refused(hub_factory):
    hub = await hub_factory(**SFU)
    client = await joined(hub, "alice")
    with pytest.raises(RequestError) as err:
        await client.request("sfu:publish", {"roomId": "bad", "sdp": UNKNOWN_CODEC_OFFER})
    assert err.value.code == "unsupported_codec"
    # a good offer on the same connection still works afterwards
    pc = RTCPeerConnection()
    pc.addTransceiver(ToneTrack(), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    ack = await client.request("sfu:publish", {"roomId": "bad", "sdp": pc.localDescription.sdp})
    assert [t["kind"] for t in ack["tracks"]] == ["audio"]
    await pc.close()


async def test_ice_candidates_for_unknown_rooms_or_connections(hub_factory):
    hub = await hub_factory(**SFU)
    client = await joined(hub, "alice")
    cand = {"candidate": "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host", "sdpMid": "0"}
    cases = [
        ({"roomId": "other", "target": "publisher", "candidate": cand}, "not_in_room"),
        ({"roomId": "bad", "target": "publisher", "candidate": cand}, "invalid_state"),
        ({"roomId": "bad", "target": "sideways", "candidate": cand}, "invalid_payload"),
    ]
    for data, code in cases:
        with pytest.raises(RequestError) as err:
            await client.request("sfu:ice-candidate", data)
        assert err.value.code == code, data
    stranger = await hub.connect("bob")
    with pytest.raises(RequestError) as err:
        await stranger.request("sfu:ice-candidate", cases[1][0])
    assert err.value.code == "not_in_room"


async def test_unparsable_candidate_after_negotiation(hub_factory):
    hub = await hub_factory(**SFU)
    client = await joined(hub, "alice")
    pc = RTCPeerConnection()
    pc.addTransceiver(ToneTrack(), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    await client.request("sfu:publish", {"roomId": "bad", "sdp": pc.localDescription.sdp})
    bad = {"candidate": "candidate:garbage", "sdpMid": "0"}
    with pytest.raises(RequestError) as err:
        await client.request(
            "sfu:ice-candidate", {"roomId": "bad", "target": "publisher", "candidate": bad}
        )
    assert err.value.code == "invalid_payload"
    ok = {"candidate": "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host", "sdpMid": "0"}
    await client.request(
        "sfu:ice-candidate", {"roomId": "bad", "target": "publisher", "candidate": ok}
    )
    await client.request(
        "sfu:ice-candidate", {"roomId": "bad", "target": "publisher", "candidate": None}
    )
    await pc.close()


async def test_a_client_that_never_completes_ice_is_dropped_after_the_timeout(hub_factory):
    hub = await hub_factory(**{**SFU, "sfu_ice_timeout": 1.0})
    good, _ = await participant(hub, "alice", "bad")
    ghost = await joined(hub, "ghost")
    pc = RTCPeerConnection()
    pc.addTransceiver(PatternTrack(), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    await pc.close()  # the offer goes out, but nobody will ever answer ICE checks
    await ghost.request("sfu:publish", {"roomId": "bad", "sdp": pc.localDescription.sdp})
    left = await ghost.expect("sfu:left", timeout=5)
    assert left["reason"].startswith("ice_timeout")
    gone = await good.hub.expect("sfu:participant-left", timeout=5)
    assert gone["userId"] == "ghost" and gone["reason"].startswith("ice_timeout")
    sfu = sfu_of(hub)
    await wait_until(
        lambda: ghost.ws.closed is False and len(sfu.rooms["bad"].participants) == 1, 2
    )
    # the good participant is untouched and the ghost may join again
    assert good.participant_id in sfu.rooms["bad"].participants
    await ghost.request("sfu:join", {"roomId": "bad"})
    await good.close()


async def test_a_client_that_never_answers_its_offer_leaves_after_the_timeout(hub_factory):
    hub = await hub_factory(**{**SFU, "sfu_negotiation_timeout": 1.0})
    good, _ = await participant(hub, "alice", "bad")
    mute = await joined(hub, "mute")  # gets an offer for alice's tracks, never answers it
    offer = await mute.expect("sfu:offer", timeout=5)
    assert offer["roomId"] == "bad" and offer["tracks"]
    started = asyncio.get_running_loop().time()
    left = await mute.expect("sfu:left", timeout=5)
    assert left["reason"] == "negotiation_timeout"
    assert asyncio.get_running_loop().time() - started < 3
    gone = await good.hub.expect("sfu:participant-left", timeout=5)
    assert gone["userId"] == "mute" and gone["reason"] == "negotiation_timeout"
    sfu = sfu_of(hub)
    await wait_until(lambda: len(sfu.rooms["bad"].participants) == 1, 2)
    # a late answer is refused the usual way; alice is untouched
    with pytest.raises(RequestError):
        await mute.request("sfu:answer", {"roomId": "bad", "sdp": offer["sdp"]})
    assert good.participant_id in sfu.rooms["bad"].participants
    await good.close()


async def test_room_capacity_and_token_rooms(hub_factory):
    hub = await hub_factory(**{**SFU, "sfu_room_capacity": 2})
    await joined(hub, "a", "small")
    await joined(hub, "b", "small")
    third = await hub.connect("c")
    with pytest.raises(RequestError) as err:
        await third.request("sfu:join", {"roomId": "small"})
    assert err.value.code == "room_full"
    limited = await hub.connect("d", rooms=("team-*",))
    with pytest.raises(RequestError) as err:
        await limited.request("sfu:join", {"roomId": "small"})
    assert err.value.code == "forbidden"
    await limited.request("sfu:join", {"roomId": "team-1"})
    with pytest.raises(RequestError) as err:
        await limited.request("sfu:join", {"roomId": "team-2"})
    assert err.value.code == "invalid_state"


async def test_disconnect_cleans_up_the_room(hub_factory):
    hub = await hub_factory(**SFU)
    a, _ = await participant(hub, "alice", "gone")
    b, _ = await participant(hub, "bob", "gone")
    await a.wait_for(lambda c: len(c.remote) == 2)
    await b.hub.close()
    await a.hub.expect("sfu:participant-left", where=lambda d: d["reason"] == "disconnected")
    await a.wait_for(lambda c: not c.remote)
    await a.hub.request("sfu:leave", {"roomId": "gone"})
    sfu = sfu_of(hub)
    await asyncio.sleep(0.1)
    assert sfu.rooms == {} and sfu.sessions == {} and sfu.media.participants == {}
    await a.close()
    await b.close()
