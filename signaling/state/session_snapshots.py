"""What a dropped connection leaves behind for its client to resume: an opaque snapshot
per (user, session id), kept for a while, taken once.

Socket.IO's connection-state recovery (:mod:`signaling.socketio.recovery`) keeps here the
rooms a session was in and what it was last sent, so a client reconnecting to any node
gets what it missed. Keyed by user as well, so a session id seen by someone else resumes
nothing of theirs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod


class SessionSnapshots(ABC):
    @abstractmethod
    async def save(self, user_id: str, session_id: str, snapshot: bytes, ttl: float) -> None:
        """Keep ``snapshot`` for ``ttl`` seconds (replacing any under the same ids)."""

    @abstractmethod
    async def take(self, user_id: str, session_id: str) -> bytes | None:
        """The snapshot, removed (a session resumes once), or ``None`` if there is none
        or it expired."""
