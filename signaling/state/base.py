"""The one interface every piece of hub state goes through.

Services (presence, rooms, typing, calls) never touch dictionaries or Redis keys directly:
they ask a :class:`HubState`. The in-memory implementation serves a single node; a shared
implementation (Redis) must pass the same test suite, so everything a service needs across
nodes, including delivery to a user's connections wherever they are, lives here.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, TypeVar

from signaling.state.local import LocalIndex
from signaling.state.models import (
    Call,
    Member,
    PresenceChange,
    PresenceInfo,
    RemoteConnection,
    RoomInfo,
)

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from signaling.connection import Connection

log = logging.getLogger("switchboard.state")
T = TypeVar("T")


def node_of(conn_id: str) -> str:
    """The node holding a connection, read from its id (see ``new_connection_id``)."""
    return conn_id[2:].split(".", 1)[0]


LostConnections = Callable[[list[RemoteConnection]], Awaitable[None]]
#: Runs a control command (kick, close, mute, ...) against this node's sockets of the users.
ControlHandler = Callable[[list[str], dict[str, Any]], Awaitable[None]]
#: Handles a message another node (or this one) addressed to this node.
NodeMessageHandler = Callable[[dict[str, Any]], Awaitable[None]]
#: Told which rooms a reaped node was hosting media for: ``(dead node, room ids)``.
MediaHostLost = Callable[[str, list[str]], Awaitable[None]]
#: This node's load and media facts, published with its heartbeat (see media.placement).
LoadProvider = Callable[[], dict[str, Any]]


class HubState(ABC):
    #: Names this node in connection ids, so an id says where its socket lives.
    node_id: str = "local"
    #: Set by the hub: applies control commands to the sockets this node holds.
    control_handler: ControlHandler | None = None
    #: Set by the media layer: messages addressed to this node (SFU signaling relay).
    node_message_handler: NodeMessageHandler | None = None
    #: Set by the media layer: what the heartbeat publishes as this node's load.
    load_provider: LoadProvider | None = None
    #: Set by the media layer: run by the node that reaps a dead node, for the rooms whose
    #: media that node hosted (only shared state has other nodes to reap).
    media_host_lost_handler: MediaHostLost | None = None

    def __init__(self) -> None:
        # Both implementations keep this node's sockets in a LocalIndex; only what happens
        # beyond this node differs.
        self.local = LocalIndex()
        # Work started by an incoming message (node messages, control commands), each in
        # its own task so one slow handler holds up no other message.
        self._tasks: set[asyncio.Task[None]] = set()

    def new_connection_id(self) -> str:
        return f"c_{self.node_id}.{secrets.token_hex(6)}"

    @abstractmethod
    async def start(self, on_lost: LostConnections) -> None:
        """Connect to the shared store; ``on_lost`` is told about connections of dead nodes
        so the hub can take them out of presence, rooms and calls with the usual events."""

    def status(self) -> dict[str, Any]:
        """What ``/health`` reports about the state backend."""
        return {"backend": "memory"}

    # -- connections on this node, and delivery to connections on any node -----------------

    def attach(self, conn: Connection) -> None:
        """Make a local connection reachable for delivery."""
        self.local.attach(conn)

    def detach(self, conn: Connection) -> None:
        """Forget a local connection (after its rooms and presence were released)."""
        self.local.detach(conn)

    def local_connection_count(self) -> int:
        return len(self.local.conns)

    def local_connections(self) -> list[Connection]:
        return list(self.local.conns.values())

    def local_connections_of(self, user_id: str) -> list[Connection]:
        """This node's sockets of one user."""
        return list(self.local.user_conns.get(user_id, {}).values())

    @abstractmethod
    async def deliver_to_connections(self, conn_ids: Iterable[str], frame: bytes) -> int:
        """Write ``frame`` to each connection (one, or a group call room's participants),
        wherever it is; returns how many writes (or node messages) were made."""

    @abstractmethod
    async def deliver_to_users(
        self, user_ids: Iterable[str], frame: bytes, *, exclude_conn: str | None = None
    ) -> int:
        """Write ``frame`` to every connection (device) of each user."""

    @abstractmethod
    async def deliver_to_rooms(
        self, room_ids: Iterable[str], frame: bytes, *, exclude_user: str | None = None
    ) -> int:
        """Write ``frame`` once to each connection joined to any of the rooms."""

    # -- presence ---------------------------------------------------------------------------

    @abstractmethod
    async def set_device_status(
        self, user_id: str, conn_id: str, status: str | None
    ) -> PresenceChange:
        """Set one device's status (``None``: the device went away) and return the user's
        visible presence before and after, computed atomically."""

    @abstractmethod
    async def get_presence(self, user_ids: Iterable[str]) -> dict[str, PresenceInfo]: ...

    # -- rooms ------------------------------------------------------------------------------

    @abstractmethod
    async def join_room(
        self, room_id: str, member: Member, conn_id: str, capacity: int | None = None
    ) -> bool:
        """Join a connection to a room; ``True`` if it is the user's first device there.

        With ``capacity``, a user who is not yet a member is refused (``room_full``) when
        the room already has that many members; the check and the join are one step."""

    @abstractmethod
    async def leave_room(self, room_id: str, user_id: str, conn_id: str) -> bool:
        """Remove a connection from a room; ``True`` if it was the user's last device."""

    @abstractmethod
    async def room_members(self, room_id: str) -> list[Member]: ...

    @abstractmethod
    async def rooms_of_user(self, user_id: str) -> set[str]: ...

    @abstractmethod
    async def shares_room(self, user_a: str, user_b: str) -> bool: ...

    # -- room records (what the chat backend configured, permissions, media summary) -------

    @abstractmethod
    async def create_room(self, room: RoomInfo) -> bool:
        """Store a new room record; ``False`` (and nothing written) if one exists."""

    @abstractmethod
    async def get_room(self, room_id: str) -> RoomInfo | None: ...

    @abstractmethod
    async def update_room(
        self, room_id: str, mutate: Callable[[RoomInfo], T]
    ) -> tuple[RoomInfo, T]:
        """Like :meth:`update_call` for room records; ``KeyError`` if there is none."""

    @abstractmethod
    async def delete_room(self, room_id: str) -> RoomInfo | None:
        """Remove the record; returns it, or ``None`` if another caller removed it first."""

    @abstractmethod
    async def list_rooms(self) -> list[RoomInfo]: ...

    # -- control commands to the sockets of users, wherever they are ------------------------

    @abstractmethod
    async def send_control(self, user_ids: Iterable[str], command: dict[str, Any]) -> None:
        """Run ``command`` through :attr:`control_handler` on every node holding a socket
        of one of the users (the room API's kick, close, mute act on remote sockets)."""

    # -- the cluster: node-to-node messages, live nodes, where group call media lives -------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _run_node_message(self, message: dict[str, Any]) -> None:
        """Run :attr:`node_message_handler` on one message in its own task (a failure is
        logged and touches nothing else)."""
        handler = self.node_message_handler
        if handler is None:
            return

        async def run() -> None:
            try:
                await handler(message)
            except Exception:
                log.exception("node message failed", extra={"op": message.get("op")})

        self._spawn(run())

    @abstractmethod
    async def send_to_node(self, node_id: str, message: dict[str, Any]) -> bool:
        """Hand ``message`` to :attr:`node_message_handler` on ``node_id`` (this node
        included); ``False`` if no such node is listening. Messages from one sender to one
        node arrive in the order they were sent."""

    @abstractmethod
    async def cluster_nodes(self) -> dict[str, dict[str, Any]]:
        """The live nodes (this one included), each with the load it last published."""

    @abstractmethod
    async def publish_load_now(self) -> None:
        """Publish this node's load at once (draining started), not at the next beat."""

    @abstractmethod
    def placement_lock(self, room_id: str, ttl: float = 5.0) -> AbstractAsyncContextManager[None]:
        """Hold the short lock under which a room's media node is read, chosen and
        written, so two nodes never both place one room. The lock expires after ``ttl``
        seconds if its holder dies; waiting longer than ``ttl`` raises ``unavailable``."""

    @abstractmethod
    async def get_room_host(self, room_id: str) -> str | None:
        """The node hosting the room's group call media, if it has one."""

    @abstractmethod
    async def set_room_host(self, room_id: str, node_id: str) -> None:
        """Record the room's media node (call under :meth:`placement_lock`), and the room
        among the rooms that node hosts."""

    @abstractmethod
    async def release_room_host(self, room_id: str, node_id: str) -> bool:
        """Forget the room's media node if it is still ``node_id`` (compare and delete)."""

    # -- webhook queue: per ordering key, delivered by one node at a time --------------------

    @abstractmethod
    async def webhook_push(self, items: list[tuple[str, bytes]]) -> None:
        """Append ``(key, delivery)`` pairs, in order, to their keys' queues."""

    @abstractmethod
    async def webhook_claim(self, owner: str, limit: int, lease: float) -> list[str]:
        """Lease up to ``limit`` keys with pending deliveries that nobody holds."""

    @abstractmethod
    async def webhook_head(self, key: str) -> bytes | None:
        """The oldest pending delivery of a key (the one to send next)."""

    @abstractmethod
    async def webhook_ack(self, key: str, owner: str) -> bool:
        """Drop the head after it was delivered (or given up); ``False`` if ``owner`` lost
        the lease meanwhile, in which case nothing is dropped."""

    @abstractmethod
    async def webhook_renew(self, key: str, owner: str, lease: float) -> bool: ...

    @abstractmethod
    async def webhook_release(self, key: str, owner: str) -> None: ...

    # -- calls ------------------------------------------------------------------------------

    @abstractmethod
    async def create_call(self, call: Call) -> None: ...

    @abstractmethod
    async def get_call(self, call_id: str) -> Call | None: ...

    @abstractmethod
    async def update_call(self, call_id: str, mutate: Callable[[Call], T]) -> tuple[Call, T]:
        """Apply ``mutate`` to the stored call atomically and persist it.

        ``mutate`` may raise to abort without writing. Returns the updated call and what
        ``mutate`` returned. Raises ``KeyError`` if the call does not exist.
        """

    @abstractmethod
    async def calls_of_user(self, user_id: str) -> list[Call]: ...

    @abstractmethod
    async def delete_call(self, call_id: str) -> None: ...

    @abstractmethod
    async def list_calls(self) -> list[Call]: ...

    # -- typing indicators (shared so any node can expire them) -----------------------------

    @abstractmethod
    async def typing_start(
        self, room_id: str, user_id: str, conn_id: str, name: str, timeout: float, throttle: float
    ) -> bool:
        """Record that the user types (refreshing the expiry); ``True`` if it should be
        broadcast: the start, or a repeat at least ``throttle`` seconds after the last."""

    @abstractmethod
    async def typing_stop(self, room_id: str, user_id: str, conn_id: str | None) -> str | None:
        """End the typing state (only if ``conn_id`` owns it, unless ``None``); returns the
        display name to announce, or ``None`` if there was nothing to end."""

    @abstractmethod
    async def typing_expire(self, room_id: str, user_id: str) -> tuple[str | None, float | None]:
        """End the state if it expired: ``(name, None)``; still fresh: ``(None, seconds
        left)``; gone: ``(None, None)``."""

    # -- timers (any node may fire them, exactly one does) -----------------------------------

    @abstractmethod
    async def arm_timer(self, key: str, delay: float) -> None:
        """Schedule ``key`` to fire in ``delay`` seconds (re-arming replaces the deadline)."""

    @abstractmethod
    async def disarm_timer(self, key: str) -> None: ...

    @abstractmethod
    async def claim_due_timers(self, limit: int = 100) -> list[str]:
        """Remove and return timers that are due; each is returned to exactly one caller."""

    @abstractmethod
    async def close(self) -> None:
        """Release resources (connections to a shared store)."""
