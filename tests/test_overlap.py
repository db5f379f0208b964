"""Independent requests side by side where the state is remote, in order where it is not
(``signaling.overlap``): in memory, tasks would only cost event-loop turns, and a
connection's hooks run before its next frame is read."""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

import pytest

from signaling.overlap import overlapped
from tests.loop_turns import Turns

STATE_KINDS = ("memory",)


async def answer(log: list[str], name: str, gate: asyncio.Event | None = None) -> str:
    log.append(f"{name} started")
    if gate is not None:
        await gate.wait()
    log.append(f"{name} done")
    return name


async def test_in_order_requests_that_complete_at_once_cost_no_loop_turn() -> None:
    log: list[str] = []
    with Turns() as turns:
        results = await overlapped(False, answer(log, "a"), answer(log, "b"))
        assert turns.count == 0
    assert results == ["a", "b"]
    assert log == ["a started", "a done", "b started", "b done"]
    with Turns() as turns:  # what side by side costs the same requests
        await overlapped(True, answer(log, "a"), answer(log, "b"))
        assert turns.count >= 1


async def test_side_by_side_requests_all_start_before_any_finishes() -> None:
    log: list[str] = []
    gate = asyncio.Event()
    running = asyncio.ensure_future(overlapped(True, answer(log, "a", gate), answer(log, "b")))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert log[:1] == ["a started"] and "b done" in log and "a done" not in log
    gate.set()
    assert await running == ["a", "b"]


async def test_a_failure_in_order_stops_the_rest_without_leaving_them_unawaited() -> None:
    log: list[str] = []

    async def fail() -> Any:
        raise KeyError("gone")

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "coroutine ... was never awaited" would fail here
        with pytest.raises(KeyError):
            await overlapped(False, fail(), answer(log, "b"))
    assert log == []


async def test_a_memory_hubs_connect_hooks_take_no_loop_turn(hub_factory: Any) -> None:
    """The hooks of a connect (presence, calls, token) finish before the node reads the
    client's next frame; in memory they take no loop turn, which on a media node busy
    with packets each cost milliseconds (a join's ``sfu:join`` waits behind them)."""
    hub = await hub_factory()
    node = hub.hub
    assert not node.state.overlap and not node.hub.overlap
    await hub.connect("alice")
    (server_conn,) = node.state.delivery.local_connections_of("alice")
    # connected again, as a device resuming: the hooks are idempotent
    with Turns() as turns:
        await node.hub.on_connect(server_conn)
        assert turns.count == 0
    node.hub.overlap = True  # what running them as tasks costs
    with Turns() as turns:
        await node.hub.on_connect(server_conn)
        assert turns.count >= 2
