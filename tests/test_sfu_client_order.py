"""The group-call clients (``media.client.SfuClient`` and the browser SDK's ``GroupCall``)
when the server's first ``sfu:offer`` is read before the ``sfu:join`` ack has been
applied: the subscribe connection must still be built with the join's ICE servers (TURN),
or a client behind a firewall that blocks UDP gets a connection with host candidates only
and no media. Found in the network lab under CPU load (a TCP-relayed client,
``ice_timeout (subscriber)``). Unit tests: the hub is a stand-in that delivers the offer
first, as the server may (on ``sfu:resume`` it re-sends a waiting offer before the ack)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiortc import RTCPeerConnection

from media import client as client_module
from media import ice
from media.client import SfuClient
from tests.sdk_script import run_sdk_script

ICE_SERVERS = [
    {"urls": ["stun:198.18.0.20:3478"]},
    {
        "urls": ["turn:198.18.0.20:3478?transport=udp", "turns:198.18.0.20:443?transport=tcp"],
        "username": "u",
        "credential": "p",
    },
]


class OfferFirstHub:
    """Answers ``sfu:join`` a few loop turns after handing the client a subscriber offer
    (the order the server's negotiation task may produce)."""

    def __init__(self, offer: dict[str, Any]) -> None:
        self.listeners: dict[str, Any] = {}
        self.offer = offer

    async def request(self, type_: str, data: Any = None, timeout: float = 5.0) -> dict[str, Any]:
        if type_ == "sfu:join":
            self.listeners["sfu:offer"](self.offer)
            for _ in range(5):  # the reader goes on; the ack's waiter wakes later
                await asyncio.sleep(0)
            return {
                "participantId": "PA_1",
                "resumeToken": "t",
                "mediaNode": "n1",
                "iceServers": ICE_SERVERS,
                "participants": [],
            }
        return {}


async def server_offer() -> dict[str, Any]:
    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return {"roomId": "r", "sdp": sdp, "tracks": {}}


async def test_an_offer_read_before_the_join_ack_waits_for_its_ice_servers(monkeypatch):
    configured: list[list[str]] = []

    class Recorded(RTCPeerConnection):
        def __init__(self, configuration: Any = None) -> None:
            servers = configuration.iceServers if configuration is not None else None
            configured.append([u for s in servers or [] for u in s.urls])
            super().__init__(configuration)

    monkeypatch.setattr(client_module, "RTCPeerConnection", Recorded)
    seen: list[tuple[list[str], tuple[str, ...]]] = []

    def built(pc: RTCPeerConnection, _sdp: str) -> None:
        policy = ice.ICE_POLICY.get()  # as the offer's task set it when it began
        seen.append((configured[-1], tuple(t.label for t in policy.turn_servers)))
        raise RuntimeError("enough: the connection was built")  # not answering, no gathering

    hub = OfferFirstHub(await server_offer())
    client = SfuClient(hub, "r", on_subscriber=built)  # type: ignore[arg-type]
    await client.join()
    for _ in range(50):
        if seen:
            break
        await asyncio.sleep(0.01)
    assert seen, client.errors
    urls, turn = seen[0]
    assert "turns:198.18.0.20:443?transport=tcp" in urls
    assert "tls:198.18.0.20:443" in turn and "udp:198.18.0.20:3478" in turn
    assert [str(e) for e in client.errors] == ["enough: the connection was built"]
    assert client.subscriber is not None
    await client.subscriber.close()


async def test_the_browser_sdk_answers_such_an_offer_with_the_acks_ice_servers():
    result = await run_sdk_script("group_offer_order.mjs")
    assert result["built"] == [
        ["turns:198.18.0.20:443?transport=tcp"],  # the join's, not none
        ["turns:198.18.0.21:443?transport=tcp"],  # the resume's, not the join's
    ]
    assert result["errors"] == ["enough: the connection was built"] * 2
