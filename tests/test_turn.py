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
    return await create_turn_endpoint(Sink, server.address, username, password, lifetime=60)


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
