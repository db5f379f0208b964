"""One subscriber's downlink: its estimate, and the share each of its videos gets.

**The estimate** is the subscriber's own: every forwarded video packet carries the
abs-send-time header extension, and the browser (or aiortc) runs its receive-side
estimator over the packets' spacing and reports the result as REMB. This was chosen over
transport-cc with an estimator of our own (GCC) because the receiver's estimator is
libwebrtc's, already tuned, and costs the server nothing per packet beyond a few header
bytes. Its weakness is the climb: a receive-side estimate never exceeds 1.5x what
arrives and grows about 8 % a second once it has met the link's limit, so a subscriber
climbs from low layers to high ones in some seconds, not at once.

**The allocation** (:class:`Allocator`, about three times a second) shares the estimate,
less the audio and some headroom, among the subscriber's videos by priority: screen
shares, then the active speakers, then videos pinned (asked for in high quality), then
the rest in a stable order. Every video first gets its lowest layer, or is paused when
even that does not fit (the least important first); then, in priority order, videos climb
towards the layer their tile wants while the budget lasts. The most important video keeps
its lowest layer whatever the estimate (with no video at all the subscriber would report
no estimate to climb back with). A layer costs its steady bitrate (what the publisher
sends on it, averaged over about five seconds, so that a keyframe does not pause a
video). A video goes up only when the budget holds the new layer with 15 % to spare and
it has not gone down in the last 2 s (twice as long after each time it went down
within 10 s of going up, up to 32 s: no flapping; but not once a probe found the link
open and the estimate doubled since it went down); it keeps what it has while the
estimate (without headroom) holds it.

**Probing**: while some video gets less than it wants, the subscriber's RTX stream is
padded by what the first refused step would add (at most half the estimate), so that
the estimator sees the traffic the step needs before it is taken. When the estimate falls
by a tenth from its peak during a probe, the link is full: the probe stops, and the next
waits :data:`PROBE_BACKOFF` seconds, doubling after each failure.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

try:
    from media._rtpsend import PaceClock
except ImportError:  # built without a C compiler: SendClock only
    PaceClock = None  # type: ignore[assignment,misc]

if TYPE_CHECKING:
    from media.forwarder import Forwarder
    from media.layer import Layer

#: Of the estimate, what video may use (the rest absorbs bursts: keyframes, RTX).
HEADROOM = 0.9
#: An upgrade needs this much more budget than the layer's cost...
UPGRADE_MARGIN = 1.15
#: ... and no downgrade of that video for this long (seconds), longer after flaps.
UPGRADE_HOLD = 2.0
UPGRADE_HOLD_MAX = 32.0
FLAP_WINDOW = 10.0
#: ... unless a probe found the link open and the estimate grew this much since the
#: downgrade.
RECOVERED = 2.0
#: Bitrates assumed for layers not measured yet (lowest first), and for audio.
NOMINAL_LAYER_BPS = (150_000, 500_000, 1_500_000)
AUDIO_BPS = 40_000
#: What a subscriber's downlink is assumed to hold until its first REMB (as mediasoup's
#: ``initialAvailableOutgoingBitrate``; setting ``sfu_start_bitrate``): a join starts on
#: low layers and climbs, rather than flooding a slow link with every video's high layer
#: and crashing its estimate.
START_ESTIMATE = 600_000
#: The pace stamped on forwarded video, as a multiple of the estimate (as libwebrtc's
#: pacer sends).
PACE_FACTOR = 2.5
#: Probing pads at most this share of the estimate...
PROBE_SHARE = 0.5
#: ... and stops when the estimate falls below this share of its peak during the probe,
PROBE_DROP = 0.9
#: ... then waits this long (seconds) before the next, doubling up to the maximum.
PROBE_BACKOFF = 4.0
PROBE_BACKOFF_MAX = 30.0
#: With the server's own estimate (transport-cc) probes are 20 ms clusters that cost
#: little: one that found the link full is retried after 1 s, doubling up to 3 s, and
#: after an upgrade the next waits 0.5 s (the estimate is read from the feedback at once).
CLUSTER_BACKOFF, CLUSTER_BACKOFF_MAX, CLUSTER_SETTLE = 1.0, 3.0, 0.5
#: A cluster probe succeeded when the estimate grew by this much.
CLUSTER_GAIN = 1.01


class Video(Protocol):
    """A subscriber's video slot as the allocator sees it (:class:`SendSlot`)."""

    forwarder: Forwarder | None

    def limit(self, index: int | None) -> None:
        """Cap the slot's layer (``None``: no cap, -1: paused for bandwidth)."""


@dataclass(slots=True)
class Share:
    """What one video was given at the last allocation."""

    index: int  # layer index given (-1 paused)
    cost: float
    wanted_cost: float
    downgraded_at: float = -1e9
    downgraded_on: float = 0.0  # the estimate it was downgraded on
    #: how long it must then wait to go up again: :data:`UPGRADE_HOLD`, doubled by each
    #: downgrade that follows an upgrade within :data:`FLAP_WINDOW` (a video that keeps
    #: coming back only to be paused again is worse than one left paused)
    hold: float = UPGRADE_HOLD
    upgraded_at: float = -1e9


@dataclass
class Allocator:
    """One subscriber's estimate and its videos' shares."""

    start: float = START_ESTIMATE  # assumed until the first REMB
    enabled: bool = True  # off: nothing is ever limited
    estimate: float | None = None  # the last REMB
    remb_count: int = 0
    estimating: bool = False
    shares: dict[int, Share] = field(default_factory=dict)  # by id(slot)
    allocated: float = 0.0
    wanted: float = 0.0
    #: what the first refused step costs, with margin (None: every video has what it
    #: wants)
    needed: float | None = None
    probes: int = 0
    probes_failed: int = 0
    #: where the estimate comes from: the subscriber's REMB, or the server's own
    #: estimator reading transport-cc feedback (:meth:`send_side`)
    source: str = "remb"
    #: the last probe arrived as fast as it was sent: the next may go higher
    link_open: bool = False
    _probe_peak: float | None = None  # the highest estimate during the probe under way
    _probe_resume_at: float = -1e9
    _probe_backoff: float = PROBE_BACKOFF
    # the first wait after a failed probe, the longest, and the wait after an upgrade
    _backoff_first: float = PROBE_BACKOFF
    _backoff_max: float = PROBE_BACKOFF_MAX
    _settle: float = UPGRADE_HOLD

    def on_remb(self, bitrate: float) -> None:
        if self.source == "remb":
            self.on_estimate(bitrate)

    def on_estimate(self, bitrate: float) -> None:
        self.estimate = bitrate
        self.remb_count += 1

    def send_side(self) -> None:
        """The estimate is the server's, from transport-cc feedback: REMB is ignored, and
        probes are clusters (:meth:`cluster_rate`), retried sooner."""
        self.source = "transport-cc"
        self._backoff_first = self._probe_backoff = CLUSTER_BACKOFF
        self._backoff_max, self._settle = CLUSTER_BACKOFF_MAX, CLUSTER_SETTLE

    def current(self) -> float | None:
        """The estimate in force: the last REMB, ``start`` before any, and ``None`` when
        the subscriber cannot report one (or estimation is off)."""
        if not (self.estimating and self.enabled):
            return None
        return self.start if self.estimate is None else self.estimate

    def allocate(
        self,
        videos: list[tuple[Video, int]],
        audio_slots: int,
        estimating: bool = True,
        now: float | None = None,
    ) -> None:
        """Share the estimate among ``videos`` (each with its priority, lower first).
        ``estimating`` is false when the subscriber negotiated no way to report an
        estimate (abs-send-time and REMB): then nothing is limited."""
        now = time.monotonic() if now is None else now
        self.estimating = estimating
        estimate = self.current()
        if estimate is None:
            for video, _ in videos:
                video.limit(None)
            self.shares.clear()
            self.allocated = self.wanted = 0.0
            self.needed = None
            return
        budget = estimate * HEADROOM - audio_slots * AUDIO_BPS
        self.needed = None
        ordered = sorted((v for v in videos if v[0].forwarder is not None), key=lambda v: v[1])
        plans: list[tuple[Video, list[Layer], int, Share, int]] = []
        for video, _ in ordered:
            forwarder = video.forwarder
            assert forwarder is not None
            wanted = forwarder.wanted
            if wanted is None:  # hidden: costs nothing
                video.limit(None)
                continue
            layers = forwarder.ordered_layers()
            top = layers.index(wanted)
            previous = self.shares.get(id(video))
            before = -1 if previous is None else previous.index
            share = Share(
                index=-1,
                cost=0.0,
                wanted_cost=_cost(layers, top),
                downgraded_at=previous.downgraded_at if previous else -1e9,
                downgraded_on=previous.downgraded_on if previous else 0.0,
                hold=previous.hold if previous else UPGRADE_HOLD,
                upgraded_at=previous.upgraded_at if previous else -1e9,
            )
            # The most important video always keeps its lowest layer: a subscriber with
            # no video at all would send no estimate to climb back with. Nothing is
            # paused on the start estimate alone (it only keeps layers low).
            lowest = _cost(layers, 0)
            if (
                not plans
                or self.estimate is None
                or self._may_take(budget, lowest, 0, before, share, now)
            ):
                share.index, share.cost = 0, lowest
                budget -= share.cost
            plans.append((video, layers, top, share, before))
        for _, layers, top, share, before in plans:
            while 0 <= share.index < top:
                step = _cost(layers, share.index + 1) - share.cost
                if not self._may_take(budget, step, share.index + 1, before, share, now):
                    break
                share.index += 1
                share.cost += step
                budget -= step
        self.allocated = self.wanted = 0.0
        live = set()
        for video, _, top, share, before in plans:
            if share.index < before:
                flapped = now - share.upgraded_at < FLAP_WINDOW
                share.hold = min(share.hold * 2, UPGRADE_HOLD_MAX) if flapped else UPGRADE_HOLD
                share.downgraded_at = now
                share.downgraded_on = estimate
            elif share.index > before and id(video) in self.shares:
                share.upgraded_at = now
                # climbing: let the estimate settle on the new traffic, then probe again
                self._probe_backoff = self._backoff_first
                self._probe_resume_at = now + self._settle
            video.limit(None if share.index == top else share.index)
            self.shares[id(video)] = share
            live.add(id(video))
            self.allocated += share.cost
            self.wanted += share.wanted_cost
        for key in [k for k in self.shares if k not in live]:
            del self.shares[key]

    def _may_take(
        self, budget: float, step: float, index: int, before: int, share: Share, now: float
    ) -> bool:
        """Whether a video may go to layer ``index`` (costing ``step`` more): back to
        where it was needs only the budget; above it needs a margin and no downgrade in
        the last :data:`UPGRADE_HOLD` seconds. The first step refused is remembered as
        what probing should make room for."""
        if index <= before:
            # keeping (or getting back) what it had may use the headroom too: a dip of
            # the estimate by a few percent must not pause a video
            ok = budget + (self.current() or 0.0) * (1 - HEADROOM) >= step
        else:
            # the hold is over, or a probe found the link open and the estimate doubled
            # since: the link changed (a REMB that swings proves no such thing)
            recovered = self.link_open and (self.current() or 0.0) >= (
                RECOVERED * share.downgraded_on
            )
            ok = budget >= step * UPGRADE_MARGIN and (
                now - share.downgraded_at >= share.hold or recovered
            )
        if not ok and self.needed is None:
            self.needed = step * UPGRADE_MARGIN
        return ok

    def probe_target(self, now: float | None = None) -> float:
        """Bits per second of padding to send now (see the module's "Probing")."""
        now = time.monotonic() if now is None else now
        estimate = self.current()
        if estimate is None or self.needed is None or now < self._probe_resume_at:
            self._probe_peak = None
            return 0.0
        peak = self._probe_peak
        if peak is None:
            self.probes += 1
        elif estimate < peak * PROBE_DROP:
            self.probe_failed(now)
            return 0.0
        self._probe_peak = estimate if peak is None else max(peak, estimate)
        return min(self.needed, PROBE_SHARE * estimate)

    def probe_failed(self, now: float) -> None:
        """The link is full: no probe for a while (longer after each failure)."""
        self._probe_peak = None
        self._probe_resume_at = now + self._probe_backoff
        self._probe_backoff = min(self._probe_backoff * 2, self._backoff_max)
        self.probes_failed += 1

    def cluster_rate(self, now: float | None = None) -> float:
        """The pace (bit/s) of the next probe cluster, 0 for none now: twice the
        estimate (three times after a probe the link carried whole), or less when what
        the videos want (with margin) needs less, but at least what the first refused
        step needs."""
        if self.probe_target(now) <= 0:
            return 0.0
        estimate = self.current() or self.start
        enough = max(estimate + (self.needed or 0.0), self.wanted / HEADROOM * UPGRADE_MARGIN)
        return min((3 if self.link_open else 2) * estimate, enough)

    def stats(self) -> dict[str, Any]:
        estimate = self.current()
        return {
            "estimate": round(estimate) if estimate is not None else None,
            "estimator": self.source,
            "reports": self.remb_count,
            "allocated": round(self.allocated),
            "wanted": round(self.wanted),
            "paused": sum(1 for s in self.shares.values() if s.index == -1),
            "limited": sum(1 for s in self.shares.values() if s.cost < s.wanted_cost),
            "probing": self._probe_peak is not None,
            "probes": self.probes,
            "probesFailed": self.probes_failed,
        }


class SendClock:
    """The send times stamped on one subscriber's video (abs-send-time), as a pacer
    would send them.

    A browser paces what it sends at about 2.5x its target rate, so a keyframe leaves
    spread over some milliseconds; the SFU writes each packet as it comes, and a
    keyframe leaves in one burst. Stamped with the real write times, every burst would
    look to the subscriber's estimator like a queue building (its arrivals spread by the
    link, its send times not), and the estimate would sink to what is already flowing.
    Pacing for real would cost a timer per subscriber on the hot path; stamping the times
    a pacer at :data:`PACE_FACTOR` x the estimate would have used gives the estimator the
    same signal: a link slower than that pace still shows its queue (arrivals spread
    more than the stamps), a faster one shows none.
    """

    __slots__ = ("_allocator", "_at", "_prefix")

    def __init__(self, allocator: Allocator, ext_id: int) -> None:
        self._allocator = allocator
        self._at = 0.0
        # the one-byte extension block's fixed part: profile, length 1 word, id + len 3
        self._prefix = bytes((0xBE, 0xDE, 0, 1, (ext_id << 4) | 2))

    def stamp(self, size: int) -> bytes:
        """The extension block for a packet of ``size`` bytes leaving now."""
        now = time.time()
        rate = (self._allocator.current() or self._allocator.start) * PACE_FACTOR
        at = self._at = max(now, self._at + size * 8 / rate)
        return self._prefix + (int(at * (1 << 18)) & 0xFFFFFF).to_bytes(3, "big")


def pace_clock(allocator: Allocator, ext_id: int, compiled: bool) -> Any:
    """A subscriber's :class:`SendClock`, compiled (``media/_pace.c``: a slot's compiled
    steady step stamps through it without a call into Python) if ``compiled`` and it was
    built."""
    if compiled and PaceClock is not None:
        return PaceClock(allocator, ext_id, PACE_FACTOR)
    return SendClock(allocator, ext_id)


def _cost(layers: list[Layer], index: int) -> float:
    """What forwarding ``layers[index]`` costs (bits per second): its measured bitrate,
    or a nominal one until it was measured."""
    layer = layers[index]
    if layer.steady_bitrate > 0:
        return layer.steady_bitrate
    nominal = NOMINAL_LAYER_BPS
    position = index + len(nominal) - len(layers)
    return nominal[max(0, min(position, len(nominal) - 1))]
