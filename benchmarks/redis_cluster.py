"""A real 3-primary Redis Cluster on loopback: three ``redis-server --cluster-enabled``
processes joined by ``redis-cli --cluster create``. The signaling benchmark's ``cluster2``
topology runs on it, and so do the Redis Cluster runs of the test suite."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from redis.exceptions import RedisError


def wait_until(ready: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Poll ``ready`` (failures to connect count as not yet) until it holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if ready():
                return
        except (OSError, subprocess.SubprocessError, RedisError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"Redis did not reach the expected state ({what})")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_ports(count: int) -> list[int]:
    """Ports whose cluster-bus ports (port + 10000) are free as well."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.randrange(20000, 30000)
        if port not in ports and _bindable(port) and _bindable(port + 10000):
            ports.append(port)
    return ports


class RedisClusterServer:
    def __init__(self, workdir: Path, primaries: int = 3) -> None:
        binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        assert binary and cli, "redis-server and redis-cli are missing: run `make test`"
        self.binary, self.cli = binary, cli
        self.workdir = workdir
        self.ports = cluster_ports(primaries)
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def start(self) -> RedisClusterServer:
        for port in self.ports:
            home = self.workdir / str(port)
            home.mkdir(parents=True, exist_ok=True)
            log = (home / "redis.log").open("ab")
            self.procs.append(
                subprocess.Popen(
                    [
                        self.binary,
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        str(home / "nodes.conf"),
                        "--cluster-node-timeout",
                        "2000",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--dir",
                        str(home),
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        for port in self.ports:
            wait_until(lambda p=port: self._cli(p, "PING").strip() == "PONG", "PING")
        subprocess.run(
            [
                self.cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        for port in self.ports:
            wait_until(
                lambda p=port: "cluster_state:ok" in self._cli(p, "CLUSTER", "INFO"), "cluster ok"
            )
        return self

    def _cli(self, port: int, *command: str) -> str:
        done = subprocess.run(
            [self.cli, "-p", str(port), *command], capture_output=True, text=True, timeout=5
        )
        return done.stdout

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        self.procs = []
