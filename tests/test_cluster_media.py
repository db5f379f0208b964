"""Group calls across a cluster: real node processes, a real Redis, aiortc participants.

Nodes ``a`` and ``b`` are signaling-only (``sfu_host_rooms`` off) so the tests know where
WebSockets are and where media may go; ``m1`` and ``m2`` host media, each with its own UDP
port range, so a candidate's port says which node it belongs to.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from media.client import SfuClient
from media.synthetic import PatternTrack, ToneTrack
from signaling.api.auth import mint_api_token
from signaling.client import HubClient, RequestError
from signaling.metrics import relay_totals
from tests.cluster import Cluster, Node, token
from tests.redis_server import RedisServer

API_KEY, API_SECRET = "backend", "cluster-api-secret-0123456789abcdef0123"
API_ENV = {"SWITCHBOARD_API_KEY": API_KEY, "SWITCHBOARD_API_SECRET": API_SECRET}


@pytest.fixture
async def cluster(tmp_path: Path, redis_server: RedisServer) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path, redis_server.url)
    yield c
    await c.close()


async def start(cluster: Cluster, name: str, *, media: bool = True, **extra: str) -> Node:
    return await cluster.start_media(name, media=media, **API_ENV, **extra)


@pytest.fixture
async def nodes(cluster: Cluster) -> dict[str, Node]:
    started = await asyncio.gather(
        start(cluster, "a", media=False),
        start(cluster, "b", media=False),
        start(cluster, "m1"),
        start(cluster, "m2"),
    )
    return {n.name: n for n in started}


async def api(node: Node, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {mint_api_token(API_KEY, API_SECRET)}"}
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, f"{node.base}/api/v1{path}", json=body, headers=headers) as resp,
    ):
        return resp.status, await resp.json() if resp.status != 204 else None


async def member(node: Node, user: str, room: str) -> SfuClient:
    """A participant: WebSocket on ``node``, a room member, in the group call."""
    hub = await node.connect(user, room)
    client = SfuClient(hub, room, decode=False)
    await client.join()
    return client


async def publish_audio(client: SfuClient, video: bool = False) -> dict[str, Any]:
    tracks: list[Any] = [(ToneTrack(), "microphone")]
    if video:
        tracks.append((PatternTrack(160, 120), "camera"))
    return await client.publish(tracks)


def packets_from(client: SfuClient, participant_id: str | None) -> int:
    return sum(r.counter.packets for r in client.remote_of(participant_id or "") if r.counter)


async def flowing(clients: list[SfuClient], timeout: float = 20.0) -> None:
    """Every client receives packets from every other client."""

    def all_flowing(_: SfuClient | None = None) -> bool:
        return all(
            packets_from(c, o.participant_id) > 5 for c in clients for o in clients if o is not c
        )

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not all_flowing():
        for c in clients:
            if c.errors:
                raise c.errors[0]
        if loop.time() > deadline:
            got = {
                c.participant_id: {k: r.counter.packets for k, r in c.remote.items() if r.counter}
                for c in clients
            }
            raise AssertionError(f"media not flowing within {timeout}s: {got}")
        await asyncio.sleep(0.1)


def candidate_ports(sdp: str) -> set[int]:
    return {int(m.group(1)) for m in re.finditer(r"a=candidate:\S+ \d+ udp \d+ \S+ (\d+)", sdp)}


async def test_three_participants_on_three_nodes_meet_on_one_media_node(cluster, nodes):
    a, b, m2 = nodes["a"], nodes["b"], nodes["m2"]
    alice = await member(a, "alice", "standup")
    bob = await member(b, "bob", "standup")
    carol = await member(m2, "carol", "standup")
    clients = [alice, bob, carol]
    host = alice.media_node
    assert host in ("m1", "m2")
    assert {c.media_node for c in clients} == {host}
    answers = [await publish_audio(c, video=c is alice) for c in clients]
    # The answers' candidates are the media node's own (its UDP port range), whichever
    # node relayed them.
    low, high = cluster.ports(host)
    for answer in answers:
        ports = candidate_ports(answer["sdp"])
        assert ports and all(low <= p <= high for p in ports), (ports, host)
    await flowing(clients)
    assert any(r.info["kind"] == "video" for r in bob.remote_of(alice.participant_id))
    # Room events from the media node reach each WebSocket's node: track announcements
    # and active speakers (everyone sends a tone).
    for c in (bob, carol):
        published = await c.hub.expect(
            "sfu:track-published", where=lambda d: d["track"]["kind"] == "video"
        )
        assert published["track"]["participantId"] == alice.participant_id
        speaking = await c.hub.expect(
            "sfu:active-speakers", timeout=5, where=lambda d: len(d["speakers"]) >= 2
        )
        assert {s["participantId"] for s in speaking["speakers"]} <= {
            x.participant_id for x in clients
        }
    # One room on the host, none anywhere else; the room API shows where it lives.
    status, room = await api(a, "GET", "/rooms/standup")
    assert status == 200 and room["mediaNode"] == host
    assert {p["userId"] for p in room["media"]} == {"alice", "bob", "carol"}
    status, listed = await api(b, "GET", "/nodes")
    by_node = {n["nodeId"]: n for n in listed["nodes"]}
    assert set(by_node) == {"a", "b", "m1", "m2"}
    assert not by_node["a"]["hostsMedia"] and by_node["a"]["reason"]
    await wait_for_load(b, host, participants=3)
    other = "m1" if host == "m2" else "m2"
    assert by_node[other]["rooms"] == 0

    # Relay round trips (signaling from a and b to the host) are measured per operation.
    stats = [await alice.hub.request("sfu:stats", {"roomId": "standup"}) for _ in range(20)]
    assert stats[-1]["mediaNode"] == host and stats[-1]["participants"] == 3
    relayed = await relay_seconds(a)
    assert relayed["stats"]["count"] >= 20
    print(f"\nrelay round trip (node a -> {host}): {relayed}")
    for c in clients:
        await c.close()


async def wait_for_load(node: Node, host: str, **expected: Any) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        _, listed = await api(node, "GET", "/nodes")
        entry = next(n for n in listed["nodes"] if n["nodeId"] == host)
        if all(entry[k] == v for k, v in expected.items()):
            return entry
        assert time.monotonic() < deadline, entry
        await asyncio.sleep(0.1)


async def relay_seconds(node: Node) -> dict[str, dict[str, float]]:
    """``switchboard_sfu_relay_seconds`` from a node's /metrics: count and mean by op."""
    async with aiohttp.ClientSession() as http, http.get(f"{node.base}/metrics") as resp:
        out = relay_totals(await resp.text())
    for entry in out.values():
        entry["mean_ms"] = round(1000 * entry["sum"] / max(entry["count"], 1), 3)
    return out


async def test_simultaneous_first_joins_on_different_nodes_place_each_room_once(nodes):
    a, b = nodes["a"], nodes["b"]
    hubs_a = [await a.connect(f"u{i}") for i in range(6)]
    hubs_b = [await b.connect(f"v{i}") for i in range(6)]
    rooms = [f"race-{i}" for i in range(6)]
    acks = await asyncio.gather(
        *(h.request("sfu:join", {"roomId": r}) for h, r in zip(hubs_a, rooms, strict=True)),
        *(h.request("sfu:join", {"roomId": r}) for h, r in zip(hubs_b, rooms, strict=True)),
    )
    for i, room in enumerate(rooms):
        first, second = acks[i], acks[i + len(rooms)]
        assert first["mediaNode"] == second["mediaNode"], room
        # Both are in the one SFU room: each sees the other.
        ids = {p["participantId"] for p in first["participants"] + second["participants"]}
        assert ids & {first["participantId"], second["participantId"]}, room
        status, detail = await api(a, "GET", f"/rooms/{room}")
        assert status == 200 and detail["mediaNode"] == first["mediaNode"]
        assert len(detail["media"]) == 2
    # Placement spread the rooms over both media nodes (least loaded first).
    assert {acks[i]["mediaNode"] for i in range(len(rooms))} == {"m1", "m2"}


async def talking_pair(a: Node, b: Node, room: str) -> tuple[SfuClient, SfuClient]:
    """Alice on ``a`` and Bob on ``b`` in one group call, hearing each other."""
    alice = await member(a, "alice", room)
    bob = await member(b, "bob", room)
    for c in (alice, bob):
        await publish_audio(c)
    await flowing([alice, bob])
    return alice, bob


async def test_media_node_dies_room_moves_participants_rejoin(nodes):
    a = nodes["a"]
    alice, bob = await talking_pair(a, nodes["b"], "sync")
    host = alice.media_node
    assert host is not None and bob.media_node == host
    survivor = "m2" if host == "m1" else "m1"
    killed_at = time.perf_counter()
    nodes[host].signal(signal.SIGKILL)
    await nodes[host].wait()

    # The WebSocket nodes notice the death, place the room on the survivor and tell
    # their clients to re-join; the clients re-join and publish again.
    for c in (alice, bob):
        await c.wait_for(lambda c: bool(c.rejoins), timeout=20)
        assert c.rejoins[0]["reason"] == "media_node_lost"
        assert c.rejoins[0]["mediaNode"] == survivor
        assert c.media_node == survivor
    await flowing([alice, bob])
    recovered = time.perf_counter() - killed_at
    print(f"\nmedia node killed -> media flowing again on {survivor}: {recovered:.2f} s")
    # heartbeat 0.3 s, dead after 1.5 s: the bound is detection + re-join + ICE.
    assert recovered < 15
    # The room and its membership survived; the dead node's media summary is gone.
    status, detail = await api(a, "GET", "/rooms/sync")
    assert status == 200 and detail["mediaNode"] == survivor
    assert {p["userId"] for p in detail["participants"]} == {"alice", "bob"}
    assert sorted(p["userId"] for p in detail["media"]) == ["alice", "bob"]
    for c in (alice, bob):
        await c.close()


async def test_media_node_dies_with_every_websocket_on_it_the_room_finishes(cluster):
    """No live node holds a session to move the room: the node that reaps the dead one
    releases its rooms, so the room API stops showing the call and the room can end."""
    a = await start(cluster, "a", media=False)
    m1 = await start(cluster, "m1")
    status, _ = await api(a, "POST", "/rooms", {"roomId": "orphan", "emptyTimeout": 1})
    assert status == 201
    alice = await member(m1, "alice", "orphan")
    await member(m1, "bob", "orphan")
    await publish_audio(alice)
    status, detail = await api(a, "GET", "/rooms/orphan")
    assert detail["mediaNode"] == "m1" and len(detail["media"]) == 2
    m1.signal(signal.SIGKILL)
    await m1.wait()

    # a reaps m1 (dead after 1.5 s): its sockets leave the room, then the room loses its
    # media node and media summary, and its 1 s empty timeout runs.
    seen: list[Any] = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        status, detail = await api(a, "GET", "/rooms/orphan")
        seen.append(detail if status == 200 else status)
        if status == 404:
            break
        await asyncio.sleep(0.2)
    assert seen[-1] == 404, seen[-5:]
    emptied = [d for d in seen if isinstance(d, dict) and not d["participants"]]
    assert emptied and emptied[-1]["mediaNode"] is None and emptied[-1]["media"] == []
    # Joining again is not sent to the dead node: no node is left to host media.
    hub = await a.connect("carol")
    with pytest.raises(RequestError) as err:
        await hub.request("sfu:join", {"roomId": "orphan"})
    assert err.value.code == "no_capacity"


async def test_drain_by_sigterm_lets_the_call_run_then_moves_it(cluster):
    a = await start(cluster, "a", media=False)
    m1 = await start(cluster, "m1", SWITCHBOARD_SFU_DRAIN_DEADLINE="5")
    alice, bob = await talking_pair(a, a, "weekly")
    assert alice.media_node == "m1"
    m2 = await start(cluster, "m2")
    terminated = time.perf_counter()
    m1.signal(signal.SIGTERM)
    await wait_for_load(a, "m1", draining=True)
    # While it drains, the call goes on there, and new rooms go elsewhere.
    before = packets_from(bob, alice.participant_id)
    carol = await member(a, "carol", "other")
    assert carol.media_node == "m2"
    await asyncio.sleep(1.0)
    if not bob.rejoins:  # (a machine this slow has already seen the deadline pass)
        assert packets_from(bob, alice.participant_id) > before
    # At the deadline, not before, the call moves to m2 and the clients follow.
    for c in (alice, bob):
        await c.wait_for(lambda c: bool(c.rejoins), timeout=15)
        assert c.rejoins[0]["reason"] == "migrating" and c.media_node == "m2"
        assert c.rejoins[0]["receivedAt"] - terminated >= 5.0
    await flowing([alice, bob])
    assert await m1.wait(20) == 0
    assert m2.proc.returncode is None
    for c in (alice, bob, carol):
        await c.close()


async def test_admin_drain_and_full_cluster_answer_no_capacity(cluster):
    a = await start(cluster, "a", media=False)
    m1 = await start(cluster, "m1", SWITCHBOARD_SFU_MAX_ROOMS="1")
    alice = await member(a, "alice", "first")
    assert alice.media_node == "m1"
    # m1 is at its room limit: nobody can take a new room.
    late = await a.connect("dave")
    with pytest.raises(RequestError) as err:
        await late.request("sfu:join", {"roomId": "second"})
    assert err.value.code == "no_capacity"
    assert "m1: at its room limit (1)" in err.value.message
    # Joining the existing room still works.
    bob = await member(a, "bob", "first")
    assert bob.media_node == "m1"
    # An admin call (through node a's API) drains m1 with a deadline; with no other
    # media node its calls stay, and new rooms are still refused.
    m2 = await start(cluster, "m2")
    status, out = await api(a, "POST", "/nodes/m1/drain", {"deadline": 30})
    assert status == 202 and out == {"nodeId": "m1", "draining": True, "deadline": 30}
    await wait_for_load(a, "m1", draining=True)
    ack = await late.request("sfu:join", {"roomId": "second"})
    assert ack["mediaNode"] == "m2"
    status, out = await api(a, "POST", "/nodes/nope/drain")
    assert status == 404 and out["error"]["code"] == "node_not_found"
    assert m1.proc.returncode is None and m2.proc.returncode is None
    for c in (alice, bob):
        await c.close()


async def test_signaling_node_dies_session_resumes_without_media_teardown(nodes):
    b = nodes["b"]
    alice, bob = await talking_pair(nodes["a"], b, "resume")
    nodes["a"].signal(signal.SIGKILL)
    await nodes["a"].wait()
    await alice.hub.closed.wait()
    # Media between alice and the media node does not depend on node a.
    seen = packets_from(bob, alice.participant_id)
    await asyncio.sleep(2.5)  # past node a's death being noticed (1.5 s)
    assert packets_from(bob, alice.participant_id) > seen + 20
    # Alice reconnects to node b and resumes: same participant, same connections.
    publisher, subscriber = alice.publisher, alice.subscriber
    new_hub = await HubClient.connect(b.ws_url, token("alice"))
    b.clients.append(new_hub)
    ack = await alice.resume(new_hub)
    assert ack["resumed"] is True and ack["participantId"] == alice.participant_id
    assert [p["userId"] for p in ack["participants"]] == ["bob"]
    assert alice.publisher is publisher and alice.subscriber is subscriber
    await bob.hub.expect_none("sfu:participant-left", within=0.5)
    # Signaling works again through node b: a new publication reaches bob.
    received = packets_from(alice, bob.participant_id)
    await bob.publish([(PatternTrack(160, 120), "camera")])
    await alice.wait_for(lambda c: len(c.remote_of(bob.participant_id)) == 2, timeout=15)
    await asyncio.sleep(0.5)
    assert packets_from(alice, bob.participant_id) > received
    # A wrong token resumes nothing.
    intruder = await b.connect("alice")
    with pytest.raises(RequestError) as err:
        await intruder.request(
            "sfu:resume",
            {"roomId": "resume", "participantId": alice.participant_id, "resumeToken": "x" * 24},
        )
    assert err.value.code == "resume_failed"
    for c in (alice, bob):
        await c.close()
