"""The lab's network: a "public" internet segment with the Switchboard node (behind 1:1
NAT, as on a cloud VM) and coturn, and client hosts each behind a router of its own kind.

::

    198.18.0.0/24 "internet" (a bridge in the `net` namespace)
    ├── 198.18.0.10  router `sfunat`, 1:1 NAT to 10.200.0.10 (node `sfu`): TCP 7880 and
    │                443 -> 7880 (signaling), UDP 40000-40999 (the SFU's media,
    │                stateless like a cloud provider's NAT)
    ├── 198.18.0.20  coturn `turn`: TURN/STUN on UDP and TCP 3478, TURNS (TLS) on 443
    ├── 198.18.0.101 client `direct` (host candidates), and `direct-b` on .109
    └── 198.18.0.1xx routers, each with one client behind it on 10.x.0.2:
        eim (masquerade), symmetric (fully random ports), udp-blocked (TCP out only),
        tcp443-only, symmetric-b and eim-b (the other end of 1:1 calls),
        symmetric-turn-only (UDP only to the TURN server; the browser's placement),
        and shaped links built per test (delay, jitter, loss, a rate cap).

No namespace has a route beyond 198.18.0.0/24, so nothing leaves the lab.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from signaling.tokens import mint_token
from tests.netlab.lab import Lab, firewall, masquerade, python, run

SECRET = "netlab-join-secret-0123456789abcdef0123"
TURN_SECRET = "netlab-turn-secret-0123456789abcdef"
PUBLIC_NET = "198.18.0.0/24"
SFU_PUBLIC, SFU_PRIVATE = "198.18.0.10", "10.200.0.10"
TURN_IP = "198.18.0.20"
SIGNALING_PORT, UDP_PORTS = 7880, (40000, 40999)
REPO = Path(__file__).resolve().parents[2]
SWITCHBOARD = str(Path(python()).with_name("switchboard"))

#: kind -> (last octet of the router's public address, LAN number, firewall rules)
ROUTERS: dict[str, tuple[int, int, str, str]] = {
    "eim": (102, 2, "eim", ""),
    "symmetric": (103, 3, "symmetric", ""),
    "udp-blocked": (104, 4, "eim", '    iifname "lan" meta l4proto udp drop'),
    "tcp443-only": (
        105,
        5,
        "eim",
        '    iifname "lan" tcp dport 443 accept\n    iifname "lan" drop',
    ),
    "symmetric-b": (106, 6, "symmetric", ""),
    "eim-b": (107, 7, "eim", ""),
    "symmetric-turn-only": (
        108,
        8,
        "symmetric",
        f'    iifname "lan" meta l4proto udp ip daddr != {TURN_IP} drop',
    ),
}


@dataclass(frozen=True)
class Placement:
    """A client host: its namespace, its own address, and the address it is seen from."""

    name: str
    ns: str
    address: str
    public: str

    @property
    def signaling_port(self) -> int:
        return 443 if self.name == "tcp443-only" else SIGNALING_PORT

    @property
    def ws_url(self) -> str:
        return f"ws://{SFU_PUBLIC}:{self.signaling_port}/ws"

    @property
    def http_base(self) -> str:
        return f"http://{SFU_PUBLIC}:{self.signaling_port}"


LAB_API_KEY = "lab"
LAB_API_SECRET = "lab-api-secret-0123456789abcdef0123456789"


def api_token() -> str:
    from signaling.api.auth import mint_api_token

    return mint_api_token(LAB_API_KEY, LAB_API_SECRET)


def token(user: str, **claims: object) -> str:
    return mint_token(SECRET, user, **claims)  # type: ignore[arg-type]


def make_certificate(workdir: Path) -> tuple[Path, Path, Path]:
    """A CA and, signed by it, a certificate for the TURN server's address (TLS on 443)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Switchboard netlab CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, TURN_IP)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(TURN_IP))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = workdir / "ca.pem", workdir / "turn-cert.pem", workdir / "turn-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    paths[2].chmod(0o600)
    return paths


class Internet:
    """The lab's hosts, routers, coturn and Switchboard node, built once."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.workdir = lab.workdir
        self.placements: dict[str, Placement] = {}
        self._ports = 0
        self._shaped = 0
        self.net = lab.host("net")
        lab.bridge(self.net, "br0")
        self.ca, cert, key = make_certificate(self.workdir)
        self.agent_env = {**os.environ, "SSL_CERT_FILE": str(self.ca), "PYTHONPATH": str(REPO)}
        self._build_sfu_router()
        self._build_turn(cert, key)
        self._build_direct()
        for kind in ROUTERS:
            self._build_router(kind)

    # -- the public segment ----------------------------------------------------------------

    def attach(self, ns: str, ifname: str, address: str) -> None:
        """Plug ``ns`` into the public segment with ``address``."""
        self._ports += 1
        port = f"p{self._ports}"
        self.lab.wire(self.net, port, ns, ifname)
        self.lab.enslave(self.net, port, "br0")
        self.lab.address(ns, ifname, f"{address}/24")

    def _build_sfu_router(self) -> None:
        lab = self.lab
        router = lab.host("sfunat", forward=True)
        self.sfu = lab.host("sfu")
        self.attach(router, "wan", SFU_PUBLIC)
        lab.wire(router, "lan", self.sfu, "eth0")
        lab.address(router, "lan", "10.200.0.1/24")
        lab.address(self.sfu, "eth0", f"{SFU_PRIVATE}/24")
        lab.route(self.sfu, "10.200.0.1")
        low, high = UDP_PORTS
        # Media: stateless 1:1 NAT (addresses rewritten, ports kept, no connection
        # tracking), as a cloud provider's NAT does; a stateful NAT could remap a port
        # when checks cross in both directions at once. Signaling (TCP, 443 -> 7880):
        # ordinary destination NAT.
        lab.nft(
            router,
            f"""
table ip raw {{
  chain pre {{
    type filter hook prerouting priority raw; policy accept;
    iifname "wan" udp dport {low}-{high} notrack
    iifname "lan" ip saddr {SFU_PRIVATE} udp sport {low}-{high} notrack
  }}
}}
table ip static {{
  chain pre {{
    type filter hook prerouting priority mangle; policy accept;
    iifname "wan" ip daddr {SFU_PUBLIC} udp dport {low}-{high} ip daddr set {SFU_PRIVATE}
  }}
  chain post {{
    type filter hook postrouting priority mangle; policy accept;
    oifname "wan" ip saddr {SFU_PRIVATE} udp sport {low}-{high} ip saddr set {SFU_PUBLIC}
  }}
}}
table ip nat {{
  chain pre {{
    type nat hook prerouting priority dstnat; policy accept;
    iifname "wan" tcp dport {{ {SIGNALING_PORT}, 443 }} dnat to {SFU_PRIVATE}:{SIGNALING_PORT}
  }}
  chain post {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname "wan" ip saddr {SFU_PRIVATE} snat to {SFU_PUBLIC}
  }}
}}
""",
        )

    def _build_turn(self, cert: Path, key: Path) -> None:
        lab = self.lab
        self.turn = lab.host("turn")
        self.attach(self.turn, "eth0", TURN_IP)
        conf = self.workdir / "turnserver.conf"
        env = {
            **os.environ,
            "SWITCHBOARD_TURN_SECRET": TURN_SECRET,
            "SWITCHBOARD_TURN_CERT": str(cert),
            "SWITCHBOARD_TURN_PKEY": str(key),
        }
        run_env = ["env", *(f"{k}={v}" for k, v in env.items() if k.startswith("SWITCHBOARD"))]
        run(
            [
                *run_env,
                SWITCHBOARD,
                "turn-config",
                "--output",
                str(conf),
                "--listening-ip",
                TURN_IP,
                "--port",
                "3478",
                "--tls-port",
                "443",
                "--min-port",
                "49152",
                "--max-port",
                "49999",
                # The lab's "public" addresses are in the benchmarking range the hardened
                # config denies: let the relay reach them (and only them).
                "--allowed-peer-ip",
                "198.18.0.0-198.18.0.255",
            ]
        )
        self.coturn = lab.spawn(
            self.turn,
            [
                "turnserver",
                "-c",
                str(conf),
                "--pidfile",
                str(self.workdir / "turn.pid"),
                "--userdb",
                str(self.workdir / "turndb"),
            ],
            self.workdir / "coturn.log",
        )

    def _build_direct(self) -> None:
        for name, address in (("direct", "198.18.0.101"), ("direct-b", "198.18.0.109")):
            ns = self.lab.host(name)
            self.attach(ns, "eth0", address)
            self.placements[name] = Placement(name, ns, address, address)

    def _build_router(self, kind: str) -> None:
        octet, lan, nat, rules = ROUTERS[kind]
        self.placements[kind] = self.router_with_client(kind, octet, lan, nat, rules)

    def router_with_client(
        self, name: str, octet: int, lan: int, nat: str, rules: str = "", linked: bool = True
    ) -> Placement:
        """A router on the public segment with a client host behind it."""
        lab = self.lab
        public = f"198.18.0.{octet}"
        router = lab.host(f"r-{name}", forward=True)
        client = lab.host(name)
        self.attach(router, "wan", public)
        if linked:
            lab.wire(router, "lan", client, "eth0")
        lab.address(router, "lan", f"10.{lan}.0.1/24")
        lab.address(client, "eth0", f"10.{lan}.0.2/24")
        lab.route(client, f"10.{lan}.0.1")
        lab.nft(router, masquerade(nat) + (firewall(rules) if rules else ""))
        return Placement(name, client, f"10.{lan}.0.2", public)

    # -- shaped links (per test) -----------------------------------------------------------

    def shaped(
        self, *, delay_ms: float = 0, jitter_ms: float = 0, loss: float = 0, rate: str = ""
    ) -> Placement:
        """A client behind an EIM NAT whose link to its router is :mod:`linkem` (delay,
        jitter, loss), with ``rate`` (e.g. ``500kbit``) capping its downlink."""
        lab = self.lab
        self._shaped += 1
        n = self._shaped
        name = f"shaped{n}"
        left, right = f"{lab.tag[-4:]}l{n}", f"{lab.tag[-4:]}r{n}"
        em = subprocess.Popen(
            [
                python(),
                "-m",
                "tests.netlab.linkem",
                left,
                right,
                "--delay-ms",
                str(delay_ms),
                "--jitter-ms",
                str(jitter_ms),
                "--loss",
                str(loss),
            ],
            stdout=subprocess.PIPE,
            stderr=(self.workdir / f"linkem{n}.log").open("wb"),
            env=self.agent_env,
        )
        lab.processes.append(em)
        assert em.stdout is not None and em.stdout.readline().strip() == b"ready"
        router = lab.host(f"r-{name}", forward=True)
        client = lab.host(name)
        self.attach(router, "wan", f"198.18.0.{110 + n}")
        for device, ns, final in ((left, router, "lan"), (right, client, "eth0")):
            run(["ip", "link", "set", device, "netns", ns])
            run(["ip", "-n", ns, "link", "set", device, "name", final])
            run(["ip", "-n", ns, "link", "set", final, "up"])
        lab.address(router, "lan", f"10.{10 + n}.0.1/24")
        lab.address(client, "eth0", f"10.{10 + n}.0.2/24")
        lab.route(client, f"10.{10 + n}.0.1")
        lab.nft(router, masquerade("eim"))
        if rate:
            lab.tc(
                router,
                "qdisc",
                "add",
                "dev",
                "lan",
                "root",
                "tbf",
                "rate",
                rate,
                "burst",
                "16kbit",
                "latency",
                "300ms",
            )
        return Placement(name, client, f"10.{10 + n}.0.2", f"198.18.0.{110 + n}")

    # -- the Switchboard node ----------------------------------------------------------------

    def start_node(self, **extra: str) -> subprocess.Popen[bytes]:
        low, high = UDP_PORTS
        env = {
            **self.agent_env,
            "SWITCHBOARD_JWT_SECRET": SECRET,
            "SWITCHBOARD_HOST": SFU_PRIVATE,
            "SWITCHBOARD_PORT": str(SIGNALING_PORT),
            "SWITCHBOARD_SFU_LISTEN_IPS": SFU_PRIVATE,
            "SWITCHBOARD_SFU_ANNOUNCED_IP": SFU_PUBLIC,
            "SWITCHBOARD_SFU_UDP_MIN_PORT": str(low),
            "SWITCHBOARD_SFU_UDP_MAX_PORT": str(high),
            "SWITCHBOARD_SFU_ICE_TIMEOUT": "20",
            "SWITCHBOARD_SFU_STATS_LOG_INTERVAL": "0",
            "SWITCHBOARD_TURN_SECRET": TURN_SECRET,
            "SWITCHBOARD_TURN_URLS": ",".join(
                [
                    f"turn:{TURN_IP}:3478?transport=udp",
                    f"turn:{TURN_IP}:3478?transport=tcp",
                    f"turns:{TURN_IP}:443?transport=tcp",
                ]
            ),
            "SWITCHBOARD_STUN_URLS": f"stun:{TURN_IP}:3478",
            "SWITCHBOARD_RATE_LIMIT_PER_SECOND": "200",
            "SWITCHBOARD_RATE_LIMIT_BURST": "400",
            "SWITCHBOARD_LOG_FORMAT": "text",
            # the room API (recordings), called by agents inside the lab
            "SWITCHBOARD_API_KEY": LAB_API_KEY,
            "SWITCHBOARD_API_SECRET": LAB_API_SECRET,
            "SWITCHBOARD_RECORDING_DIR": str(self.workdir / "recordings"),
            **extra,
        }
        node = self.lab.spawn(self.sfu, [SWITCHBOARD, "serve"], self.workdir / "node.log", env=env)
        self.wait_http(self.placements["direct"], "/health")
        return node

    def wait_http(self, placement: Placement, path: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        probe = (
            "import sys, urllib.request; "
            f"urllib.request.urlopen('{placement.http_base}{path}', timeout=1)"
        )
        while True:
            done = subprocess.run(
                self.lab.command(placement.ns, python(), "-c", probe), capture_output=True
            )
            if done.returncode == 0:
                return
            if time.monotonic() > deadline:
                log = (self.workdir / "node.log").read_text(errors="replace")[-3000:]
                raise AssertionError(f"{placement.http_base}{path} never answered:\n{log}")
            time.sleep(0.2)

    def room(self) -> str:
        return f"lab-{secrets.token_hex(3)}"


@contextlib.contextmanager
def running_internet(workdir: Path) -> Iterator[Internet]:
    """A lab with the Internet built and the Switchboard node started; torn down (every
    namespace removed) on the way out, failed or not."""
    lab = Lab(workdir)
    try:
        net = Internet(lab)
        net.start_node()
        yield net
    finally:
        lab.close()
