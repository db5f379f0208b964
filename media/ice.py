"""Where the server's ICE sockets live: listen addresses, a UDP port range, an announced IP.

aiortc creates its aioice ``Connection`` deep inside ``RTCPeerConnection``, with host
addresses taken from every interface and ports chosen by the kernel. A media server needs
the opposite: a fixed port range to open in the firewall, chosen interfaces, and (behind
1:1 NAT on a cloud VM) a public address written into its candidates while the socket stays
bound to the private one, as mediasoup's ``announcedAddress`` does.

:func:`install` swaps aiortc's ``Connection`` (through :mod:`media.aiortc_hooks`) for
:class:`PolicyConnection`, which behaves exactly like the original unless an
:class:`IcePolicy` is active in the current context (:data:`ICE_POLICY`). The SFU sets
the policy in the tasks that build its peer connections; clients in the same process
(tests, benchmarks) keep aioice's behaviour unless they set one of their own (loopback
only, say).
"""

from __future__ import annotations

import asyncio
import random
from contextvars import ContextVar
from dataclasses import dataclass

import aioice.ice
from aioice.candidate import Candidate, candidate_foundation, candidate_priority

from media import aiortc_hooks

BIND_ATTEMPTS = 64


@dataclass(frozen=True, slots=True)
class IcePolicy:
    """Host-candidate rules for peer connections created while this policy is active."""

    listen_ips: tuple[str, ...] = ()
    min_port: int = 0
    max_port: int = 0
    announced_ip: str | None = None

    def host_addresses(self) -> list[str]:
        if self.listen_ips:
            return list(self.listen_ips)
        return aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False)


ICE_POLICY: ContextVar[IcePolicy | None] = ContextVar("ice_policy", default=None)


async def _bind(
    conn: aioice.ice.Connection, address: str, policy: IcePolicy
) -> aioice.ice.StunProtocol:
    """Bind a UDP socket on ``address`` at a free port of the policy's range."""
    loop = asyncio.get_running_loop()
    if not policy.min_port:
        _, protocol = await loop.create_datagram_endpoint(
            lambda: aioice.ice.StunProtocol(conn), local_addr=(address, 0)
        )
        return protocol
    span = policy.max_port - policy.min_port + 1
    start = random.randrange(span)
    last_error: OSError | None = None
    for i in range(min(span, BIND_ATTEMPTS)):
        port = policy.min_port + (start + i) % span
        try:
            _, protocol = await loop.create_datagram_endpoint(
                lambda: aioice.ice.StunProtocol(conn), local_addr=(address, port)
            )
            return protocol
        except OSError as exc:
            last_error = exc
    raise OSError(f"no free UDP port in {policy.min_port}-{policy.max_port}: {last_error}")


class PolicyConnection(aioice.ice.Connection):
    """aioice's Connection, with host candidates gathered by the active :class:`IcePolicy`."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._policy = ICE_POLICY.get()

    async def get_component_candidates(
        self, component: int, addresses: list[str], timeout: int = 5
    ) -> list[Candidate]:
        policy = self._policy
        if policy is None:
            return await super().get_component_candidates(component, addresses, timeout)
        candidates: list[Candidate] = []
        for address in policy.host_addresses():
            protocol = await _bind(self, address, policy)
            port = protocol.transport.get_extra_info("sockname")[1]
            host = policy.announced_ip or address
            protocol.local_candidate = Candidate(
                foundation=candidate_foundation("host", "udp", host),
                component=component,
                transport="udp",
                priority=candidate_priority(component, "host"),
                host=host,
                port=port,
                type="host",
            )
            aiortc_hooks.add_host_protocol(self, protocol)
            candidates.append(protocol.local_candidate)
        # STUN (server-reflexive) needs no host sockets of ours to be useful behind an
        # announced address; TURN relays are gathered by aioice as usual.
        stun, self.stun_server = self.stun_server, None
        try:
            candidates += await super().get_component_candidates(component, [], timeout)
        finally:
            self.stun_server = stun
        return candidates


def install() -> None:
    """Make aiortc build :class:`PolicyConnection` objects (idempotent)."""
    aiortc_hooks.use_ice_connection(PolicyConnection)
