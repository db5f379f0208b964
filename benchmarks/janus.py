"""Janus (Debian package ``janus``) as the SFU anchor: a private configuration, and a
small client for its HTTP API and VideoRoom plugin.

The benchmark writes a throw-away configuration folder: only the HTTP transport and the
VideoRoom plugin are loaded (symlinked into private folders), the API listens on
127.0.0.1, and nothing is logged below warnings. Rooms are created through the API.

Janus gathers ICE candidates with libnice, which never offers a loopback address; its
media therefore uses this machine's own IPv4 address (``local_ipv4``), ICE limited to it,
and the benchmark's clients bind to the same address. The kernel delivers traffic between
a host's own addresses locally: nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.common import start_pinned

LIB = Path("/usr/lib/x86_64-linux-gnu/janus")
_transactions = itertools.count(1)


def local_ipv4() -> str:
    """This host's first global IPv4 address (from ``ip``; no packet is sent)."""
    out = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True
    ).stdout.split()
    addresses = [w.split("/")[0] for i, w in enumerate(out) if i and out[i - 1] == "inet"]
    if not addresses:
        raise SystemExit("janus needs a non-loopback IPv4 address for its media")
    return addresses[0]


def write_config(folder: Path, port: int, rtp_ports: str, media_ip: str) -> Path:
    """A minimal janus.jcfg tree; returns the main config file."""
    plugins, transports = folder / "plugins", folder / "transports"
    plugins.mkdir()
    transports.mkdir()
    (plugins / "libjanus_videoroom.so").symlink_to(LIB / "plugins" / "libjanus_videoroom.so")
    (transports / "libjanus_http.so").symlink_to(LIB / "transports" / "libjanus_http.so")
    main = folder / "janus.jcfg"
    main.write_text(
        f"""general: {{
    configs_folder = "{folder}"
    plugins_folder = "{plugins}"
    transports_folder = "{transports}"
    debug_level = 3
    session_timeout = 120
}}
media: {{
    rtp_port_range = "{rtp_ports}"
}}
nat: {{
    ice_enforce_list = "{media_ip}"
    ignore_mdns = true
}}
"""
    )
    (folder / "janus.transport.http.jcfg").write_text(
        f"""general: {{
    json = "compact"
    base_path = "/janus"
    http = true
    port = {port}
    ip = "127.0.0.1"
}}
admin: {{
    admin_http = false
}}
"""
    )
    (folder / "janus.plugin.videoroom.jcfg").write_text("general: {\n}\n")
    return main


def start_janus(port: int, media_ip: str) -> tuple[subprocess.Popen[bytes], Path]:
    """Start janus pinned to the first CPU with a private config; returns (process, folder)."""
    binary = shutil.which("janus")
    if binary is None or not (LIB / "plugins" / "libjanus_videoroom.so").exists():
        raise SystemExit("janus is missing (apt-get install janus)")
    folder = Path(tempfile.mkdtemp(prefix="bench-janus-"))
    config = write_config(folder, port, "40000-49999", media_ip)
    cmd = [binary, "-C", str(config), "-F", str(folder), "-o", "-E", media_ip, "-d", "3"]
    with open(folder / "janus.log", "wb") as log:
        return start_pinned(cmd, dict(os.environ), port, stdout=log), folder


class JanusSession:
    """One Janus session; a long-poll task hands each plugin event to the request that
    caused it, by transaction. Events no request waits for (``publishers``, ``leaving``
    notices, which a room with several publishers sends at any moment) are dropped."""

    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http = http
        self.base = base
        self.session_url = ""
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._poller: asyncio.Task[None] | None = None

    async def _post(
        self, url: str, body: dict[str, Any], transaction: str | None = None
    ) -> dict[str, Any]:
        body = {**body, "transaction": transaction or str(next(_transactions))}
        async with self.http.post(url, json=body) as response:
            reply = await response.json(content_type=None)
        if reply.get("janus") == "error":
            raise RuntimeError(f"janus: {reply['error']}")
        return reply

    async def create(self) -> None:
        reply = await self._post(self.base, {"janus": "create"})
        self.session_url = f"{self.base}/{reply['data']['id']}"
        self._poller = asyncio.create_task(self._poll())

    async def _poll(self) -> None:
        while True:
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with self.http.get(f"{self.session_url}?maxev=20") as response:
                    events = await response.json(content_type=None)
                for event in events if isinstance(events, list) else [events]:
                    waiter = self._waiting.pop(str(event.get("transaction")), None)
                    if waiter is not None and event.get("janus") == "event":
                        if not waiter.done():
                            waiter.set_result(event)

    async def attach(self) -> int:
        reply = await self._post(
            self.session_url, {"janus": "attach", "plugin": "janus.plugin.videoroom"}
        )
        return int(reply["data"]["id"])

    async def request(self, handle: int, body: dict[str, Any]) -> dict[str, Any]:
        """A synchronous plugin request (create, list...): the answer is in the reply."""
        reply = await self._post(f"{self.session_url}/{handle}", {"janus": "message", "body": body})
        data = reply["plugindata"]["data"]
        if "error" in data:
            raise RuntimeError(f"videoroom: {data['error']}")
        return data

    async def message(
        self, handle: int, body: dict[str, Any], jsep: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """An asynchronous request (join, publish, start): wait for its event."""
        payload: dict[str, Any] = {"janus": "message", "body": body}
        if jsep is not None:
            payload["jsep"] = jsep
        transaction = str(next(_transactions))
        waiter = self._waiting[transaction] = asyncio.get_running_loop().create_future()
        try:
            await self._post(f"{self.session_url}/{handle}", payload, transaction)
            event = await asyncio.wait_for(waiter, 30)
        finally:
            self._waiting.pop(transaction, None)
        data = event["plugindata"]["data"]
        if "error" in data:
            raise RuntimeError(f"videoroom: {data['error']}")
        return event

    async def destroy(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
        with contextlib.suppress(Exception):
            await self._post(self.session_url, {"janus": "destroy"})
