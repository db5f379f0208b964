"""Putting a track's RTP packets back in sequence order before they become frames.

Packets reach the SFU reordered now and then, and the ones the publisher retransmits
(NACK) arrive late. A small buffer holds what came early; a missing packet is waited for
until ``depth`` later ones are held, then given up (the frame it belonged to is lost).
"""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")

SEQ_MOD = 1 << 16
HALF = SEQ_MOD // 2


class ReorderBuffer(Generic[T]):
    def __init__(self, depth: int) -> None:
        self.depth = depth
        self._next: int | None = None
        self._held: dict[int, T] = {}
        #: Packets given up on (never arrived within the depth) and late ones dropped.
        self.lost = 0
        self.late = 0

    def push(self, seq: int, item: T) -> list[tuple[int, T, bool]]:
        """Add a packet; the packets now due, in order, as ``(seq, item, after_gap)``
        (``after_gap``: packets before it were given up)."""
        if self._next is None:
            self._next = seq
        ahead = (seq - self._next) % SEQ_MOD
        if ahead >= HALF:  # behind what was already released: late or a duplicate
            self.late += 1
            return []
        self._held[seq] = item
        return self._release()

    def _release(self) -> list[tuple[int, T, bool]]:
        out: list[tuple[int, T, bool]] = []
        gap = False
        while self._held:
            assert self._next is not None
            item = self._held.pop(self._next, None)
            if item is not None:
                out.append((self._next, item, gap))
                gap = False
                self._next = (self._next + 1) % SEQ_MOD
                continue
            if len(self._held) < self.depth:
                break
            # Waited long enough: skip to the oldest packet held.
            oldest = min(self._held, key=lambda s: (s - self._next) % SEQ_MOD)  # type: ignore[operator]
            self.lost += (oldest - self._next) % SEQ_MOD
            self._next = oldest
            gap = True
        return out

    def flush(self) -> list[tuple[int, T, bool]]:
        """Everything held, in order (the recording stops)."""
        saved, self.depth = self.depth, 0
        try:
            return self._release()
        finally:
            self.depth = saved
