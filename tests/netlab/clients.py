"""Running :mod:`tests.netlab.agent` processes in lab namespaces, and the two call shapes
the lab checks: a 1:1 call between two placements and a group call in one room."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from tests.netlab.lab import python
from tests.netlab.topology import REPO, Internet, Placement, token


@dataclass
class Agent:
    name: str
    proc: asyncio.subprocess.Process
    log: Any
    events: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    async def start(cls, internet: Internet, placement: Placement, *args: str) -> Agent:
        name = f"{args[0]}-{placement.name}-{secrets.token_hex(2)}"
        log = (internet.workdir / f"agent-{name}.log").open("wb")
        proc = await asyncio.create_subprocess_exec(
            *internet.lab.command(placement.ns, python(), "-m", "tests.netlab.agent", *args),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            env=internet.agent_env,
            cwd=REPO,
        )
        return cls(name, proc, log)

    async def event(self, wanted: str, timeout: float = 60.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    raise AssertionError(f"agent {self.name} ended: {self.tail()}")
                event = json.loads(line)
                self.events.append(event)
                if event["event"] == "error":
                    raise AssertionError(f"agent {self.name}: {event['error']}\n{self.tail()}")
                if event["event"] == wanted:
                    return event

    def tail(self) -> str:
        self.log.flush()
        with open(self.log.name, errors="replace") as f:
            return f.read()[-2500:]

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(Exception):
                assert self.proc.stdin is not None
                self.proc.stdin.write(b"stop\n")
                await self.proc.stdin.drain()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self.log.close()


async def one_to_one(
    internet: Internet, a: Placement, b: Placement, timeout: float = 60.0
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A video call from ``a`` to ``b``; each end's report (decoded frames, selected pair)."""
    caller, callee = f"a-{secrets.token_hex(3)}", f"b-{secrets.token_hex(3)}"
    agents = []
    try:
        agents.append(
            await Agent.start(internet, b, "callee", "--url", b.ws_url, "--token", token(callee))
        )
        await agents[0].event("ready", timeout)
        agents.append(
            await Agent.start(
                internet,
                a,
                "caller",
                "--url",
                a.ws_url,
                "--token",
                token(caller),
                "--callee",
                callee,
            )
        )
        reports = await asyncio.gather(
            agents[1].event("report", timeout), agents[0].event("report", timeout)
        )
        return reports[0], reports[1]
    finally:
        await asyncio.gather(*(agent.stop() for agent in agents))


async def group_call(
    internet: Internet, placements: list[Placement], timeout: float = 60.0, *extra: str
) -> list[dict[str, Any]]:
    """Everyone joins one room, publishes and must decode everyone else."""
    room = internet.room()
    peers = str(len(placements) - 1)
    agents = []
    try:
        for placement in placements:
            user = f"{placement.name}-{secrets.token_hex(2)}"
            agents.append(
                await Agent.start(
                    internet,
                    placement,
                    "group",
                    "--url",
                    placement.ws_url,
                    "--token",
                    token(user),
                    "--room",
                    room,
                    "--peers",
                    peers,
                    *extra,
                )
            )
        return list(await asyncio.gather(*(agent.event("report", timeout) for agent in agents)))
    finally:
        await asyncio.gather(*(agent.stop() for agent in agents))
