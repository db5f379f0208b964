"""1:1 and small-mesh call signaling: ringing, answer/reject/end, relay, grace period.

Every state change is a pure function applied through ``HubState.update_call`` (atomic in
any implementation). It returns the notices to send; they are delivered only after the
change is stored, so no client hears about a transition that did not happen.

Participant states: ``ringing`` -> ``joined`` (accept) | ``rejected`` | ``missed``;
``joined`` -> ``reconnecting`` (socket lost, grace period) -> ``joined`` | ``left``.
A call ends when nobody is ringing and at most one participant is still in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from signaling.protocol import ErrorCode, HubError
from signaling.state.models import Call, CallParticipant, RemoteConnection, now_ms

if TYPE_CHECKING:
    from signaling import events
    from signaling.connection import Connection
    from signaling.hub import Hub

log = logging.getLogger("switchboard.calls")

IN_CALL = ("joined", "reconnecting")


@dataclass(slots=True)
class Notice:
    """One event for several targets: connections, and/or every device of some users."""

    type: str
    data: dict[str, Any]
    conns: list[str] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    exclude_conn: str | None = None


def _peer_conns(call: Call, exclude_user: str | None = None) -> list[str]:
    return [
        p.conn_id
        for p in call.participants.values()
        if p.state == "joined" and p.conn_id and p.user_id != exclude_user
    ]


def _stop_other_devices(call: Call, conn: Connection, reason: str) -> Notice:
    """``call:cancelled`` for the user's devices other than ``conn`` (they stop ringing)."""
    data = {"callId": call.id, "reason": reason}
    return Notice("call:cancelled", data, users=[conn.user_id], exclude_conn=conn.id)


def _finish_if_over(call: Call, reason: str, notices: list[Notice]) -> bool:
    """End the call if nobody rings and at most one participant remains in it."""
    in_call = call.in_state(*IN_CALL)
    ringing = call.in_state("ringing")
    if not (len(in_call) == 0 or (len(in_call) == 1 and not ringing)):
        return False
    if call.state == "ringing" and reason == "hangup":
        reason = "cancelled"
    _end(call, reason, notices)
    return True


def _end(call: Call, reason: str, notices: list[Notice]) -> None:
    """End the call now: whoever is in it gets ``call:ended``, whoever rings stops."""
    in_call = call.in_state(*IN_CALL)
    ringing = call.in_state("ringing")
    ended = now_ms()
    call.state = "ended"
    call.ended_at = ended
    call.end_reason = reason
    data = {"callId": call.id, "reason": reason, "duration": call_duration(call)}
    conns = [p.conn_id for p in in_call if p.state == "joined" and p.conn_id]
    notices.append(Notice("call:ended", data, conns=conns, users=[p.user_id for p in ringing]))
    for p in ringing:
        p.state = "missed"
    for p in in_call:
        p.state = "left"
        p.left_reason = reason


def call_duration(call: Call) -> float:
    """Seconds from the answer to the end (0 for a call never answered)."""
    if not call.answered_at:
        return 0.0
    return round(((call.ended_at or now_ms()) - call.answered_at) / 1000, 3)


RING, GRACE = "ring", "grace"


class CallService:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._janitor: asyncio.Task[None] | None = None
        hub.timers.on(RING, self._ring_expired)
        hub.timers.on(GRACE, self._grace_over)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._janitor = asyncio.create_task(self._forget_old_calls(), name="call-janitor")

    async def stop(self) -> None:
        if self._janitor is not None:
            self._janitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._janitor

    # -- helpers ---------------------------------------------------------------------------

    async def _apply(
        self, call_id: str, mutate: Callable[[Call, list[Notice]], Any]
    ) -> tuple[Call, Any]:
        notices: list[Notice] = []
        before: dict[str, str] = {}
        was = "ended"

        def run(call: Call) -> Any:
            nonlocal was
            was = call.state
            before.clear()
            before.update((u, p.state) for u, p in call.participants.items())
            notices.clear()
            return mutate(call, notices)

        try:
            call, result = await self.hub.state.update_call(call_id, run)
        except KeyError:
            raise HubError(ErrorCode.CALL_NOT_FOUND, f"no call '{call_id}'") from None
        self._announce(call, was, before)
        if was != "ended" and call.state == "ended":
            await self._call_ended(call)
        await self._send(notices)
        return call, result

    def _announce(self, call: Call, was: str, before: dict[str, str]) -> None:
        """Webhooks for what this update changed: answered, missed by someone, ended."""
        if not self.hub.webhooks.urls:  # the common case: build no payloads at all
            return
        emit = self.hub.webhooks.emit
        scope = call.conversation_id or f"call:{call.id}"
        if was == "ringing" and call.state == "active":
            emit("call_started", scope, {"call": call.to_wire()})
        for user_id, member in call.participants.items():
            if member.state == "missed" and before.get(user_id) == "ringing":
                emit(
                    "call_missed",
                    scope,
                    {"callId": call.id, "userId": user_id, "call": call.to_wire()},
                )
        if was != "ended" and call.state == "ended":
            data = {"duration": call_duration(call), "reason": call.end_reason}
            emit("call_ended", scope, {**data, "call": call.to_wire()})

    async def end_call(self, call_id: str, reason: str) -> Call:
        """End a call from the server side (its room was closed, the API ended it)."""

        def end(call: Call, notices: list[Notice]) -> None:
            if call.state == "ended":
                raise HubError(ErrorCode.INVALID_STATE, f"call has ended ({call.end_reason})")
            _end(call, reason, notices)

        call, _ = await self._apply(call_id, end)
        return call

    async def _send(self, notices: list[Notice]) -> None:
        for notice in notices:
            if notice.conns:
                await self.hub.to_conns(notice.conns, notice.type, notice.data)
            if notice.users:
                await self.hub.to_users(
                    notice.users, notice.type, notice.data, exclude_conn=notice.exclude_conn
                )

    async def _call_ended(self, call: Call) -> None:
        self.hub.metrics.calls_active.dec()
        for user_id in call.participants:
            await self.hub.timers.disarm(GRACE, call.id, user_id)
        await self.hub.timers.disarm(RING, call.id)
        log.info("call ended", extra={"call": call.id, "reason": call.end_reason})

    @staticmethod
    def _member(call: Call, user_id: str) -> CallParticipant:
        if call.state == "ended":
            raise HubError(ErrorCode.INVALID_STATE, f"call has ended ({call.end_reason})")
        member = call.participants.get(user_id)
        if member is None:
            raise HubError(ErrorCode.NOT_IN_CALL, "you are not a participant of this call")
        return member

    @staticmethod
    def _joined_here(call: Call, conn: Connection) -> CallParticipant:
        member = CallService._member(call, conn.user_id)
        if member.state != "joined" or member.conn_id != conn.id:
            raise HubError(
                ErrorCode.NOT_IN_CALL, "this connection has not joined the call (accept it first)"
            )
        return member

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
        limit = self.hub.settings.max_call_participants
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
            me,
            conn.principal.name,
            "caller",
            "joined",
            conn_id=conn.id,
            video=video,
            joined_at=now,
        )
        for user_id in callees:
            call.participants[user_id] = CallParticipant(
                user_id, user_id, "callee", "ringing", video=video
            )
        await self.hub.state.create_call(call)
        self.hub.metrics.calls_active.inc()
        await self.hub.timers.arm(self.hub.settings.ring_timeout, RING, call.id)
        await self.hub.to_users(callees, "call:incoming", self._incoming(call))
        presence = await self.hub.state.get_presence(callees)
        log.info("call initiated", extra={"call": call.id, "user": me, "count": len(callees)})
        return {
            "callId": call.id,
            "call": call.to_wire(),
            "offline": [u for u in callees if presence[u].status == "offline"],
            "iceServers": self.hub.settings.ice_servers(me),
        }

    async def on_accept(self, conn: Connection, payload: events.CallRef) -> dict[str, Any]:
        def accept(call: Call, notices: list[Notice]) -> None:
            member = self._member(call, conn.user_id)
            if member.state != "ringing":
                raise HubError(ErrorCode.INVALID_STATE, f"cannot accept: you are {member.state}")
            member.state = "joined"
            member.conn_id = conn.id
            member.name = conn.principal.name
            member.joined_at = now_ms()
            if call.state == "ringing":
                call.state = "active"
                call.answered_at = member.joined_at
            data = {"callId": call.id, "userId": conn.user_id, "name": conn.principal.name}
            notices.append(Notice("call:accepted", data, conns=_peer_conns(call, conn.user_id)))
            notices.append(_stop_other_devices(call, conn, "answered_elsewhere"))

        call, _ = await self._apply(payload.callId, accept)
        return {**call.to_wire(), "iceServers": self.hub.settings.ice_servers(conn.user_id)}

    async def on_reject(self, conn: Connection, payload: events.CallReject) -> dict[str, Any]:
        def reject(call: Call, notices: list[Notice]) -> None:
            member = self._member(call, conn.user_id)
            if member.state != "ringing":
                raise HubError(ErrorCode.INVALID_STATE, f"cannot reject: you are {member.state}")
            self._decline(call, member, conn, payload.reason, notices)

        call, _ = await self._apply(payload.callId, reject)
        return call.to_wire()

    def _decline(
        self,
        call: Call,
        member: CallParticipant,
        conn: Connection,
        reason: str | None,
        notices: list[Notice],
    ) -> None:
        member.state = "rejected"
        member.left_reason = reason or "rejected"
        notices.append(_stop_other_devices(call, conn, "rejected_elsewhere"))
        data = {"callId": call.id, "userId": conn.user_id, "reason": reason}
        notices.append(Notice("call:rejected", data, conns=_peer_conns(call, conn.user_id)))
        _finish_if_over(call, "rejected", notices)

    async def on_end(self, conn: Connection, payload: events.CallRef) -> dict[str, Any]:
        def end(call: Call, notices: list[Notice]) -> None:
            member = self._member(call, conn.user_id)
            if member.state == "ringing":
                self._decline(call, member, conn, None, notices)
                return
            if member.state not in IN_CALL:
                raise HubError(ErrorCode.INVALID_STATE, f"cannot end: you are {member.state}")
            member.state = "left"
            member.left_reason = "hangup"
            if not _finish_if_over(call, "hangup", notices):
                data = {"callId": call.id, "userId": conn.user_id, "reason": "hangup"}
                notices.append(Notice("call:participant-left", data, conns=_peer_conns(call)))

        call, _ = await self._apply(payload.callId, end)
        await self.hub.timers.disarm(GRACE, call.id, conn.user_id)
        return call.to_wire()

    async def on_reconnected(self, conn: Connection, payload: events.CallRef) -> dict[str, Any]:
        def resume(call: Call, notices: list[Notice]) -> None:
            member = self._member(call, conn.user_id)
            if member.state not in IN_CALL:
                raise HubError(
                    ErrorCode.INVALID_STATE,
                    f"cannot resume: you are {member.state} (grace period over?)",
                )
            old_conn = member.conn_id
            member.state = "joined"
            member.conn_id = conn.id
            if old_conn and old_conn != conn.id:
                notices.append(
                    Notice(
                        "call:cancelled",
                        {"callId": call.id, "reason": "resumed_elsewhere"},
                        conns=[old_conn],
                    )
                )
            data = {"callId": call.id, "userId": conn.user_id}
            notices.append(
                Notice("call:peer-reconnected", data, conns=_peer_conns(call, conn.user_id))
            )

        await self.hub.timers.disarm(GRACE, payload.callId, conn.user_id)
        call, _ = await self._apply(payload.callId, resume)
        return call.to_wire()

    def relay(self, type_: str, field_name: str) -> Callable[[Connection, Any], Awaitable[Any]]:
        """Handler relaying offer/answer/ICE to one other participant of the call."""

        async def handler(conn: Connection, payload: Any) -> dict[str, Any]:
            call = await self.hub.state.get_call(payload.callId)
            if call is None:
                raise HubError(ErrorCode.CALL_NOT_FOUND, f"no call '{payload.callId}'")
            self._joined_here(call, conn)
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
                delivered = await self.hub.to_conns([target.conn_id], type_, data)
            elif target.state == "ringing":
                delivered = await self.hub.to_users([target.user_id], type_, data)
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
        out_type = {
            "audio": "peer:audio-toggled",
            "video": "peer:video-toggled",
            "screen": "screen:sharing-started" if fixed else "screen:sharing-stopped",
        }[kind]

        async def handler(conn: Connection, payload: Any) -> dict[str, Any]:
            enabled = fixed if fixed is not None else payload.enabled

            def apply(call: Call, notices: list[Notice]) -> None:
                member = self._joined_here(call, conn)
                setattr(member, kind, enabled)
                data: dict[str, Any] = {"callId": call.id, "userId": conn.user_id}
                if fixed is None:
                    data["enabled"] = enabled
                notices.append(Notice(out_type, data, conns=_peer_conns(call, conn.user_id)))

            await self._apply(payload.callId, apply)
            return {}

        return handler

    # -- connection events and timers --------------------------------------------------------

    async def device_connected(self, conn: Connection) -> None:
        """Re-deliver calls still ringing for this user (a phone woken by a push)."""
        for call in await self.hub.state.calls_of_user(conn.user_id):
            member = call.participants.get(conn.user_id)
            if call.state != "ended" and member is not None and member.state == "ringing":
                conn.send("call:incoming", self._incoming(call))

    async def connection_gone(self, conn: Connection | RemoteConnection) -> None:
        grace = self.hub.settings.call_grace_period
        for call in await self.hub.state.calls_of_user(conn.user_id):
            member = call.participants.get(conn.user_id)
            if call.state == "ended" or member is None or member.conn_id != conn.id:
                continue
            if member.state != "joined":
                continue

            def lose(call: Call, notices: list[Notice]) -> bool:
                member = call.participants[conn.user_id]
                if call.state == "ended" or member.state != "joined" or member.conn_id != conn.id:
                    return False
                member.state = "reconnecting"
                data = {"callId": call.id, "userId": conn.user_id, "gracePeriod": grace}
                notices.append(
                    Notice("call:peer-disconnected", data, conns=_peer_conns(call, conn.user_id))
                )
                return True

            try:
                _, lost = await self._apply(call.id, lose)
            except HubError:
                continue
            if lost:
                await self.hub.timers.arm(grace, GRACE, call.id, conn.user_id)

    async def _grace_over(self, call_id: str, user_id: str) -> None:
        def drop(call: Call, notices: list[Notice]) -> None:
            member = call.participants.get(user_id)
            if call.state == "ended" or member is None or member.state != "reconnecting":
                return
            member.state = "left"
            member.left_reason = "connection_lost"
            if not _finish_if_over(call, "connection_lost", notices):
                data = {"callId": call.id, "userId": user_id, "reason": "connection_lost"}
                notices.append(Notice("call:participant-left", data, conns=_peer_conns(call)))

        with contextlib.suppress(HubError):
            await self._apply(call_id, drop)

    async def _ring_expired(self, call_id: str) -> None:
        def expire(call: Call, notices: list[Notice]) -> None:
            if call.state == "ended":
                return
            caller = call.participants[call.caller_id]
            for member in call.in_state("ringing"):
                member.state = "missed"
                notices.append(
                    Notice(
                        "call:missed",
                        {
                            "callId": call.id,
                            "callType": call.call_type,
                            "conversationId": call.conversation_id,
                            "from": {"userId": caller.user_id, "name": caller.name},
                        },
                        users=[member.user_id],
                    )
                )
                if call.state == "active":
                    data = {"callId": call.id, "userId": member.user_id, "reason": "no_answer"}
                    notices.append(Notice("call:participant-left", data, conns=_peer_conns(call)))
            _finish_if_over(call, "no_answer", notices)

        with contextlib.suppress(HubError):
            await self._apply(call_id, expire)

    async def _forget_old_calls(self) -> None:
        """Ended calls stay queryable for ``call_history_ttl`` seconds, then go."""
        ttl_ms = self.hub.settings.call_history_ttl * 1000
        interval = max(1.0, min(60.0, self.hub.settings.call_history_ttl / 2))
        while True:
            await asyncio.sleep(interval)
            cutoff = now_ms() - ttl_ms
            for call in await self.hub.state.list_calls():
                if call.state == "ended" and (call.ended_at or 0) <= cutoff:
                    await self.hub.state.delete_call(call.id)
