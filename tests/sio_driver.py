"""Real socket.io-client (npm, pinned) sockets driven from a test: one Node process per
test runs ``tests/socketio/driver.mjs``; each socket is named by a ``ref``."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from benchmarks.signaling import PEERS, ensure_peers

DRIVER = Path(__file__).resolve().parent / "socketio" / "driver.mjs"


class NodeSocketIO:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self._reqs = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: dict[str, list[tuple[str, list[Any]]]] = {}
        self.history: dict[str, list[str]] = {}
        #: Every event of each socket, in order, with its arguments.
        self.log: dict[str, list[tuple[str, list[Any]]]] = {}
        self._arrived = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls) -> NodeSocketIO:
        await asyncio.to_thread(ensure_peers)
        proc = await asyncio.create_subprocess_exec(
            "node",
            str(DRIVER),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PEERS": str(PEERS)},
            limit=1 << 22,
        )
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            msg = orjson.loads(line)
            if "req" in msg:
                fut = self._pending.pop(msg["req"], None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
                continue
            self.events.setdefault(msg["ref"], []).append((msg["event"], msg["args"]))
            self.history.setdefault(msg["ref"], []).append(msg["event"])
            self.log.setdefault(msg["ref"], []).append((msg["event"], msg["args"]))
            self._arrived.set()

    def _send(self, cmd: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(orjson.dumps(cmd) + b"\n")

    def connect(self, ref: str, url: str, **opts: Any) -> None:
        self._send({"op": "connect", "ref": ref, "url": url, "opts": opts})

    async def connected(self, ref: str, url: str, token: str, **opts: Any) -> list[Any]:
        """Connect with the token in the auth payload; the ``session:ready`` data."""
        self.connect(ref, url, auth={"token": token}, **opts)
        return (await self.expect(ref, "session:ready", timeout=10))[0]

    async def emit(self, ref: str, event: str, data: Any = None, *, ack: bool = False) -> Any:
        """Emit; with ``ack``, the server's ack arguments (``[reply]``)."""
        req = next(self._reqs)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[req] = fut
        cmd = {"op": "emit", "ref": ref, "req": req, "event": event, "data": data, "ack": ack}
        self._send(cmd)
        reply = await asyncio.wait_for(fut, 15)
        if "error" in reply:
            raise TimeoutError(reply["error"])
        return reply["ack"]

    def disconnect(self, ref: str) -> None:
        self._send({"op": "disconnect", "ref": ref})

    def drop(self, ref: str, url: str | None = None) -> None:
        """Close the socket's transport (as a lost network would); it reconnects by
        itself, to ``url`` if given."""
        self._send({"op": "drop", "ref": ref, "url": url})

    def point(self, ref: str, url: str) -> None:
        """Reconnect the socket to ``url`` from now on (a load balancer's next pick)."""
        self._send({"op": "point", "ref": ref, "url": url})

    async def expect(
        self,
        ref: str,
        event: str,
        timeout: float = 5.0,
        where: Callable[[list[Any]], bool] | None = None,
    ) -> list[Any]:
        """Remove and return the arguments of the first buffered or arriving ``event``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            queue = self.events.get(ref, [])
            for i, (name, args) in enumerate(queue):
                if name == event and (where is None or where(args)):
                    del queue[i]
                    return args
            remaining = deadline - loop.time()
            if remaining <= 0:
                seen = [name for name, _ in queue]
                raise TimeoutError(f"{ref}: no '{event}' within {timeout}s (buffered: {seen})")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)

    def take(self, ref: str, event: str) -> list[list[Any]]:
        queue = self.events.get(ref, [])
        found = [args for name, args in queue if name == event]
        self.events[ref] = [(n, a) for n, a in queue if n != event]
        return found

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self._send({"op": "exit"})
            await asyncio.wait_for(self.proc.wait(), 5)
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        self._reader.cancel()
        with contextlib.suppress(BaseException):
            await self._reader
