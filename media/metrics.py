"""Prometheus metrics of the media this node forwards, read from the live objects at scrape
time (nothing is counted twice on the per-packet path).

* ``switchboard_sfu_participants`` and ``switchboard_sfu_published_tracks{kind}``;
* ``switchboard_sfu_layer_bitrate_bps{rid}``: what the publishers send, summed per
  simulcast layer (``rid="none"`` for tracks without simulcast);
* ``switchboard_sfu_subscriptions{layer}``: subscriptions by the layer being sent
  (``none`` for plain tracks, ``paused`` for a hidden tile);
* ``switchboard_sfu_layer_switches_total``, ``..._forwarded_packets_total``,
  ``..._retransmitted_packets_total``: counters over every subscription this node served
  (a closed subscription's counts are kept as of the last scrape that saw it open);
* ``switchboard_sfu_bandwidth_limited_videos{state}``: subscriptions held below the layer
  their tile wants by the subscriber's downlink (``lowered``) or paused by it (``paused``);
* ``switchboard_sfu_downlink_estimate_bps{stat}``: min, median and max of subscribers'
  downlink estimates (transport-cc or REMB), ``switchboard_sfu_downlink_estimators{estimator}``
  how many of each; ``switchboard_sfu_probe_padding_bytes_total``: probing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from media.host import MediaHost
    from media.send_slot import SendSlot


COUNTERS = (
    ("switchboard_sfu_layer_switches", "Simulcast layer switches", "layer_switches"),
    ("switchboard_sfu_forwarded_packets", "RTP packets forwarded to subscribers", "packets_total"),
    (
        "switchboard_sfu_retransmitted_packets",
        "Packets resent from the cache for subscribers' NACKs",
        "retransmitted",
    ),
    (
        "switchboard_sfu_probe_padding_bytes",
        "Padding sent to probe subscribers' downlinks",
        "padding_bytes",
    ),
)


class MediaCollector(Collector):
    def __init__(self, host: MediaHost) -> None:
        self.host = host
        self._seen: dict[SendSlot, tuple[int, ...]] = {}  # open at the last scrape
        self._retired = [0] * len(COUNTERS)  # subscriptions closed since

    def collect(self) -> Iterator[Metric]:
        participants = list(self.host.participants.values())
        tracks = [t for p in participants for t in p.tracks.values()]
        slots = [s for p in participants for s in p.slots if s.track is not None]

        yield GaugeMetricFamily(
            "switchboard_sfu_participants",
            "Group call participants whose media is on this node",
            value=len(participants),
        )
        published = GaugeMetricFamily(
            "switchboard_sfu_published_tracks", "Tracks published here, by kind", labels=["kind"]
        )
        for kind in ("audio", "video"):
            published.add_metric([kind], sum(1 for t in tracks if t.kind == kind))
        yield published

        bitrate = GaugeMetricFamily(
            "switchboard_sfu_layer_bitrate_bps",
            "What publishers send, summed per simulcast layer (rid 'none': no simulcast)",
            labels=["rid"],
        )
        by_rid: dict[str, float] = {}
        for track in tracks:
            for layer in track.layers:
                rid = layer.rid or "none"
                by_rid[rid] = by_rid.get(rid, 0.0) + layer.bitrate
        for rid, value in sorted(by_rid.items()):
            bitrate.add_metric([rid], value)
        yield bitrate

        subscriptions = GaugeMetricFamily(
            "switchboard_sfu_subscriptions",
            "Forwarded tracks by the layer being sent ('none': no simulcast, 'paused': hidden)",
            labels=["layer"],
        )
        by_layer: dict[str, int] = {}
        for slot in slots:
            forwarder = slot.forwarder
            if forwarder is None or not forwarder.track.simulcast:
                layer = "none"
            elif forwarder.target is None:
                layer = "paused"
            else:
                current = forwarder.current
                layer = current.rid if current is not None and current.rid else "starting"
            by_layer[layer] = by_layer.get(layer, 0) + 1
        for layer, count in sorted(by_layer.items()):
            subscriptions.add_metric([layer], count)
        yield subscriptions

        limited = GaugeMetricFamily(
            "switchboard_sfu_bandwidth_limited_videos",
            "Subscriptions held below the wanted layer (lowered) or paused by the downlink",
            labels=["state"],
        )
        limits = [s.forwarder.limit for s in slots if s.forwarder is not None]
        limited.add_metric(["lowered"], sum(1 for x in limits if x is not None and x >= 0))
        limited.add_metric(["paused"], sum(1 for x in limits if x == -1))
        yield limited
        # one pass: each subscriber's estimate, and where it comes from
        estimates: list[float] = []
        by_source = {"transport-cc": 0, "remb": 0}
        for p in participants:
            allocator = p.downlink.allocator
            estimate = allocator.current()
            if estimate is not None:
                estimates.append(estimate)
                by_source[allocator.source] += 1
        estimates.sort()
        downlinks = GaugeMetricFamily(
            "switchboard_sfu_downlink_estimate_bps",
            "Subscribers' downlink estimates (transport-cc or REMB): min, median, max",
            labels=["stat"],
        )
        if estimates:
            downlinks.add_metric(["min"], estimates[0])
            downlinks.add_metric(["median"], estimates[len(estimates) // 2])
            downlinks.add_metric(["max"], estimates[-1])
        yield downlinks
        estimators = GaugeMetricFamily(
            "switchboard_sfu_downlink_estimators",
            "Subscribers by where their estimate comes from (transport-cc: the server's)",
            labels=["estimator"],
        )
        for source, count in by_source.items():
            estimators.add_metric([source], count)
        yield estimators

        seen = {s: tuple(getattr(s, attr) for _, _, attr in COUNTERS) for s in slots}
        for slot, values in self._seen.items():
            if slot not in seen:
                self._retired = [a + b for a, b in zip(self._retired, values, strict=True)]
        self._seen = seen
        for i, (name, doc, _) in enumerate(COUNTERS):
            total = self._retired[i] + sum(values[i] for values in seen.values())
            yield CounterMetricFamily(name, doc, value=total)
