"""Group calls through the SFU with real aiortc peers on loopback: publish, subscribe, decode."""

from __future__ import annotations

import asyncio

import pytest

from media.rtp_writer import CompiledRtpWriter, RtpWriter
from tests.sfu_helpers import SFU, FrameCounter, count_remote, participant, sfu_of, wait_until

STATE_KINDS = ("memory",)  # the SFU is node-local


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled-writer", "pure-writer"])
async def test_three_participants_decode_each_other_and_a_leave_removes_tracks(
    hub_factory, compiled
):
    """Both RTP writers (``sfu_compiled_writer``) carry a call end to end."""
    hub = await hub_factory(**SFU, sfu_compiled_writer=compiled)
    a, _ = await participant(hub, "alice", "grp")
    b, _ = await participant(hub, "bob", "grp")
    c, _ = await participant(hub, "carol", "grp")
    clients = [a, b, c]
    try:
        for me in clients:
            await me.wait_for(lambda cl: len(cl.remote) == 4, timeout=10)
        counters = [dict[str, FrameCounter]() for _ in clients]
        for me, mine in zip(clients, counters, strict=True):
            count_remote(me, mine)

        def all_decoding() -> bool:
            return all(
                len(mine) == 4
                and all(
                    (fc.video if fc.remote.info["kind"] == "video" else fc.audio) >= 5
                    for fc in mine.values()
                )
                for mine in counters
            )

        await wait_until(all_decoding, timeout=15)
        writers = {
            type(slot.writer)
            for p in sfu_of(hub).rooms["grp"].participants.values()
            for slot in p.slots
        }
        expected = CompiledRtpWriter if compiled else RtpWriter
        assert writers == {expected}
        # and the steady step with it: the C lane (media/_lane.c), else Python's
        numberings = {
            type(slot.n).__name__
            for p in sfu_of(hub).rooms["grp"].participants.values()
            for slot in p.slots
        }
        assert numberings == {"Lane" if compiled else "Numbering"}
        # each participant sees exactly the other two, camera + microphone each
        for me, mine in zip(clients, counters, strict=True):
            owners = {fc.remote.info["participantId"] for fc in mine.values()}
            assert me.participant_id not in owners and len(owners) == 2
            kinds = sorted(fc.remote.info["kind"] for fc in mine.values())
            assert kinds == ["audio", "audio", "video", "video"]
            assert all((320, 240) in fc.sizes for fc in mine.values() if fc.video)

        gone = c.participant_id
        await c.hub.request("sfu:leave", {"roomId": "grp"})
        for me in (a, b):
            left = await me.hub.expect("sfu:participant-left")
            assert left["participantId"] == gone and left["reason"] == "left"
            await me.wait_for(lambda cl: not cl.remote_of(gone), timeout=10)
            assert len(me.remote) == 2
        for mine in counters:
            for fc in mine.values():
                fc.stop()
    finally:
        for cl in clients:
            await cl.close()


async def test_late_joiner_decodes_video_within_two_seconds(hub_factory):
    hub = await hub_factory(**SFU)
    a, _ = await participant(hub, "alice", "late")
    try:
        await asyncio.sleep(1.5)  # alice's encoder is well past its first keyframe
        d, _ = await participant(hub, "dave", "late", audio=False, video=False)
        try:
            loop = asyncio.get_running_loop()
            joined = loop.time()
            await d.wait_for(lambda cl: len(cl.remote) == 2, timeout=5)
            counters: dict[str, FrameCounter] = {}
            count_remote(d, counters)
            video = next(fc for fc in counters.values() if fc.remote.info["kind"] == "video")
            await wait_until(lambda: video.first_video_at is not None, timeout=5)
            assert video.first_video_at is not None
            assert video.first_video_at - joined < 2.0
            for fc in counters.values():
                fc.stop()
        finally:
            await d.close()
    finally:
        await a.close()
