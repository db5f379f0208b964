"""Missed-event recovery: a client back from a drop rejoins with the last (epoch, offset)
it saw and gets what it missed, in order, with ``recovered: true``; or ``recovered:
false`` when the history was trimmed, expired or restarted. Both state kinds, and across
nodes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from signaling.protocol import CloseCode
from signaling.state.history import Position
from tests.cluster import Cluster
from tests.redis_server import RedisServer

SDK_SCRIPT = Path(__file__).resolve().parent / "sdk" / "room_recovery.mjs"


async def push(api: Any, room: str, n: int) -> None:
    status, _ = await api.post(f"/rooms/{room}/events", {"type": "message:new", "data": {"n": n}})
    assert status == 200


def since(ack: dict[str, Any]) -> dict[str, Any]:
    """What a client sends back: the last position it saw (here, the join's)."""
    return ack["position"]


async def test_join_tells_the_position_and_events_carry_it(hub: Any, api: Any) -> None:
    alice = await hub.connect("alice")
    first = await alice.request("room:join", {"roomId": "team"})
    # Alice's own arrival is the room's first recorded event (not sent to her).
    assert first["position"]["offset"] == 1 and len(first["position"]["epoch"]) == 8
    assert first["position"]["room"] == "team"
    await push(api, "team", 1)
    new = await alice.expect("message:new")
    assert (
        new["n"] == 1
        and new["position"]["offset"] == 2
        and new["position"]["epoch"] == first["position"]["epoch"]
    )
    bob = await hub.connect("bob")
    ack = await bob.request("room:join", {"roomId": "team"})
    joined = await alice.expect("room:member-joined")
    assert (
        joined["position"]["offset"] == 3
        and joined["position"]["epoch"] == new["position"]["epoch"]
    )
    assert since(ack) == {"room": "team", "epoch": new["position"]["epoch"], "offset": 3}
    # A room nothing was recorded in has no position yet.
    assert await hub.hub.state.history.position("nobody-here") == Position("", 0)


async def test_missed_events_are_recovered_in_order(hub: Any, api: Any) -> None:
    alice = await hub.connect_in("alice", "team")
    bob = await hub.connect("bob")
    position = since(await bob.request("room:join", {"roomId": "team"}))
    await alice.expect("room:member-joined")
    await bob.ws.close(code=1001)  # a page refresh
    await bob.wait_closed()
    for n in (1, 2, 3):
        await push(api, "team", n)
    await alice.request("message:read", {"conversationId": "team", "messageIds": ["m1"]})
    again = await hub.connect("bob")
    ack = await again.request("room:join", {"roomId": "team", "recover": position})
    assert ack["recovered"] is True
    types = [(p["type"], p["data"].get("n")) for p in ack["publications"]]
    assert types == [
        ("message:new", 1),
        ("message:new", 2),
        ("message:new", 3),
        ("messages:read", None),
    ]
    offsets = [p["data"]["position"]["offset"] for p in ack["publications"]]
    assert offsets == list(range(position["offset"] + 1, position["offset"] + 5))
    assert ack["position"]["offset"] == offsets[-1]
    # Nothing missed, nothing to recover.
    third = await hub.connect("bob")
    ack = await third.request("room:join", {"roomId": "team", "recover": since(ack)})
    assert ack["recovered"] is True and ack["publications"] == []


async def test_trimmed_expired_or_unknown_history_is_not_recovered(hub_factory: Any) -> None:
    hub = await hub_factory(history_size=3, history_ttl=0.6)
    async with aiohttp.ClientSession() as http:
        api = hub.api(http)
        alice = await hub.connect_in("alice", "team")
        position = since(await alice.request("room:join", {"roomId": "team"}))
        for n in (1, 2, 3):
            await push(api, "team", n)
        bob = await hub.connect("bob")
        trimmed = await bob.request("room:join", {"roomId": "team", "recover": position})
        assert trimmed["recovered"] is False and trimmed["publications"] == []
        # Within the bound it works (bob's own arrival, the last event, is not for him) ...
        top = trimmed["position"]
        recent = {"epoch": top["epoch"], "offset": top["offset"] - 2}
        ack = await bob.request("room:join", {"roomId": "team", "recover": recent})
        assert ack["recovered"] is True and len(ack["publications"]) == 1
        # ... not with another epoch, nor from the future ...
        for wrong in ({**recent, "epoch": "deadbeef"}, {**recent, "offset": 99}):
            ack = await bob.request("room:join", {"roomId": "team", "recover": wrong})
            assert ack["recovered"] is False
        # ... nor once the history expired (the next event starts a new epoch).
        await asyncio.sleep(0.8)
        ack = await bob.request("room:join", {"roomId": "team", "recover": recent})
        assert ack["recovered"] is False
        await push(api, "team", 4)
        fresh = await alice.expect("message:new", where=lambda d: d["n"] == 4)
        assert fresh["position"]["epoch"] != recent["epoch"] and fresh["position"]["offset"] == 1


async def test_recovery_on_another_node(tmp_path: Path, redis_server: RedisServer) -> None:
    cluster = Cluster(tmp_path, redis_server.url)
    try:
        a, b = await asyncio.gather(cluster.start("a"), cluster.start("b"))
        alice = await a.connect("alice", "team")
        bob = await b.connect("bob")
        position = since(await bob.request("room:join", {"roomId": "team"}))
        await bob.ws.close(code=1001)
        await bob.wait_closed()
        for text in ("one", "two"):
            await alice.request("message:read", {"conversationId": "team", "messageIds": [text]})
            await asyncio.sleep(1.1)  # past the receipt throttle: one announcement each
        back = await a.connect("bob")
        ack = await back.request("room:join", {"roomId": "team", "recover": position})
        assert ack["recovered"] is True
        assert [p["data"]["messageIds"] for p in ack["publications"]] == [["one"], ["two"]]
    finally:
        await cluster.close()


async def test_browser_sdk_recovers_rooms_after_a_reconnect(hub: Any, api: Any) -> None:
    """The SDK module itself (media/static/rooms.js), in Node's web APIs."""
    proc = await asyncio.create_subprocess_exec(
        "node",
        "--experimental-websocket",
        "--no-warnings",
        str(SDK_SCRIPT),
        hub.ws_url,
        hub.token("bob"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:

        async def line() -> dict[str, Any]:
            return orjson.loads(await asyncio.wait_for(proc.stdout.readline(), 10))

        alice = await hub.connect_in("alice", "team")
        assert "ready" in await line()
        await alice.expect("room:member-joined")
        await push(api, "team", 1)  # seen live
        await asyncio.sleep(0.1)
        (conn,) = hub.hub.state.delivery.local_connections_of("bob")
        conn.abort(CloseCode.SERVICE_RESTART, "test: the node restarts")
        assert (await line()) == {"dropped": 1012}
        for n in (2, 3, 4):  # missed while away
            await push(api, "team", n)
        proc.stdin.write(b"resume\n")
        await asyncio.sleep(0.15)
        await push(api, "team", 5)  # live again, around the rejoin
        result = await line()
        outcome = result["outcome"]
        assert outcome["roomId"] == "team" and outcome["recovered"] is True
        assert outcome["missed"] in (3, 4)  # 5 too, if it was recorded before the rejoin
        assert result["seen"] == [1, 2, 3, 4, 5]  # in order, each once
        assert result["position"]["offset"] == 7  # 2 arrivals + 5 messages
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
