"""Overload on Redis is back-pressure, never loss: two nodes flooded past what they can
deliver, for 20 s, deliver every event late rather than never.

The load is the signaling benchmark's fan-out (its Node load generator, 1,000 clients in
rooms of 50 toggling typing, every toggle due to the 49 others), run here with a long
drain. Two nodes and Redis share a twentieth of one core (a cgroup's CPU quota): on a
whole core they deliver more than the generator can offer, and on a tenth they now
deliver about 72k of the 98k deliveries/s offered, too close to be an overload. On a
twentieth the offered load is about three times what they deliver (the printed line
says how much). What is asserted is behaviour, not speed: no error (no
``unavailable``), no connection lost, no delivery missing.
"""

from __future__ import annotations

import pytest

from benchmarks import signaling

FLOOD = {"clients": 1000, "room_size": 50, "rate": 2, "duration": 20, "drain_max": 200}
#: The share of one CPU the two nodes and Redis get.
SERVER_CPU_SHARE = 0.05


@pytest.mark.timeout(500)
def test_two_nodes_flooded_past_capacity_deliver_everything_late_not_never():
    signaling.ensure_peers()
    stack = signaling.Stack(
        "fanout", "redis2", "switchboard", dict(FLOOD), procs=2, server_cpu_share=SERVER_CPU_SHARE
    )
    with stack:
        run = stack.window()
    offered = FLOOD["clients"] * FLOOD["rate"] * (FLOOD["room_size"] - 1)
    drained_in = (run["drain_ms"] or 0) / 1000
    capacity = run["deliveries"] / (FLOOD["duration"] + drained_in)
    print(
        f"offered {offered}/s, delivered {capacity:.0f}/s over the flood and its drain "
        f"({offered / capacity:.1f}x capacity); drained {drained_in:.1f} s after the load; "
        f"p99 {run['latency_p99_ms']:.0f} ms, errors {run['error_codes']}"
    )
    assert run["error_codes"] == {}
    assert run["connections_held_at_end"] == run["connections"] == FLOOD["clients"]
    assert run["drain_ms"] is not None, f"{run['dropped']} deliveries never arrived"
    assert run["dropped"] == 0
    assert run["deliveries"] == run["expected_deliveries"] > 0.9 * offered * FLOOD["duration"]
    assert offered > 1.5 * capacity, "not an overload: raise the rate or lower the share"
