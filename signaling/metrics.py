"""Prometheus metrics of one hub, in a registry of its own (several hubs may share a process
in tests). Label children are cached so the hot path does a dict lookup, not a label parse."""

from __future__ import annotations

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
        self.events_out = Counter(
            "switchboard_events_out",
            "Outbound event deliveries by type",
            ["type"],
            registry=self.registry,
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
        self._children: dict[tuple[int, str], MetricWrapperBase] = {}

    def _child(self, metric: MetricWrapperBase, label: str) -> MetricWrapperBase:
        key = (id(metric), label)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(label)
        return child

    def event_in(self, type_: str) -> None:
        self._child(self.events_in, type_).inc()  # type: ignore[attr-defined]

    def event_out(self, type_: str, count: int) -> None:
        if count:
            self._child(self.events_out, type_).inc(count)  # type: ignore[attr-defined]

    def error(self, code: str) -> None:
        self._child(self.errors, code).inc()  # type: ignore[attr-defined]

    def webhook_outcome(self, outcome: str) -> None:
        self._child(self.webhooks, outcome).inc()  # type: ignore[attr-defined]

    def api_request(self, status: int) -> None:
        self._child(self.api_requests, str(status)).inc()  # type: ignore[attr-defined]
