"""Audio in large rooms: silence is not forwarded, only the loudest microphones are heard
above a room size, Opus DTX/FEC are asked for, and levels reach subscribers. Real aiortc
peers on loopback; a silent microphone is aiortc's own silence (RFC 6464 level 127, 50
packets a second, as a browser without DTX would send)."""

from __future__ import annotations

import asyncio
from typing import Any

from media.client import RtpCounter, SfuClient
from media.synthetic import ToneTrack
from tests.sfu_helpers import SFU, sfu_of, wait_until

STATE_KINDS = ("memory",)  # the SFU is node-local


async def microphone(hub: Any, user: str, room: str, amplitude: float) -> SfuClient:
    client = SfuClient(await hub.connect(user), room, decode=False)
    await client.join()
    ack = await client.publish([(ToneTrack(amplitude=amplitude), "microphone")])
    # the answer asks the publisher's Opus encoder for DTX and in-band FEC
    assert "usedtx=1" in ack["sdp"] and "useinbandfec=1" in ack["sdp"]
    return client


def audio_from(listener: SfuClient, speaker: SfuClient) -> RtpCounter:
    (remote,) = listener.remote_of(speaker.participant_id or "")
    assert remote.counter is not None
    return remote.counter


async def test_a_silent_microphone_costs_about_nothing_and_a_talker_arrives_whole(hub_factory):
    hub = await hub_factory(**SFU)
    talker = await microphone(hub, "talker", "quiet", 0.4)
    silent = await microphone(hub, "silent", "quiet", 0.0)
    listener = SfuClient(await hub.connect("listener"), "quiet", decode=False)
    try:
        await listener.join()
        await listener.wait_for(lambda c: len(c.remote) == 2, timeout=15)
        talk, hush = audio_from(listener, talker), audio_from(listener, silent)
        await wait_until(lambda: talk.packets > 20, 10)
        talk_before, hush_before = talk.packets, hush.packets
        await asyncio.sleep(10)
        # the silent microphone sent ~500 packets meanwhile; a handful at most went out
        assert hush.packets - hush_before <= 5
        (track,) = [t for t in sfu_of(hub).rooms["quiet"].tracks() if t.info.user_id == "silent"]
        assert track.packets_in > 400 and track.audio_left_out > 400
        # the talker: every packet, in sequence, with its level
        assert talk.packets - talk_before > 450 and talk.gaps == 0
        assert talk.with_level == talk.packets and talk.last_level is not None
        assert talk.last_level < 60
        # sender reports come for what is sent (one compound packet per connection)
        assert listener.subscriber is not None
        reports = [
            s for s in (await listener.subscriber.getStats()).values()
            if s.type == "remote-outbound-rtp"
        ]  # fmt: skip
        assert any(r.packetsSent >= talk_before for r in reports), reports
    finally:
        for client in (listener, talker, silent):
            await client.close()


async def test_a_large_room_forwards_only_its_loudest_microphones(hub_factory):
    # "large" from 3 participants here, and only the loudest one heard
    hub = await hub_factory(
        **SFU, sfu_audio_loudest_above=2, sfu_audio_loudest=1, sfu_audio_hangover=0.5
    )
    loud = await microphone(hub, "loud", "big", 0.6)
    soft = await microphone(hub, "soft", "big", 0.02)
    listener = SfuClient(await hub.connect("listener"), "big", decode=False)
    try:
        await listener.join()
        await listener.wait_for(lambda c: len(c.remote) == 2, timeout=15)
        heard, unheard = audio_from(listener, loud), audio_from(listener, soft)
        await wait_until(lambda: heard.packets > 50, 10)
        before_heard, before_unheard = heard.packets, unheard.packets
        await asyncio.sleep(3)
        assert heard.packets - before_heard > 120 and heard.gaps == 0
        assert unheard.packets - before_unheard <= 5
        stats = {t.info.user_id: t.stats() for t in sfu_of(hub).rooms["big"].tracks()}
        assert stats["loud"]["heard"] is True and stats["soft"]["heard"] is False
        # the soft one becomes the only voice: it is heard from then on, numbered on
        await loud.close()
        await wait_until(lambda: unheard.packets - before_unheard > 60, 10)
        assert unheard.gaps == 0
    finally:
        for client in (listener, soft):
            await client.close()
