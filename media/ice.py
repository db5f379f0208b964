"""Where ICE sockets live and which candidates are gathered: listen addresses, a UDP port
range, an announced IP, and every TURN server a client was given.

aiortc creates its aioice ``Connection`` deep inside ``RTCPeerConnection``, with host
addresses taken from every interface, ports chosen by the kernel, and at most one STUN and
one TURN server. A media server needs a fixed port range to open in the firewall, chosen
interfaces, and (behind 1:1 NAT on a cloud VM) a public address written into its
candidates while the socket stays bound to the private one, as mediasoup's
``announcedAddress`` does. A client behind a firewall needs what browsers do: a relay
candidate from each TURN server it was given (UDP, TCP and TLS on 443), so that one of
them gets through whatever the network lets out.

:func:`install` swaps aiortc's ``Connection`` (through :mod:`media.aiortc_hooks`) for
:class:`PolicyConnection`, which behaves exactly like the original unless an
:class:`IcePolicy` is active in the current context (:data:`ICE_POLICY`). The SFU sets
the policy in the tasks that build its peer connections; clients in the same process
(tests, benchmarks, bots) set one of their own.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aioice.ice
from aioice import stun
from aioice.candidate import Candidate, candidate_foundation, candidate_priority
from aioice.ice import CandidatePair

from media import aiortc_hooks

BIND_ATTEMPTS = 64
#: Relay candidates are preferred over UDP to the TURN server, then TCP, then TLS (as
#: browsers rank them): a network that lets UDP through gets the cheapest relay.
RELAY_PREFERENCE = {"udp": 2, "tcp": 1, "tls": 0}
#: Once a relay candidate is in, the others get this much longer (seconds): aiortc does
#: not trickle, so a STUN or TURN server the network blocks would otherwise hold every
#: offer for the whole gathering timeout (5 s) although the call can already connect.
AFTER_FIRST_RELAY = 1.0
#: When this side picks the pair (controlling: aioice nominates the first pair whose
#: check succeeds), a pair through a TURN relay is nominated this much later (seconds),
#: so a direct path that works wins over the relay even when the relay answers first.
RELAYED_NOMINATION_DELAY = 0.5
#: ... and up to this much longer while a better pair is still being checked.
RELAYED_NOMINATION_WAIT = 2.0
#: Longest a connection's receive loop runs on datagrams already waiting before it lets
#: other tasks run (seconds); see :meth:`PolicyConnection.recvfrom`.
RECEIVE_SLICE = 0.002


@dataclass(frozen=True, slots=True)
class TurnServer:
    """One TURN URL with its credentials: where relayed candidates come from."""

    host: str
    port: int
    transport: str  # "udp", "tcp" or "tls"
    username: str
    password: str

    @property
    def label(self) -> str:
        return f"{self.transport}:{self.host}:{self.port}"


def turn_servers(ice_servers: Iterable[dict[str, Any]]) -> tuple[TurnServer, ...]:
    """Every TURN server of an ``RTCIceServer`` list (as ``session:ready`` hands it out):
    ``turn:host:port?transport=udp|tcp`` and ``turns:host:port?transport=tcp`` (TLS)."""
    found = []
    for server in ice_servers:
        urls = server.get("urls") or []
        for url in [urls] if isinstance(urls, str) else urls:
            scheme, _, rest = url.partition(":")
            if scheme not in ("turn", "turns"):
                continue
            address, _, query = rest.partition("?")
            parts = urlsplit("//" + address)
            transport = "tcp" if "transport=tcp" in query else "udp"
            if scheme == "turns":
                transport = "tls"
            default = 5349 if scheme == "turns" else 3478
            found.append(
                TurnServer(
                    parts.hostname or "",
                    parts.port or default,
                    transport,
                    str(server.get("username") or ""),
                    str(server.get("credential") or ""),
                )
            )
    return tuple(found)


@dataclass(frozen=True, slots=True)
class IcePolicy:
    """Candidate rules for peer connections created while this policy is active.

    ``turn_servers``: relay candidates from each of them (instead of aiortc's first TURN
    URL only). ``announced_ip``: written into host candidates (and no server-reflexive
    candidate is gathered: the announced address is the public one)."""

    listen_ips: tuple[str, ...] = ()
    min_port: int = 0
    max_port: int = 0
    announced_ip: str | None = None
    turn_servers: tuple[TurnServer, ...] = ()

    def host_addresses(self) -> list[str]:
        if self.listen_ips:
            return list(self.listen_ips)
        return aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False)


ICE_POLICY: ContextVar[IcePolicy | None] = ContextVar("ice_policy", default=None)


async def _bind(
    conn: aioice.ice.Connection, address: str, policy: IcePolicy
) -> aioice.ice.StunProtocol:
    """Bind a UDP socket on ``address`` at a free port of the policy's range.

    The loop binds it: handed a socket bound here instead (which spares uvloop resolving
    the address on its thread pool), relayed clients' connections failed ICE now and then
    in the network lab (libuv sets ``SO_REUSEADDR`` on a socket it is handed)."""
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
    """aioice's Connection, with candidates gathered by the active :class:`IcePolicy`."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._policy = ICE_POLICY.get()
        #: Which TURN server each relayed candidate came from (by its relay address).
        self.relays: dict[tuple[str, int], TurnServer] = {}
        #: Relayed pairs whose check passed, waiting to be nominated, by component.
        self._relayed_valid: dict[int, list[CandidatePair]] = {}
        self._slice_from = 0.0  # when the receive loop last resumed from waiting

    async def recvfrom(self) -> tuple[bytes, int]:
        """The next datagram, as aioice gives it, but taking turns with other tasks.

        aiortc's DTLS transport handles its datagrams in one loop that does not yield
        while more are queued. On a media node one publisher's video packet costs about a
        millisecond (it is forwarded to every subscriber), so a keyframe's burst of 50
        packets held the event loop for 50 ms, and every join, answer and ICE check
        waiting behind it with them. With a policy active, a loop that has run for
        :data:`RECEIVE_SLICE` on already-queued datagrams yields once before the next.
        """
        if self._policy is None:
            return await super().recvfrom()
        if not aiortc_hooks.datagrams_waiting(self):
            result = await super().recvfrom()
            self._slice_from = time.monotonic()
            return result
        if time.monotonic() - self._slice_from > RECEIVE_SLICE:
            await asyncio.sleep(0)
            self._slice_from = time.monotonic()
        return await super().recvfrom()

    async def check_start(self, pair: aioice.ice.CandidatePair) -> None:
        """aioice nominates the first pair whose check succeeds when it controls. A pair
        through a TURN relay is checked at once (so the relay's permission exists for the
        other side's checks) but nominated only :data:`RELAYED_NOMINATION_DELAY` later,
        and not at all if a direct pair was nominated meanwhile."""
        relayed = "relay" in (pair.local_candidate.type, pair.remote_candidate.type)
        if not (relayed and self.ice_controlling and not self.remote_is_lite):
            await super().check_start(pair)
            return
        if not await self._check(pair, nominate=False):
            return
        waiting = self._relayed_valid.setdefault(pair.component, [])
        waiting.append(pair)
        await asyncio.sleep(RELAYED_NOMINATION_DELAY)
        # A better relayed pair still being checked (UDP to the TURN server, where this
        # one is TCP) gets a little longer.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RELAYED_NOMINATION_WAIT
        while self._better_pending(pair) and loop.time() < deadline:  # noqa: ASYNC110 (aioice has no event for pair states)
            await asyncio.sleep(0.05)
        # Of the relayed pairs that passed, the best is nominated; the others just succeed.
        best = max(waiting, key=self._pair_priority)
        if best is pair and pair.component not in aiortc_hooks.nominated_components(self):
            if not await self._check(pair, nominate=True):
                waiting.remove(pair)
                return
            pair.nominated = True
        self.check_state(pair, CandidatePair.State.SUCCEEDED)
        self.check_complete(pair)

    def _better_pending(self, pair: CandidatePair) -> bool:
        """Whether a better relayed pair of the component is still being checked."""
        mine = self._pair_priority(pair)
        pending = (
            CandidatePair.State.FROZEN,
            CandidatePair.State.WAITING,
            CandidatePair.State.IN_PROGRESS,
        )
        return any(
            other.component == pair.component
            and "relay" in (other.local_candidate.type, other.remote_candidate.type)
            and other.state in pending
            and other not in self._relayed_valid.get(pair.component, ())
            and self._pair_priority(other) > mine
            for other in aiortc_hooks.check_list(self)
        )

    def _pair_priority(self, pair: CandidatePair) -> int:
        return aioice.ice.candidate_pair_priority(
            pair.local_candidate, pair.remote_candidate, self.ice_controlling
        )

    async def _check(self, pair: CandidatePair, nominate: bool) -> bool:
        """One connectivity check of ``pair``; on failure the pair is marked failed."""
        assert self.remote_password is not None
        self.check_state(pair, CandidatePair.State.IN_PROGRESS)
        request = self.build_request(pair, nominate=nominate)
        try:
            _, addr = await pair.protocol.request(
                request, pair.remote_addr, integrity_key=self.remote_password.encode("utf8")
            )
        except stun.TransactionError as exc:
            if exc.response is not None and exc.response.error_code == 487:
                # Role conflict (RFC 8445 7.2.5.1): aioice's own check sorts it out.
                self.check_state(pair, CandidatePair.State.WAITING)
                await super().check_start(pair)
                return False
            addr = None
        if addr != pair.remote_addr:
            self.check_state(pair, CandidatePair.State.FAILED)
            self.check_complete(pair)
            return False
        return True

    async def gather_candidates(self) -> None:
        """With a policy, the addresses are the policy's: gather without listing the
        host's interfaces, and without a task per component (event-loop turns)."""
        if self._policy is None:
            await super().gather_candidates()
            return
        await aiortc_hooks.gather_components(self)

    async def get_component_candidates(
        self, component: int, addresses: list[str], timeout: int = 5
    ) -> list[Candidate]:
        policy = self._policy
        if policy is None:
            return await super().get_component_candidates(component, addresses, timeout)
        candidates: list[Candidate] = []
        protocols = []
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
            protocols.append(protocol)
            candidates.append(protocol.local_candidate)
        tasks: list[asyncio.Task[tuple[Candidate, Any]]] = []
        if self.stun_server and policy.announced_ip is None:
            tasks += [
                asyncio.create_task(aioice.ice.server_reflexive_candidate(p, self.stun_server))
                for p in protocols
            ]
        servers = policy.turn_servers or self._aiortc_turn_server()
        relay_tasks = {asyncio.create_task(self._relayed(component, s)): s for s in servers}
        tasks += relay_tasks
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        pending = set(tasks)
        relayed: list[tuple[Candidate, Any, TurnServer]] = []
        while pending:
            done, pending = await asyncio.wait(
                pending, timeout=max(0.0, deadline - loop.time()), return_when="FIRST_COMPLETED"
            )
            if not done:
                break
            for task in done:
                if task.cancelled() or task.exception() is not None:
                    continue  # that server is unreachable from here: others may not be
                candidate, relay_protocol = task.result()
                if relay_protocol is None:
                    candidates.append(candidate)
                else:
                    relayed.append((candidate, relay_protocol, relay_tasks[task]))
                    deadline = min(deadline, loop.time() + AFTER_FIRST_RELAY)
        for task in pending:
            task.cancel()
        return candidates + self._keep_relays(relayed)

    def _keep_relays(self, relayed: list[tuple[Candidate, Any, TurnServer]]) -> list[Candidate]:
        """Relays over TCP or TLS only where UDP to the TURN server failed: with a UDP relay
        in hand they add only a heavier path (and aioice's aggressive nomination might
        take whichever answers first)."""
        if any(server.transport == "udp" for _, _, server in relayed):
            for _, protocol, server in relayed:
                if server.transport != "udp":
                    protocol.transport.close()
            relayed = [entry for entry in relayed if entry[2].transport == "udp"]
        for candidate, protocol, server in relayed:
            aiortc_hooks.add_host_protocol(self, protocol)
            self.relays[(candidate.host, candidate.port)] = server
        return [candidate for candidate, _, _ in relayed]

    def _aiortc_turn_server(self) -> tuple[TurnServer, ...]:
        """The one TURN server aiortc configured, when the policy names none."""
        if not self.turn_server:
            return ()
        transport = "tls" if self.turn_ssl else self.turn_transport
        host, port = self.turn_server
        return (TurnServer(host, port, transport, self.turn_username, self.turn_password),)

    async def _relayed(self, component: int, server: TurnServer) -> tuple[Candidate, Any]:
        candidate, protocol = await aioice.ice.relayed_candidate(
            component=component,
            hide_related_address=False,
            protocol_factory=lambda: aioice.ice.StunProtocol(self),
            turn_server=(server.host, server.port),
            turn_username=server.username,
            turn_password=server.password,
            turn_ssl=server.transport == "tls",
            turn_transport="udp" if server.transport == "udp" else "tcp",
        )
        candidate.priority = candidate_priority(
            component, "relay", local_pref=65535 - 2 + RELAY_PREFERENCE[server.transport]
        )
        candidate.foundation = candidate_foundation("relay", server.transport, candidate.host)
        return candidate, protocol


def selected_pair(pc: Any) -> dict[str, Any] | None:
    """The candidate pair a peer connection's ICE transport nominated, both ends described
    (type, address, transport; for a relay of ours, how it reaches its TURN server)."""
    found = aiortc_hooks.nominated_pair(pc)
    if found is None:
        return None
    connection, pair = found
    local, remote = pair.local_candidate, pair.remote_candidate
    relays = getattr(connection, "relays", {})
    described = {
        "local": {
            "type": local.type,
            "address": local.host,
            "port": local.port,
            "transport": local.transport,
        },
        "remote": {
            "type": remote.type,
            "address": remote.host,
            "port": remote.port,
            "transport": remote.transport,
        },
    }
    server = relays.get((local.host, local.port))
    if server is not None:
        described["local"]["relayTransport"] = server.transport
    return described


def install() -> None:
    """Make aiortc build :class:`PolicyConnection` objects (idempotent)."""
    aiortc_hooks.use_ice_connection(PolicyConnection)
