"""The subscriber downlink allocator (media/bandwidth.py) on its own: priorities,
pausing the least important, hysteresis, probing and its back-off, and the pacing clock
of abs-send-time. Layers and slots are fakes here (unit tests); the real thing runs in
tests/test_netlab_bandwidth.py."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

import pytest

from media.bandwidth import (
    HEADROOM,
    PROBE_BACKOFF,
    UPGRADE_HOLD,
    Allocator,
    SendClock,
    pace_clock,
)


@dataclass
class FakeLayer:
    steady_bitrate: float
    width: int = 0
    height: int = 0


@dataclass
class FakeForwarder:
    layers: list[FakeLayer]
    wanted: FakeLayer | None = None

    def ordered_layers(self) -> list[FakeLayer]:
        return self.layers


@dataclass
class FakeVideo:
    forwarder: FakeForwarder | None
    limits: list[int | None] = field(default_factory=list)

    def limit(self, index: int | None) -> None:
        self.limits.append(index)

    @property
    def given(self) -> int | None:
        return self.limits[-1]


def simulcast(wanted: int = 2) -> FakeVideo:
    layers = [FakeLayer(150_000), FakeLayer(500_000), FakeLayer(1_500_000)]
    return FakeVideo(FakeForwarder(layers, layers[wanted]))


def allocator(estimate: float | None) -> Allocator:
    alloc = Allocator()
    if estimate is not None:
        alloc.on_remb(estimate)
    return alloc


def test_without_an_estimate_nothing_is_limited() -> None:
    alloc = allocator(100_000)
    video = simulcast()
    alloc.allocate([(video, 0)], audio_slots=0, estimating=False, now=0.0)
    assert video.given is None and alloc.stats()["estimate"] is None
    off = Allocator(enabled=False)
    off.on_remb(100_000)
    off.allocate([(video, 0)], audio_slots=0, now=0.0)
    assert video.given is None


def test_enough_for_everything_limits_nothing() -> None:
    alloc = allocator(10_000_000)
    videos = [simulcast() for _ in range(3)]
    alloc.allocate([(v, i) for i, v in enumerate(videos)], audio_slots=2, now=0.0)
    assert [v.given for v in videos] == [None, None, None]
    assert alloc.stats()["limited"] == 0 and alloc.needed is None


def test_priority_decides_who_climbs_and_who_is_paused() -> None:
    # 1.2 Mbit/s: three lowest layers (450k) and one step to h for the most important
    alloc = allocator(1_200_000)
    screen, speaker, rest = simulcast(), simulcast(), simulcast()
    alloc.allocate([(rest, 3000), (screen, 0), (speaker, 1000)], audio_slots=0, now=0.0)
    assert (screen.given, speaker.given, rest.given) == (1, 0, 0)
    # 250k: one lowest layer fits; the least important are paused
    alloc = allocator(250_000)
    alloc.allocate([(rest, 3000), (screen, 0), (speaker, 1000)], audio_slots=0, now=0.0)
    assert (screen.given, speaker.given, rest.given) == (0, -1, -1)
    assert alloc.stats()["paused"] == 2


def test_the_most_important_video_keeps_its_lowest_layer_whatever_the_estimate() -> None:
    alloc = allocator(10_000)
    video = simulcast()
    alloc.allocate([(video, 0)], audio_slots=1, now=0.0)
    assert video.given == 0


def test_nothing_is_paused_on_the_start_estimate_alone() -> None:
    alloc = Allocator(start=200_000)
    videos = [simulcast() for _ in range(4)]
    alloc.allocate([(v, i) for i, v in enumerate(videos)], audio_slots=0, now=0.0)
    assert [v.given for v in videos] == [0, 0, 0, 0]


def test_a_hidden_video_costs_nothing() -> None:
    alloc = allocator(300_000)
    hidden, shown = simulcast(), simulcast()
    hidden.forwarder.wanted = None  # type: ignore[union-attr]
    alloc.allocate([(hidden, 0), (shown, 1)], audio_slots=0, now=0.0)
    assert hidden.given is None and shown.given == 0


def test_audio_is_reserved_before_video() -> None:
    # 0.9 * 800k = 720k; with 6 microphones (240k) h (500k) no longer fits
    alloc = allocator(800_000)
    video = simulcast()
    alloc.allocate([(video, 0)], audio_slots=0, now=0.0)
    assert video.given == 1
    alloc = allocator(800_000)
    alloc.allocate([(video, 0)], audio_slots=6, now=0.0)
    assert video.given == 0


def test_an_upgrade_needs_a_margin_and_waits_after_a_downgrade() -> None:
    alloc = allocator(700_000)  # 630k budget: q (150k), and h (350k more) with margin
    video = simulcast()
    alloc.allocate([(video, 0)], audio_slots=0, now=0.0)
    assert video.given == 1
    alloc.on_remb(300_000)
    alloc.allocate([(video, 0)], audio_slots=0, now=1.0)
    assert video.given == 0  # down at once
    # plenty again, but within the hold after the downgrade: still q
    alloc.on_remb(2_000_000)
    alloc.allocate([(video, 0)], audio_slots=0, now=1.0 + UPGRADE_HOLD / 2)
    assert video.given == 0
    alloc.allocate([(video, 0)], audio_slots=0, now=1.0 + UPGRADE_HOLD)
    assert video.given is None  # all it wants
    # an estimate that holds h, but not with 15 % to spare, does not lift q
    alloc = allocator(200_000)
    alloc.allocate([(video, 0)], audio_slots=0, now=0.0)
    assert video.given == 0
    alloc.on_remb((150_000 + 350_000 * 1.1) / HEADROOM)
    alloc.allocate([(video, 0)], audio_slots=0, now=10.0)
    assert video.given == 0
    alloc.on_remb((150_000 + 350_000 * 1.2) / HEADROOM)
    alloc.allocate([(video, 0)], audio_slots=0, now=11.0)
    assert video.given == 1


def test_a_small_dip_of_the_estimate_does_not_take_a_layer_away() -> None:
    alloc = allocator(1_000_000)
    a, b = simulcast(wanted=0), simulcast(wanted=0)
    alloc.allocate([(a, 0), (b, 1)], audio_slots=0, now=0.0)
    assert (a.given, b.given) == (None, None)  # both on q, all they want
    alloc.on_remb(310_000)  # 279k budget for 300k of video: kept within the headroom
    alloc.allocate([(a, 0), (b, 1)], audio_slots=0, now=1.0)
    assert (a.given, b.given) == (None, None)
    alloc.on_remb(250_000)  # beyond the headroom: the less important is paused
    alloc.allocate([(a, 0), (b, 1)], audio_slots=0, now=2.0)
    assert (a.given, b.given) == (None, -1)


def test_probing_pads_the_refused_step_and_backs_off_when_the_estimate_falls() -> None:
    alloc = allocator(400_000)
    video = simulcast()
    alloc.allocate([(video, 0)], audio_slots=0, now=0.0)
    assert video.given == 0
    # the step to h (350k more, with margin) is padded, at most half the estimate
    assert alloc.probe_target(now=0.1) == pytest.approx(min(350_000 * 1.15, 200_000))
    assert alloc.stats()["probing"]
    alloc.on_remb(420_000)
    assert alloc.probe_target(now=0.5) > 0
    alloc.on_remb(360_000)  # fell by more than a tenth from the peak: the link is full
    assert alloc.probe_target(now=0.6) == 0.0
    assert alloc.stats()["probesFailed"] == 1
    assert alloc.probe_target(now=0.6 + PROBE_BACKOFF - 0.1) == 0.0
    assert alloc.probe_target(now=0.6 + PROBE_BACKOFF) > 0  # the next probe
    alloc.on_remb(300_000)
    alloc.probe_target(now=0.7 + PROBE_BACKOFF)
    # the second failure waits twice as long
    assert alloc.probe_target(now=0.7 + 3 * PROBE_BACKOFF - 0.1) == 0.0
    assert alloc.probe_target(now=0.7 + 3 * PROBE_BACKOFF) > 0


def test_nothing_to_probe_for_when_everything_fits() -> None:
    alloc = allocator(5_000_000)
    video = simulcast()
    alloc.allocate([(video, 0)], audio_slots=0, now=0.0)
    assert alloc.probe_target(now=0.1) == 0.0


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "pure"])
def test_the_send_clock_stamps_as_a_pacer_would(compiled: bool) -> None:
    alloc = allocator(1_000_000)
    alloc.estimating = True
    clock = pace_clock(alloc, 3, compiled)
    assert isinstance(clock, SendClock) is not compiled  # compiled: media/_pace.c
    stamps = [clock.stamp(1250) for _ in range(5)]  # 10 kbit each: a burst written at once
    for block in stamps:
        assert block[:4] == b"\xbe\xde\x00\x01" and block[4] == (3 << 4) | 2
    values = [int.from_bytes(b[5:8], "big") for b in stamps]
    steps = [(b - a) % (1 << 24) / (1 << 18) for a, b in itertools.pairwise(values)]
    # 2.5 x 1 Mbit/s: 10 kbit leave every 4 ms, though all were written at once
    assert all(step == pytest.approx(0.004, abs=0.0002) for step in steps)
    # The estimate in force: a new REMB paces at once; none reported, or estimation
    # off, paces at the start rate; the clock reads the allocator each time.
    alloc.on_estimate(4_000_000)
    assert alloc.current() == 4_000_000
    for rate, change in ((4_000_000, None), (alloc.start, "off"), (alloc.start, "none")):
        if change == "off":
            alloc.enabled = False
        elif change == "none":
            alloc.enabled, alloc.estimate = True, None
        time.sleep(0.01)  # the burst above has left: the next stamps start from now
        values = [int.from_bytes(clock.stamp(1250)[5:8], "big") for _ in range(3)]
        steps = [(b - a) % (1 << 24) / (1 << 18) for a, b in itertools.pairwise(values)]
        assert all(step == pytest.approx(10_000 / 2.5 / rate, abs=0.0002) for step in steps)
    with pytest.raises(TypeError):
        clock.stamp("big")


def test_a_video_that_keeps_coming_back_only_to_be_paused_waits_longer_each_time() -> None:
    alloc = allocator(2_000_000)
    first, second = simulcast(wanted=0), simulcast(wanted=0)
    videos = [(first, 0), (second, 1)]
    now = 0.0
    pauses = []
    for _ in range(3):
        alloc.on_remb(200_000)  # room for one: the second is paused
        alloc.allocate(videos, audio_slots=0, now=now)
        assert second.given == -1
        pauses.append(now)
        alloc.on_remb(2_000_000)  # room again: it comes back once its hold is over
        while second.given == -1:
            now += 0.25
            alloc.allocate(videos, audio_slots=0, now=now)
        now += 1.0  # and is paused again soon after
    waits = [resumed - paused for paused, resumed in itertools.pairwise(pauses)]
    assert waits[1] > waits[0] * 1.5, waits  # the hold doubled


def test_a_link_found_open_by_a_probe_ends_the_hold_of_a_flapping_video() -> None:
    alloc = allocator(2_000_000)
    first, second = simulcast(wanted=0), simulcast(wanted=0)
    videos = [(first, 0), (second, 1)]
    alloc.allocate(videos, audio_slots=0, now=0.0)
    assert second.given is None
    alloc.on_remb(200_000)  # room for one: the second is paused
    alloc.allocate(videos, audio_slots=0, now=0.25)
    assert second.given == -1
    alloc.on_remb(2_000_000)
    alloc.allocate(videos, audio_slots=0, now=0.5)
    assert second.given == -1  # held: the estimate may just be swinging
    alloc.link_open = True  # a probe arrived as fast as it was sent
    alloc.allocate(videos, audio_slots=0, now=0.75)
    assert second.given is None
