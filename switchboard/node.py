"""One Switchboard node, wired: the state backend, every service, the hub and the SFU.

Each part is handed what it uses when it is built (its settings section, the stores it
reads and writes, the fan-out, the sibling services it calls), so who depends on whom is
read here, top to bottom. The node is also the state backend's one handler
(:class:`~signaling.state.handler.BackendHandler`): what the backend reports (dead nodes,
due timers, room API commands, relayed SFU messages, the heartbeat's load question) goes
to the one service that handles it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from config import Settings
from config.server import ServerSettings
from media.metrics import MediaCollector
from media.signaling import SfuSignaling
from signaling.api.endpoints import ApiServices, RoomApi
from signaling.api.routes import ENDPOINTS
from signaling.calls import GRACE, RING, CallService
from signaling.http_api import NodeHttp
from signaling.hub import Hub
from signaling.membership import MembershipService
from signaling.message_proxy import MessageProxy
from signaling.metrics import HubMetrics
from signaling.outbox import COMPILED_FANOUT, WriteMetrics, io_uring_ready
from signaling.presence import PresenceService
from signaling.presence_grace import PRESENCE_GRACE, PresenceGrace
from signaling.read_receipts import ReadReceipts
from signaling.room_control import RoomControl
from signaling.room_lifecycle import EMPTY, RoomLifecycle
from signaling.socketio.endpoint import SocketIoEndpoint
from signaling.socketio.recovery import SessionRecovery
from signaling.state import State
from signaling.state.memory import MemoryState
from signaling.state.models import RemoteConnection
from signaling.state.typing_indicators import TYPING_TIMER
from signaling.token_refresh import TokenRefresh
from signaling.typing_indicators import TypingService
from signaling.webhooks.dispatcher import WebhookDispatcher
from signaling.webhooks.outbox import WebhookOutbox
from signaling.websocket import WebSocketEndpoint
from switchboard.routes import event_routes
from turn.credentials import IceServers
from turn.health import TurnHealth

log = logging.getLogger("switchboard.node")


def warn_about_fanout(s: ServerSettings) -> None:
    """Say at start when the client writes asked for cannot be had here."""
    if s.compiled_fanout and not COMPILED_FANOUT:
        log.warning(
            "compiled_fanout is on but signaling._fanout was not built (no C compiler at "
            "install): frames are written by the pure-Python loop"
        )
    elif s.compiled_fanout and s.fanout_io_uring and not io_uring_ready():
        log.warning(
            "fanout_io_uring is on but io_uring is unavailable here (a kernel before 5.7, "
            "turned off, or refused by a seccomp filter): each client's frames are a send "
            "of their own"
        )


def make_state(settings: Settings) -> State:
    """In-memory state by default; Redis when ``redis_url`` is set (several nodes)."""
    if settings.redis_url is None:
        return MemoryState()
    from signaling.state.redis import RedisState

    return RedisState(
        settings.redis_url,
        prefix=settings.redis_prefix,
        node_id=settings.node_id,
        heartbeat_interval=settings.node_heartbeat_interval,
        dead_after=settings.node_dead_after,
        node_info={"host": settings.host, "port": settings.port},
        busy_timeout=settings.redis_busy_timeout,
        flush_delay=settings.redis_flush_delay,
    )


class Node:
    def __init__(self, settings: Settings, state: State | None = None) -> None:
        self.settings = s = settings
        self.state = state = state or make_state(settings)
        state.configure_history(size=s.history_size, ttl=s.history_ttl)
        self.metrics = metrics = HubMetrics()
        metrics.include(state.delivery.metrics.collectors())
        fanout = state.delivery
        self.ice_servers = ice_servers = IceServers(s)
        self.turn_health = TurnHealth([*s.turn_urls, *s.stun_urls])
        self.webhooks = webhooks = WebhookOutbox(
            state.webhooks,
            metrics,
            s.webhook_urls,
            set(s.webhook_events),
            state.node_id,
            s.webhook_buffer,
        )
        self.webhook_dispatcher: WebhookDispatcher | None = None
        if s.webhook_urls and s.api_secret is not None:
            secret = s.api_secret.get_secret_value()
            self.webhook_dispatcher = WebhookDispatcher(
                state.webhooks, metrics, s, secret, state.node_id
            )

        self.calls = calls = CallService(
            store=state.calls,
            presence=state.presence,
            timers=state.timers,
            fanout=fanout,
            webhooks=webhooks,
            metrics=metrics,
            settings=s,
            ice_servers=ice_servers,
            overlap=state.overlap,
        )
        self.lifecycle = lifecycle = RoomLifecycle(
            records=state.records,
            membership=state.membership,
            call_store=state.calls,
            calls=calls,
            timers=state.timers,
            delivery=state.delivery,
            webhooks=webhooks,
            settings=s,
        )
        self.typing = typing = TypingService(
            store=state.typing, fanout=fanout, timeout=s.typing_timeout, throttle=s.typing_throttle
        )
        self.presence = presence = PresenceService(
            store=state.presence,
            membership=state.membership,
            fanout=fanout,
            webhooks=webhooks,
            max_query=s.max_presence_query,
            overlap=state.overlap,
        )
        self.membership = membership = MembershipService(
            store=state.membership,
            presence=state.presence,
            history=state.history,
            fanout=fanout,
            lifecycle=lifecycle,
            typing=typing,
            max_rooms_per_connection=s.max_rooms_per_connection,
        )
        self.sfu = sfu = SfuSignaling(
            settings=s,
            heartbeat_interval=s.node_heartbeat_interval,
            nodes=state.nodes,
            hosts=state.hosts,
            records=state.records,
            lifecycle=lifecycle,
            fanout=fanout,
            webhooks=webhooks,
            metrics=metrics,
            ice_servers=ice_servers,
        )
        metrics.registry.register(MediaCollector(sfu.media))
        self.room_control = RoomControl(delivery=state.delivery, membership=membership, media=sfu)
        assert s.jwt_secret is not None
        self.tokens = tokens = TokenRefresh(
            secret=s.jwt_secret.get_secret_value(),
            leeway=s.jwt_leeway,
            warning=s.token_expiry_warning,
        )
        self.messages = messages = MessageProxy(
            url=s.message_backend_url,
            secret=s.api_secret.get_secret_value() if s.api_secret is not None else None,
            sent=state.sent,
            fanout=fanout,
            metrics=metrics,
            timeout=s.message_backend_timeout,
            concurrency=s.message_backend_concurrency,
            queue=s.message_backend_queue,
            max_content_bytes=s.message_max_content_bytes,
            dedupe_ttl=s.message_dedupe_ttl,
        )
        self.receipts = receipts = ReadReceipts(
            fanout=fanout, webhooks=webhooks, throttle=s.read_receipt_throttle
        )
        self.presence_grace = presence_grace = PresenceGrace(
            timers=state.timers,
            delivery=state.delivery,
            typing=typing,
            release=[presence.device_gone, membership.connection_gone],
            grace=s.presence_grace,
        )
        self.hub = hub = Hub(
            settings=s,
            delivery=state.delivery,
            metrics=metrics,
            ice_servers=ice_servers,
            routes=event_routes(
                presence=presence,
                membership=membership,
                typing=typing,
                calls=calls,
                sfu=sfu,
                tokens=tokens,
                receipts=receipts,
                messages=messages,
            ),
            # Connect and disconnect hooks are independent and run side by side on Redis
            # (in memory in order: as tasks they would only cost loop turns); release
            # hooks run in order (presence first: its audience is the rooms left next).
            overlap=state.overlap,
            on_connected=[
                presence.device_connected,
                calls.device_connected,
                tokens.device_connected,
            ],
            on_disconnected=[presence_grace.connection_ended, calls.connection_gone],
            on_released=[presence.device_gone, membership.connection_gone, calls.connection_gone],
            on_closed=[sfu.connection_gone, tokens.connection_closed, receipts.connection_closed],
        )
        warn_about_fanout(s)
        self.websocket = WebSocketEndpoint(hub, s, metrics, state.delivery.new_connection_id)
        metrics.include([WriteMetrics(self.websocket.batcher)])
        self.socketio = (
            SocketIoEndpoint(
                hub,
                s,
                metrics,
                state.delivery.new_connection_id,
                SessionRecovery(
                    snapshots=state.snapshots,
                    resume_room=membership.resume,
                    window=s.socketio_recovery,
                )
                if s.socketio_recovery
                else None,
            )
            if s.socketio
            else None
        )
        self.http = NodeHttp(
            hub=hub,
            settings=s,
            metrics=metrics,
            state_status=state.status,
            turn_health=self.turn_health,
            calls=state.calls,
            ice_servers=ice_servers,
        )
        self.room_api = RoomApi(
            ApiServices(
                settings=s,
                records=state.records,
                membership=state.membership,
                presence=state.presence,
                calls=state.calls,
                hosts=state.hosts,
                lifecycle=lifecycle,
                call_service=calls,
                fanout=fanout,
                media=sfu,
                metrics=metrics,
            ),
            ENDPOINTS,
        )
        #: Which service a due timer goes to, by the kind it was armed with.
        self._timers: dict[str, Callable[..., Awaitable[None]]] = {
            TYPING_TIMER: typing.expired,
            RING: calls.ring_expired,
            GRACE: calls.grace_over,
            EMPTY: lifecycle.empty_expired,
            PRESENCE_GRACE: presence_grace.expired,
        }

    # -- running ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self.state.start(self)
        self.calls.start()
        self.webhooks.start()
        await self.messages.start()
        if self.webhook_dispatcher is not None:
            self.webhook_dispatcher.start()
        self.sfu.start()

    async def stop(self) -> None:
        await self.sfu.stop()
        await self.calls.stop()
        await self.webhooks.stop()
        await self.messages.stop()
        if self.webhook_dispatcher is not None:
            await self.webhook_dispatcher.stop()
        await self.state.close()

    # -- what the state backend reports (BackendHandler) -----------------------------------

    async def connections_lost(self, lost: list[RemoteConnection]) -> None:
        await self.hub.release_lost(lost)

    async def timer_fired(self, kind: str, parts: list[str]) -> None:
        handler = self._timers.get(kind)
        if handler is None:
            log.warning("dropping a timer of unknown kind %r", kind[:64])
            return
        await handler(*parts)

    async def control(self, users: list[str], command: dict[str, Any]) -> None:
        await self.room_control.apply(users, command)

    async def node_message(self, message: dict[str, Any]) -> None:
        await self.sfu.relay.on_message(message)

    async def media_hosts_lost(self, node: str, rooms: list[str]) -> None:
        await self.sfu.host_reaped(node, rooms)

    def node_load(self) -> dict[str, Any]:
        return self.sfu.media.load()
