"""Prometheus metrics of one hub, in a registry of its own (several hubs may share a process
in tests). Label children are cached so the hot path does a dict lookup, not a label parse."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

RELAY_SECONDS = "switchboard_sfu_relay_seconds"


def relay_totals(exposition: str) -> dict[str, dict[str, float]]:
    """The relay histogram read back from a node's ``/metrics`` text: each operation's
    ``count`` and ``sum`` (seconds), for load tests comparing two readings."""
    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(exposition):
        if family.name != RELAY_SECONDS:
            continue
        for sample in family.samples:
            kind = sample.name.removeprefix(RELAY_SECONDS + "_")
            if kind in ("count", "sum"):
                out.setdefault(sample.labels["op"], {})[kind] = sample.value
    return out


class _Labels:
    """Label children cached by (metric, label): a dict lookup on the hot path."""

    def __init__(self) -> None:
        self._children: dict[tuple[int, str], MetricWrapperBase] = {}

    def child(self, metric: MetricWrapperBase, label: str) -> MetricWrapperBase:
        key = (id(metric), label)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(label)
        return child


class FanoutMetrics:
    """What the fan-out measures; owned by the delivery (which the state backend builds
    before the node exists) and registered in the node's registry by the node."""

    def __init__(self) -> None:
        self.events_out = Counter(
            "switchboard_events_out",
            "Outbound event deliveries by type",
            ["type"],
            registry=None,
        )
        self.fanout_seconds = Histogram(
            "switchboard_fanout_seconds",
            "Time to write one event to all its recipients",
            buckets=(
                0.00005,
                0.0001,
                0.00025,
                0.0005,
                0.001,
                0.0025,
                0.005,
                0.01,
                0.025,
                0.05,
                0.1,
                0.25,
                1.0,
            ),
            registry=None,
        )
        self._labels = _Labels()

    def collectors(self) -> list[MetricWrapperBase]:
        return [self.events_out, self.fanout_seconds]

    def observe(self, type_: str, started: float, count: int) -> None:
        """One fan-out of ``type_`` that began at ``started`` (perf_counter) and made
        ``count`` writes."""
        self.fanout_seconds.observe(time.perf_counter() - started)
        if count:
            self._labels.child(self.events_out, type_).inc(count)  # type: ignore[attr-defined]


class HubMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.connections = Gauge(
            "switchboard_connections", "Open WebSocket connections", registry=self.registry
        )
        self.connections_total = Counter(
            "switchboard_connections_opened",
            "WebSocket connections accepted",
            registry=self.registry,
        )
        self.upgrades_refused = Counter(
            "switchboard_upgrades_refused",
            "WebSocket upgrades refused, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.events_in = Counter(
            "switchboard_events_in", "Inbound events by type", ["type"], registry=self.registry
        )
        self.errors = Counter(
            "switchboard_errors", "Error replies by code", ["code"], registry=self.registry
        )
        self.closes = Counter(
            "switchboard_server_closes",
            "Connections closed by the server, by close code",
            ["code"],
            registry=self.registry,
        )
        self.messages = Counter(
            "switchboard_messages",
            "message:send outcomes (sent, duplicate, refused, backend_error, backend_timeout, "
            "backend_unavailable, busy)",
            ["outcome"],
            registry=self.registry,
        )
        self.message_backend_seconds = Histogram(
            "switchboard_message_backend_seconds",
            "Time the chat backend took to answer one message:send",
            registry=self.registry,
        )
        self.calls_active = Gauge(
            "switchboard_calls_active", "Calls ringing or active", registry=self.registry
        )
        self.webhooks = Counter(
            "switchboard_webhooks",
            "Webhook delivery attempts and events by outcome "
            "(delivered, retried, abandoned, dropped)",
            ["outcome"],
            registry=self.registry,
        )
        self.webhook_seconds = Histogram(
            "switchboard_webhook_seconds",
            "Duration of one webhook delivery attempt",
            registry=self.registry,
        )
        self.api_requests = Counter(
            "switchboard_api_requests",
            "Room API requests by answer status",
            ["status"],
            registry=self.registry,
        )
        self.relay_seconds = Histogram(
            RELAY_SECONDS,
            "Round trip of SFU signaling relayed to the room's media node on another node "
            "(request out, answer back), by operation",
            ["op"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
            registry=self.registry,
        )
        self.sfu_relocations = Counter(
            "switchboard_sfu_relocations",
            "Group call rooms moved to another media node, by reason (node_lost, drained)",
            ["reason"],
            registry=self.registry,
        )
        self._labels = _Labels()

    def include(self, collectors: list[MetricWrapperBase]) -> None:
        """Register metrics another part owns (the fan-out's) in this node's registry."""
        for collector in collectors:
            self.registry.register(collector)

    def _child(self, metric: MetricWrapperBase, label: str) -> MetricWrapperBase:
        return self._labels.child(metric, label)

    def event_in(self, type_: str) -> None:
        self._child(self.events_in, type_).inc()  # type: ignore[attr-defined]

    def error(self, code: str) -> None:
        self._child(self.errors, code).inc()  # type: ignore[attr-defined]

    def webhook_outcome(self, outcome: str) -> None:
        self._child(self.webhooks, outcome).inc()  # type: ignore[attr-defined]

    def api_request(self, status: int) -> None:
        self._child(self.api_requests, str(status)).inc()  # type: ignore[attr-defined]
