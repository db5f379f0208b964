"""An aiortc group-call participant speaking the ``sfu:*`` protocol (tests, benchmarks, bots).

It publishes the tracks it is given on its publish connection and answers every subscribe
offer from the server. Received tracks are decoded as aiortc normally does, or, with
``decode=False``, only counted at the RTP level (a light client for load tests).

Like the browser library, it follows the room when the cluster moves it: on
``sfu:rejoin`` it drops both connections, joins again (on the room's new media node) and
publishes the same tracks; after losing its WebSocket it can :meth:`resume` the session
from a new connection on any node, without touching its media.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.rtcconfiguration import RTCBundlePolicy
from aiortc.rtp import RtpPacket

from media import aiortc_hooks, ice
from signaling.client import HubClient

# aiortc's default "balanced" policy mis-bundles two sections of one kind in one offer.
BUNDLED = RTCConfiguration(bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)


def configuration(ice_servers: list[dict[str, Any]]) -> RTCConfiguration:
    """A bundled configuration with the ICE servers the server handed out (the first
    STUN URL is aiortc's; every TURN URL is gathered through :class:`media.ice.IcePolicy`)."""
    servers = [
        RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
        for s in ice_servers
    ]
    return RTCConfiguration(iceServers=servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)


@dataclass
class RtpCounter:
    """What a light client checks per received track: packets, bytes, gaps, arrival times."""

    packets: int = 0
    bytes: int = 0
    highest: int | None = None
    gaps: int = 0
    keep_arrivals: bool = False
    arrivals: dict[int, float] = field(default_factory=dict)  # RTP timestamp -> first arrival
    #: in-order packets whose timestamp went backwards (a broken stream)
    timestamps_backwards: int = 0
    last_timestamp: int | None = None
    #: every packet's (sequence number, timestamp, payload), for tests that look closer
    keep_packets: bool = False
    kept: list[tuple[int, int, bytes]] = field(default_factory=list)
    #: packets that carried an audio level (RFC 6464), and the last level seen
    with_level: int = 0
    last_level: int | None = None

    def on_packet(self, packet: RtpPacket) -> None:
        self.packets += 1
        self.bytes += len(packet.payload)
        seq = packet.sequence_number
        if self.keep_packets:
            self.kept.append((seq, packet.timestamp, packet.payload))
        level = packet.extensions.audio_level
        if level is not None:
            self.with_level += 1
            self.last_level = level[1]
        if self.highest is not None:
            step = (seq - self.highest) % 65536
            if 1 < step < 0x8000:
                self.gaps += step - 1
            if step >= 0x8000:
                return
        if self.last_timestamp is not None:
            if (packet.timestamp - self.last_timestamp) % (1 << 32) >= 1 << 31:
                self.timestamps_backwards += 1
        self.last_timestamp = packet.timestamp
        self.highest = seq
        if self.keep_arrivals and packet.timestamp not in self.arrivals:
            self.arrivals[packet.timestamp] = time.perf_counter()


@dataclass
class RemoteTrack:
    info: dict[str, Any]
    mid: str
    track: MediaStreamTrack | None
    counter: RtpCounter | None


class SfuClient:
    def __init__(
        self,
        hub: HubClient,
        room_id: str,
        *,
        decode: bool = True,
        keep_arrivals: bool = False,
        keep_packets: bool = False,
        policy: ice.IcePolicy | None = None,
        on_subscriber: Callable[[RTCPeerConnection, str], None] | None = None,
    ) -> None:
        self.hub = hub
        #: told the subscribe connection and each offer applied to it, before the answer
        #: goes out (load tools count its packets their own way)
        self.on_subscriber = on_subscriber
        self.room_id = room_id
        self.decode = decode
        self.keep_arrivals = keep_arrivals
        self.keep_packets = keep_packets
        self.policy = policy or ice.IcePolicy(listen_ips=("127.0.0.1",))
        self.config = BUNDLED
        self.publisher: RTCPeerConnection | None = None
        self.subscriber: RTCPeerConnection | None = None
        self.participant_id: str | None = None
        self.remote: dict[str, RemoteTrack] = {}  # by trackId
        self.published: list[dict[str, Any]] = []
        self.offers = 0
        self.errors: list[BaseException] = []
        self._counters: dict[str, RtpCounter] = {}  # by subscriber mid
        self._offer_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self.changed = asyncio.Event()
        self.resume_token: str | None = None
        self.media_node: str | None = None
        #: each sfu:rejoin handled: the notice, when it arrived (perf_counter) and how long
        #: the re-join took
        self.rejoins: list[dict[str, Any]] = []
        self._sources: list[tuple[MediaStreamTrack, str]] = []
        self._listen(hub)

    def _listen(self, hub: HubClient) -> None:
        hub.listeners["sfu:offer"] = self._on_offer
        hub.listeners["sfu:rejoin"] = self._on_rejoin

    async def join(self) -> dict[str, Any]:
        ice.install()
        return await self._enter(self.hub, "sfu:join", {"roomId": self.room_id})

    async def _enter(self, hub: HubClient, type_: str, data: dict[str, Any]) -> dict[str, Any]:
        """Join or resume. The server may send the first sfu:offer (on resume, one it
        re-sends) before the ack is read, or before this task resumes after it: the offer
        waits for the lock, so the subscribe connection is built with the ack's ICE
        servers, not without any."""
        async with self._offer_lock:
            ack = await hub.request(type_, data)
            self._joined(ack)
        return ack

    def _joined(self, ack: dict[str, Any]) -> None:
        self.participant_id = ack["participantId"]
        self.resume_token = ack["resumeToken"]
        self.media_node = ack["mediaNode"]
        # Like a browser: the ICE servers of the join answer, every TURN URL of them.
        servers = ack.get("iceServers") or []
        self.config = configuration(servers)
        turn = ice.turn_servers(servers)
        if turn and not self.policy.turn_servers:
            self.policy = dataclasses.replace(self.policy, turn_servers=turn)

    async def resume(self, hub: HubClient) -> dict[str, Any]:
        """Take the session over from a new WebSocket (the old one, or its node, is gone)."""
        assert self.participant_id is not None and self.resume_token is not None
        self.hub = hub
        self._listen(hub)
        return await self._enter(
            hub,
            "sfu:resume",
            {
                "roomId": self.room_id,
                "participantId": self.participant_id,
                "resumeToken": self.resume_token,
            },
        )

    def _on_rejoin(self, data: dict[str, Any]) -> None:
        task = asyncio.ensure_future(self.rejoin(data))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def rejoin(self, notice: dict[str, Any] | None = None) -> None:
        """Start over on the room's (new) media node with the same tracks."""
        started = time.perf_counter()
        try:
            async with self._offer_lock:
                if self.publisher is not None:
                    # aiortc stops a sender's track when the sender ends: take the tracks
                    # off first, so they can be published again.
                    for sender in self.publisher.getSenders():
                        sender.replaceTrack(None)
                await self._close_connections()
                self.publisher = self.subscriber = None
                self.remote = {}
                self._counters = {}
            await self.join()
            if self._sources:
                sources, self._sources = self._sources, []
                await self.publish(sources)
        except Exception as exc:  # surfaced to tests through .errors
            self.errors.append(exc)
            return
        self.rejoins.append(
            {**(notice or {}), "receivedAt": started, "seconds": time.perf_counter() - started}
        )
        self.changed.set()

    async def publish(
        self, tracks: list[tuple[MediaStreamTrack, str]], timeout: float = 10.0
    ) -> dict[str, Any]:
        """Publish ``(track, source)`` pairs on a fresh or existing publish connection."""
        ice.ICE_POLICY.set(self.policy)
        pc = self.publisher = self.publisher or RTCPeerConnection(self.config)
        self._sources.extend(tracks)
        senders = {}
        for track, source in tracks:
            transceiver = pc.addTransceiver(track, direction="sendonly")
            senders[id(transceiver)] = source
        return await self.renegotiate_publish(senders, timeout)

    async def unpublish(self, track: MediaStreamTrack, timeout: float = 10.0) -> dict[str, Any]:
        assert self.publisher is not None
        self._sources = [(t, source) for t, source in self._sources if t is not track]
        for transceiver in self.publisher.getTransceivers():
            if transceiver.sender.track is track:
                transceiver.direction = "inactive"
        return await self.renegotiate_publish({}, timeout)

    async def renegotiate_publish(
        self,
        sources: dict[int, str],
        timeout: float,
        edit_offer: Callable[[str], str] | None = None,
    ) -> dict[str, Any]:
        """Offer the publish connection again; ``edit_offer`` may add to the SDP what
        aiortc cannot offer (a benchmark's emulated simulcast)."""
        pc = self.publisher
        assert pc is not None
        await pc.setLocalDescription(await pc.createOffer())
        by_mid = {t.mid: sources[id(t)] for t in pc.getTransceivers() if id(t) in sources and t.mid}
        sdp = pc.localDescription.sdp
        if edit_offer is not None:
            sdp = edit_offer(sdp)
        ack = await self.hub.request(
            "sfu:publish", {"roomId": self.room_id, "sdp": sdp, "sources": by_mid}, timeout=timeout
        )
        await pc.setRemoteDescription(RTCSessionDescription(sdp=ack["sdp"], type="answer"))
        self.published = ack["tracks"]
        return ack

    def _on_offer(self, data: dict[str, Any]) -> None:
        task = asyncio.ensure_future(self._answer(data))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, data: dict[str, Any]) -> None:
        async with self._offer_lock:
            try:
                await self._apply_offer(data)
            except Exception as exc:  # surfaced to tests through .errors
                self.errors.append(exc)

    async def _apply_offer(self, data: dict[str, Any]) -> None:
        ice.ICE_POLICY.set(self.policy)
        if self.subscriber is None:
            self.subscriber = RTCPeerConnection(self.config)
        pc = self.subscriber
        await pc.setRemoteDescription(RTCSessionDescription(sdp=data["sdp"], type="offer"))
        if self.on_subscriber is not None:
            self.on_subscriber(pc, data["sdp"])
        await pc.setLocalDescription(await pc.createAnswer())
        tracks: dict[str, dict[str, Any]] = data["tracks"]
        remote: dict[str, RemoteTrack] = {}
        for transceiver in pc.getTransceivers():
            mid = transceiver.mid
            info = tracks.get(mid) if mid is not None else None
            if info is None or mid is None:
                continue
            counter = None
            if not self.decode:
                counter = self._counters.get(mid)
                if counter is None:
                    counter = self._counters[mid] = RtpCounter(
                        keep_arrivals=self.keep_arrivals, keep_packets=self.keep_packets
                    )
                    aiortc_hooks.tap_receiver(transceiver.receiver, counter.on_packet)
            remote[info["trackId"]] = RemoteTrack(
                info, mid, transceiver.receiver.track if self.decode else None, counter
            )
        self.remote = remote
        self.offers += 1
        await self.hub.request(
            "sfu:answer", {"roomId": self.room_id, "sdp": pc.localDescription.sdp}
        )
        self.changed.set()

    async def wait_for(self, predicate: Any, timeout: float = 10.0) -> None:
        """Wait until ``predicate(self)`` holds, re-checked after each applied offer."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate(self):
            if self.errors:
                raise self.errors[0]
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError(f"condition not met in {timeout}s; remote={list(self.remote)}")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(remaining, 0.2))

    def remote_of(self, participant_id: str) -> list[RemoteTrack]:
        return [r for r in self.remote.values() if r.info["participantId"] == participant_id]

    async def close(self) -> None:
        # Let an offer being answered finish: cancelling aiortc mid-negotiation can leave
        # receivers whose decoder threads would then outlive the connection.
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        for task in list(self._tasks):
            task.cancel()
        await self._close_connections()

    async def _close_connections(self) -> None:
        for pc in (self.publisher, self.subscriber):
            if pc is None:
                continue
            with contextlib.suppress(Exception):
                await pc.close()
            for transceiver in pc.getTransceivers():
                aiortc_hooks.stop_decoder(transceiver.receiver)
