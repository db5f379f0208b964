"""Every Redis key and channel name Switchboard uses, in one place.

Keys that one script or transaction changes together share a hash tag (the part in
braces), so they live in one slot and Redis Cluster accepts the operation: a user's
presence, rooms and calls are tagged ``{u:<user>}``, a room's members, devices and typing
``{r:<room>}``, a call ``{c:<call>}``, a node's records ``{n:<node>}``. Nothing changes keys
of two tags atomically; where two tags are touched (a join updates the room and the
user's room list), each step is idempotent and the node's re-publish repairs a half-done
pair. The prefix lets several deployments (or test runs) share one Redis.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "sb"

    # -- users ---------------------------------------------------------------------------
    def presence(self, user_id: str) -> str:
        """Hash: ``d:<conn>`` -> ``<status>|<node>`` per device, and ``seen`` -> ms."""
        return f"{self.prefix}:{{u:{user_id}}}:presence"

    def user_rooms(self, user_id: str) -> str:
        """Set: ``<room> <conn>`` per device of the user in a room (a device's leave takes
        its own entry out without knowing whether another device stays)."""
        return f"{self.prefix}:{{u:{user_id}}}:rooms"

    def sent_message(self, user_id: str, temp_id: str) -> str:
        """The claim of a chat message sent through the backend (``pending`` or its id)."""
        return f"{self.prefix}:{{u:{user_id}}}:sent:{temp_id}"

    def session_snapshot(self, user_id: str, session_id: str) -> str:
        """What a dropped Socket.IO session left for its client to resume."""
        return f"{self.prefix}:{{u:{user_id}}}:resume:{session_id}"

    def user_calls(self, user_id: str) -> str:
        return f"{self.prefix}:{{u:{user_id}}}:calls"

    # -- rooms ---------------------------------------------------------------------------
    def room_members(self, room_id: str) -> str:
        """Hash: user -> display name, for users with at least one device in the room."""
        return f"{self.prefix}:{{r:{room_id}}}:members"

    def room_devices(self, room_id: str, user_id: str) -> str:
        """Set of the user's connection ids joined to the room (first/last device)."""
        return f"{self.prefix}:{{r:{room_id}}}:dev:{user_id}"

    def typing(self, room_id: str) -> str:
        """Hash: user -> JSON typing state (owner connection, name, expiry, last sent)."""
        return f"{self.prefix}:{{r:{room_id}}}:typing"

    def room_info(self, room_id: str) -> str:
        """JSON room record (:class:`signaling.state.models.RoomInfo`)."""
        return f"{self.prefix}:{{r:{room_id}}}:info"

    def room_history(self, room_id: str) -> str:
        """List of the room's recorded events, oldest first (bounded, expiring)."""
        return f"{self.prefix}:{{r:{room_id}}}:history"

    def room_history_meta(self, room_id: str) -> str:
        """Hash: ``e`` -> the history's epoch, ``o`` -> the last offset (expiring)."""
        return f"{self.prefix}:{{r:{room_id}}}:history-meta"

    def room_host(self, room_id: str) -> str:
        """The node hosting the room's group call media (its SFU), while the call lives."""
        return f"{self.prefix}:{{r:{room_id}}}:host"

    def room_placing(self, room_id: str) -> str:
        """Short lock (expiring) held while a node reads, chooses and writes the host."""
        return f"{self.prefix}:{{r:{room_id}}}:placing"

    @property
    def rooms(self) -> str:
        """Sorted set of room ids with a record, by creation time (the room listing)."""
        return f"{self.prefix}:rooms"

    def room_channel(self, room_id: str) -> str:
        """The room's events. Tagged like the room's keys: on Redis Cluster the script
        that records an event publishes it (SPUBLISH) from the history's slot."""
        return f"{self.prefix}:{{r:{room_id}}}:events"

    # -- calls and timers ----------------------------------------------------------------
    def call(self, call_id: str) -> str:
        return f"{self.prefix}:{{c:{call_id}}}:call"

    @property
    def calls(self) -> str:
        """Sorted set of call ids by creation time (history listing and clean-up)."""
        return f"{self.prefix}:calls"

    @property
    def timers(self) -> str:
        """Sorted set of timer keys by due time (epoch ms); claimed by one node each."""
        return f"{self.prefix}:timers"

    # -- webhooks ------------------------------------------------------------------------
    # One tag for the whole queue: claiming scans the ready set and leases keys in one
    # script. Webhook traffic is far below what one slot serves.
    def webhook_queue(self, key: str) -> str:
        """List of pending deliveries of one ordering key (URL and room), oldest first."""
        return f"{self.prefix}:{{wh}}:q:{key}"

    @property
    def webhook_ready(self) -> str:
        """Sorted set of ordering keys with pending deliveries, by first push (epoch ms)."""
        return f"{self.prefix}:{{wh}}:ready"

    def webhook_lease(self, key: str) -> str:
        """Which node delivers a key right now (expires, so a dead node's keys move on)."""
        return f"{self.prefix}:{{wh}}:lease:{key}"

    # -- nodes ---------------------------------------------------------------------------
    @property
    def nodes(self) -> str:
        """Sorted set: node id -> last heartbeat (epoch ms). The expiry index of the
        cluster: a node whose score falls behind is dead and its entries are reaped."""
        return f"{self.prefix}:nodes"

    def node_info(self, node_id: str) -> str:
        return f"{self.prefix}:{{n:{node_id}}}:info"

    def node_conns(self, node_id: str) -> str:
        """Hash: connection id -> user id, for every socket the node holds."""
        return f"{self.prefix}:{{n:{node_id}}}:conns"

    def node_rooms(self, node_id: str) -> str:
        """Set of ``<conn> <room>`` memberships of the node's sockets."""
        return f"{self.prefix}:{{n:{node_id}}}:rooms"

    def node_hosted(self, node_id: str) -> str:
        """Set of rooms whose group call media the node hosts (recorded with each room's
        host record), so the node that reaps it can find rooms nobody else moves."""
        return f"{self.prefix}:{{n:{node_id}}}:hosted"

    def node_keys(self, node_id: str) -> list[str]:
        """What a node leaves behind (deleted when it stops or is reaped; the reaper mark
        stays, so a node cut off meanwhile learns it was declared dead)."""
        return [
            self.node_info(node_id),
            self.node_conns(node_id),
            self.node_rooms(node_id),
            self.node_hosted(node_id),
        ]

    def node_reaper(self, node_id: str) -> str:
        """Lock held by the one surviving node cleaning up after a dead node."""
        return f"{self.prefix}:{{n:{node_id}}}:reaper"

    def node_channel(self, node_id: str) -> str:
        return f"{self.prefix}:{{n:{node_id}}}:events"
