"""Fixtures: a real hub served on a free loopback port, and clients speaking real WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import secrets
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import hypothesis.internal.observability  # noqa: F401  (imported early, see below)
import pytest
import uvloop
from aiohttp.test_utils import TestServer

from benchmarks.redis_cluster import RedisClusterServer
from config import Settings
from signaling.api.auth import mint_api_token
from signaling.client import HubClient
from signaling.state import State
from signaling.state.memory import MemoryState
from signaling.tokens import mint_token
from switchboard.app import NODE_KEY, create_app
from switchboard.cli import tune_gc
from tests.redis_server import RedisServer

SECRET = "test-secret-0123456789abcdef0123456789"
API_KEY = "test-key"
API_SECRET = "test-api-secret-0123456789abcdef012345"

# Short timers so expiry, ring timeout and grace period are testable in well under a second.
FAST = {
    "jwt_secret": SECRET,
    "api_key": API_KEY,
    "api_secret": API_SECRET,
    "ring_timeout": 1.0,
    "call_grace_period": 0.8,
    "typing_timeout": 0.4,
    "typing_throttle": 0.2,
    "presence_grace": 0.3,
    "rate_limit_per_second": 500.0,
    "rate_limit_burst": 1000,
}


# hypothesis's pytest plugin imports this module in its terminal summary. Compiling it
# that late has crashed CPython 3.11.7 ("AST constructor recursion depth mismatch") after
# the aiortc tests; importing it up front avoids the late compile.


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Safety net: end aiortc decoder threads a test left running, and say so.

    They are not daemon threads, so one leaked peer connection would keep the test
    process (and CI) alive forever after the last test.
    """
    import gc
    import sys
    import threading

    from aiortc import RTCRtpReceiver

    if not any(t.name.endswith("-decoder") for t in threading.enumerate()):
        return
    leaked = 0
    for obj in gc.get_objects():
        if isinstance(obj, RTCRtpReceiver) and obj._RTCRtpReceiver__decoder_thread is not None:
            obj._RTCRtpReceiver__stop_decoder()
            leaked += 1
    print(f"\nconftest: stopped {leaked} leaked aiortc decoder thread(s)", file=sys.stderr)


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
    """Run every async test on uvloop, the loop production uses."""
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the session; tests keep apart by key prefix."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own: a test may stop, pause or count it without
    disturbing any other."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        os.kill(server.proc.pid, signal.SIGCONT)  # (a test that paused it)
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServer]:
    """One real 3-primary Redis Cluster for the session; tests keep apart by prefix."""
    cluster = RedisClusterServer(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture
def served_collector() -> Iterator[None]:
    """The garbage collector policy ``switchboard serve`` gives a node, for one test.

    The hubs of these tests share the pytest process, whose heap grows over the suite. With
    Python's default thresholds its full collections came every few seconds and took about
    200 ms late in the suite; one landed in a Chromium layer switch and Chromium counted a
    freeze. A served node freezes its start-up and collects young objects every 50,000
    allocations (``tune_gc``); tests that time media run their in-process hub the same way.
    """
    before = gc.get_threshold()
    tune_gc()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def make_state(kind: str, request: pytest.FixtureRequest) -> State:
    """``memory``, ``redis`` (one redis-server) or ``cluster`` (a Redis Cluster)."""
    if kind == "memory":
        return MemoryState()
    from signaling.state.redis import RedisState

    if kind == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        return RedisState(server.url, prefix="t" + secrets.token_hex(6))
    if kind == "cluster":
        cluster: RedisClusterServer = request.getfixturevalue("redis_cluster")
        return RedisState(cluster.url, prefix="t" + secrets.token_hex(6))
    raise ValueError(kind)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every hub test runs against each state implementation. Modules testing node-local
    parts (the SFU, TURN) narrow this with ``STATE_KINDS = ("memory",)``."""
    if "state_kind" in metafunc.fixturenames:
        kinds = getattr(metafunc.module, "STATE_KINDS", ("memory", "redis"))
        metafunc.parametrize("state_kind", kinds)


def unrecorded(data: dict[str, Any]) -> dict[str, Any]:
    """A recorded room event's data without its history ``position``."""
    return {k: v for k, v in data.items() if k != "position"}


@dataclass
class Hub:
    """A running hub plus helpers to mint tokens and connect clients to it."""

    server: TestServer
    settings: Settings
    clients: list[HubClient] = field(default_factory=list)

    @property
    def base(self) -> str:
        return str(self.server.make_url("/")).rstrip("/")

    @property
    def ws_url(self) -> str:
        return str(self.server.make_url("/ws"))

    @property
    def hub(self) -> Any:
        """The node behind the server (its state, metrics, hub and SFU)."""
        return self.server.app[NODE_KEY]

    def token(self, user: str, **claims: Any) -> str:
        return mint_token(SECRET, user, **claims)

    def api(self, session: aiohttp.ClientSession) -> ApiClient:
        return ApiClient(session, self.base)

    async def connect(
        self,
        user: str,
        *,
        rooms: tuple[str, ...] | None = None,
        token: str | None = None,
        **kwargs: Any,
    ) -> HubClient:
        tok = token or self.token(user, **({"rooms": rooms} if rooms is not None else {}))
        client = await HubClient.connect(self.ws_url, tok, **kwargs)
        self.clients.append(client)
        return client

    async def connect_in(self, user: str, room: str, **kwargs: Any) -> HubClient:
        client = await self.connect(user, **kwargs)
        await client.request("room:join", {"roomId": room})
        return client


@dataclass
class ApiClient:
    """Room API calls over real HTTP, signed like the chat backend signs them."""

    session: aiohttp.ClientSession
    base: str
    last_headers: Any = None

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> tuple[int, Any]:
        auth = {"Authorization": f"Bearer {token or mint_api_token(API_KEY, API_SECRET)}"}
        async with self.session.request(
            method,
            self.base + "/api/v1" + path,
            json=body,
            headers={**auth, **(headers or {})},
            **kwargs,
        ) as response:
            self.last_headers = response.headers
            data = await response.json() if response.content_type == "application/json" else None
            return response.status, data

    async def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.call("GET", path, **kw)

    async def post(self, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        return await self.call("POST", path, body, **kw)

    async def patch(self, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        return await self.call("PATCH", path, body, **kw)

    async def delete(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.call("DELETE", path, **kw)


@pytest.fixture
async def hub_factory(
    state_kind: str, request: pytest.FixtureRequest
) -> AsyncIterator[Callable[..., Any]]:
    started: list[Hub] = []

    async def start(**overrides: Any) -> Hub:
        settings = Settings(**{**FAST, **overrides})
        app = create_app(settings, make_state(state_kind, request))
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        hub = Hub(server, settings)
        started.append(hub)
        return hub

    yield start
    # Bounded, so a teardown that cannot finish fails the test instead of hanging the run.
    for hub in started:
        for client in hub.clients:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), 10)
        await asyncio.wait_for(hub.server.close(), 30)


@pytest.fixture
async def hub(hub_factory: Callable[..., Any]) -> Hub:
    return await hub_factory()


@pytest.fixture
async def backend() -> AsyncIterator[Any]:
    """A real local chat backend for the message proxy (:mod:`tests.message_backend`)."""
    from tests.message_backend import MessageBackend  # it imports this module

    b = await MessageBackend().start()
    yield b
    await b.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def api(hub: Hub, http: aiohttp.ClientSession) -> ApiClient:
    return hub.api(http)
