"""Call state transitions as plain functions: each changes a :class:`Call` in place and
returns the notices to send, or raises :class:`HubError` to refuse (nothing is written).

:class:`signaling.calls.CallService` applies them through ``CallStore.update`` (atomic in
any store) and sends the notices only after the change is stored, so no client hears about
a transition that did not happen. Keeping them free of I/O lets the rules be tested alone.

Participant states: ``ringing`` -> ``joined`` (accept) | ``rejected`` | ``missed``;
``joined`` -> ``reconnecting`` (socket lost, grace period) -> ``joined`` | ``left``.
A call ends when nobody is ringing and at most one participant is still in it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from signaling.protocol import ErrorCode, HubError
from signaling.state.models import Call, CallParticipant, now_ms

IN_CALL = ("joined", "reconnecting")
TOGGLE_EVENTS = {
    ("audio", None): "peer:audio-toggled",
    ("video", None): "peer:video-toggled",
    ("screen", True): "screen:sharing-started",
    ("screen", False): "screen:sharing-stopped",
}


@dataclass(slots=True)
class Notice:
    """One event for several targets: connections, and/or every device of some users."""

    type: str
    data: dict[str, Any]
    conns: list[str] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    exclude_conn: str | None = None


def call_duration(call: Call) -> float:
    """Seconds from the answer to the end (0 for a call never answered)."""
    if not call.answered_at:
        return 0.0
    return round(((call.ended_at or now_ms()) - call.answered_at) / 1000, 3)


def peer_conns(call: Call, exclude_user: str | None = None) -> list[str]:
    return [
        p.conn_id
        for p in call.participants.values()
        if p.state == "joined" and p.conn_id and p.user_id != exclude_user
    ]


def _stop_other_devices(call: Call, user_id: str, conn_id: str, reason: str) -> Notice:
    """``call:cancelled`` for the user's devices other than ``conn_id`` (they stop ringing)."""
    data = {"callId": call.id, "reason": reason}
    return Notice("call:cancelled", data, users=[user_id], exclude_conn=conn_id)


def member(call: Call, user_id: str) -> CallParticipant:
    if call.state == "ended":
        raise HubError(ErrorCode.INVALID_STATE, f"call has ended ({call.end_reason})")
    found = call.participants.get(user_id)
    if found is None:
        raise HubError(ErrorCode.NOT_IN_CALL, "you are not a participant of this call")
    return found


def joined_here(call: Call, user_id: str, conn_id: str) -> CallParticipant:
    found = member(call, user_id)
    if found.state != "joined" or found.conn_id != conn_id:
        raise HubError(
            ErrorCode.NOT_IN_CALL, "this connection has not joined the call (accept it first)"
        )
    return found


def end(call: Call, reason: str) -> list[Notice]:
    """End the call now: whoever is in it gets ``call:ended``, whoever rings stops."""
    in_call = call.in_state(*IN_CALL)
    ringing = call.in_state("ringing")
    call.state = "ended"
    call.ended_at = now_ms()
    call.end_reason = reason
    data = {"callId": call.id, "reason": reason, "duration": call_duration(call)}
    conns = [p.conn_id for p in in_call if p.state == "joined" and p.conn_id]
    notices = [Notice("call:ended", data, conns=conns, users=[p.user_id for p in ringing])]
    for p in ringing:
        p.state = "missed"
    for p in in_call:
        p.state = "left"
        p.left_reason = reason
    return notices


def finish_if_over(call: Call, reason: str) -> list[Notice] | None:
    """End the call if nobody rings and at most one participant remains in it; the
    notices of the end, or ``None`` if the call goes on."""
    in_call = call.in_state(*IN_CALL)
    ringing = call.in_state("ringing")
    if not (len(in_call) == 0 or (len(in_call) == 1 and not ringing)):
        return None
    if call.state == "ringing" and reason == "hangup":
        reason = "cancelled"
    return end(call, reason)


def end_by_server(call: Call, reason: str) -> list[Notice]:
    """The room was closed, or the API ended the call."""
    if call.state == "ended":
        raise HubError(ErrorCode.INVALID_STATE, f"call has ended ({call.end_reason})")
    return end(call, reason)


def accept(call: Call, user_id: str, conn_id: str, name: str) -> list[Notice]:
    found = member(call, user_id)
    if found.state != "ringing":
        raise HubError(ErrorCode.INVALID_STATE, f"cannot accept: you are {found.state}")
    found.state = "joined"
    found.conn_id = conn_id
    found.name = name
    found.joined_at = now_ms()
    if call.state == "ringing":
        call.state = "active"
        call.answered_at = found.joined_at
    data = {"callId": call.id, "userId": user_id, "name": name}
    return [
        Notice("call:accepted", data, conns=peer_conns(call, user_id)),
        _stop_other_devices(call, user_id, conn_id, "answered_elsewhere"),
    ]


def _decline(call: Call, found: CallParticipant, conn_id: str, reason: str | None) -> list[Notice]:
    found.state = "rejected"
    found.left_reason = reason or "rejected"
    user_id = found.user_id
    data = {"callId": call.id, "userId": user_id, "reason": reason}
    notices = [
        _stop_other_devices(call, user_id, conn_id, "rejected_elsewhere"),
        Notice("call:rejected", data, conns=peer_conns(call, user_id)),
    ]
    return notices + (finish_if_over(call, "rejected") or [])


def reject(call: Call, user_id: str, conn_id: str, reason: str | None) -> list[Notice]:
    found = member(call, user_id)
    if found.state != "ringing":
        raise HubError(ErrorCode.INVALID_STATE, f"cannot reject: you are {found.state}")
    return _decline(call, found, conn_id, reason)


def hang_up(call: Call, user_id: str, conn_id: str) -> list[Notice]:
    """``call:end`` from a participant: a ringing one declines, one in the call leaves."""
    found = member(call, user_id)
    if found.state == "ringing":
        return _decline(call, found, conn_id, None)
    if found.state not in IN_CALL:
        raise HubError(ErrorCode.INVALID_STATE, f"cannot end: you are {found.state}")
    return _leave(call, found, "hangup")


def _leave(call: Call, found: CallParticipant, reason: str) -> list[Notice]:
    """A participant left: the call ends if that leaves it over, else the others hear."""
    found.state = "left"
    found.left_reason = reason
    ended = finish_if_over(call, reason)
    if ended is not None:
        return ended
    data = {"callId": call.id, "userId": found.user_id, "reason": reason}
    return [Notice("call:participant-left", data, conns=peer_conns(call))]


def resume(call: Call, user_id: str, conn_id: str) -> list[Notice]:
    """``call:reconnected`` from a new connection within the grace period."""
    found = member(call, user_id)
    if found.state not in IN_CALL:
        raise HubError(
            ErrorCode.INVALID_STATE, f"cannot resume: you are {found.state} (grace period over?)"
        )
    old_conn = found.conn_id
    found.state = "joined"
    found.conn_id = conn_id
    notices = []
    if old_conn and old_conn != conn_id:
        cancelled = {"callId": call.id, "reason": "resumed_elsewhere"}
        notices.append(Notice("call:cancelled", cancelled, conns=[old_conn]))
    data = {"callId": call.id, "userId": user_id}
    notices.append(Notice("call:peer-reconnected", data, conns=peer_conns(call, user_id)))
    return notices


def toggle(
    call: Call, user_id: str, conn_id: str, kind: str, enabled: bool, fixed: bool | None
) -> list[Notice]:
    """A media toggle (``fixed`` is set for screen sharing start/stop), told to the peers."""
    found = joined_here(call, user_id, conn_id)
    setattr(found, kind, enabled)
    data: dict[str, Any] = {"callId": call.id, "userId": user_id}
    if fixed is None:
        data["enabled"] = enabled
    return [Notice(TOGGLE_EVENTS[(kind, fixed)], data, conns=peer_conns(call, user_id))]


def connection_lost(call: Call, user_id: str, conn_id: str, grace: float) -> list[Notice] | None:
    """The participant's socket is gone: it is ``reconnecting`` for the grace period.
    ``None`` if this connection is not (or no longer) the one in the call."""
    found = call.participants.get(user_id)
    if call.state == "ended" or found is None or found.state != "joined":
        return None
    if found.conn_id != conn_id:
        return None
    found.state = "reconnecting"
    data = {"callId": call.id, "userId": user_id, "gracePeriod": grace}
    return [Notice("call:peer-disconnected", data, conns=peer_conns(call, user_id))]


def grace_over(call: Call, user_id: str) -> list[Notice]:
    """The grace period ran out without a resume: the participant has left."""
    found = call.participants.get(user_id)
    if call.state == "ended" or found is None or found.state != "reconnecting":
        return []
    return _leave(call, found, "connection_lost")


def ring_expired(call: Call) -> list[Notice]:
    """Nobody answered in time: everyone still ringing missed the call."""
    if call.state == "ended":
        return []
    caller = call.participants[call.caller_id]
    notices = []
    for found in call.in_state("ringing"):
        found.state = "missed"
        missed = {
            "callId": call.id,
            "callType": call.call_type,
            "conversationId": call.conversation_id,
            "from": {"userId": caller.user_id, "name": caller.name},
        }
        notices.append(Notice("call:missed", missed, users=[found.user_id]))
        if call.state == "active":
            data = {"callId": call.id, "userId": found.user_id, "reason": "no_answer"}
            notices.append(Notice("call:participant-left", data, conns=peer_conns(call)))
    return notices + (finish_if_over(call, "no_answer") or [])
