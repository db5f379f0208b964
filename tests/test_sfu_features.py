"""Group call features: active speakers, mute, camera + screen, audio-only, rejoin, PLI, NACK."""

from __future__ import annotations

import asyncio

from media.client import SfuClient
from media.synthetic import PatternTrack, ToneTrack
from tests.sfu_helpers import (
    SFU,
    FrameCounter,
    count_remote,
    only_track,
    participant,
    wait_until,
)

STATE_KINDS = ("memory",)  # the SFU is node-local


async def test_active_speakers_follow_the_audio_level_and_mute(hub_factory):
    hub = await hub_factory(**SFU)
    loud = SfuClient(await hub.connect("loud"), "talk")
    await loud.join()
    await loud.publish([(ToneTrack(amplitude=0.5), "microphone")])
    quiet = SfuClient(await hub.connect("quiet"), "talk")
    await quiet.join()
    await quiet.publish([(ToneTrack(amplitude=0.0), "microphone")])
    try:
        update = await quiet.hub.expect(
            "sfu:active-speakers", timeout=5, where=lambda d: bool(d["speakers"])
        )
        assert [s["userId"] for s in update["speakers"]] == ["loud"]
        assert -20 < update["speakers"][0]["level"] <= 0
        # muting the loud one (media:toggle-audio with a roomId) silences it for the room
        await loud.hub.request("media:toggle-audio", {"roomId": "talk", "enabled": False})
        toggled = await quiet.hub.expect("peer:audio-toggled")
        assert toggled == {
            "roomId": "talk",
            "enabled": False,
            "participantId": loud.participant_id,
            "userId": "loud",
        }
        muted = await quiet.hub.expect("sfu:track-muted")
        assert muted["muted"] is True and muted["participantId"] == loud.participant_id
        await quiet.hub.expect(
            "sfu:active-speakers", timeout=5, where=lambda d: d["speakers"] == []
        )
        await loud.hub.request("screen:share-start", {"roomId": "talk"})
        assert (await quiet.hub.expect("screen:sharing-started"))["userId"] == "loud"
    finally:
        await loud.close()
        await quiet.close()


async def test_camera_and_screen_from_one_participant_then_unpublish_screen(hub_factory):
    hub = await hub_factory(**SFU)
    presenter = SfuClient(await hub.connect("pres"), "share")
    await presenter.join()
    screen = PatternTrack(width=640, height=360)
    await presenter.publish(
        [(ToneTrack(), "microphone"), (PatternTrack(), "camera"), (screen, "screen")]
    )
    viewer, _ = await participant(hub, "viewer", "share", audio=True, video=False)
    try:
        await viewer.wait_for(lambda c: len(c.remote) == 3)
        sources = sorted(r.info["source"] for r in viewer.remote.values())
        assert sources == ["camera", "microphone", "screen"]
        counters: dict[str, FrameCounter] = {}
        count_remote(viewer, counters)
        await wait_until(
            lambda: (
                {(640, 360), (320, 240)} <= set().union(*(fc.sizes for fc in counters.values()))
            ),
            10,
        )
        for fc in counters.values():
            fc.stop()
        await presenter.unpublish(screen)
        gone = await viewer.hub.expect("sfu:track-unpublished")
        assert gone["participantId"] == presenter.participant_id
        await viewer.wait_for(lambda c: len(c.remote) == 2)
        assert "screen" not in {r.info["source"] for r in viewer.remote.values()}
        # the presenter only ever received the viewer's audio
        await presenter.wait_for(lambda c: len(c.remote) == 1)
    finally:
        await presenter.close()
        await viewer.close()


async def test_leave_and_rejoin_reuses_nothing_stale(hub_factory):
    hub = await hub_factory(**SFU)
    a, _ = await participant(hub, "alice", "again")
    b, _ = await participant(hub, "bob", "again")
    try:
        await a.wait_for(lambda c: len(c.remote) == 2)
        await b.hub.request("sfu:leave", {"roomId": "again"})
        await b.close()
        await a.wait_for(lambda c: not c.remote)
        # same WebSocket connection joins again with fresh peer connections
        b2 = SfuClient(b.hub, "again")
        await b2.join()
        await b2.publish([(ToneTrack(), "microphone"), (PatternTrack(), "camera")])
        await a.wait_for(lambda c: len(c.remote) == 2)
        await b2.wait_for(lambda c: len(c.remote) == 2)
        counters: dict[str, FrameCounter] = {}
        count_remote(a, counters)
        await wait_until(lambda: all(fc.video + fc.audio > 5 for fc in counters.values()), 10)
        # alice's subscribe connection reused its two sections for bob's new tracks
        assert len(a.subscriber.getTransceivers()) == 2
        for fc in counters.values():
            fc.stop()
        await b2.close()
    finally:
        await a.close()


async def test_many_joiners_cause_few_keyframe_requests(hub_factory):
    hub = await hub_factory(**{**SFU, "sfu_keyframe_min_interval": 1.0})
    publisher, _ = await participant(hub, "pub", "kf", audio=False)
    await asyncio.sleep(0.5)
    loop = asyncio.get_running_loop()
    started = loop.time()
    viewers = [SfuClient(await hub.connect(f"v{i}"), "kf", decode=False) for i in range(8)]
    try:
        await asyncio.gather(*(v.join() for v in viewers))
        for v in viewers:
            await v.wait_for(lambda c: len(c.remote) == 1, timeout=15)
        await wait_until(
            lambda: all(next(iter(v.remote.values())).counter.packets > 20 for v in viewers),
            15,
        )
        elapsed = loop.time() - started
        track = only_track(hub, "kf")
        assert track.keyframes_requested >= 8
        assert track.plis_sent <= int(elapsed) + 2
    finally:
        for v in viewers:
            await v.close()
        await publisher.close()


async def test_subscriber_nacks_are_answered_from_the_cache_not_the_publisher(hub_factory):
    hub = await hub_factory(**SFU)
    publisher, _ = await participant(hub, "pub", "nack", audio=False)
    retransmits: list[int] = []
    sender = publisher.publisher.getTransceivers()[0].sender
    original = sender._retransmit

    async def spy(seq: int) -> None:
        retransmits.append(seq)
        await original(seq)

    sender._retransmit = spy
    viewer = SfuClient(await hub.connect("viewer"), "nack", decode=False)
    try:
        await viewer.join()
        await viewer.wait_for(lambda c: len(c.remote) == 1)
        remote = next(iter(viewer.remote.values()))
        await wait_until(lambda: remote.counter.packets > 30, 10)
        transceiver = next(t for t in viewer.subscriber.getTransceivers() if t.mid == remote.mid)
        media_ssrc = next(iter(transceiver.receiver._RTCRtpReceiver__remote_streams))
        before = remote.counter.packets
        lost = sorted((remote.counter.highest - i) % 65536 for i in (1, 2, 3))
        await transceiver.receiver._send_rtcp_nack(media_ssrc, lost)
        track = only_track(hub, "nack")
        await wait_until(lambda: track.nacks_answered >= 3, 5)
        assert track.nacks_missed == 0
        assert remote.counter.packets > before
        # on the RTX stream the subscriber negotiated (RFC 4588), which aiortc unwrapped
        (slot,) = track.slots
        assert slot.stats()["rtx"] and slot.stats()["packetsRetransmitted"] == 3
        rtx_ssrcs = transceiver.receiver._RTCRtpReceiver__rtx_ssrc
        assert rtx_ssrcs == {slot.rtx_ssrc: media_ssrc}
        assert retransmits == []  # the publisher was never asked
    finally:
        await viewer.close()
        await publisher.close()
