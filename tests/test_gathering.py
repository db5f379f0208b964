"""A bundled connection gathers its candidates in the negotiating task
(``aiortc_hooks.gather_in_place`` and ``ice.PolicyConnection.gather_candidates``): on a
media node every event-loop turn of a join's offer waits behind packet work, and aiortc's
and aioice's task per gathering had cost six of them. Also the policy's port range."""

from __future__ import annotations

import asyncio
import random
import socket
import time

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.rtcconfiguration import RTCBundlePolicy

from media import aiortc_hooks, ice
from tests.loop_turns import Turns


def install() -> None:
    ice.install()
    aiortc_hooks.gather_in_place()
    ice.ICE_POLICY.set(ice.IcePolicy(listen_ips=("127.0.0.1",)))


#: As the SFU's connections are: bundled, and no STUN server of their own.
SFU_LIKE = RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)


def test_an_offer_of_sixty_sections_takes_two_loop_turns() -> None:
    """Counted on asyncio's own loop: uvloop first resolves the address the socket is
    bound to on its thread pool, and the counter would count the wait for that thread
    (a thread's wake-up, where the turns counted here each carry other work)."""

    async def offer() -> int:
        install()
        pc = RTCPeerConnection(SFU_LIKE)
        try:
            for n in range(60):
                pc.addTransceiver("audio" if n < 50 else "video", direction="sendonly")
            description = await pc.createOffer()
            with Turns() as turns:
                await pc.setLocalDescription(description)
            sdp = pc.localDescription.sdp
            assert sdp.count("a=candidate:") == 60  # the one host candidate, in each section
            assert " 127.0.0.1 " in sdp
            return turns.count
        finally:
            await pc.close()

    loop = asyncio.new_event_loop()
    try:
        # binding the policy's socket: its connection_made, then the wake-up (aiortc's
        # and aioice's task per gathering made it 8)
        assert loop.run_until_complete(offer()) <= 2
    finally:
        loop.close()


async def test_a_bundled_offer_of_sixty_sections_connects() -> None:
    install()
    offerer, answerer = RTCPeerConnection(SFU_LIKE), RTCPeerConnection(SFU_LIKE)
    try:
        for n in range(60):
            offerer.addTransceiver("audio" if n < 50 else "video", direction="sendonly")
        await offerer.setLocalDescription(await offerer.createOffer())
        await answerer.setRemoteDescription(offerer.localDescription)
        await answerer.setLocalDescription(await answerer.createAnswer())
        await offerer.setRemoteDescription(answerer.localDescription)
        deadline = time.monotonic() + 10
        # both sides: the answerer may finish DTLS a moment after the offerer
        while not offerer.connectionState == answerer.connectionState == "connected":
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
        assert offerer.connectionState == answerer.connectionState == "connected"
    finally:
        await offerer.close()
        await answerer.close()


async def test_several_transports_still_gather_side_by_side() -> None:
    """Unbundled (one ICE transport per section) keeps aiortc's concurrent gathering,
    so one slow server cannot hold the others' candidates back."""
    install()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("audio")
        pc.addTransceiver("video")
        await pc.setLocalDescription(await pc.createOffer())
        sections = pc.localDescription.sdp.split("\r\nm=")[1:]
        assert len(sections) == 2
        ports = {
            line.split()[5]
            for section in sections
            for line in section.splitlines()
            if line.startswith("a=candidate:")
        }
        assert len(ports) == 2  # each section its own transport, each gathered
    finally:
        await pc.close()


def three_ports_middle_taken() -> tuple[int, socket.socket]:
    """Three free UDP ports in a row above the kernel's ephemeral range (so no port-0 bind
    of the suite lands on them), the middle one held by the returned socket."""
    for _ in range(100):
        low = random.randrange(61_000, 64_000)
        held: list[socket.socket] = []
        try:
            for port in range(low, low + 3):
                held.append(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
                held[-1].bind(("127.0.0.1", port))
        except OSError:
            for sock in held:
                sock.close()
            continue
        held[0].close()
        held[2].close()
        return low, held[1]
    raise RuntimeError("no three free UDP ports in a row")


async def test_candidates_bind_within_the_policys_port_range() -> None:
    """``sfu_udp_min_port``/``sfu_udp_max_port``: each connection binds a free port of
    the range (taken ones are skipped); with none left, gathering says so."""
    install()
    low, taken = three_ports_middle_taken()
    ice.ICE_POLICY.set(ice.IcePolicy(listen_ips=("127.0.0.1",), min_port=low, max_port=low + 2))
    pcs = [RTCPeerConnection(SFU_LIKE) for _ in range(3)]
    try:
        ports = []
        for pc in pcs[:2]:
            pc.addTransceiver("audio", direction="sendonly")
            await pc.setLocalDescription(await pc.createOffer())
            line = next(
                x for x in pc.localDescription.sdp.splitlines() if x.startswith("a=candidate:")
            )
            ports.append(int(line.split()[5]))
        assert sorted(ports) == [low, low + 2]
        pcs[2].addTransceiver("audio", direction="sendonly")
        with pytest.raises(OSError, match=f"no free UDP port in {low}-{low + 2}"):
            await pcs[2].setLocalDescription(await pcs[2].createOffer())
    finally:
        taken.close()
        for pc in pcs:
            await pc.close()
