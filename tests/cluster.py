"""Several real ``switchboard serve`` processes sharing one real redis-server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from signaling.client import HubClient
from signaling.tokens import mint_token
from tests.redis_server import free_port

SWITCHBOARD = str(Path(sys.executable).with_name("switchboard"))
SECRET = "cluster-secret-0123456789abcdef0123456789"

# Short timers so node death, ring timeouts and grace periods fit in a test.
CLUSTER_ENV = {
    "SWITCHBOARD_JWT_SECRET": SECRET,
    "SWITCHBOARD_NODE_HEARTBEAT_INTERVAL": "0.3",
    "SWITCHBOARD_NODE_DEAD_AFTER": "1.5",
    "SWITCHBOARD_RING_TIMEOUT": "5",
    "SWITCHBOARD_CALL_GRACE_PERIOD": "3",
    "SWITCHBOARD_TYPING_TIMEOUT": "0.6",
    "SWITCHBOARD_TYPING_THROTTLE": "0.2",
    "SWITCHBOARD_PRESENCE_GRACE": "0.5",
    "SWITCHBOARD_RATE_LIMIT_PER_SECOND": "1000",
    "SWITCHBOARD_RATE_LIMIT_BURST": "2000",
    "SWITCHBOARD_DRAIN_TIMEOUT": "3",
    "SWITCHBOARD_LOG_FORMAT": "text",
}


@dataclass
class Node:
    name: str
    port: int
    proc: asyncio.subprocess.Process
    log: Path
    clients: list[HubClient] = field(default_factory=list)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def connect(self, user: str, *rooms: str, **claims: Any) -> HubClient:
        client = await HubClient.connect(self.ws_url, token(user, **claims))
        self.clients.append(client)
        for room in rooms:
            await client.request("room:join", {"roomId": room})
        return client

    def signal(self, sig: int) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)

    async def wait(self, timeout: float = 15.0) -> int:
        return await asyncio.wait_for(self.proc.wait(), timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def token(user: str, *, name: str | None = None, **claims: Any) -> str:
    return mint_token(SECRET, user, name=name or user.capitalize(), **claims)


def node_env(redis_url: str, prefix: str, node_id: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update(CLUSTER_ENV)
    env.update(
        SWITCHBOARD_REDIS_URL=redis_url,
        SWITCHBOARD_REDIS_PREFIX=prefix,
        SWITCHBOARD_NODE_ID=node_id,
    )
    env.update(extra)
    return env


async def start_node(
    tmp: Path, redis_url: str, prefix: str, name: str, *, wait: bool = True, **extra: str
) -> Node:
    port = free_port()
    log = tmp / f"node-{name}-{port}.log"
    proc = await asyncio.create_subprocess_exec(
        SWITCHBOARD,
        "serve",
        "--port",
        str(port),
        cwd=tmp,
        env=node_env(redis_url, prefix, name, **extra),
        stdout=log.open("wb"),
        stderr=asyncio.subprocess.STDOUT,
    )
    node = Node(name, port, proc, log)
    if wait:
        await wait_healthy(node)
    return node


async def wait_healthy(node: Node, timeout: float = 20.0) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    async with aiohttp.ClientSession() as http:
        while asyncio.get_running_loop().time() < deadline:
            if node.proc.returncode is not None:
                raise AssertionError(f"node {node.name} exited:\n{node.output()}")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"{node.base}/health") as resp:
                    if resp.status == 200:
                        return await resp.json()
            await asyncio.sleep(0.1)
    raise AssertionError(f"node {node.name} not healthy:\n{node.output()}")


#: Group call settings for nodes of media tests (real UDP on loopback, short timers).
MEDIA_ENV = {
    "SWITCHBOARD_SFU_LISTEN_IPS": "127.0.0.1",
    "SWITCHBOARD_SFU_ICE_TIMEOUT": "8",
    "SWITCHBOARD_SFU_STATS_LOG_INTERVAL": "0",
    "SWITCHBOARD_SFU_RECONNECT_GRACE": "10",
}
MEDIA_PORT_BASE = 42000


class Cluster:
    """Nodes started by a test, all stopped (and their clients closed) afterwards."""

    def __init__(self, tmp: Path, redis_url: str) -> None:
        self.tmp = tmp
        self.redis_url = redis_url
        self.prefix = "c" + secrets.token_hex(5)
        self.nodes: list[Node] = []
        self._ports: dict[str, int] = {}

    async def start(self, name: str, *, wait: bool = True, **extra: str) -> Node:
        node = await start_node(self.tmp, self.redis_url, self.prefix, name, wait=wait, **extra)
        self.nodes.append(node)
        return node

    async def start_media(self, name: str, *, media: bool = True, **extra: str) -> Node:
        """A node for group call tests: ``media=False`` makes it signaling-only; each
        node gets its own 1000-port UDP range (``ports``), so a candidate's port says
        which node it belongs to."""
        low, high = self.ports(name)
        env = {
            **MEDIA_ENV,
            "SWITCHBOARD_SFU_HOST_ROOMS": "true" if media else "false",
            "SWITCHBOARD_SFU_UDP_MIN_PORT": str(low),
            "SWITCHBOARD_SFU_UDP_MAX_PORT": str(high),
            **extra,
        }
        return await self.start(name, **env)

    def ports(self, name: str) -> tuple[int, int]:
        if name not in self._ports:
            self._ports[name] = MEDIA_PORT_BASE + 1000 * len(self._ports)
        return self._ports[name], self._ports[name] + 999

    async def close(self) -> None:
        for node in self.nodes:
            for client in node.clients:
                with contextlib.suppress(Exception):
                    await client.close()
            node.signal(signal.SIGKILL)
            with contextlib.suppress(Exception):
                await node.wait()
