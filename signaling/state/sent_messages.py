"""Which chat messages (user, tempId) were already sent to the chat backend, cluster-wide,
so a resend after a reconnect, to any node, never reaches the backend or the room twice."""

from __future__ import annotations

from abc import ABC, abstractmethod

#: The claim of a message whose send is still with the backend.
PENDING = "pending"


class SentMessages(ABC):
    @abstractmethod
    async def claim(self, user_id: str, temp_id: str, ttl: float) -> str | None:
        """Claim the send of ``temp_id``: ``None`` if this caller is the first (it must
        :meth:`settle` or :meth:`release` the claim), else what is known of the first
        send: :data:`PENDING`, or the message id the backend gave it."""

    @abstractmethod
    async def settle(self, user_id: str, temp_id: str, message_id: str, ttl: float) -> None:
        """The backend persisted it as ``message_id``: answer resends with that."""

    @abstractmethod
    async def release(self, user_id: str, temp_id: str) -> None:
        """The send failed (nothing persisted): a resend may try again."""
