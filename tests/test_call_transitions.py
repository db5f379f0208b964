"""Unit tests of the call rules as plain functions (signaling.call_transitions): each
transition's resulting states and the notices it asks to send, and invariants that hold
whatever sequence of transitions a call goes through."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from signaling import call_transitions as rules
from signaling.protocol import ErrorCode, HubError
from signaling.state.models import Call, CallParticipant


def make_call(*callees: str, state: str = "ringing") -> Call:
    call = Call("call_1", "video", "alice", "team", 1_000)
    call.participants["alice"] = CallParticipant(
        "alice", "Alice", "caller", "joined", conn_id="c_n.alice", joined_at=1_000
    )
    for user in callees:
        call.participants[user] = CallParticipant(user, user, "callee", "ringing")
    call.state = state  # type: ignore[assignment]
    return call


def kinds(notices: list[rules.Notice]) -> list[str]:
    return [n.type for n in notices]


def test_accept_answers_the_call_and_stops_the_other_devices():
    call = make_call("bob")
    notices = rules.accept(call, "bob", "c_n.bob", "Bob")
    assert call.state == "active" and call.answered_at is not None
    bob = call.participants["bob"]
    assert (bob.state, bob.conn_id, bob.name) == ("joined", "c_n.bob", "Bob")
    accepted, cancelled = notices
    assert (accepted.type, accepted.conns) == ("call:accepted", ["c_n.alice"])
    assert (cancelled.type, cancelled.users, cancelled.exclude_conn) == (
        "call:cancelled",
        ["bob"],
        "c_n.bob",
    )
    assert cancelled.data["reason"] == "answered_elsewhere"


@pytest.mark.parametrize(
    ("user", "code"),
    [("bob", ErrorCode.INVALID_STATE), ("mallory", ErrorCode.NOT_IN_CALL)],
)
def test_accept_refuses_who_is_not_ringing(user, code):
    call = make_call("bob")
    rules.accept(call, "bob", "c_n.bob", "Bob")
    with pytest.raises(HubError) as err:
        rules.accept(call, user, "c_n.x", "X")
    assert err.value.code is code


def test_rejecting_a_one_to_one_call_ends_it():
    call = make_call("bob")
    notices = rules.reject(call, "bob", "c_n.bob", "busy")
    assert kinds(notices) == ["call:cancelled", "call:rejected", "call:ended"]
    assert call.state == "ended" and call.end_reason == "rejected"
    assert call.participants["bob"].state == "rejected"
    assert call.participants["bob"].left_reason == "busy"
    assert notices[2].conns == ["c_n.alice"]
    with pytest.raises(HubError) as err:
        rules.reject(call, "bob", "c_n.bob", None)
    assert err.value.code is ErrorCode.INVALID_STATE


def test_caller_hanging_up_while_ringing_cancels():
    call = make_call("bob", "carol")
    notices = rules.hang_up(call, "alice", "c_n.alice")
    assert call.end_reason == "cancelled" and call.state == "ended"
    (ended,) = notices
    assert ended.type == "call:ended" and sorted(ended.users) == ["bob", "carol"]
    assert {p.state for u, p in call.participants.items() if u != "alice"} == {"missed"}
    assert call.participants["alice"].state == "left"
    assert rules.call_duration(call) == 0.0


def test_leaving_a_group_call_tells_the_others_and_it_goes_on():
    call = make_call("bob", "carol")
    rules.accept(call, "bob", "c_n.bob", "Bob")
    rules.accept(call, "carol", "c_n.carol", "Carol")
    (left,) = rules.hang_up(call, "carol", "c_n.carol")
    assert left.type == "call:participant-left" and sorted(left.conns) == [
        "c_n.alice",
        "c_n.bob",
    ]
    assert call.state == "active"
    (ended,) = rules.hang_up(call, "bob", "c_n.bob")
    assert ended.type == "call:ended" and call.end_reason == "hangup"


def test_a_lost_connection_gets_the_grace_period_and_may_resume():
    call = make_call("bob")
    rules.accept(call, "bob", "c_n.bob", "Bob")
    assert rules.connection_lost(call, "bob", "c_n.other", 30) is None  # not its socket
    (disconnected,) = rules.connection_lost(call, "bob", "c_n.bob", 30)
    assert disconnected.type == "call:peer-disconnected"
    assert disconnected.data["gracePeriod"] == 30 and call.participants["bob"].state == (
        "reconnecting"
    )
    notices = rules.resume(call, "bob", "c_n.bob2")
    assert kinds(notices) == ["call:cancelled", "call:peer-reconnected"]
    assert notices[0].conns == ["c_n.bob"] and notices[0].data["reason"] == "resumed_elsewhere"
    assert call.participants["bob"].conn_id == "c_n.bob2"


def test_grace_over_ends_a_call_left_with_one_participant():
    call = make_call("bob")
    rules.accept(call, "bob", "c_n.bob", "Bob")
    rules.connection_lost(call, "bob", "c_n.bob", 30)
    assert kinds(rules.grace_over(call, "bob")) == ["call:ended"]
    assert call.end_reason == "connection_lost" and call.participants["bob"].state == "left"
    assert rules.grace_over(call, "bob") == []  # a late timer does nothing
    with pytest.raises(HubError):
        rules.resume(call, "bob", "c_n.bob3")


def test_ring_timeout_misses_whoever_still_rings():
    call = make_call("bob")
    notices = rules.ring_expired(call)
    assert kinds(notices) == ["call:missed", "call:ended"]
    assert notices[0].users == ["bob"] and notices[0].data["from"]["userId"] == "alice"
    assert call.end_reason == "no_answer" and call.participants["bob"].state == "missed"
    assert rules.ring_expired(call) == []


def test_ring_timeout_in_an_answered_group_call_keeps_it_going():
    call = make_call("bob", "carol")
    rules.accept(call, "bob", "c_n.bob", "Bob")
    notices = rules.ring_expired(call)
    assert kinds(notices) == ["call:missed", "call:participant-left"]
    assert notices[1].data["reason"] == "no_answer" and call.state == "active"


@pytest.mark.parametrize(
    ("kind", "fixed", "event"),
    [
        ("audio", None, "peer:audio-toggled"),
        ("video", None, "peer:video-toggled"),
        ("screen", True, "screen:sharing-started"),
        ("screen", False, "screen:sharing-stopped"),
    ],
)
def test_toggles_are_told_to_the_peers(kind, fixed, event):
    call = make_call("bob")
    rules.accept(call, "bob", "c_n.bob", "Bob")
    enabled = fixed if fixed is not None else False
    (notice,) = rules.toggle(call, "bob", "c_n.bob", kind, enabled, fixed)
    assert notice.type == event and notice.conns == ["c_n.alice"]
    assert getattr(call.participants["bob"], kind) is enabled
    assert ("enabled" in notice.data) is (fixed is None)
    with pytest.raises(HubError) as err:
        rules.toggle(call, "bob", "c_n.elsewhere", kind, enabled, fixed)
    assert err.value.code is ErrorCode.NOT_IN_CALL


def test_the_server_ends_a_call_once():
    call = make_call("bob")
    rules.accept(call, "bob", "c_n.bob", "Bob")
    call.answered_at = 1_000
    assert kinds(rules.end_by_server(call, "room_closed")) == ["call:ended"]
    call.ended_at = 3_500
    assert rules.call_duration(call) == 2.5
    with pytest.raises(HubError):
        rules.end_by_server(call, "room_closed")


# -- invariants over any sequence of transitions ------------------------------------------

USERS = ("alice", "bob", "carol")
step = st.tuples(
    st.sampled_from(["accept", "reject", "hang_up", "lost", "resume", "grace", "ring", "end"]),
    st.sampled_from(USERS),
)


def apply(call: Call, action: str, user: str) -> None:
    conn = f"c_n.{user}"
    moves = {
        "accept": lambda: rules.accept(call, user, conn, user),
        "reject": lambda: rules.reject(call, user, conn, None),
        "hang_up": lambda: rules.hang_up(call, user, conn),
        "lost": lambda: rules.connection_lost(call, user, conn, 30),
        "resume": lambda: rules.resume(call, user, conn + "b"),
        "grace": lambda: rules.grace_over(call, user),
        "ring": lambda: rules.ring_expired(call),
        "end": lambda: rules.end_by_server(call, "closed"),
    }
    try:
        moves[action]()
    except HubError:
        pass  # refused transitions change nothing observable here


@given(st.lists(step, max_size=25))
def test_invariants_hold_after_any_sequence(steps):
    call = make_call("bob", "carol")
    for action, user in steps:
        apply(call, action, user)
        states = {p.state for p in call.participants.values()}
        if call.state == "ended":
            assert not states & {"ringing", "joined", "reconnecting"}
            assert call.end_reason is not None and call.ended_at is not None
        else:
            # An open call has someone ringing, or at least two people in it.
            in_call = call.in_state("joined", "reconnecting")
            assert call.in_state("ringing") or len(in_call) >= 2
        if call.state == "active":
            assert call.answered_at is not None
        for p in call.participants.values():
            if p.state == "joined":
                assert p.conn_id is not None
