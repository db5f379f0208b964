"""Simulcast on the server side with aiortc on both ends: a publisher replaying three
pre-encoded VP8 layers the way a browser sends them (``benchmarks/simulcast.py``: one SSRC
per layer, mid/rid header extensions, RTX for one layer) and light subscribers. Checks
what the chat backend and operators see (the room API's live media view, ``/metrics``),
dynacast notices, RTX repairs from the publisher, and refusals of bad wishes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiortc import RTCPeerConnection
from aiortc.rtp import RtpPacket, wrap_rtx

from benchmarks.preencoded import PreEncodedAudio, opus_loop
from benchmarks.simulcast import SimulcastSender, layer_loops, simulcast_offer
from media import aiortc_hooks
from media.client import BUNDLED, SfuClient
from signaling.client import RequestError
from tests.sfu_helpers import SFU, sfu_of, wait_until

STATE_KINDS = ("memory",)  # the SFU is node-local
ROOM = "sim-server"


async def simulcast_publisher(hub: Any) -> tuple[SfuClient, SimulcastSender]:
    client = SfuClient(await hub.connect("pub"), ROOM, decode=False)
    await client.join()
    pc = client.publisher = RTCPeerConnection(BUNDLED)
    pc.addTransceiver(PreEncodedAudio(opus_loop()), direction="sendonly")
    video = pc.addTransceiver(aiortc_hooks.SilentTrack("video"), direction="sendonly")
    sender = SimulcastSender(video, layer_loops(2.0))
    ack = await client.renegotiate_publish(
        {}, timeout=20, edit_offer=lambda sdp: simulcast_offer(sdp, video.mid or "")
    )
    sender.start(ack["sdp"], lambda ts: None)
    return client, sender


def video_track(hub: Any) -> Any:
    (track,) = [t for t in sfu_of(hub).rooms[ROOM].tracks() if t.kind == "video"]
    return track


@pytest.fixture
async def call(hub_factory):
    aiortc_hooks.extend_header_extensions()
    hub = await hub_factory(**SFU)
    publisher, sender = await simulcast_publisher(hub)
    viewer = SfuClient(await hub.connect("viewer"), ROOM, decode=False)
    await viewer.join()
    await viewer.wait_for(lambda c: len(c.remote) == 2, timeout=15)
    try:
        yield hub, publisher, sender, viewer
    finally:
        await sender.stop()
        await viewer.close()
        await publisher.close()


async def test_layers_show_in_the_room_api_and_metrics_and_dynacast_follows(call, http):
    hub, publisher, _, viewer = call
    track = video_track(hub)
    assert track.info.rids == ("q", "h", "f")
    await wait_until(lambda: all(layer.flowing(time.monotonic()) for layer in track.layers), 10)
    wish = {"trackId": track.info.track_id, "width": 320, "height": 180}
    ack = await viewer.hub.request("sfu:subscription", {"roomId": ROOM, "tracks": [wish]})
    assert ack == {"applied": [track.info.track_id], "unknown": []}
    await wait_until(
        lambda: track.slots and track.slots[0].forwarder.current is track.layers[0], 10
    )
    # the publisher is told only q is watched (dynacast)
    notice = await publisher.hub.expect("sfu:layers", timeout=5)
    while notice["active"] != ["q"]:
        notice = await publisher.hub.expect("sfu:layers", timeout=5)
    assert notice["trackId"] == track.info.track_id

    api = hub.api(http)
    await asyncio.sleep(1.1)  # a bitrate window (the room rolls them every second)
    status, media = await api.get(f"/rooms/{ROOM}/media")
    assert status == 200 and media["mediaNode"]
    (video,) = [t for t in media["tracks"] if t["kind"] == "video"]
    assert video["simulcast"] == ["q", "h", "f"] and video["subscribers"] == 1
    layers = {layer["rid"]: layer for layer in video["layers"]}
    assert (layers["q"]["width"], layers["q"]["height"]) == (320, 180)
    assert (layers["f"]["width"], layers["f"]["height"]) == (1280, 720)
    assert layers["q"]["subscribers"] == 1 and layers["f"]["subscribers"] == 0
    assert all(layer["bitrate"] > 0 and layer["flowing"] for layer in layers.values())
    assert layers["f"]["bitrate"] > layers["q"]["bitrate"]

    async with http.get(f"{hub.base}/metrics") as response:
        text = await response.text()
    assert 'switchboard_sfu_subscriptions{layer="q"} 1.0' in text
    assert 'switchboard_sfu_layer_bitrate_bps{rid="f"}' in text
    assert "switchboard_sfu_layer_switches_total" in text

    # a room without a group call has no media
    await api.post("/rooms", {"roomId": "quiet"})
    status, quiet = await api.get("/rooms/quiet/media")
    assert status == 200 and quiet == {"roomId": "quiet", "mediaNode": None, "tracks": []}


async def test_rtx_repairs_from_the_publisher_reach_the_layer(call):
    hub, _, _, _ = call
    track = video_track(hub)
    q = track.layers[0]
    await wait_until(lambda: q.packets_in > 20 and q.ssrc is not None, 10)
    # a retransmission of q's latest packet on an RTX SSRC named by the repaired rid
    cached = q.cache.get(q.highest_seq)
    assert cached is not None
    seq, ts, marker, payload = cached
    original = RtpPacket(
        payload_type=track.codec.payloadType,
        marker=marker,
        sequence_number=seq,
        timestamp=ts,
        ssrc=q.ssrc,
        payload=payload,
    )
    (publisher,) = [p for p in sfu_of(hub).rooms[ROOM].participants.values() if p.tracks]
    routing = publisher._routing
    assert routing is not None
    (ingest,) = routing.by_mid.values()
    rtx_pt = next(pt for pt, apt in ingest._apt.items() if apt == original.payload_type)
    repair = wrap_rtx(original, payload_type=rtx_pt, sequence_number=7, ssrc=0xABCDEF)
    repair.extensions.mid = next(iter(routing.by_mid))
    repair.extensions.repaired_rtp_stream_id = "q"
    before = q.packets_in
    target = routing.route(repair)
    assert target is ingest
    await ingest._handle_rtp_packet(repair, 0)
    assert q.packets_in == before + 1  # unwrapped onto q's own SSRC and sequence
    assert ingest.streams[0xABCDEF].rtx and ingest.streams[0xABCDEF].layer is q
    assert q.cache.get(seq) == (seq, ts, marker, payload)
    # an RTX packet without a payload (bandwidth probing padding) is ignored
    padding = RtpPacket(payload_type=rtx_pt, sequence_number=8, ssrc=0xABCDEF)
    await ingest._handle_rtp_packet(padding, 0)
    assert q.packets_in == before + 1


async def test_bad_wishes_are_refused_and_unknown_tracks_reported(call):
    hub, _, _, viewer = call
    track = video_track(hub)
    request = viewer.hub.request
    for bad in (
        {"trackId": track.info.track_id, "width": -1},
        {"trackId": track.info.track_id, "quality": "ultra"},
        {"trackId": track.info.track_id, "fps": 0},
        {"width": 10},
    ):
        with pytest.raises(RequestError) as err:
            await request("sfu:subscription", {"roomId": ROOM, "tracks": [bad]})
        assert err.value.code == "invalid_payload"
    with pytest.raises(RequestError) as err:
        await request("sfu:subscription", {"roomId": ROOM, "tracks": []})
    assert err.value.code == "invalid_payload"
    with pytest.raises(RequestError) as err:
        await request("sfu:subscription", {"roomId": "elsewhere", "tracks": [{"trackId": "x"}]})
    assert err.value.code == "not_in_room"
    ack = await request(
        "sfu:subscription",
        {"roomId": ROOM, "tracks": [{"trackId": "TR_gone"}, {"trackId": track.info.track_id}]},
    )
    assert ack == {"applied": [track.info.track_id], "unknown": ["TR_gone"]}
    # hidden: nothing more is sent to this viewer, and the publisher may pause everything
    await wait_until(lambda: track.slots and track.slots[0].packets_out > 0, 10)
    await request(
        "sfu:subscription",
        {"roomId": ROOM, "tracks": [{"trackId": track.info.track_id, "visible": False}]},
    )
    (slot,) = track.slots
    await asyncio.sleep(0.3)
    sent = slot.packets_out
    await asyncio.sleep(0.5)
    assert slot.packets_out == sent and slot.stats()["targetLayer"] is None
