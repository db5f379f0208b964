"""The server's own downlink estimate from transport-wide feedback (media.send_side), on
a simulated link: packets go through a bottleneck queue, the feedback is what a browser
would send (built by media.twcc), and the estimate must find the link's rate, jump on a
probe the link carries and not on one it cannot."""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest

from media import twcc
from media.answer_sdp import answered_transport_cc, offer_transport_cc
from media.bandwidth import Allocator
from media.downlink import Downlink
from media.repair import PADDING
from media.send_side import (
    OVERHEAD,
    PACE_FACTOR,
    PROBE_DURATION,
    PROBE_MIN_PACKETS,
    SendSideEstimator,
    TransportClock,
)


class Link:
    """A bottleneck of ``rate`` bit/s with a fixed propagation delay, and the receiver
    that reports every ``interval`` seconds."""

    def __init__(
        self,
        estimator: SendSideEstimator,
        rate: float,
        delay: float = 0.02,
        burst: int = 0,
        queue: float = 10.0,
    ) -> None:
        self.estimator, self.rate, self.delay = estimator, rate, delay
        # a packet that would wait longer than this (seconds) is dropped (0: a policer)
        self.queue = queue
        self.free_at = 0.0
        # a token bucket's burst: that many bytes pass at once after a pause (tc tbf)
        self.burst, self.tokens, self.filled_at = burst, float(burst), 0.0
        self.seq = 0
        self.pending: list[tuple[int, float]] = []  # (seq, arrival) not reported yet
        self.reported_at = 0.0

    def send(self, now: float, size: int, cluster: int = 0, at: float | None = None) -> None:
        """One packet written at ``now`` (its stamped send time ``at``, default now)."""
        self.estimator.sent(self.seq, now if at is None else at, size, cluster)
        self.tokens = min(self.burst, self.tokens + (now - self.filled_at) * self.rate / 8)
        self.filled_at = now
        if self.free_at <= now and self.tokens >= size:
            self.tokens -= size
            leaves = now
        elif self.free_at - now > self.queue:
            self.seq = (self.seq + 1) & 0xFFFF  # dropped: reported missing
            return
        else:
            leaves = self.free_at = max(now, self.free_at) + size * 8 / self.rate
        self.pending.append((self.seq, leaves + self.delay))
        self.seq = (self.seq + 1) & 0xFFFF

    def report(self, now: float) -> None:
        arrived = sorted((s, a) for s, a in self.pending if a <= now)
        if not arrived:
            return
        self.pending = [(s, a) for s, a in self.pending if a > now]
        base = arrived[0][0]
        arrivals: list[int | None] = [None] * (arrived[-1][0] - base + 1)
        for s, a in arrived:
            arrivals[s - base] = int(a * 1e6)
        self.estimator.on_feedback(twcc.build_feedback(1, 2, base, arrivals, 0), now=now)

    def run(self, start: float, seconds: float, bitrate: float, size: int = 1000) -> float:
        """Send ``bitrate`` for ``seconds`` (reporting every 50 ms); the end time."""
        gap = size * 8 / bitrate
        now, next_report = start, start + 0.05
        while now < start + seconds:
            self.send(now, size)
            now += gap
            if now >= next_report:
                self.report(next_report)
                next_report += 0.05
        return now

    def probe(self, now: float, rate: float, packets: int = 20, size: int = 271) -> float:
        """A cluster paced (in its stamps) at ``rate``, written at once; reported after."""
        cluster = self.estimator.start_cluster(now)
        for i in range(packets):
            self.send(now, size, cluster, at=now + i * size * 8 / rate)
        for step in range(1, 7):
            self.report(now + 0.05 * step)
        return now + 0.3


def test_the_estimate_settles_at_the_bottleneck_when_more_is_sent():
    estimator = SendSideEstimator(600_000)
    link = Link(estimator, rate=600_000)
    link.run(0.0, 10.0, bitrate=1_000_000)
    assert estimator.state in ("overuse", "normal", "underuse")
    assert 300_000 < estimator.estimate < 700_000, estimator.stats()


def test_an_idle_link_does_not_inflate_the_estimate():
    estimator = SendSideEstimator(500_000)
    link = Link(estimator, rate=100_000_000)
    link.run(0.0, 10.0, bitrate=300_000)
    # application limited: at most 1.5x what arrives
    assert estimator.estimate <= 1.5 * 300_000 * 1.1 + 10_000, estimator.stats()


def test_a_probe_the_link_carries_raises_the_estimate_at_once():
    estimator = SendSideEstimator(500_000)
    link = Link(estimator, rate=100_000_000)
    end = link.run(0.0, 2.0, bitrate=300_000)
    before = estimator.estimate
    link.probe(end, 2 * before)
    assert estimator.estimate >= 1.8 * before, estimator.stats()
    assert estimator.probe_results, estimator.stats()


def test_a_probe_of_a_full_link_finds_its_rate_not_more():
    estimator = SendSideEstimator(550_000)
    link = Link(estimator, rate=600_000)
    end = link.run(0.0, 3.0, bitrate=450_000)
    link.probe(end, 1_100_000)
    assert estimator.probe_results and estimator.probe_results[-1] < 650_000
    assert estimator.estimate < 700_000, estimator.stats()


def test_a_shapers_burst_does_not_pass_for_its_rate():
    estimator = SendSideEstimator(550_000)
    link = Link(estimator, rate=600_000, burst=2000)
    end = link.run(0.0, 3.0, bitrate=300_000)
    link.probe(end + 0.1, 1_100_000)
    assert estimator.probe_results and estimator.probe_results[-1] < 650_000
    assert estimator.estimate < 700_000, estimator.stats()


class BatchingLink(Link):
    """A receiver that takes packets in every ``period`` seconds (a busy host, a Wi-Fi
    hop, a user-space forwarder) and stamps each batch at that moment, a few tens of
    microseconds apart."""

    def __init__(self, *args: Any, period: float, phase: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.period, self.phase = period, phase

    def send(self, now: float, size: int, cluster: int = 0, at: float | None = None) -> None:
        queued = len(self.pending)
        super().send(now, size, cluster, at)
        if len(self.pending) > queued:
            seq, arrival = self.pending[-1]
            wake = math.ceil((arrival - self.phase) / self.period) * self.period + self.phase
            self.pending[-1] = (seq, wake + 0.00003 * (seq % 8))


def cluster_packets(rate: float) -> int:
    """As many padding packets as the downlink puts in a probe at ``rate``."""
    return max(PROBE_MIN_PACKETS, math.ceil(rate * PROBE_DURATION / 8 / (PADDING + 16)))


@pytest.mark.parametrize("period", [0.005, 0.01, 0.015])
def test_a_receiver_that_stamps_by_batches_does_not_make_a_full_link_look_faster(period):
    # Such a receiver compresses a probe's arrivals; the estimate over a 600 kbit/s link
    # must stay about it, probe after probe, whatever the batches' phase.
    for phase in (0.0, 0.003, 0.007):
        estimator = SendSideEstimator(550_000)
        link = BatchingLink(estimator, rate=600_000, burst=2000, period=period, phase=phase)
        now = link.run(0.0, 3.0, bitrate=450_000)
        for _ in range(6):
            estimator.estimate = min(estimator.estimate, 550_000)  # as overuse would
            rate = 2 * estimator.estimate
            now = link.probe(now + 0.0013, rate, packets=cluster_packets(rate))
            assert estimator.estimate < 680_000, (period, phase, estimator.stats())
            assert not estimator.link_open, (period, phase, estimator.stats())
            now = link.run(now, 1.0, bitrate=450_000)
        # and a link with room to spare still reads open at once
        estimator = SendSideEstimator(550_000)
        link = BatchingLink(estimator, rate=100_000_000, period=period, phase=phase)
        now = link.run(0.0, 2.0, bitrate=450_000)
        estimator.estimate = 550_000
        link.probe(now + 0.0013, 1_100_000, packets=cluster_packets(1_100_000))
        assert estimator.link_open and estimator.estimate >= 1_000_000, estimator.stats()


def test_one_reading_of_a_full_link_raises_nothing_the_median_of_a_few_does():
    estimator = SendSideEstimator(400_000)
    link = Link(estimator, rate=600_000)
    now = link.run(0.0, 3.0, bitrate=350_000)
    estimator.estimate = 400_000
    now = link.probe(now, 1_000_000, packets=cluster_packets(1_000_000))
    assert not estimator.link_open and len(estimator.probe_results) == 1
    # read about the link's rate, but one reading alone moves nothing
    assert 500_000 < estimator.probe_results[-1] < 650_000, estimator.stats()
    assert estimator.estimate < 450_000, estimator.stats()
    now = link.run(now, 1.0, bitrate=350_000)
    estimator.estimate = 400_000
    link.probe(now, 1_000_000, packets=cluster_packets(1_000_000))
    assert 500_000 < estimator.estimate < 650_000, estimator.stats()


def test_heavy_loss_cuts_the_estimate():
    estimator = SendSideEstimator(1_000_000)
    link = Link(estimator, rate=100_000_000)
    now = 0.0
    for step in range(40):
        for _ in range(20):
            link.send(now, 1000)
            now += 0.0025
        # a fifth of what was sent is reported lost
        link.pending = [(s, a) for s, a in link.pending if s % 5]
        link.report(now + 0.05)
        assert step < 39 or estimator.loss == pytest.approx(0.2, abs=0.05)
    assert estimator.estimate < 1_000_000, estimator.stats()


def test_an_estimate_far_above_a_policed_link_comes_down_at_once():
    # A link that drops what exceeds its rate rather than queueing it shows no delay to
    # act on: loss alone must bring down an estimate that overshot (a misread probe).
    estimator = SendSideEstimator(500_000)
    link = Link(estimator, rate=600_000, burst=2000, queue=0.0)
    now = link.run(0.0, 3.0, bitrate=450_000)
    estimator.estimate = 1_000_000
    seen, next_report = [], now + 0.05
    while now < 12.0:  # the sender follows the estimate, as the allocator does
        link.send(now, 1000)
        now += 1000 * 8 / (0.9 * estimator.estimate)
        if now >= next_report:
            link.report(next_report)
            seen.append((round(next_report, 2), round(estimator.estimate), estimator.loss))
            next_report += 0.05
    # within two seconds it fits the link...
    assert min(estimate for at, estimate, _ in seen if at < 5.0) < 620_000, seen
    # ... and grows back no further than a few percent of loss allow (GCC's hold)
    assert max(loss for at, _, loss in seen if at > 6.0) < 0.1, seen
    assert max(estimate for at, estimate, _ in seen if at > 6.0) < 800_000, seen


def test_a_late_packet_reported_again_is_neither_lost_nor_counted_twice():
    estimator = SendSideEstimator(1_000_000)
    now = 0.0
    for window in range(4):
        base = window * 40
        for k in range(40):
            estimator.sent(base + k, now + k * 0.0125, 1000, 0)
        arrivals: list[int | None] = [int((now + k * 0.0125 + 0.02) * 1e6) for k in range(40)]
        late = arrivals[5]
        arrivals[5] = None  # overtaken: reported missing first...
        feedback = twcc.build_feedback(1, 2, base, arrivals[:20], 0)
        estimator.on_feedback(feedback, now=now + 0.3)
        arrivals[5] = late  # ... then the browser reports again from it on
        feedback = twcc.build_feedback(1, 2, base + 5, arrivals[5:], 1)
        estimator.on_feedback(feedback, now=now + 0.55)
        now += 0.5
    assert estimator.loss == 0.0, estimator.stats()
    # 80 kbit every half second: counted once each
    assert estimator.acked_rate == pytest.approx(1000 * 8 / 0.0125, rel=0.1)


def test_malformed_feedback_is_refused_and_changes_nothing():
    estimator = SendSideEstimator(800_000)
    estimator.sent(0, 0.0, 1000, 0)
    good = twcc.build_feedback(1, 2, 0, [1000], 0)
    for bad in (good[:14], good[:-4] + b"\xff" * 3, b"\x8f\xcd\x00\x01" + b"\x00" * 4):
        with pytest.raises((ValueError, struct.error)):
            estimator.on_feedback(bad, now=1.0)
    assert estimator.estimate == 800_000 and estimator.feedbacks == 0


def test_a_subscribers_malformed_feedback_is_counted_and_ignored():
    downlink = Downlink(600_000, True)
    downlink.estimator = SendSideEstimator(600_000)
    downlink.estimator.sent(0, 0.0, 1000, 0)
    downlink._on_feedback(b"\x8f\xcd\x00\x02" + bytes(8))  # no FCI at all
    downlink._on_feedback(twcc.build_feedback(1, 2, 0, [1000], 0)[:-2])  # cut short
    assert downlink.malformed_feedback == 2
    assert downlink.allocator.estimate is None and downlink.estimator.estimate == 600_000
    downlink._on_feedback(twcc.build_feedback(1, 2, 0, [1000], 0))
    assert downlink.stats()["sendSide"]["feedbacks"] == 1


def test_feedback_is_split_from_the_rest_of_a_compound_packet():
    feedback = twcc.build_feedback(1, 2, 7, [1000, None, 3000], 0)
    receiver_report = bytes([0x80, 201, 0, 1]) + (5).to_bytes(4, "big")
    taken, rest = twcc.split_feedback(receiver_report + feedback + receiver_report)
    assert taken == [feedback] and rest == receiver_report * 2
    taken, rest = twcc.split_feedback(receiver_report)
    assert taken == [] and rest == receiver_report


def test_the_clock_stamps_consecutive_numbers_and_records_paced_times():
    estimator = SendSideEstimator(1_000_000)
    clock = TransportClock(estimator, ext_id=5)
    blocks = [clock.stamp(1250) for _ in range(3)]
    assert [b[:5] for b in blocks] == [bytes((0xBE, 0xDE, 0, 1, 0x51))] * 3
    assert [int.from_bytes(b[5:7], "big") for b in blocks] == [0, 1, 2]
    times = estimator.send_times[:3]
    # written at once, stamped as a pacer a little faster than the estimate would have
    # sent them, counting what the network adds to each
    wire = 1250 + OVERHEAD
    assert times[1] - times[0] == pytest.approx(wire * 8 / (PACE_FACTOR * 1_000_000), rel=0.01)
    assert list(estimator.sizes[:3]) == [wire] * 3
    assert estimator.last_seq == 2


def test_the_allocator_follows_the_servers_estimate_and_probes_by_clusters():
    allocator = Allocator(start=600_000)
    allocator.send_side()
    allocator.on_remb(100_000)  # REMB no longer counts
    assert allocator.estimate is None
    allocator.on_estimate(900_000)
    assert allocator.estimate == 900_000 and allocator.stats()["estimator"] == "transport-cc"
    allocator.estimating, allocator.needed, allocator.wanted = True, 400_000, 3_000_000
    assert allocator.cluster_rate(now=10.0) == 1_800_000
    allocator.probe_failed(10.0)
    assert allocator.cluster_rate(now=10.5) == 0
    assert allocator.cluster_rate(now=11.1) > 0


def test_the_offer_asks_for_feedback_and_the_answer_tells_whether_it_was_taken():
    offer = (
        "v=0\r\ns=-\r\nm=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=mid:0\r\n"
        f"a=extmap:4 {twcc.URI}\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\n"
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\na=rtpmap:111 opus/48000/2\r\n"
    )
    asked = offer_transport_cc(offer)
    assert "a=rtcp-fb:96 transport-cc\r\n" in asked and "rtcp-fb:97" not in asked
    assert "rtcp-fb:111" not in asked
    assert answered_transport_cc(asked) and not answered_transport_cc(offer)
