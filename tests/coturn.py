"""A real coturn (`turnserver`) on a free loopback port, configured by `switchboard turn-config`."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SWITCHBOARD = str(Path(sys.executable).with_name("switchboard"))


def free_port_pair() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (coturn listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            with socket.socket() as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


@dataclass
class Coturn:
    port: int
    secrets: list[str]
    config_text: str
    log: Path

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)


@contextmanager
def run_coturn(tmp: Path, secrets: list[str], *, allow_loopback: bool) -> Iterator[Coturn]:
    binary = shutil.which("turnserver")
    assert binary, "turnserver (Debian package coturn) is missing: run `make test`"
    port = free_port_pair()
    low = random.randrange(50000, 59000, 100)
    conf = tmp / "turnserver.conf"
    args = [
        SWITCHBOARD,
        "turn-config",
        "--output",
        str(conf),
        "--listening-ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--min-port",
        str(low),
        "--max-port",
        str(low + 99),
    ]
    if allow_loopback:
        args.append("--allow-loopback-peers")
    env = {**os.environ, "SWITCHBOARD_TURN_SECRET": ",".join(secrets)}
    subprocess.run(args, check=True, env=env, timeout=30)
    log = tmp / "coturn.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                binary,
                "-c",
                str(conf),
                "--pidfile",
                str(tmp / "turn.pid"),
                "--userdb",
                str(tmp / "turndb"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.time() + 15
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                assert time.time() < deadline, "coturn did not start:\n" + log.read_text()
                time.sleep(0.1)
        yield Coturn(port, secrets, conf.read_text(), log)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
