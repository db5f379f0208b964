"""A userspace wire between two TAP devices: delay, jitter and loss, both ways.

The lab's kernel has no ``netem``, so a link with latency is this process: it creates two
TAP devices (the lab then moves one into the router's namespace and one into the
client's), reads each Ethernet frame from one side and writes it to the other after
``delay ± jitter`` milliseconds (frames may overtake each other, as on a real path),
dropping ``loss`` percent at random. It prints ``ready`` once both devices exist and runs
until it is terminated.

    python -m tests.netlab.linkem LEFT RIGHT --delay-ms 75 --jitter-ms 15 --loss 0
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import os
import random
import signal
import struct

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000


def open_tap(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    return fd


class Direction:
    def __init__(self, src: int, dst: int, delay: float, jitter: float, loss: float) -> None:
        self.src, self.dst = src, dst
        self.delay, self.jitter, self.loss = delay, jitter, loss
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(src, self.read)

    def read(self) -> None:
        while True:
            try:
                frame = os.read(self.src, 65536)
            except BlockingIOError:
                return
            except OSError:
                self.loop.remove_reader(self.src)
                return
            if self.loss and random.random() * 100 < self.loss:
                continue
            wait = max(0.0, self.delay + random.uniform(-self.jitter, self.jitter))
            if wait:
                self.loop.call_later(wait, self.write, frame)
            else:
                self.write(frame)

    def write(self, frame: bytes) -> None:
        try:
            os.write(self.dst, frame)
        except OSError:
            pass  # a full or gone device drops the frame, as a wire would


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("left")
    parser.add_argument("right")
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--loss", type=float, default=0.0, help="percent, each way")
    args = parser.parse_args()
    left, right = open_tap(args.left), open_tap(args.right)
    delay, jitter = args.delay_ms / 1000, args.jitter_ms / 1000
    Direction(left, right, delay, jitter, args.loss)
    Direction(right, left, delay, jitter, args.loss)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
