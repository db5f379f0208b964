"""A real Redis primary, its replica and three Sentinels on loopback, for failover tests:
kill the primary and the Sentinels promote the replica."""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import redis

from benchmarks.redis_cluster import wait_until
from tests.redis_server import free_port

SERVICE = "switchboard"


class SentinelSetup:
    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server (Debian package redis-server) is missing: run `make test`"
        self.binary = binary
        self.workdir = workdir
        self.primary_port, self.replica_port = free_port(), free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def _spawn(self, port: int, *args: str) -> None:
        home = self.workdir / str(port)
        home.mkdir(parents=True, exist_ok=True)
        log = (home / "redis.log").open("ab")
        self.procs[port] = subprocess.Popen(
            [self.binary, *args], cwd=home, stdout=log, stderr=subprocess.STDOUT
        )

    def start(self) -> SentinelSetup:
        common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        common += ["--repl-diskless-sync-delay", "0"]
        self._spawn(self.primary_port, "--port", str(self.primary_port), *common)
        self._spawn(
            self.replica_port,
            *("--port", str(self.replica_port), *common),
            *("--replicaof", "127.0.0.1", str(self.primary_port)),
        )
        for port in self.sentinel_ports:
            conf = self.workdir / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary_port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                f"sentinel failover-timeout {SERVICE} 4000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
            )
            self._spawn(port, str(conf), "--sentinel")
        self.wait(lambda: self._role(self.replica_port) == ("slave", "up"))
        self.wait(lambda: all(self._sees_replica(p) for p in self.sentinel_ports))
        return self

    def _role(self, port: int) -> tuple[str, str]:
        with redis.Redis(port=port, socket_timeout=1, decode_responses=True) as r:
            info = r.info("replication")
        return info["role"], info.get("master_link_status", "")

    def _sees_replica(self, port: int) -> bool:
        with redis.Redis(port=port, socket_timeout=1, decode_responses=True) as r:
            return len(r.sentinel_slaves(SERVICE)) == 1 and len(r.sentinel_sentinels(SERVICE)) == 2

    def primary(self) -> int:
        """The primary's port, as the Sentinels see it."""
        with redis.Redis(port=self.sentinel_ports[0], socket_timeout=1) as r:
            _host, port = r.sentinel_get_master_addr_by_name(SERVICE)
        return int(port)

    def kill_primary(self) -> None:
        self.procs[self.primary_port].send_signal(signal.SIGKILL)
        self.procs[self.primary_port].wait(10)

    @staticmethod
    def wait(ready: Callable[[], bool], timeout: float = 30.0) -> None:
        wait_until(ready, "sentinel", timeout)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        self.procs = {}
