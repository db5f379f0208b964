"""The load measure and the least-loaded choice (pure functions, no server)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from media.load import NodeLoad, least_loaded
from media.placement import no_capacity_message


def load(node: str, **data: object) -> NodeLoad:
    return NodeLoad.from_wire(node, {"hostsMedia": True, **data})


def test_least_loaded_prefers_low_cpu_and_few_forwarded_tracks():
    idle = load("idle", cpu=0.05)
    busy = load("busy", cpu=0.6)
    forwarding = load("fwd", cpu=0.05, tracks=200, participants=20)
    assert least_loaded([busy, idle, forwarding]).node == "idle"
    # A fresh room counts before it shows any CPU: the next one goes elsewhere.
    assert least_loaded([load("a", rooms=2), load("b", rooms=1)]).node == "b"


def test_closed_nodes_are_skipped_with_their_reason():
    nodes = [
        load("drain", draining=True),
        load("rooms", rooms=4, limits={"rooms": 4}),
        load("people", participants=10, limits={"participants": 10}),
        load("cpu", cpu=1.9, limits={"cpu": 1.8}),
        NodeLoad.from_wire("edge", {"hostsMedia": False}),
    ]
    assert least_loaded(nodes) is None
    message = no_capacity_message(nodes)
    for expected in (
        "drain: draining",
        "rooms: at its room limit (4)",
        "people: at its participant limit (10)",
        "cpu: at its CPU limit (1.90 of 1.8 cores)",
        "edge: hosts no group call media",
    ):
        assert expected in message
    assert least_loaded([*nodes, load("ok", cpu=1.0)]).node == "ok"
    assert least_loaded([load("a"), load("b")], exclude={"a"}).node == "b"


@given(
    st.lists(
        st.tuples(
            st.floats(0, 4),
            st.integers(0, 500),
            st.integers(0, 200),
            st.integers(0, 50),
            st.booleans(),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_choice_is_open_and_no_open_node_scores_lower(rows):
    nodes = [
        load(f"n{i}", cpu=c, tracks=t, participants=p, rooms=r, draining=d)
        for i, (c, t, p, r, d) in enumerate(rows)
    ]
    chosen = least_loaded(nodes)
    open_nodes = [n for n in nodes if n.full() is None]
    if not open_nodes:
        assert chosen is None
        return
    assert chosen is not None and chosen.full() is None
    assert all(round(chosen.score, 3) <= round(n.score, 3) for n in open_nodes)
