"""1:1 and small-mesh call signaling: ringing, answer/reject/end, relay, grace period.

The rules are the plain functions of :mod:`signaling.call_transitions`; this service
applies them atomically through the call store, sends their notices after the change is
stored, keeps the ring and grace timers, and emits the call webhooks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from signaling import call_transitions as rules
from signaling.background import cancel_and_wait
from signaling.call_transitions import Notice
from signaling.overlap import overlapped
from signaling.protocol import ErrorCode, HubError
from signaling.state.models import Call, CallParticipant, RemoteConnection, now_ms

if TYPE_CHECKING:
    from config.hub import HubSettings
    from signaling import events
    from signaling.metrics import HubMetrics
    from signaling.state.calls import CallStore
    from signaling.state.delivery import Fanout
    from signaling.state.presence import PresenceStore
    from signaling.state.timers import TimerStore
    from signaling.webhooks.outbox import WebhookOutbox
    from signaling.websocket import Connection
    from turn.credentials import IceServers

log = logging.getLogger("switchboard.calls")

RING, GRACE = "ring", "grace"
Transition = Callable[[Call], list[Notice]]


class CallService:
    def __init__(
        self,
        *,
        store: CallStore,
        presence: PresenceStore,
        timers: TimerStore,
        fanout: Fanout,
        webhooks: WebhookOutbox,
        metrics: HubMetrics,
        settings: HubSettings,
        ice_servers: IceServers,
        overlap: bool,
    ) -> None:
        self.store = store
        self.overlap = overlap  # a ring's independent requests side by side
        self.presence = presence
        self.timers = timers
        self.fanout = fanout
        self.webhooks = webhooks
        self.metrics = metrics
        self.settings = settings
        self.ice_servers = ice_servers
        self._janitor: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._janitor = asyncio.create_task(self._forget_old_calls(), name="call-janitor")

    async def stop(self) -> None:
        await cancel_and_wait(self._janitor)

    # -- applying a transition ---------------------------------------------------------------

    async def _apply(self, call_id: str, transition: Transition) -> tuple[Call, list[Notice]]:
        before: dict[str, str] = {}
        was = "ended"

        def run(call: Call) -> list[Notice]:
            nonlocal was
            was = call.state
            before.clear()
            before.update((u, p.state) for u, p in call.participants.items())
            return transition(call)

        try:
            call, notices = await self.store.update(call_id, run)
        except KeyError:
            raise HubError(ErrorCode.CALL_NOT_FOUND, f"no call '{call_id}'") from None
        self._announce(call, was, before)
        if was != "ended" and call.state == "ended":
            await self._call_ended(call)
        await self._send(notices)
        return call, notices

    def _announce(self, call: Call, was: str, before: dict[str, str]) -> None:
        """Webhooks for what this update changed: answered, missed by someone, ended."""
        if not self.webhooks.urls:  # the common case: build no payloads at all
            return
        emit = self.webhooks.emit
        scope = call.conversation_id or f"call:{call.id}"
        if was == "ringing" and call.state == "active":
            emit("call_started", scope, {"call": call.to_wire()})
        for user_id, found in call.participants.items():
            if found.state == "missed" and before.get(user_id) == "ringing":
                emit(
                    "call_missed",
                    scope,
                    {"callId": call.id, "userId": user_id, "call": call.to_wire()},
                )
        if was != "ended" and call.state == "ended":
            data = {"duration": rules.call_duration(call), "reason": call.end_reason}
            emit("call_ended", scope, {**data, "call": call.to_wire()})

    async def _send(self, notices: list[Notice]) -> None:
        for notice in notices:
            if notice.conns:
                await self.fanout.to_conns(notice.conns, notice.type, notice.data)
            if notice.users:
                await self.fanout.to_users(
                    notice.users, notice.type, notice.data, exclude_conn=notice.exclude_conn
                )

    async def _call_ended(self, call: Call) -> None:
        self.metrics.calls_active.dec()
        grace = [(GRACE, [call.id, user_id]) for user_id in call.participants]
        await self.timers.disarm_all([*grace, (RING, [call.id])])
        log.info("call ended", extra={"call": call.id, "reason": call.end_reason})

    async def end_call(self, call_id: str, reason: str) -> Call:
        """End a call from the server side (its room was closed, the API ended it)."""
        call, _ = await self._apply(call_id, lambda c: rules.end_by_server(c, reason))
        return call

    @staticmethod
    def _incoming(call: Call) -> dict[str, Any]:
        caller = call.participants[call.caller_id]
        return {
            "callId": call.id,
            "callType": call.call_type,
            "conversationId": call.conversation_id,
            "from": {"userId": caller.user_id, "name": caller.name},
            "participants": list(call.participants),
        }

    # -- events ----------------------------------------------------------------------------

    async def on_initiate(self, conn: Connection, payload: events.CallInitiate) -> dict[str, Any]:
        me = conn.user_id
        callees = list(dict.fromkeys(u for u in payload.participants if u != me))
        if not callees:
            raise HubError(
                ErrorCode.INVALID_PAYLOAD, "data.participants: name at least one other user"
            )
        limit = self.settings.max_call_participants
        if len(callees) + 1 > limit:
            raise HubError(
                ErrorCode.TOO_MANY_PARTICIPANTS, f"a call holds at most {limit} participants"
            )
        room = payload.conversationId
        if room is not None and not conn.principal.may_join(room):
            raise HubError(ErrorCode.FORBIDDEN, f"token does not allow conversation '{room}'")
        now = now_ms()
        video = payload.callType == "video"
        call = Call(
            id="call_" + secrets.token_hex(10),
            call_type=payload.callType,
            caller_id=me,
            conversation_id=room,
            created_at=now,
        )
        call.participants[me] = CallParticipant(
            me, conn.name, "caller", "joined", conn_id=conn.id, video=video, joined_at=now
        )
        for user_id in callees:
            call.participants[user_id] = CallParticipant(
                user_id, user_id, "callee", "ringing", video=video
            )
        await self.store.create(call)
        self.metrics.calls_active.inc()
        # Once the record exists, the rest is independent: on Redis the first requests of
        # the ring's timer, the ring (the callees' nodes) and the callees' presence go out
        # in one write (one after another each took its own round trip). The timer is
        # queued before the ring, so no accept can overtake it (in memory it is armed
        # first).
        _, _, presence = await overlapped(
            self.overlap,
            self.timers.arm(RING, [call.id], self.settings.ring_timeout),
            self.fanout.to_users(callees, "call:incoming", self._incoming(call)),
            self.presence.get(callees),
        )
        log.info("call initiated", extra={"call": call.id, "user": me, "count": len(callees)})
        return {
            "callId": call.id,
            "call": call.to_wire(),
            "offline": [u for u in callees if presence[u].status == "offline"],
            "iceServers": self.ice_servers.for_user(me),
        }

    async def on_accept(self, conn: Connection, payload: events.CallRef) -> dict[str, Any]:
        call, _ = await self._apply(
            payload.callId, lambda c: rules.accept(c, conn.user_id, conn.id, conn.name)
        )
        return self._joined_ack(call, conn)

    def _joined_ack(self, call: Call, conn: Connection) -> dict[str, Any]:
        """The ack of a connection that joins the call (accept, reconnected): the call and
        fresh ICE servers (credentials may have expired while it rang or was away; its
        peer connections are all made anew)."""
        return {**call.to_wire(), "iceServers": self.ice_servers.for_user(conn.user_id)}

    async def on_reject(self, conn: Connection, payload: events.CallReject) -> dict[str, Any]:
        call, _ = await self._apply(
            payload.callId, lambda c: rules.reject(c, conn.user_id, conn.id, payload.reason)
        )
        return call.to_wire()

    async def on_end(self, conn: Connection, payload: events.CallRef) -> dict[str, Any]:
        call, _ = await self._apply(
            payload.callId, lambda c: rules.hang_up(c, conn.user_id, conn.id)
        )
        if call.state != "ended":  # (an ended call's timers are all gone already)
            await self.timers.disarm(GRACE, [call.id, conn.user_id])
        return call.to_wire()

    async def on_reconnected(self, conn: Connection, payload: events.CallRef) -> dict[str, Any]:
        await self.timers.disarm(GRACE, [payload.callId, conn.user_id])
        call, _ = await self._apply(
            payload.callId, lambda c: rules.resume(c, conn.user_id, conn.id)
        )
        return self._joined_ack(call, conn)

    def relay(self, type_: str, field_name: str) -> Callable[[Connection, Any], Awaitable[Any]]:
        """Handler relaying offer/answer/ICE to one other participant of the call."""

        async def handler(conn: Connection, payload: Any) -> dict[str, Any]:
            call = await self.store.peek(payload.callId)
            if call is None:
                raise HubError(ErrorCode.CALL_NOT_FOUND, f"no call '{payload.callId}'")
            rules.joined_here(call, conn.user_id, conn.id)
            target = call.participants.get(payload.to)
            if target is None or payload.to == conn.user_id:
                raise HubError(
                    ErrorCode.NOT_IN_CALL, f"'{payload.to}' is not another participant of this call"
                )
            value = getattr(payload, field_name)
            if hasattr(value, "model_dump"):
                value = value.model_dump(exclude_none=True)
            data = {"callId": call.id, "from": conn.user_id, field_name: value}
            if target.state == "joined" and target.conn_id:
                delivered = await self.fanout.to_conns([target.conn_id], type_, data)
            elif target.state == "ringing":
                delivered = await self.fanout.to_users([target.user_id], type_, data)
            else:
                delivered = 0
            if not delivered:
                raise HubError(
                    ErrorCode.PEER_UNAVAILABLE,
                    f"'{payload.to}' is {target.state} and not reachable",
                )
            return {}

        return handler

    def toggle(
        self, kind: str, fixed: bool | None = None
    ) -> Callable[[Connection, Any], Awaitable[Any]]:
        """Handler for media/screen toggles, stored on the participant and told to peers."""

        async def handler(conn: Connection, payload: Any) -> dict[str, Any]:
            enabled = fixed if fixed is not None else payload.enabled
            await self._apply(
                payload.callId,
                lambda c: rules.toggle(c, conn.user_id, conn.id, kind, enabled, fixed),
            )
            return {}

        return handler

    # -- connection events and timers --------------------------------------------------------

    async def device_connected(self, conn: Connection) -> None:
        """Re-deliver calls still ringing for this user (a phone woken by a push)."""
        for call in await self.store.of_user(conn.user_id):
            found = call.participants.get(conn.user_id)
            if call.state != "ended" and found is not None and found.state == "ringing":
                conn.send("call:incoming", self._incoming(call))

    async def connection_gone(self, conn: Connection | RemoteConnection) -> None:
        grace = self.settings.call_grace_period
        for call in await self.store.of_user(conn.user_id):
            found = call.participants.get(conn.user_id)
            if call.state == "ended" or found is None or found.conn_id != conn.id:
                continue
            if found.state != "joined":
                continue
            try:
                _, notices = await self._apply(
                    call.id,
                    lambda c: rules.connection_lost(c, conn.user_id, conn.id, grace) or [],
                )
            except HubError:
                continue
            if notices:
                await self.timers.arm(GRACE, [call.id, conn.user_id], grace)

    async def grace_over(self, call_id: str, user_id: str) -> None:
        with contextlib.suppress(HubError):
            await self._apply(call_id, lambda c: rules.grace_over(c, user_id))

    async def ring_expired(self, call_id: str) -> None:
        with contextlib.suppress(HubError):
            await self._apply(call_id, rules.ring_expired)

    async def _forget_old_calls(self) -> None:
        """Ended calls stay queryable for ``call_history_ttl`` seconds, then go."""
        ttl_ms = self.settings.call_history_ttl * 1000
        interval = max(1.0, min(60.0, self.settings.call_history_ttl / 2))
        while True:
            await asyncio.sleep(interval)
            cutoff = now_ms() - ttl_ms
            for call in await self.store.list_all():
                if call.state == "ended" and (call.ended_at or 0) <= cutoff:
                    await self.store.delete(call.id)
