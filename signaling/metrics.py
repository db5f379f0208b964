"""Prometheus metrics of one hub, in a registry of its own (several hubs may share a process
in tests). Label children are cached so the hot path does a dict lookup, not a label parse;
what is counted per event (events in and out, the fan-out's time) is kept in plain numbers
and turned into metrics when scraped (:class:`Tally`, :class:`Timings`)."""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

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


class Tally(Collector):
    """A counter by one label, counted in a dict and exposed as a Prometheus counter when
    scraped. prometheus_client's ``Counter.inc`` takes a lock and checks its argument on
    every call, and its ``Histogram.observe`` walks the buckets in Python: per event,
    several per cent of a node's CPU in the fan-out benchmarks."""

    def __init__(self, name: str, documentation: str, label: str) -> None:
        self.name, self.documentation, self.label = name, documentation, label
        self.counts: dict[str, float] = {}

    def inc(self, value: str, amount: float = 1) -> None:
        counts = self.counts
        counts[value] = counts.get(value, 0) + amount

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self.name, self.documentation, labels=[self.label])
        for value, count in list(self.counts.items()):
            family.add_metric([value], count)
        yield family


class Timings(Collector):
    """A histogram of durations, counted per bucket in a list and exposed as a Prometheus
    histogram when scraped (see :class:`Tally`)."""

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]) -> None:
        self.name, self.documentation = name, documentation
        self.bounds = tuple(sorted(buckets))
        self.counts = [0] * (len(self.bounds) + 1)  # the last: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1  # le: the first bound >= it
        self.sum += seconds

    def collect(self) -> Iterator[HistogramMetricFamily]:
        cumulative, buckets = 0, []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        yield HistogramMetricFamily(
            self.name, self.documentation, buckets=buckets, sum_value=self.sum
        )


class FanoutMetrics:
    """What the fan-out measures; owned by the delivery (which the state backend builds
    before the node exists) and registered in the node's registry by the node."""

    def __init__(self) -> None:
        self.events_out = Tally(
            "switchboard_events_out", "Outbound event deliveries by type", "type"
        )
        self.fanout_seconds = Timings(
            "switchboard_fanout_seconds",
            "Time to write one event to all its recipients",
            (
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
        )

    def collectors(self) -> list[Collector]:
        return [self.events_out, self.fanout_seconds]

    def observe(self, type_: str, started: float, count: int) -> None:
        """One fan-out of ``type_`` that began at ``started`` (perf_counter) and made
        ``count`` writes."""
        self.fanout_seconds.observe(time.perf_counter() - started)
        if count:
            self.events_out.inc(type_, count)


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
        self.events_in = Tally("switchboard_events_in", "Inbound events by type", "type")
        self.registry.register(self.events_in)
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

    def include(self, collectors: list[Collector]) -> None:
        """Register metrics another part owns (the fan-out's) in this node's registry."""
        for collector in collectors:
            self.registry.register(collector)

    def _child(self, metric: MetricWrapperBase, label: str) -> MetricWrapperBase:
        return self._labels.child(metric, label)

    def event_in(self, type_: str) -> None:
        self.events_in.inc(type_)

    def error(self, code: str) -> None:
        self._child(self.errors, code).inc()  # type: ignore[attr-defined]

    def webhook_outcome(self, outcome: str) -> None:
        self._child(self.webhooks, outcome).inc()  # type: ignore[attr-defined]

    def api_request(self, status: int) -> None:
        self._child(self.api_requests, str(status)).inc()  # type: ignore[attr-defined]
