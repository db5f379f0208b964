"""Reading the client end of a loopback TCP connection in tests of the server's writes."""

from __future__ import annotations

import asyncio
import socket

import pytest


async def read_exactly(sock: socket.socket, size: int, timeout: float = 5.0) -> bytes:
    """``size`` bytes from the non-blocking ``sock``; fails if it closes first."""
    loop = asyncio.get_running_loop()
    data = b""
    while len(data) < size:
        chunk = await asyncio.wait_for(loop.sock_recv(sock, size - len(data)), timeout)
        assert chunk, f"closed after {len(data)} of {size} bytes"
        data += chunk
    return data


def nothing_more(sock: socket.socket) -> None:
    """Nothing (more) waits to be read on the non-blocking ``sock``."""
    with pytest.raises(BlockingIOError):
        sock.recv(10)


class Loopback:
    """A server on loopback (uvloop's, in the suite) whose accepted transports a test
    writes to, each paired with the non-blocking client socket that reads them."""

    def __init__(self) -> None:
        self.accepted: asyncio.Queue[asyncio.Transport] = asyncio.Queue()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> Loopback:
        accepted = self.accepted

        class Server(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                accepted.put_nowait(transport)  # type: ignore[arg-type]

        self.server = await asyncio.get_running_loop().create_server(Server, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def connect(
        self, *, rcvbuf: int = 0, sock: socket.socket | None = None
    ) -> tuple[socket.socket, asyncio.Transport]:
        """A new connection: the client's socket (``sock`` if given) and the server's
        transport. ``rcvbuf`` makes the kernel's buffers small both ways, so what the
        server writes soon waits in its transport's own buffer."""
        sock = sock or socket.socket()
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", self.port))
        transport = await self.accepted.get()
        if rcvbuf:
            transport.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_SNDBUF, rcvbuf
            )
        return sock, transport
