"""TURN: credentials minted by Switchboard against a real coturn with the rendered config."""

from __future__ import annotations

import asyncio
import time

import pytest
from aioice import stun
from aioice.turn import create_turn_endpoint

from tests.coturn import run_coturn
from turn.config import TurnConfig, render
from turn.credentials import mint_turn_credential

STATE_KINDS = ("memory",)  # TURN does not touch the hub state

NEW, OLD = "new-secret-0123456789abcdef", "old-secret-0123456789abcdef"


class Sink(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()
        self.errors: asyncio.Queue[Exception] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr) -> None:
        self.received.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        self.errors.put_nowait(exc)


@pytest.fixture(scope="module")
def coturn(tmp_path_factory):
    """Test coturn: both secrets listed (rotation), loopback peers allowed (test only)."""
    with run_coturn(tmp_path_factory.mktemp("coturn"), [NEW, OLD], allow_loopback=True) as c:
        yield c


@pytest.fixture(scope="module")
def hardened_coturn(tmp_path_factory):
    """The production config unchanged: loopback and private peers are denied."""
    with run_coturn(tmp_path_factory.mktemp("coturn-prod"), [NEW], allow_loopback=False) as c:
        yield c


async def allocate(server, username: str, password: str):
    """Allocate a relay. On 437 (an allocation already exists for this 5-tuple: the kernel
    reused a local port an earlier test's allocation still holds), retry from a new local
    port, as RFC 8656 section 7.2 tells clients to."""
    for attempt in range(3):
        try:
            return await create_turn_endpoint(Sink, server.address, username, password, lifetime=60)
        except stun.TransactionFailed as exc:
            if exc.response.attributes["ERROR-CODE"][0] != 437 or attempt == 2:
                raise
    raise AssertionError("unreachable")


async def test_switchboard_credentials_allocate_and_relay(coturn):
    cred = mint_turn_credential(NEW, "alice", 600)
    transport, _ = await allocate(coturn, cred.username, cred.credential)
    try:
        relayed = transport.get_extra_info("sockname")
        assert relayed[0] == "127.0.0.1"
        loop = asyncio.get_running_loop()
        peer_transport, peer = await loop.create_datagram_endpoint(
            Sink, local_addr=("127.0.0.1", 0)
        )
        peer_addr = peer_transport.get_extra_info("sockname")
        transport.sendto(b"hello through coturn", peer_addr)
        data = await asyncio.wait_for(peer.received.get(), 5)
        assert data == b"hello through coturn"
        peer_transport.close()
    finally:
        transport.close()


@pytest.mark.parametrize("case", ["expired", "other_secret", "tampered_username"])
async def test_bad_credentials_are_refused(coturn, case):
    if case == "expired":
        cred = mint_turn_credential(NEW, "alice", 300, now=time.time() - 3600)
        username, password = cred.username, cred.credential
    elif case == "other_secret":
        cred = mint_turn_credential("some-other-secret-xyz", "alice", 600)
        username, password = cred.username, cred.credential
    else:
        cred = mint_turn_credential(NEW, "alice", 600)
        expiry = cred.username.split(":")[0]
        username, password = f"{expiry}:mallory", cred.credential
    with pytest.raises(stun.TransactionFailed) as err:
        await allocate(coturn, username, password)
    assert err.value.response.attributes["ERROR-CODE"][0] == 401


async def test_rotated_secret_still_accepted_while_listed(coturn):
    # The old secret is still in coturn's list: its credentials keep working mid-rotation.
    cred = mint_turn_credential(OLD, "bob", 600)
    transport, _ = await allocate(coturn, cred.username, cred.credential)
    transport.close()


@pytest.mark.parametrize("peer", [("127.0.0.1", 9), ("10.0.0.1", 9)])
async def test_hardened_config_refuses_denied_peers(hardened_coturn, peer):
    cred = mint_turn_credential(NEW, "alice", 600)
    transport, protocol = await allocate(hardened_coturn, cred.username, cred.credential)
    try:
        transport.sendto(b"x", peer)
        exc = await asyncio.wait_for(protocol.errors.get(), 5)
        assert isinstance(exc, stun.TransactionFailed)
        assert exc.response.attributes["ERROR-CODE"][0] == 403
    finally:
        transport.close()


def test_rendered_config_is_hardened():
    text = render(TurnConfig(secrets=[NEW, OLD]))
    lines = {line.strip() for line in text.splitlines() if not line.startswith("#")}
    for required in (
        "use-auth-secret",
        "no-multicast-peers",
        "no-cli",
        "stale-nonce=600",
        f"static-auth-secret={NEW}",
        f"static-auth-secret={OLD}",
        "no-tcp-relay",
        "denied-peer-ip=127.0.0.0-127.255.255.255",
        "denied-peer-ip=10.0.0.0-10.255.255.255",
        "denied-peer-ip=100.64.0.0-100.127.255.255",
        "denied-peer-ip=169.254.0.0-169.254.255.255",
    ):
        assert required in lines, required
    assert "allow-loopback-peers" not in lines
    tls = render(TurnConfig(secrets=[NEW], cert="/c.pem", pkey="/k.pem"))
    assert "cert=/c.pem" in tls.splitlines() and "no-tls" not in tls.splitlines()
    with pytest.raises(ValueError):
        render(TurnConfig(secrets=[]))


def test_credential_shape_and_ttl_bounds():
    cred = mint_turn_credential("s", "alice", 10, now=1000)
    assert cred.username == "1300:alice"  # clamped up to 5 minutes
    assert mint_turn_credential("s", "a", 10**9, now=0).expires_at == 86400
    # Known vector: base64(HMAC-SHA1("s", "1300:alice")).
    import base64
    import hashlib
    import hmac

    expected = base64.b64encode(hmac.new(b"s", b"1300:alice", hashlib.sha1).digest()).decode()
    assert cred.credential == expected


async def turn_hub(hub_factory, coturn, **extra):
    return await hub_factory(
        turn_secret=[NEW, OLD],
        turn_urls=[
            f"turn:127.0.0.1:{coturn.port}?transport=udp",
            f"turn:127.0.0.1:{coturn.port}?transport=tcp",
        ],
        stun_urls=[f"stun:127.0.0.1:{coturn.port}"],
        **extra,
    )


async def fetch_ice_servers(http, hub, user: str) -> list[dict]:
    async with http.get(
        f"{hub.base}/api/ice-servers", headers={"Authorization": f"Bearer {hub.token(user)}"}
    ) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["ttl"] == hub.settings.turn_ttl
    return body["iceServers"]


async def test_ice_servers_endpoint_and_session(coturn, hub_factory, http):
    hub = await turn_hub(hub_factory, coturn)
    servers = await fetch_ice_servers(http, hub, "alice")
    stun_entry, turn_entry = servers
    assert stun_entry == {"urls": [f"stun:127.0.0.1:{coturn.port}"]}
    expiry, user = turn_entry["username"].split(":")
    assert user == "alice" and int(expiry) > time.time() + 3600
    # Signed with the first secret, and coturn accepts it.
    transport, _ = await allocate(coturn, turn_entry["username"], turn_entry["credential"])
    transport.close()
    client = await hub.connect("alice")
    assert client.ready["iceServers"][1]["urls"] == turn_entry["urls"]
    async with http.get(f"{hub.base}/api/ice-servers") as resp:
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == "token_missing"


async def test_no_turn_configured_gives_stun_only(hub_factory, http):
    hub = await hub_factory(stun_urls=["stun:stun.example.org:3478"])
    assert await fetch_ice_servers(http, hub, "a") == [{"urls": ["stun:stun.example.org:3478"]}]
    bare = await hub_factory()
    assert await fetch_ice_servers(http, bare, "a") == []


async def test_health_probes_turn_servers(coturn, hub_factory, http):
    hub = await turn_hub(hub_factory, coturn)
    async with http.get(f"{hub.base}/health") as resp:
        body = await resp.json()
    assert body["status"] == "ok"
    assert [t["ok"] for t in body["turn"]] == [True, True, True]
    from tests.coturn import free_port_pair

    dead = await hub_factory(turn_secret=[NEW], turn_urls=[f"turn:127.0.0.1:{free_port_pair()}"])
    async with http.get(f"{dead.base}/health") as resp:
        body = await resp.json()
    assert resp.status == 200 and body["status"] == "degraded"
    assert body["turn"][0]["ok"] is False


def test_turnutils_uclient_authenticates(coturn):
    """coturn's own test client, with Switchboard's credentials (and with a wrong one)."""
    import shutil
    import subprocess

    binary = shutil.which("turnutils_uclient")
    assert binary, "turnutils_uclient (coturn) missing: run `make test`"
    cred = mint_turn_credential(NEW, "uclient", 600)

    def run(password: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                binary,
                "-u",
                cred.username,
                "-w",
                password,
                "-p",
                str(coturn.port),
                "-y",
                "-n",
                "5",
                "-m",
                "1",
                "-l",
                "120",
                "127.0.0.1",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )

    ok = run(cred.credential)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "Total lost packets 0" in ok.stdout + ok.stderr
    bad = run("not-the-password")
    assert "Cannot complete Allocation" in bad.stdout + bad.stderr


async def test_aiortc_call_relayed_through_coturn(coturn, hub_factory, http):
    """Two aiortc peers restricted to relay candidates complete a call signaled through the
    hub, with ICE servers from Switchboard's endpoint; audio frames arrive."""
    from aiortc import (
        RTCConfiguration,
        RTCIceServer,
        RTCIceTransportPolicy,
        RTCPeerConnection,
        RTCSessionDescription,
    )
    from aiortc.mediastreams import AudioStreamTrack

    hub = await turn_hub(hub_factory, coturn)

    async def peer(user: str) -> RTCPeerConnection:
        servers = await fetch_ice_servers(http, hub, user)
        config = RTCConfiguration(
            iceServers=[RTCIceServer(**s) for s in servers],
            iceTransportPolicy=RTCIceTransportPolicy.RELAY,
        )
        return RTCPeerConnection(config)

    alice_pc, bob_pc = await peer("alice"), await peer("bob")
    alice = await hub.connect("alice")
    bob = await hub.connect("bob")
    received: asyncio.Queue = asyncio.Queue()
    pumps: list[asyncio.Task] = []

    @bob_pc.on("track")
    def on_track(track):
        async def pump():
            for _ in range(5):
                received.put_nowait(await track.recv())

        pumps.append(asyncio.ensure_future(pump()))

    try:
        alice_pc.addTrack(AudioStreamTrack())
        call = await alice.request("call:initiate", {"callType": "audio", "participants": ["bob"]})
        assert call["iceServers"][1]["username"].endswith(":alice")
        await bob.expect("call:incoming")
        accepted = await bob.request("call:accept", {"callId": call["callId"]})
        assert accepted["iceServers"][1]["username"].endswith(":bob")
        await alice_pc.setLocalDescription(await alice_pc.createOffer())
        offer = alice_pc.localDescription
        assert "typ relay" in offer.sdp and "typ host" not in offer.sdp
        await alice.request(
            "call:offer",
            {"callId": call["callId"], "to": "bob", "sdp": {"type": offer.type, "sdp": offer.sdp}},
        )
        got = await bob.expect("call:offer")
        await bob_pc.setRemoteDescription(RTCSessionDescription(**got["sdp"]))
        await bob_pc.setLocalDescription(await bob_pc.createAnswer())
        answer = bob_pc.localDescription
        assert "typ relay" in answer.sdp and "typ host" not in answer.sdp
        await bob.request(
            "call:answer",
            {
                "callId": call["callId"],
                "to": "alice",
                "sdp": {"type": answer.type, "sdp": answer.sdp},
            },
        )
        got = await alice.expect("call:answer")
        await alice_pc.setRemoteDescription(RTCSessionDescription(**got["sdp"]))
        frames = [await asyncio.wait_for(received.get(), 15) for _ in range(5)]
        assert all(f.sample_rate > 0 for f in frames)
        pair = bob_pc.getTransceivers()[0].receiver.transport.transport
        assert pair.iceGatherer.getLocalCandidates()
        assert all(c.type == "relay" for c in pair.iceGatherer.getLocalCandidates())
    finally:
        for task in pumps:
            task.cancel()
        await alice_pc.close()
        await bob_pc.close()
