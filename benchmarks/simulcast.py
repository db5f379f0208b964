"""Simulcast publishers for the media benchmark, emulated the way a browser sends them.

Three VP8 layers (``q`` 320x180 at 150 kbps, ``h`` 640x360 at 500 kbps, ``f`` 1280x720 at
1,500 kbps, libwebrtc's defaults) are encoded once, offline, with PyAV/libvpx
(:func:`benchmarks.preencoded.vp8_loop`: same length, keyframes on the same frames), and
replayed over an aiortc connection: one SSRC per layer, the ``mid`` and ``rid`` header
extensions on every packet, the offer listing the layers (``a=rid``, ``a=simulcast``).
aiortc negotiates and encrypts; its own video sender stays parked and this module writes
the layers' RTP itself, so the publisher spends no CPU encoding.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import struct
import time
from collections.abc import Callable
from pathlib import Path

from aiortc import RTCRtpTransceiver
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from benchmarks.preencoded import VIDEO_RATE, vp8_loop
from media.rtp_writer import rtp_writer

#: rid, width, height, kbps: lowest first, as the SDK publishes them
LAYERS = (("q", 320, 180, 150), ("h", 640, 360, 500), ("f", 1280, 720, 1500))
MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
RID = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"


def layer_loops(keyframe_interval: float) -> tuple[tuple[bytes, ...], ...]:
    """The three layers' frames, lowest first (cached per process)."""
    return tuple(vp8_loop(kbps, keyframe_interval, w, h) for _, w, h, kbps in LAYERS)


def save_loops(loops: tuple[tuple[bytes, ...], ...], path: Path) -> Path:
    """Write the layers' frames to ``path`` (length-prefixed), so processes replaying them
    (lab agents, load workers) need not encode again."""
    with path.open("wb") as out:
        out.write(struct.pack("!I", len(loops)))
        for frames in loops:
            out.write(struct.pack("!I", len(frames)))
            for frame in frames:
                out.write(struct.pack("!I", len(frame)) + frame)
    return path


def load_loops(path: Path) -> tuple[tuple[bytes, ...], ...]:
    data = path.read_bytes()
    pos = 0

    def take() -> int:
        nonlocal pos
        (value,) = struct.unpack_from("!I", data, pos)
        pos += 4
        return value

    loops = []
    for _ in range(take()):
        frames = []
        for _ in range(take()):
            size = take()
            frames.append(data[pos : pos + size])
            pos += size
        loops.append(tuple(frames))
    return tuple(loops)


def simulcast_offer(sdp: str, mid: str) -> str:
    """``sdp`` with the video section ``mid`` offering the three layers (RFC 8853)."""
    eol = "\r\n"
    sections = re.split(r"(?m)^(?=m=)", sdp)
    for i, section in enumerate(sections):
        if re.search(rf"(?m)^a=mid:{re.escape(mid)}\s*$", section):
            lines = [f"a=rid:{rid} send" for rid, *_ in LAYERS]
            lines.append("a=simulcast:send " + ";".join(rid for rid, *_ in LAYERS))
            sections[i] = section.rstrip("\r\n") + eol + eol.join(lines) + eol
    return "".join(sections)


def header_extensions(answer: str, uris: tuple[str, ...]) -> HeaderExtensionsMap:
    """The ids ``answer`` gave the header extensions ``uris`` (those it agreed to), as a
    map packets are serialized with."""
    ids = {uri: int(i) for i, uri in re.findall(r"(?m)^a=extmap:(\d+)\S* (\S+)", answer)}
    extensions = HeaderExtensionsMap()
    extensions.configure(
        RTCRtpParameters(
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(id=ids[uri], uri=uri) for uri in uris if uri in ids
            ]
        )
    )
    return extensions


class SimulcastSender:
    """Writes the three layers of one publisher at ~30 fps once its connection is up."""

    def __init__(self, video: RTCRtpTransceiver, loops: tuple[tuple[bytes, ...], ...]) -> None:
        self.video = video
        self.loops = loops
        self.ssrcs = [random.randrange(1, 1 << 32) for _ in LAYERS]
        self._seq = [random.randrange(1 << 16) for _ in LAYERS]
        self._packers = [Vp8Encoder() for _ in LAYERS]
        self._task: asyncio.Task[None] | None = None

    def start(self, answer: str, on_sent: Callable[[int], None]) -> None:
        """Start sending once ``answer`` (the server's) says the extension ids and the
        payload type; ``on_sent(timestamp)`` is told each frame as it leaves."""
        video_pt = int(re.search(r"(?m)^a=rtpmap:(\d+) VP8/90000", answer).group(1))  # type: ignore[union-attr]
        extensions = header_extensions(answer, (MID, RID))
        self._task = asyncio.ensure_future(self._run(video_pt, extensions, on_sent))

    async def _run(
        self, payload_type: int, extensions: HeaderExtensionsMap, on_sent: Callable[[int], None]
    ) -> None:
        transport = self.video.sender.transport
        mid = self.video.mid
        while transport.state != "connected":  # noqa: ASYNC110 (aiortc: no event to await)
            await asyncio.sleep(0.02)
        start = next_at = time.monotonic()
        index = 0
        while True:
            next_at += random.uniform(0.028, 0.038)
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            timestamp = int((time.monotonic() - start) * VIDEO_RATE) & 0xFFFFFFFF
            on_sent(timestamp)
            for layer, (rid, *_) in enumerate(LAYERS):
                frames = self.loops[layer]
                packer = self._packers[layer]
                payloads = packer._packetize(frames[index % len(frames)], packer.picture_id)
                packer.picture_id = (packer.picture_id + 1) % (1 << 15)
                for n, payload in enumerate(payloads):
                    packet = RtpPacket(
                        payload_type=payload_type,
                        marker=int(n == len(payloads) - 1),
                        sequence_number=self._seq[layer],
                        timestamp=timestamp,
                        ssrc=self.ssrcs[layer],
                    )
                    self._seq[layer] = (self._seq[layer] + 1) & 0xFFFF
                    packet.extensions.mid = mid
                    packet.extensions.rtp_stream_id = rid
                    packet.payload = payload
                    pending = rtp_writer(transport).write(packet.serialize(extensions))
                    if pending is not None:
                        await pending
            index += 1

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
