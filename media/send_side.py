"""A subscriber's downlink estimate made by the server from transport-wide feedback
(send-side estimation, after GCC), for browsers that negotiated transport-cc.

**Why, beside REMB.** With REMB the estimate is the browser's receive-side one, which
never exceeds 1.5x what arrives and, once it met a limit, grows about 8 % a second: a
subscriber whose link recovers from 600 kbit/s needs half a minute to get its high layers
back. Sending side estimation can *probe*: send a short burst of padding at twice the
estimate and read from the feedback how fast it arrived. If the link carried it, that
rate is the new estimate at once (libwebrtc's ProbeController and ProbeBitrateEstimator do
the same), so climbing takes a few round trips, not tens of seconds.

**What is kept per packet** (:class:`TransportClock`, on the hot path): the transport-wide
sequence number stamped on every video and padding packet, its (paced) send time, size
and probe cluster, in rings indexed by the low bits of the number. Nothing else.

**What a feedback does** (:meth:`SendSideEstimator.on_feedback`, some 10-20 a second):

* *delay*: packets sent within 5 ms form a group; the change of the one-way delay from
  group to group is accumulated, smoothed, and its trend over the last 20 groups (a
  least-squares slope) compared with an adaptive threshold, as GCC's trendline filter
  does. A rising trend (a queue filling) is overuse: the estimate drops to 85 % of what
  the subscriber acknowledged receiving over the last half second. Otherwise it grows 8 %
  a second, but never past 1.5x what arrives (an idle link proves nothing), and not
  while the last half second lost over 2 %;
* *loss*: over each half second, more than 10 % lost cuts the estimate to what arrived,
  less half the loss (a link that polices rather than queues shows no delay to act on);
* *probes*: a cluster of padding sent at a known pace whose packets mostly arrived gives
  ``min(send rate, receive rate)``; above the estimate, it becomes the estimate. When the
  link visibly slowed the probe, the reading is 95 % of the receive rate, measured over
  a few tens of milliseconds: a receiver (or a Wi-Fi hop, or a user-space forwarder) that
  takes in packets in batches stamps a run of them at once, and such a window then reads
  up to half again the link's rate. So a full link's reading raises the estimate only to
  the median of the last few (:data:`FULL_READINGS`, two at least): one misread no
  longer sends a subscriber's high layers into a link that cannot carry them.

Send times are a pacing clock's, as for abs-send-time (:class:`media.bandwidth.SendClock`):
what a pacer at :data:`PACE_FACTOR` x the estimate would have sent, since the SFU writes
each packet as it comes and a keyframe would otherwise look like a queue building.
"""

from __future__ import annotations

import math
import struct
import time
from array import array
from collections import deque
from dataclasses import dataclass, field

from media import twcc

#: Packets remembered (a power of two): some seconds of a busy subscriber's video.
HISTORY = 8192
_MASK = HISTORY - 1
#: Packets sent within this span (seconds) form one group for the delay trend.
GROUP_SPAN = 0.005
TREND_WINDOW = 20
TREND_SMOOTHING = 0.9
TREND_GAIN = 4.0
#: The overuse threshold (ms of modified trend): start, bounds, adaptation speeds.
THRESHOLD_START, THRESHOLD_MIN, THRESHOLD_MAX = 12.5, 6.0, 600.0
THRESHOLD_UP, THRESHOLD_DOWN = 0.0087, 0.039
#: Overuse must last this long (seconds) before the estimate drops.
OVERUSE_TIME = 0.01
DECREASE = 0.85
DECREASE_INTERVAL = 0.2
INCREASE_PER_SECOND = 1.08
#: Received bitrate is measured over this window (seconds).
ACKED_WINDOW = 0.5
#: Loss is judged over this window (seconds); above HIGH the estimate is cut.
LOSS_WINDOW = 0.5
LOSS_HIGH = 0.10
#: Above this loss (the last window's) the estimate holds rather than grows (GCC's rule).
LOSS_LOW = 0.02
#: A probe cluster: at least this long (seconds) and this many packets; it counts when
#: this share of its packets were reported received. (20 ms, libwebrtc's order, spans too
#: few packets on a slow link for a receiver that stamps by batches to be read right.)
PROBE_DURATION = 0.04
PROBE_MIN_PACKETS = 5
PROBE_RECEIVED_SHARE = 0.8
#: Below this share of the send rate, the receive rate shows the link's limit.
PROBE_SATURATED = 0.9
PROBE_UTILIZATION = 0.95
#: A cluster not reported within this long (seconds) is given up.
PROBE_TIMEOUT = 1.0
#: Readings of a full link (a probe the link slowed) kept to vote on, and for how long
#: (seconds): the estimate rises to their median, never to one reading alone.
FULL_READINGS, FULL_MEMORY = 3, 10.0
#: A probe's burst queues the media behind it: the delay it adds for this long (seconds)
#: is the probe's doing, not congestion, and cuts nothing.
PROBE_QUIET = 0.7
MIN_ESTIMATE = 50_000.0
MAX_ESTIMATE = 50_000_000.0
#: Send times are stamped as a pacer at this multiple of the estimate would send: a
#: burst (a keyframe) then looks as fast as the estimate says the link is, and shows a
#: queue only where the link is slower than that. (At libwebrtc's 2.5x, every keyframe
#: of a subscriber near its limit looked like congestion and cut the estimate.)
PACE_FACTOR = 1.2
#: Bytes a packet costs on the wire beyond the payload it is stamped with: RTP header
#: and extension, SRTP tag, UDP and IPv4 headers (a shaper counts them too).
OVERHEAD = 12 + 4 + 10 + 8 + 20

NORMAL, OVERUSE, UNDERUSE = "normal", "overuse", "underuse"


@dataclass(slots=True)
class Cluster:
    """One probe: what was sent, and what the feedback said arrived."""

    started: float
    sent_bytes: int = 0
    sent: int = 0
    first_send: float = 0.0
    last_send: float = 0.0
    last_size: int = 0
    arrivals: list[tuple[float, int]] = field(default_factory=list)  # (arrival, size)


class SendSideEstimator:
    """One subscriber transport's estimate, from the transport feedback it sends."""

    def __init__(self, start: float) -> None:
        self.estimate = float(start)
        self.state = NORMAL
        self.feedbacks = 0
        self.probe_results: list[float] = []  # the last few, for stats and tests
        self._full: deque[tuple[float, float]] = deque(maxlen=FULL_READINGS)  # (at, rate)
        # the send history, by transport-wide sequence number (low bits)
        self.send_times = array("d", bytes(8 * HISTORY))
        self.sizes = array("i", bytes(4 * HISTORY))
        self.clusters = array("B", bytes(HISTORY))
        #: 1 once a packet was reported received (a late packet makes the browser report
        #: again from it on: what was told before is not counted twice)
        self.reported = array("B", bytes(HISTORY))
        self.last_seq = -1  # the last number stamped
        self._clusters: dict[int, Cluster] = {}
        self._next_cluster = 0
        # delay trend
        self._group: list[float] | None = None  # first send, last send, last arrival
        self._previous: list[float] | None = None  # the last complete group
        self._accumulated = 0.0
        self._smoothed = 0.0
        self._trend: deque[tuple[float, float]] = deque(maxlen=TREND_WINDOW)
        self._first_arrival: float | None = None
        self._deltas = 0
        self._threshold = THRESHOLD_START
        self._last_modified = 0.0
        self._overusing = -1.0
        self._overuse_count = 0
        self._threshold_at: float | None = None
        # rate control
        self._acked: deque[tuple[float, int]] = deque()  # (arrival, size)
        self._acked_bytes = 0
        self._updated_at: float | None = None
        self._decreased_at = -1e9
        # reported missing and not (yet) reported received: this window's, and the last
        # window's, which count as lost when the window closes (a reordered packet is
        # reported missing, then received)
        self._missing: set[int] = set()
        self._missing_before: set[int] = set()
        self._received = 0
        self._loss_since: float | None = None
        self._quiet_until = -1.0
        #: the last probe arrived as fast as it was sent (the link has room beyond it)
        self.link_open = False
        self.loss = 0.0

    # -- probes ----------------------------------------------------------------------------

    def start_cluster(self, now: float) -> int:
        """A new probe cluster (its pace is the clock's); its id, to stamp its packets
        with."""
        self._quiet_until = now + PROBE_QUIET
        self._next_cluster = self._next_cluster % 255 + 1
        self._clusters[self._next_cluster] = Cluster(now)
        return self._next_cluster

    def sent(self, seq: int, at: float, size: int, cluster: int) -> None:
        i = seq & _MASK
        self.send_times[i] = at
        self.sizes[i] = size
        self.clusters[i] = cluster
        self.reported[i] = 0
        self.last_seq = seq
        if cluster:
            c = self._clusters.get(cluster)
            if c is not None:
                if not c.sent:
                    c.first_send = at
                c.sent += 1
                c.sent_bytes += size
                c.last_send, c.last_size = at, size

    # -- feedback --------------------------------------------------------------------------

    def on_feedback(self, packet: bytes, now: float | None = None) -> None:
        """One transport feedback RTCP packet (header included). A malformed one is
        ignored: raises ``ValueError`` for the caller to count."""
        now = time.monotonic() if now is None else now
        try:
            base, arrivals = twcc.parse_feedback(packet)
        except (struct.error, IndexError) as exc:
            raise ValueError("malformed transport feedback") from exc
        if self.last_seq < 0:
            return
        self.feedbacks += 1
        self._arrived(base, arrivals)
        self._judge_probes(now)
        self._control(now)

    def _arrived(self, base: int, arrivals: list[int | None]) -> None:
        """Take in what one feedback reports (some 50-100 packets: locals, no calls per
        packet but for a group that completes)."""
        last = self.last_seq
        sizes, times, clusters, reported = self.sizes, self.send_times, self.clusters, self.reported
        missing, missing_before = self._missing, self._missing_before
        acked = self._acked
        acked_bytes = self._acked_bytes
        group = self._group
        received = 0
        for k, arrival_us in enumerate(arrivals):
            seq = (base + k) & 0xFFFF
            if (last - seq) & 0xFFFF >= HISTORY:
                continue  # not sent by us lately (or from the future): ignore
            i = seq & _MASK
            if reported[i]:
                continue  # told before
            if arrival_us is None:
                missing.add(seq)
                continue
            reported[i] = 1
            if missing:
                missing.discard(seq)
            if missing_before:
                missing_before.discard(seq)
            received += 1
            arrival = arrival_us * 1e-6
            size = sizes[i]
            acked.append((arrival, size))
            acked_bytes += size
            cluster = clusters[i]
            if cluster:
                c = self._clusters.get(cluster)
                if c is not None:
                    c.arrivals.append((arrival, size))
                continue  # a probe's burst is its own measure, not a sign of congestion
            send = times[i]
            if group is None or send - group[0] > GROUP_SPAN:
                if group is not None:
                    if send < group[0]:
                        continue  # reordered: sent before the group under way
                    self._group_done(group)
                group = [send, send, arrival]
            else:
                if send > group[1]:
                    group[1] = send
                if arrival > group[2]:
                    group[2] = arrival
        self._group = group
        self._received += received
        if acked:
            oldest = acked[-1][0] - ACKED_WINDOW
            while acked[0][0] < oldest:
                acked_bytes -= acked.popleft()[1]
        self._acked_bytes = acked_bytes

    def _group_done(self, group: list[float]) -> None:
        previous, self._previous = self._previous, group
        if previous is None:
            return
        send_delta = (group[1] - previous[1]) * 1000
        arrival_delta = (group[2] - previous[2]) * 1000
        self._deltas += 1
        self._accumulated += arrival_delta - send_delta
        self._smoothed = (
            TREND_SMOOTHING * self._smoothed + (1 - TREND_SMOOTHING) * self._accumulated
        )
        if self._first_arrival is None:
            self._first_arrival = group[2]
        self._trend.append(((group[2] - self._first_arrival) * 1000, self._smoothed))
        if len(self._trend) == TREND_WINDOW:
            modified = min(self._deltas, 60) * _slope(self._trend) * TREND_GAIN
            self._detect(modified, send_delta, group[2] * 1000)

    def _detect(self, modified: float, send_delta: float, now_ms: float) -> None:
        threshold = self._threshold
        if modified > threshold:
            if self._overusing < 0:
                self._overusing = send_delta / 2
            else:
                self._overusing += send_delta
            self._overuse_count += 1
            if (
                self._overusing > OVERUSE_TIME * 1000
                and self._overuse_count > 1
                and modified >= self._last_modified
            ):
                self._overusing, self._overuse_count = 0.0, 0
                self.state = OVERUSE
        elif modified < -threshold:
            self._overusing, self._overuse_count = -1.0, 0
            self.state = UNDERUSE
        else:
            self._overusing, self._overuse_count = -1.0, 0
            self.state = NORMAL
        self._last_modified = modified
        # the threshold follows the trend slowly, quickly back down (GCC's adaptation)
        if self._threshold_at is None:
            self._threshold_at = now_ms
        if abs(modified) <= threshold + 15:
            k = THRESHOLD_DOWN if abs(modified) < threshold else THRESHOLD_UP
            dt = min(max(now_ms - self._threshold_at, 0.0), 100.0)
            threshold += k * (abs(modified) - threshold) * dt
            self._threshold = min(max(threshold, THRESHOLD_MIN), THRESHOLD_MAX)
        self._threshold_at = now_ms

    # -- decisions -------------------------------------------------------------------------

    @property
    def acked_rate(self) -> float:
        """What arrived over the last :data:`ACKED_WINDOW`, in bit/s."""
        acked = self._acked
        if len(acked) < 2:
            return 0.0
        span = max(acked[-1][0] - acked[0][0], ACKED_WINDOW / 2)
        return self._acked_bytes * 8 / span

    def _control(self, now: float) -> None:
        estimate = self.estimate
        acked = self.acked_rate
        since = 0.0 if self._updated_at is None else min(now - self._updated_at, 1.0)
        self._updated_at = now
        if self.state == OVERUSE:
            if now - self._decreased_at >= DECREASE_INTERVAL and now >= self._quiet_until:
                estimate = min(estimate, DECREASE * acked) if acked else estimate * DECREASE
                self._decreased_at = now
        elif self.state == NORMAL and self.loss <= LOSS_LOW:
            grown = estimate * INCREASE_PER_SECOND**since
            # an application-limited link proves nothing beyond what it carries
            estimate = max(estimate, min(grown, 1.5 * acked + 10_000))
        if self._loss_since is None:
            self._loss_since = now
        elif now - self._loss_since >= LOSS_WINDOW:
            lost = len(self._missing_before)  # missing for a whole window: lost
            if lost + self._received >= 20:
                self.loss = lost / (lost + self._received)
                if self.loss > LOSS_HIGH:
                    # what arrived is what the link carries: an estimate far above it
                    # (a probe misread) would otherwise shed only a few percent a window
                    # while growing back as fast, and the loss would last seconds
                    if acked:
                        estimate = min(estimate, acked)
                    estimate *= 1 - 0.5 * self.loss
            self._missing_before, self._missing = self._missing, set()
            self._received = 0
            self._loss_since = now
        self.estimate = min(max(estimate, MIN_ESTIMATE), MAX_ESTIMATE)

    def _judge_probes(self, now: float) -> None:
        for key, c in list(self._clusters.items()):
            received = len(c.arrivals)
            if not c.sent or received < max(PROBE_MIN_PACKETS, PROBE_RECEIVED_SHARE * c.sent):
                if now - c.started > PROBE_TIMEOUT:
                    del self._clusters[key]
                continue
            del self._clusters[key]
            send_span = c.last_send - c.first_send
            if send_span <= 0:
                continue
            send_rate = (c.sent_bytes - c.last_size) * 8 / send_span
            tail_rate, whole_rate = self._receive_rates(c)
            recv_rate = min(tail_rate, whole_rate, send_rate / PROBE_SATURATED)
            self.link_open = recv_rate >= PROBE_SATURATED * send_rate
            if self.link_open:
                result = reading = min(send_rate, recv_rate)
            else:
                reading = PROBE_UTILIZATION * recv_rate
                result = self._full_link(now, reading)
            self.probe_results = [*self.probe_results[-4:], reading]
            if result > self.estimate:
                self.estimate = min(result, MAX_ESTIMATE)
                self.state = NORMAL
                self._updated_at = now

    def _receive_rates(self, c: Cluster) -> tuple[float, float]:
        """The receive rate (bit/s) of everything that arrived (media shares the link
        with the probe) while the cluster's second half arrived, and while all of it did
        (``inf`` for a span stamped at once).

        The second half's is the link's rate: a shaper's token bucket lets the first few
        kB through at line rate, which says nothing. But it spans a few tens of
        milliseconds, and a receiver that takes packets in by batches compresses it; the
        whole cluster's span, twice as long, is compressed half as much. A link is open
        only when both keep up with the probe's pace."""
        arrivals = sorted(c.arrivals)
        last = arrivals[-1][0]
        rates = []
        for first in (arrivals[len(arrivals) // 2 - 1][0], arrivals[0][0]):
            if last <= first:
                rates.append(math.inf)
                continue
            got = sum(size for at, size in self._acked if first < at <= last)
            rates.append(got * 8 / (last - first))
        return rates[0], rates[1]

    def _full_link(self, now: float, reading: float) -> float:
        """What a full link's ``reading`` lets the estimate rise to: the median of the
        recent readings, 0 while there is only this one."""
        full = self._full
        while full and now - full[0][0] > FULL_MEMORY:
            full.popleft()
        full.append((now, reading))
        if len(full) < 2:
            return 0.0
        rates = sorted(rate for _, rate in full)
        return rates[(len(rates) - 1) // 2]

    def stats(self) -> dict[str, object]:
        return {
            "state": self.state,
            "ackedBps": round(self.acked_rate),
            "loss": round(self.loss, 4),
            "feedbacks": self.feedbacks,
            "probeResults": [round(r) for r in self.probe_results],
        }


class TransportClock:
    """Stamps the transport-wide sequence number on a subscriber's video and padding,
    and records each packet's paced send time and size (see the module's docstring)."""

    __slots__ = ("_at", "_estimator", "_prefix", "_seq", "cluster", "probe_rate")

    def __init__(self, estimator: SendSideEstimator, ext_id: int) -> None:
        self._estimator = estimator
        self._at = 0.0
        self._seq = -1
        #: while a probe is sent: its cluster and pace
        self.cluster = 0
        self.probe_rate = 0.0
        # one-byte extension block: profile, one word, id + length 2, the number, padding
        self._prefix = bytes((0xBE, 0xDE, 0, 1, (ext_id << 4) | 1))

    def stamp(self, size: int) -> bytes:
        """The extension block for a packet of ``size`` bytes leaving now."""
        now = time.monotonic()
        estimator = self._estimator
        rate = self.probe_rate or estimator.estimate * PACE_FACTOR
        size += OVERHEAD
        at = self._at = max(now, self._at + size * 8 / rate)
        seq = self._seq = (self._seq + 1) & 0xFFFF
        estimator.sent(seq, at, size, self.cluster)
        return self._prefix + seq.to_bytes(2, "big") + b"\0"


def _slope(points: deque[tuple[float, float]]) -> float:
    """The least-squares slope of ``points`` (one pass; x taken from the first point's,
    so that the sums stay small however long the call lasts)."""
    n = len(points)
    origin = points[0][0]
    sx = sy = sxx = sxy = 0.0
    for x, y in points:
        x -= origin
        sx += x
        sy += y
        sxx += x * x
        sxy += x * y
    den = n * sxx - sx * sx
    return (n * sxy - sx * sy) / den if den else 0.0
