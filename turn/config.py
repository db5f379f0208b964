"""Render the hardened coturn configuration (``config/turnserver.conf``) from settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from string import Template

# Also reachable as config/turnserver.conf (a link), where operators look for it.
TEMPLATE = Path(__file__).resolve().parent / "turnserver.conf.tmpl"

# Never relay to these (IPv4): this network, private, CGNAT, loopback, link-local,
# IETF protocol assignments, documentation, benchmarking, reserved/multicast.
DENIED_PEER_RANGES: tuple[str, ...] = (
    "0.0.0.0-0.255.255.255",
    "10.0.0.0-10.255.255.255",
    "100.64.0.0-100.127.255.255",
    "127.0.0.0-127.255.255.255",
    "169.254.0.0-169.254.255.255",
    "172.16.0.0-172.31.255.255",
    "192.0.0.0-192.0.0.255",
    "192.0.2.0-192.0.2.255",
    "192.168.0.0-192.168.255.255",
    "198.18.0.0-198.19.255.255",
    "198.51.100.0-198.51.100.255",
    "203.0.113.0-203.0.113.255",
    "240.0.0.0-255.255.255.255",
    "::1",
    "fc00::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    "fe80::-febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
)
LOOPBACK_RANGE = "127.0.0.0-127.255.255.255"


@dataclass(frozen=True)
class TurnConfig:
    secrets: list[str]
    realm: str = "switchboard"
    listening_port: int = 3478
    tls_port: int = 5349
    listening_ips: list[str] = field(default_factory=list)
    external_ip: str | None = None
    min_port: int = 49160
    max_port: int = 49999
    cert: str | None = None
    pkey: str | None = None
    user_quota: int = 12
    total_quota: int = 1200
    max_bps: int = 0
    allow_loopback_peers: bool = False  # tests only: relaying to 127.0.0.1
    #: Ranges (``a.b.c.d`` or ``a.b.c.d-e.f.g.h``) the relay may reach although they are
    #: in a denied range: the SFU's private network when coturn sits beside it.
    allowed_peer_ips: list[str] = field(default_factory=list)


def render(config: TurnConfig) -> str:
    if not config.secrets:
        raise ValueError("at least one TURN secret is required (SWITCHBOARD_TURN_SECRET)")
    if config.min_port > config.max_port:
        raise ValueError("relay port range is empty")
    denied = [
        r
        for r in DENIED_PEER_RANGES
        if not (config.allow_loopback_peers and r in (LOOPBACK_RANGE, "::1"))
    ]
    if config.cert and config.pkey:
        tls = "\n".join(
            [
                f"cert={config.cert}",
                f"pkey={config.pkey}",
                "cipher-list=HIGH:!aNULL:!MD5",
                "no-tlsv1",
                "no-tlsv1_1",
            ]
        )
    else:
        tls = "# No certificate configured: TLS and DTLS listeners are off.\nno-tls\nno-dtls"
    loopback = (
        "# TEST ONLY: relaying to loopback peers is allowed.\nallow-loopback-peers"
        if config.allow_loopback_peers
        else "# Loopback peers are refused (never set allow-loopback-peers in production)."
    )
    values = {
        "listening_port": config.listening_port,
        "tls_port": config.tls_port,
        "listening_ips": "\n".join(f"listening-ip={ip}" for ip in config.listening_ips)
        or "# listening-ip: all addresses",
        "external_ip": f"external-ip={config.external_ip}"
        if config.external_ip
        else "# external-ip: set to the public address when behind 1:1 NAT",
        "min_port": config.min_port,
        "max_port": config.max_port,
        "static_auth_secrets": "\n".join(f"static-auth-secret={s}" for s in config.secrets),
        "realm": config.realm,
        "tls": tls,
        "user_quota": config.user_quota,
        "total_quota": config.total_quota,
        "max_bps": config.max_bps,
        "loopback": loopback,
        "denied_peers": "\n".join(f"denied-peer-ip={r}" for r in denied),
        "allowed_peers": "\n".join(f"allowed-peer-ip={r}" for r in config.allowed_peer_ips)
        or "# allowed-peer-ip: none (add the SFU's private range if coturn relays to it)",
    }
    return Template(TEMPLATE.read_text()).substitute(values)
