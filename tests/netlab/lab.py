"""Test hosts as Linux network namespaces: hosts, routers, NAT, firewalls and bad links.

Every namespace of a run is named ``sbl<pid>-<hex>-<name>``, so a run never touches
another's, and namespaces left by a run that was killed (its pid is gone) are removed when
the next lab starts. Addresses are private test ranges (198.18.0.0/15 for the "public"
internet, 10.0.0.0/8 behind routers) that exist only inside these namespaces: nothing is
sent anywhere else. :meth:`Lab.close` kills what was started in the namespaces and deletes
them; it runs at exit too.

The kernel here has no ``netem``; loss is an nftables rule (``numgen random``), a rate cap
is ``tbf``, and delay and jitter come from :mod:`tests.netlab.linkem`, a userspace wire
between two TAP devices.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "sbl"


def run(cmd: list[str], *, check: bool = True, stdin: str | None = None) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, input=stdin, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def delete_namespace(name: str) -> None:
    """Kill whatever still runs in the namespace, then delete it."""
    for pid in run(["ip", "netns", "pids", name], check=False).split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    run(["ip", "netns", "del", name], check=False)


def remove_stale() -> list[str]:
    """Namespaces of earlier runs whose process is gone (interrupted hard)."""
    removed = []
    for line in run(["ip", "netns", "list"], check=False).splitlines():
        name = line.split()[0] if line.strip() else ""
        if not name.startswith(PREFIX):
            continue
        pid = name[len(PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            delete_namespace(name)
            removed.append(name)
    return removed


@dataclass
class Lab:
    """Namespaces and the processes started in them, all removed by :meth:`close`."""

    workdir: Path
    tag: str = field(default_factory=lambda: f"{PREFIX}{os.getpid()}-{secrets.token_hex(2)}")
    namespaces: list[str] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        remove_stale()
        self.workdir.mkdir(parents=True, exist_ok=True)
        atexit.register(self.close)

    # -- hosts and wires -----------------------------------------------------------------

    def host(self, name: str, *, forward: bool = False) -> str:
        ns = f"{self.tag}-{name}"
        run(["ip", "netns", "add", ns])
        self.namespaces.append(ns)
        # IPv4 only. An IPv6 link-local address turns usable about a second after its
        # link comes up (duplicate address detection); Chromium takes that for a network
        # change and fails the requests in flight (a page's module imports, seen in CI).
        for scope in ("all", "default"):
            self.sysctl(ns, f"net.ipv6.conf.{scope}.disable_ipv6", "1")
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        if forward:
            self.sysctl(ns, "net.ipv4.ip_forward", "1")
        return ns

    def sysctl(self, ns: str, key: str, value: str) -> None:
        run(["ip", "netns", "exec", ns, "sysctl", "-qw", f"{key}={value}"])

    def wire(self, ns_a: str, if_a: str, ns_b: str, if_b: str) -> None:
        """A veth pair with one end in each namespace (named there, so names repeat)."""
        run(
            [
                "ip",
                "link",
                "add",
                if_a,
                "netns",
                ns_a,
                "type",
                "veth",
                "peer",
                "name",
                if_b,
                "netns",
                ns_b,
            ]
        )
        for ns, name in ((ns_a, if_a), (ns_b, if_b)):
            run(["ip", "-n", ns, "link", "set", name, "up"])

    def address(self, ns: str, ifname: str, cidr: str) -> None:
        run(["ip", "-n", ns, "addr", "add", cidr, "dev", ifname])

    def route(self, ns: str, via: str, to: str = "default") -> None:
        run(["ip", "-n", ns, "route", "add", to, "via", via])

    def bridge(self, ns: str, name: str) -> None:
        run(["ip", "-n", ns, "link", "add", name, "type", "bridge"])
        run(["ip", "-n", ns, "link", "set", name, "up"])

    def enslave(self, ns: str, ifname: str, bridge: str) -> None:
        run(["ip", "-n", ns, "link", "set", ifname, "master", bridge])

    def nft(self, ns: str, ruleset: str) -> None:
        run(["ip", "netns", "exec", ns, "nft", "-f", "-"], stdin=ruleset)

    def tc(self, ns: str, *args: str) -> None:
        run(["ip", "netns", "exec", ns, "tc", *args])

    # -- processes --------------------------------------------------------------------------

    def command(self, ns: str, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", ns, *cmd]

    def spawn(
        self, ns: str, cmd: list[str], log: Path, env: dict[str, str] | None = None, **popen: object
    ) -> subprocess.Popen[bytes]:
        out = log.open("wb")
        proc = subprocess.Popen(
            self.command(ns, *cmd),
            stdout=popen.pop("stdout", out),  # type: ignore[arg-type]
            stderr=out,
            env=env,
            **popen,  # type: ignore[arg-type]
        )
        self.processes.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 5
        for proc in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
            if proc.poll() is None:
                proc.kill()
        self.processes.clear()
        for ns in reversed(self.namespaces):
            delete_namespace(ns)
        self.namespaces.clear()


# -- routers ------------------------------------------------------------------------------------


def masquerade(kind: str) -> str:
    """NAT behaviours: ``eim`` (Linux masquerade keeps the source port when it can: the
    mapping does not depend on the destination, the filtering does), ``symmetric`` (a
    fully random port per destination)."""
    flags = " random,fully-random" if kind == "symmetric" else ""
    return f"""
table ip nat {{
  chain post {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname "wan" masquerade{flags}
  }}
}}
"""


def firewall(rules: str) -> str:
    """Forwarding from the LAN side restricted by ``rules`` (answers always pass)."""
    return f"""
table inet filter {{
  chain forward {{
    type filter hook forward priority filter; policy accept;
    ct state established,related accept
{rules}
  }}
}}
"""


def loss(percent: float) -> str:
    """Random loss both ways through the router (kernel ``numgen``, no netem needed)."""
    per_10k = int(percent * 100)
    return f"""
table inet loss {{
  chain forward {{
    type filter hook forward priority -10; policy accept;
    numgen random mod 10000 < {per_10k} drop
  }}
}}
"""


def python() -> str:
    return sys.executable
