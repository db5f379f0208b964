"""Delivery: this node's sockets, and the fan-out of events to users, rooms and
connections wherever their sockets are.

Services see only :class:`Fanout` (three methods, each encoding the event once and writing
the same bytes to every recipient). The node keeps its own sockets in the delivery too:
only the node holding a socket can write to it, and it must keep serving its sockets when
the shared store is away.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any, Protocol

from signaling.metrics import FanoutMetrics


def node_of(conn_id: str) -> str:
    """The node holding a connection, read from its id (see ``new_connection_id``)."""
    return conn_id[2:].split(".", 1)[0]


class Socket(Protocol):
    """What delivery needs of a connected device (a WebSocket, or later another transport)."""

    id: str
    rooms: set[str]

    @property
    def user_id(self) -> str: ...

    @property
    def name(self) -> str: ...

    def send_frame(self, frame: bytes) -> bool:
        """Queue a pre-built frame without waiting; ``False`` if the socket is gone."""

    async def close(self, code: int, reason: str) -> None:
        """Close the socket with a WebSocket close code (the client may reconnect)."""


class Fanout(Protocol):
    """How services send events: encode once, write the same bytes to every recipient."""

    async def to_users(
        self, user_ids: Iterable[str], type_: str, data: Any, *, exclude_conn: str | None = None
    ) -> int:
        """Every connection (device) of each user; returns the number of writes."""

    async def to_rooms(
        self, room_ids: Iterable[str], type_: str, data: Any, *, exclude_user: str | None = None
    ) -> int:
        """Every connection joined to any of the rooms, once each."""

    async def to_conns(self, conn_ids: Iterable[str], type_: str, data: Any) -> int:
        """Each connection (one, or a group call's participants), wherever it is."""

    async def to_room_recorded(
        self, room_id: str, type_: str, data: dict[str, Any], *, exclude_user: str | None = None
    ) -> int:
        """Like :meth:`to_rooms` for one room, and kept in the room's history with the
        next offset (:mod:`signaling.state.history`): for events a client that was away
        must not miss (messages, membership, the room's own changes)."""


class Delivery(ABC):
    """The fan-out plus this node's socket index. A connection id names its node, so
    delivery to one connection goes straight to the node holding it."""

    node_id: str
    #: Counted per event type; the node registers them in its metrics registry.
    metrics: FanoutMetrics

    def new_connection_id(self) -> str:
        import secrets

        return f"c_{self.node_id}.{secrets.token_hex(6)}"

    # -- this node's sockets ---------------------------------------------------------------

    @abstractmethod
    def attach(self, socket: Socket) -> None:
        """Make a local socket reachable for delivery."""

    @abstractmethod
    def detach(self, socket: Socket) -> None:
        """Forget a local socket (after its rooms and presence were released)."""

    @abstractmethod
    async def room_joined(self, room_id: str, conn_id: str) -> None:
        """Index a local socket in a room (room events now reach it)."""

    @abstractmethod
    async def room_left(self, room_id: str, conn_id: str) -> None: ...

    @abstractmethod
    def local_connections(self) -> list[Socket]: ...

    @abstractmethod
    def local_connections_of(self, user_id: str) -> list[Socket]:
        """This node's sockets of one user."""

    @abstractmethod
    def local_room_members(self, room_id: str) -> list[Socket]:
        """This node's sockets joined to a room."""

    def local_connection_count(self) -> int:
        return len(self.local_connections())

    # -- fan-out (see Fanout) --------------------------------------------------------------

    @abstractmethod
    async def to_users(
        self, user_ids: Iterable[str], type_: str, data: Any, *, exclude_conn: str | None = None
    ) -> int: ...

    @abstractmethod
    async def to_rooms(
        self, room_ids: Iterable[str], type_: str, data: Any, *, exclude_user: str | None = None
    ) -> int: ...

    @abstractmethod
    async def to_conns(self, conn_ids: Iterable[str], type_: str, data: Any) -> int: ...

    @abstractmethod
    async def to_room_recorded(
        self, room_id: str, type_: str, data: dict[str, Any], *, exclude_user: str | None = None
    ) -> int: ...

    # -- commands to the nodes holding users' sockets ------------------------------------------

    @abstractmethod
    async def send_control(self, user_ids: Iterable[str], command: dict[str, Any]) -> None:
        """Report ``command`` (``BackendHandler.control``) on every node holding a socket of
        one of the users: the room API's kick, close and mute act on remote sockets."""
