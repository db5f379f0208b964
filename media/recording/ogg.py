"""Ogg Opus files (RFC 3533 pages, RFC 7845 mapping), written directly: Opus packets go in
as they arrived, with the ``OpusHead`` and ``OpusTags`` headers a player needs.

PyAV can only attach an ``OpusHead`` to a stream that carries a codec context (an encoder
set up and never used); writing the few bytes of Ogg here keeps the recording free of
any codec at all. Gaps in the RTP timestamps (packets lost, or left out while nobody
spoke) are filled with 20 ms Opus silence frames, as Janus's post-processor does, so the
granule positions stay a true sample count and players keep audio in time.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

#: Samples a decoder drops at the start (what libopus encoders report).
PRE_SKIP = 312
#: One 20 ms CELT frame of silence (TOC 0xF8: fullband, 20 ms, mono, one frame).
SILENCE = b"\xf8\xff\xfe"
SILENCE_SAMPLES = 960
#: At most this many packets per page (about a second of audio).
PACKETS_PER_PAGE = 50
#: A page's segment table holds at most 255 lacing values.
MAX_LACING = 255
VENDOR = b"switchboard"


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        r = i << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else (r << 1)
        table.append(r & 0xFFFFFFFF)
    return table


_CRC = _crc_table()


def ogg_crc(data: bytes) -> int:
    """Ogg's CRC-32 (polynomial 0x04C11DB7, not reflected, no final xor)."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC[((crc >> 24) ^ byte) & 0xFF]
    return crc


def opus_head(channels: int = 2) -> bytes:
    return b"OpusHead" + struct.pack("<BBHIhB", 1, channels, PRE_SKIP, 48_000, 0, 0)


def opus_tags() -> bytes:
    return b"OpusTags" + struct.pack("<I", len(VENDOR)) + VENDOR + struct.pack("<I", 0)


def packet_samples(packet: bytes) -> int:
    """Samples at 48 kHz in an Opus packet, from its TOC byte (RFC 6716, 3.1)."""
    if not packet:
        return 0
    toc = packet[0]
    config = toc >> 3
    if config < 12:  # SILK: 10, 20, 40, 60 ms
        size = (480, 960, 1920, 2880)[config & 3]
    elif config < 16:  # hybrid: 10, 20 ms
        size = (480, 960)[config & 1]
    else:  # CELT: 2.5, 5, 10, 20 ms
        size = (120, 240, 480, 960)[config & 3]
    code = toc & 3
    if code == 0:
        frames = 1
    elif code in (1, 2):
        frames = 2
    else:
        frames = packet[1] & 0x3F if len(packet) > 1 else 0
    return size * frames


class OggOpusWriter:
    def __init__(self, out: BinaryIO, serial: int = 0x5357) -> None:
        self.out = out
        self.serial = serial
        self._sequence = 0
        self._granule = PRE_SKIP  # the position after the last packet written
        self._pending: list[bytes] = []
        self._lacing = 0
        self._next_timestamp: int | None = None
        self._write_page([opus_head()], granule=0, flags=0x02)
        self._write_page([opus_tags()], granule=0, flags=0)

    @property
    def samples(self) -> int:
        """Audio samples written so far (silence filled in included)."""
        return self._granule - PRE_SKIP

    def write(self, timestamp: int, packet: bytes) -> None:
        """An Opus packet with its (unwrapped) 48 kHz RTP timestamp."""
        if self._next_timestamp is not None:
            missing = timestamp - self._next_timestamp
            if missing < 0:
                return  # overlaps what is written: a repeat
            while missing >= SILENCE_SAMPLES:
                self._add(SILENCE, SILENCE_SAMPLES)
                missing -= SILENCE_SAMPLES
        samples = packet_samples(packet) or SILENCE_SAMPLES
        self._add(packet, samples)
        self._next_timestamp = timestamp + samples

    def _add(self, packet: bytes, samples: int) -> None:
        lacing = len(packet) // 255 + 1
        if self._lacing + lacing > MAX_LACING:
            self._flush(0)
        self._pending.append(packet)
        self._lacing += lacing
        self._granule += samples
        if len(self._pending) >= PACKETS_PER_PAGE:
            self._flush(0)

    def close(self) -> None:
        self._flush(0x04, force=True)
        self.out.flush()

    def _flush(self, flags: int, force: bool = False) -> None:
        if self._pending or force:
            packets, self._pending, self._lacing = self._pending, [], 0
            self._write_page(packets, granule=self._granule, flags=flags)

    def _write_page(self, packets: list[bytes], *, granule: int, flags: int) -> None:
        lacing = bytearray()
        for packet in packets:
            lacing += b"\xff" * (len(packet) // 255) + bytes([len(packet) % 255])
        header = struct.pack(
            "<4sBBqIIIB",
            b"OggS",
            0,
            flags,
            granule,
            self.serial,
            self._sequence,
            0,
            len(lacing),
        )
        page = header + bytes(lacing) + b"".join(packets)
        crc = ogg_crc(page)
        page = page[:22] + struct.pack("<I", crc) + page[26:]
        self.out.write(page)
        self._sequence += 1
