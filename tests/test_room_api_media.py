"""The room API acting on group calls: server mute stops forwarding, permissions, kick and
close take devices out of the SFU, track webhooks. Real aiortc peers on loopback."""

from __future__ import annotations

import asyncio

import pytest

from signaling.client import RequestError
from tests.sfu_helpers import (
    SFU,
    FrameCounter,
    count_remote,
    only_track,
    participant,
    sfu_of,
    wait_until,
)
from tests.webhook_receiver import Receiver

STATE_KINDS = ("memory",)  # the SFU is node-local


def forwarded(hub, room: str) -> int:
    return sum(slot.packets_out for slot in only_track(hub, room).slots)


async def test_server_mute_stops_forwarding_until_unmuted(hub_factory, http):
    hub = await hub_factory(**SFU)
    api = hub.api(http)
    pub, _ = await participant(hub, "pub", "call", audio=False)
    sub, _ = await participant(hub, "sub", "call", audio=False, video=False)
    counters: dict[str, FrameCounter] = {}
    try:
        await sub.wait_for(lambda c: len(c.remote) == 1)
        count_remote(sub, counters)
        (counter,) = counters.values()
        await wait_until(lambda: counter.video > 3, 10)

        _, room = await api.get("/rooms/call")
        [entry] = [p for p in room["media"] if p["userId"] == "pub"]
        [track] = entry["tracks"]
        assert track["kind"] == "video" and track["muted"] is False
        path = f"/rooms/call/participants/pub/tracks/{track['trackId']}/mute"
        assert (await api.post(path, {"muted": True}))[0] == 204
        for client in (pub, sub):
            told = await client.hub.expect("sfu:track-muted")
            assert told["trackId"] == track["trackId"] and told["by"] == "server"
        sent = forwarded(hub, "call")
        seen = counter.video
        await wait_until(lambda: only_track(hub, "call").packets_in > 40, 5)
        assert forwarded(hub, "call") == sent  # the publisher still sends; nothing goes out
        # Only the server may lift its mute.
        with pytest.raises(RequestError) as err:
            await pub.hub.request(
                "sfu:mute", {"roomId": "call", "trackId": track["trackId"], "muted": False}
            )
        assert err.value.code == "forbidden"
        _, room = await api.get("/rooms/call")
        assert next(p for p in room["media"] if p["userId"] == "pub")["tracks"][0]["muted"]

        assert (await api.post(path, {"muted": False}))[0] == 204
        await wait_until(lambda: counter.video > seen + 3, 10)  # decodes again (keyframe)
        assert forwarded(hub, "call") > sent
    finally:
        for c in counters.values():
            c.stop()
        await pub.close()
        await sub.close()


async def test_permissions_gate_publishing_and_subscribing(hub_factory, http):
    hub = await hub_factory(**SFU)
    api = hub.api(http)
    await api.post("/rooms", {"roomId": "webinar", "type": "conference"})
    await api.patch("/rooms/webinar/participants/viewer/permissions", {"canPublish": False})
    host, _ = await participant(hub, "host", "webinar", audio=False)
    viewer, _ = await participant(hub, "viewer", "webinar", audio=False, video=False)
    try:
        with pytest.raises(RequestError) as err:
            await participant(hub, "viewer", "webinar", audio=False)
        assert err.value.code == "forbidden"
        await viewer.wait_for(lambda c: len(c.remote) == 1)

        status, body = await api.patch(
            "/rooms/webinar/participants/viewer/permissions", {"canSubscribe": False}
        )
        assert status == 200 and body["canSubscribe"] is False and body["canPublish"] is False
        update = await viewer.hub.expect("sfu:permissions-updated")
        assert update == {
            "roomId": "webinar",
            "canPublish": False,
            "canSubscribe": False,
            "maxPublishBitrate": 0,
        }
        room = sfu_of(hub).rooms["webinar"]
        me = room.participants[viewer.participant_id]
        await wait_until(lambda: all(s.track is None for s in me.slots), 10)

        # Revoking the host's publishing stops its tracks at once.
        await api.patch("/rooms/webinar/participants/host/permissions", {"canPublish": False})
        told = await viewer.hub.expect("sfu:track-muted")
        assert told["by"] == "server" and told["muted"] is True
        _, people = await api.get("/rooms/webinar/participants")
        host_entry = next(p for p in people["participants"] if p["userId"] == "host")
        assert host_entry["canPublish"] is False and host_entry["media"][0]["tracks"][0]["muted"]
    finally:
        await host.close()
        await viewer.close()


async def test_a_publish_cap_holds_the_publisher_under_it(hub_factory, http):
    """The cap goes to the publisher as REMB (aiortc sets its encoder's target from it;
    browsers: tests/test_netlab_bandwidth.py); the room's cap applies to everyone, a
    user's own overrides it, and neither may exceed the setting's."""
    hub = await hub_factory(**SFU, sfu_max_publish_bitrate=2_000_000)
    api = hub.api(http)
    status, room = await api.post("/rooms", {"roomId": "capped", "maxPublishBitrate": 1_000_000})
    assert status == 201 and room["maxPublishBitrate"] == 1_000_000
    pub, _ = await participant(hub, "pub", "capped", audio=False)
    sub, _ = await participant(hub, "sub", "capped", audio=False, video=False)
    try:
        stats = await pub.hub.request("sfu:stats", {"roomId": "capped"})
        assert stats["publishCap"] == 1_000_000
        track = only_track(hub, "capped")
        await wait_until(lambda: track.bitrate_in > 350_000, 20)  # above aiortc's floor

        status, body = await api.patch(
            "/rooms/capped/participants/pub/permissions", {"maxPublishBitrate": 250_000}
        )
        assert status == 200 and body["maxPublishBitrate"] == 250_000
        update = await pub.hub.expect("sfu:permissions-updated")
        assert update["maxPublishBitrate"] == 250_000
        # aiortc's VP8 encoder goes no lower than 250 kbit/s: its floor is the cap here
        await wait_until(lambda: track.bitrate_in < 300_000, 10)
        await asyncio.sleep(3)
        assert track.bitrate_in < 300_000

        # 0: the user's own cap is gone, the room's applies again
        _, body = await api.patch(
            "/rooms/capped/participants/pub/permissions", {"maxPublishBitrate": 0}
        )
        assert body["maxPublishBitrate"] == 1_000_000
        assert (await pub.hub.expect("sfu:permissions-updated"))["maxPublishBitrate"] == 1_000_000
        # above the setting's cap, the setting's holds
        await api.patch(
            "/rooms/capped/participants/pub/permissions", {"maxPublishBitrate": 5_000_000}
        )
        assert (await pub.hub.expect("sfu:permissions-updated"))["maxPublishBitrate"] == 2_000_000
        # nonsense is refused
        status, body = await api.patch(
            "/rooms/capped/participants/pub/permissions", {"maxPublishBitrate": -1}
        )
        assert status == 400 and body["error"]["code"] == "invalid_request", body
    finally:
        await pub.close()
        await sub.close()


async def test_kick_and_close_take_devices_out_of_the_group_call(hub_factory, http):
    receiver = await Receiver().start()
    hub = await hub_factory(**SFU, webhook_urls=[receiver.url], webhook_backoff_initial=0.05)
    api = hub.api(http)
    a, _ = await participant(hub, "ann", "huddle", audio=False)
    b, _ = await participant(hub, "ben", "huddle", audio=False, video=False)
    c, _ = await participant(hub, "cat", "huddle", audio=False, video=False)
    try:
        assert (await api.delete("/rooms/huddle/participants/ben", params={"reason": "bye"}))[
            0
        ] == 204
        assert await b.hub.expect("sfu:left") == {"roomId": "huddle", "reason": "bye"}
        left = await a.hub.expect("sfu:participant-left")
        assert left["userId"] == "ben" and left["reason"] == "bye"
        _, people = await api.get("/rooms/huddle/participants")
        assert sorted(p["userId"] for p in people["participants"]) == ["ann", "cat"]

        assert (await api.delete("/rooms/huddle"))[0] == 200
        for client in (a, c):
            assert (await client.hub.expect("sfu:left"))["reason"] == "closed"
        delivered = await receiver.wait_for(lambda d: any(e["type"] == "room_finished" for e in d))
        kinds = [e["type"] for e in delivered]
        assert kinds[0] == "room_started" and "track_published" in kinds
        published = next(e for e in delivered if e["type"] == "track_published")
        assert published["track"]["userId"] == "ann" and published["roomId"] == "huddle"
        assert "track_unpublished" in kinds
        assert kinds.index("track_published") < kinds.index("track_unpublished")
    finally:
        for client in (a, b, c):
            await client.close()
        await receiver.close()
