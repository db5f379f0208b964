"""The parts of a lean load client: a subscriber that counts RTP from the clear header
(no SRTP decryption, no aiortc receive pipeline), and a microphone that replays Opus the
way a browser with DTX sends it (talking: every 20 ms with its level; silent: a packet
every 400 ms at level 127).

SRTP encrypts the payload only: the 12-byte header (payload type, sequence number,
timestamp, SSRC) is readable as it arrives. A lean subscriber does ICE and DTLS through
aiortc once; afterwards its ICE connection's datagrams are looked at before aiortc's
queue: RTP is counted there and dropped, everything else (STUN consent, DTLS, RTCP) goes
on as usual. That is what lets one load process hold dozens of subscribers.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCPeerConnection, RTCRtpTransceiver
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from benchmarks.simulcast import MID, header_extensions
from media.rtp_writer import rtp_writer

AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
#: Opus: a 20 ms packet while talking; with DTX, one every 400 ms in silence (1 byte of
#: comfort noise frame, as Chrome sends), at RFC 6464 level 127.
FRAME = 0.02
DTX_EVERY = 20
TALK_LEVEL = 30
SILENCE = 127
SEQ_MOD = 1 << 16


@dataclass(slots=True)
class Stream:
    """One RTP stream as a lean subscriber sees it."""

    video: bool
    packets: int = 0
    bytes: int = 0
    first: int = -1  # extended sequence numbers
    highest: int = -1
    #: RTP timestamp -> first arrival (time.monotonic), for sampled subscribers' video
    arrivals: dict[int, float] | None = None

    def lost(self) -> int:
        return max(0, self.highest - self.first + 1 - self.packets) if self.first >= 0 else 0


@dataclass
class LeanSubscriber:
    """Counts what one subscriber connection receives, by SSRC; video and audio told
    apart by payload type (from the offer), other payload types (RTX, padding) counted
    apart and never as loss."""

    sample: bool = False  # keep video frames' arrivals (for added delay)
    video_pts: set[int] = field(default_factory=set)
    audio_pts: set[int] = field(default_factory=set)
    streams: dict[int, Stream] = field(default_factory=dict)
    other_packets: int = 0
    first_at: float | None = None  # the first RTP packet
    first_video_at: float | None = None

    def configure(self, sdp: str) -> None:
        for pt, name in re.findall(r"(?m)^a=rtpmap:(\d+) ([\w-]+)/", sdp):
            if name.upper() in ("VP8", "VP9", "H264", "AV1"):
                self.video_pts.add(int(pt))
            elif name.lower() == "opus":
                self.audio_pts.add(int(pt))

    def attach(self, pc: RTCPeerConnection) -> None:
        """Look at ``pc``'s datagrams before aiortc does (its ICE connection exists once
        the remote description is set)."""
        connection = pc.getTransceivers()[0].receiver.transport.transport.iceGatherer._connection
        original = connection.data_received
        if getattr(original, "lean", False):
            return

        def data_received(data: bytes, component: int) -> None:
            if not self.on_datagram(data):
                original(data, component)

        data_received.lean = True  # type: ignore[attr-defined]
        connection.data_received = data_received

    def on_datagram(self, data: bytes) -> bool:
        """Count an RTP packet (``True``: consumed); anything else is left to aiortc."""
        if len(data) < 12 or not 128 <= data[0] < 192 or 192 <= data[1] <= 223:
            return False
        now = time.monotonic()
        if self.first_at is None:
            self.first_at = now
        pt = data[1] & 0x7F
        video = pt in self.video_pts
        if not video and pt not in self.audio_pts:
            self.other_packets += 1
            return True
        if video and self.first_video_at is None:
            self.first_video_at = now
        ssrc = int.from_bytes(data[8:12], "big")
        stream = self.streams.get(ssrc)
        if stream is None:
            stream = self.streams[ssrc] = Stream(
                video, arrivals={} if video and self.sample else None
            )
        seq = int.from_bytes(data[2:4], "big")
        if stream.first < 0:
            stream.first = stream.highest = seq
        else:
            step = (seq - stream.highest) % SEQ_MOD
            if step < 0x8000:
                stream.highest += step
            # older (reordered or repeated) packets count but move nothing
        stream.packets += 1
        stream.bytes += len(data)
        if stream.arrivals is not None:
            ts = int.from_bytes(data[4:8], "big")
            if ts not in stream.arrivals:
                stream.arrivals[ts] = now
        return True

    def reset(self) -> None:
        """Start a measurement window: counts from here (streams keep their identity)."""
        for stream in self.streams.values():
            stream.packets = stream.bytes = 0
            stream.first = stream.highest = -1
            if stream.arrivals is not None:
                stream.arrivals.clear()
        self.other_packets = 0


class DtxMicrophone:
    """Writes Opus on an audio transceiver's SSRC as a browser with DTX does."""

    def __init__(self, audio: RTCRtpTransceiver, packets: tuple[bytes, ...], talking: bool) -> None:
        self.audio = audio
        self.packets = packets
        self.talking = talking
        self._task: asyncio.Task[None] | None = None

    def start(self, answer: str) -> None:
        match = re.search(r"(?m)^a=rtpmap:(\d+) opus/48000", answer)
        assert match is not None, "no Opus in the answer"
        extensions = header_extensions(answer, (MID, AUDIO_LEVEL))
        self._task = asyncio.ensure_future(self._run(int(match.group(1)), extensions))

    async def _run(self, payload_type: int, extensions: HeaderExtensionsMap) -> None:
        transport = self.audio.sender.transport
        ssrc = self.audio.sender._ssrc
        while transport.state != "connected":  # noqa: ASYNC110 (aiortc: no event to await)
            await asyncio.sleep(0.02)
        seq, index, start = 0, 0, time.monotonic()
        while True:
            index += 1 if self.talking else DTX_EVERY
            await asyncio.sleep(max(0.0, start + index * FRAME - time.monotonic()))
            packet = RtpPacket(
                payload_type=payload_type,
                sequence_number=seq,
                timestamp=(index * 960) & 0xFFFFFFFF,
                ssrc=ssrc,
            )
            seq = (seq + 1) % SEQ_MOD
            packet.extensions.mid = self.audio.mid
            if self.talking:
                packet.extensions.audio_level = (True, TALK_LEVEL)
                packet.payload = self.packets[index % len(self.packets)]
            else:
                packet.extensions.audio_level = (False, SILENCE)
                packet.payload = b"\xf8"  # an empty Opus frame: what DTX sends
            pending = rtp_writer(transport).write(packet.serialize(extensions))
            if pending is not None:
                await pending

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def summary(subscribers: list[LeanSubscriber]) -> dict[str, Any]:
    """Totals over subscribers since their last reset."""
    streams = [s for sub in subscribers for s in sub.streams.values()]
    return {
        "packets": sum(s.packets for s in streams),
        "bytes": sum(s.bytes for s in streams),
        "lost": sum(s.lost() for s in streams),
        "video_packets": sum(s.packets for s in streams if s.video),
        "audio_packets": sum(s.packets for s in streams if not s.video),
        "other_packets": sum(sub.other_packets for sub in subscribers),
    }
