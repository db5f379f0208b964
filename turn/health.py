"""Is each configured TURN/STUN server answering? A STUN binding request per server, over
the transport its URL names: UDP, TCP, or TLS (the certificate is verified as a client's
would be), so a TLS listener with a bad certificate reads as down.

Results are cached for a few seconds so a load balancer polling ``/health`` cannot turn the
hub into a STUN traffic generator.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aioice import stun

CACHE_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Target:
    url: str
    host: str
    port: int
    transport: str  # "udp", "tcp" or "tls"


def parse_ice_url(url: str) -> Target:
    """``turn:host:port?transport=tcp`` (RFC 7065) -> where and how to probe it."""
    scheme, _, rest = url.partition(":")
    address, _, query = rest.partition("?")
    parts = urlsplit("//" + address)
    host = parts.hostname or ""
    secure = scheme in ("turns", "stuns")
    port = parts.port or (5349 if secure else 3478)
    transport = "tls" if secure else ("tcp" if "transport=tcp" in query else "udp")
    return Target(url, host, port, transport)


class _Probe(asyncio.DatagramProtocol):
    def __init__(self, transaction_id: bytes) -> None:
        self.transaction_id = transaction_id
        self.answered: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            message = stun.parse_message(data)
        except ValueError:
            return
        if message.transaction_id == self.transaction_id and not self.answered.done():
            self.answered.set_result(True)


async def _stream_exchange(target: Target, request: stun.Message, timeout: float) -> bool:
    """One binding request over TCP or TLS: STUN messages are self-delimiting there (a
    20-byte header carrying the body length, RFC 8489 section 6.2.2)."""
    context = ssl.create_default_context() if target.transport == "tls" else None
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(target.host, target.port, ssl=context), timeout
    )
    try:
        writer.write(bytes(request))
        header = await asyncio.wait_for(reader.readexactly(20), timeout)
        body = await asyncio.wait_for(reader.readexactly(int.from_bytes(header[2:4])), timeout)
        answer = stun.parse_message(header + body)
        return answer.transaction_id == request.transaction_id
    finally:
        writer.close()


async def probe(target: Target, timeout: float = 1.0) -> bool:
    """A STUN binding request must be answered, over the target's transport."""
    loop = asyncio.get_running_loop()
    request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    try:
        if target.transport != "udp":
            return await _stream_exchange(target, request, timeout)
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _Probe(request.transaction_id), remote_addr=(target.host, target.port)
        )
        try:
            for _ in range(2):  # one retransmission
                transport.sendto(bytes(request))
                done, _ = await asyncio.wait({protocol.answered}, timeout=timeout / 2)
                if done:
                    return True
            return False
        finally:
            transport.close()
    except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError):
        return False


class TurnHealth:
    """Cached reachability of the configured servers, for ``/health``."""

    def __init__(self, urls: list[str]) -> None:
        self.targets = [parse_ice_url(u) for u in urls]
        self._checked_at = 0.0
        self._result: list[dict[str, Any]] = []
        self._lock = asyncio.Lock()

    async def report(self) -> list[dict[str, Any]]:
        async with self._lock:
            if time.monotonic() - self._checked_at > CACHE_SECONDS:
                answers = await asyncio.gather(*(probe(t) for t in self.targets))
                self._result = [
                    {"url": t.url, "ok": ok} for t, ok in zip(self.targets, answers, strict=True)
                ]
                self._checked_at = time.monotonic()
            return self._result
