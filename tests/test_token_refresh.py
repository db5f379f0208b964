"""A connection does not outlive its token: warned before expiry, refreshed with a fresh
token, closed (4001) when nobody refreshed it; on ``/ws`` and ``/socket.io/``."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from signaling.client import RequestError
from tests.sio_driver import NodeSocketIO

SDK_SCRIPT = Path(__file__).resolve().parent / "sdk" / "token_refresh.mjs"
FAST_EXPIRY = {"jwt_leeway": 0.0, "token_expiry_warning": 1.0}


async def test_expiring_token_is_refreshed(hub_factory: Any) -> None:
    hub = await hub_factory(**FAST_EXPIRY)
    client = await hub.connect("alice", token=hub.token("alice", ttl=2))
    assert client.ready["tokenExpiresAt"] == pytest.approx((time.time() + 2) * 1000, abs=1500)
    warned = await client.expect("session:expiring", timeout=3)
    assert 0 < warned["expiresIn"] <= 1.05  # the warning timer may fire a hair early
    fresh = hub.token("alice", ttl=3600, rooms=["later"])
    ack = await client.request("session:refresh", {"token": fresh})
    assert ack["tokenExpiresAt"] > (time.time() + 3000) * 1000
    await asyncio.sleep(2.0)  # past the first token's expiry
    assert (await client.request("ping"))["serverTime"] > 0
    # The fresh token's claims apply from now on.
    assert (await client.request("room:join", {"roomId": "later"}))["roomId"] == "later"


async def test_unrefreshed_token_closes_the_connection(hub_factory: Any) -> None:
    hub = await hub_factory(**FAST_EXPIRY)
    bystander = await hub.connect("bob")
    client = await hub.connect("alice", token=hub.token("alice", ttl=1))
    await client.expect("session:expiring", timeout=2)
    assert await client.wait_closed(timeout=3) == 4001
    assert client.close_reason == "token expired"
    assert (await bystander.request("ping"))["serverTime"] > 0
    registry = hub.hub.metrics.registry
    for _ in range(100):  # the release finishes after the close (with Redis, a bit later)
        if registry.get_sample_value("switchboard_server_closes_total", {"code": "4001"}):
            break
        await asyncio.sleep(0.02)
    assert registry.get_sample_value("switchboard_server_closes_total", {"code": "4001"}) == 1


async def test_refresh_refuses_bad_tokens(hub: Any) -> None:
    client = await hub.connect("alice")
    cases = [
        (hub.token("alice", ttl=-60), "token_invalid", "token_expired"),
        ("garbage", "token_invalid", "token_malformed"),
        (hub.token("mallory"), "forbidden", "another user"),
    ]
    for token, code, words in cases:
        with pytest.raises(RequestError) as refused:
            await client.request("session:refresh", {"token": token})
        assert refused.value.code == code and words in refused.value.message
    with pytest.raises(RequestError) as refused:
        await client.request("session:refresh", {"token": ""})
    assert refused.value.code == "invalid_payload"
    assert (await client.request("ping"))["serverTime"] > 0


async def test_socketio_client_refreshes_and_expired_one_reconnects(hub_factory: Any) -> None:
    hub = await hub_factory(**FAST_EXPIRY)
    sio = await NodeSocketIO.start()
    try:
        await sio.connected("a", hub.base, hub.token("alice", ttl=2), transports=["websocket"])
        (warned,) = await sio.expect("a", "session:expiring", timeout=3)
        assert warned["expiresIn"] <= 1.05
        ack = await sio.emit("a", "session:refresh", {"token": hub.token("alice")}, ack=True)
        assert ack["tokenExpiresAt"] > time.time() * 1000
        await sio.connected("b", hub.base, hub.token("bob", ttl=1), transports=["websocket"])
        # Not refreshed: the transport is closed, so the client reconnects by itself (and
        # is refused until it has a fresh token).
        assert (await sio.expect("b", "disconnect", timeout=4)) == ["transport close"]
        message, _ = await sio.expect("b", "connect_error", timeout=4)
        assert message == "token_expired"
        await asyncio.sleep(1.5)
        assert not sio.take("a", "disconnect")
    finally:
        await sio.close()


async def test_browser_sdk_refreshes_through_its_token_callback(hub_factory: Any) -> None:
    """The SDK module itself (media/static/switchboard.js), in Node's web APIs."""
    hub = await hub_factory(**FAST_EXPIRY)
    proc = await asyncio.create_subprocess_exec(
        "node",
        "--experimental-websocket",
        "--no-warnings",
        str(SDK_SCRIPT),
        hub.ws_url,
        hub.token("alice", ttl=2),
        hub.token("alice", ttl=3600),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()
    result = orjson.loads(out.splitlines()[-1])
    assert result["asked"] == 2  # once to connect, once to refresh
    assert result["refreshed"]["tokenExpiresAt"] > result["first"] + 3_000_000
    assert result["pong"]["serverTime"] > 0 and result["closes"] == []
