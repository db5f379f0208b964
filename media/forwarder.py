"""Which layer of a track one subscriber gets: the deciding part of forwarding.

The subscriber says what it needs of each remote video (``sfu:subscription``): the size it
renders it at, whether it is visible, optionally a quality and a frame rate. The forwarder
turns that into a *target* layer: the smallest layer at least that big (sizes are read
from the layers' keyframes; before that, the rids' order stands in), ``high`` quality for
a pinned or full-size tile, nothing at all for a hidden one. The *current* layer only
changes on a keyframe of the target (:mod:`media.send_slot` does the switch), so the
picture never breaks; while the target layer is not flowing (the publisher paused it) the
nearest flowing one is taken instead. A lower frame rate drops VP8 temporal layers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from media.layer import Layer
    from media.published_track import PublishedTrack

QUALITIES = ("low", "medium", "high")
#: Frame rate asked for -> the highest VP8 temporal layer kept (libwebrtc's three-layer
#: pattern: TL0 at a quarter, TL0+1 at half, all at the full rate).
TEMPORAL_FOR_FPS = ((8, 0), (16, 1))


@dataclass(slots=True)
class Preference:
    """What a subscriber asked for one remote video."""

    width: int | None = None
    height: int | None = None
    visible: bool = True
    quality: str | None = None  # "low" | "medium" | "high": overrides the size
    fps: int | None = None

    def max_temporal(self) -> int | None:
        if not self.fps:
            return None
        for limit, layer in TEMPORAL_FOR_FPS:
            if self.fps <= limit:
                return layer
        return None


class Forwarder:
    """One subscriber's view of one track: the layer wanted, the layer being sent."""

    __slots__ = (
        "current",
        "limit",
        "max_tid",
        "preference",
        "target",
        "track",
        "upgrading_temporal",
        "wanted",
    )

    def __init__(self, track: PublishedTrack, preference: Preference | None = None) -> None:
        self.track = track
        self.preference = preference or Preference()
        #: the layer the preference asks for; ``target`` is it within the bandwidth limit
        self.wanted: Layer | None = None
        #: the highest layer (an index into :meth:`ordered_layers`) the subscriber's
        #: bandwidth allows; -1 pauses the video; ``None``: no limit
        self.limit: int | None = None
        #: the highest VP8 temporal layer sent (None: all of them)
        self.max_tid = self.preference.max_temporal()
        self.target: Layer | None = None
        self.current: Layer | None = None
        self.upgrading_temporal = False
        self.choose()

    # -- deciding ------------------------------------------------------------------------

    def choose(self) -> Layer | None:
        """Set and return the target layer: what the preference wants, within what the
        subscriber's bandwidth allows (:mod:`media.bandwidth`)."""
        pref, layers = self.preference, self.track.layers
        if not pref.visible:
            self.wanted = None
        elif len(layers) == 1:
            self.wanted = layers[0]
        elif pref.quality is not None:
            self.wanted = _by_quality(layers, pref.quality)
        else:
            self.wanted = _by_size(layers, pref.width, pref.height)
        self.target = self.wanted
        if self.wanted is not None and self.limit is not None:
            ordered = self.ordered_layers()
            allowed = min(ordered.index(self.wanted), self.limit)
            self.target = ordered[allowed] if allowed >= 0 else None
        return self.target

    def ordered_layers(self) -> list[Layer]:
        """The track's layers from the smallest up (by the sizes keyframes showed, once
        every layer sent one; by the offer's order before)."""
        return _ordered(self.track.layers)

    def prefer(self, preference: Preference) -> Layer | None:
        before, after = self.max_tid, preference.max_temporal()
        self.preference = preference
        self.max_tid = after
        if before is not None and (after is None or after > before):
            self.upgrading_temporal = True  # higher layers resume at a layer-sync picture
        return self.choose()

    def acceptable(self, layer: Layer) -> bool:
        """Whether a keyframe of ``layer`` may start (or move) this subscriber's stream."""
        target = self.target
        if target is None:
            return False
        if layer is target:
            return True
        # The target is not flowing (paused by the publisher, or not yet started): the
        # nearest flowing layer below it (or above, if none is below) will do meanwhile.
        now = time.monotonic()
        if target.flowing(now) or (self.current is not None and self.current.flowing(now)):
            return False
        flowing = [x for x in self.track.layers if x.flowing(now)]
        below = [x for x in flowing if x.index < target.index]
        stand_in = (
            max(below, key=lambda x: x.index)
            if below
            else min(flowing, key=lambda x: x.index, default=None)
        )
        return layer is stand_in

    @property
    def switching(self) -> bool:
        return self.target is not None and self.current is not self.target

    def keep_temporal(self, tid: int | None, sync: bool) -> bool:
        """Whether a picture of temporal layer ``tid`` is sent; after the limit rises,
        higher layers resume only at a picture that depends on the base layer alone."""
        if tid is None:
            return True
        limit = self.max_tid
        if limit is not None and tid > limit:
            return False
        if self.upgrading_temporal and tid > 0:
            if not sync:
                return False
            self.upgrading_temporal = False
        return True

    def switched(self, layer: Layer) -> None:
        """The stream now comes from ``layer`` (from its keyframe, which every temporal
        layer may follow)."""
        self.current = layer
        self.upgrading_temporal = False


def _ordered(layers: list[Layer]) -> list[Layer]:
    """Smallest first: by the sizes keyframes showed once every layer sent one (a
    publisher may list its layers in any order), by the offer's order (lowest first, as
    browsers list them) before."""
    if all(layer.width and layer.height for layer in layers):
        return sorted(layers, key=lambda layer: (layer.width or 0) * (layer.height or 0))
    return layers


def _by_quality(layers: list[Layer], quality: str) -> Layer:
    """``low`` is the smallest layer, ``high`` the largest."""
    layers = _ordered(layers)
    index = round(QUALITIES.index(quality) * (len(layers) - 1) / (len(QUALITIES) - 1))
    return layers[index]


def _by_size(layers: list[Layer], width: int | None, height: int | None) -> Layer:
    """The smallest layer at least ``width`` x ``height`` (the largest if none is);
    layers whose size is not known yet count by their position (each twice the one
    below, as browsers scale simulcast layers)."""
    layers = _ordered(layers)
    if not width and not height:
        return layers[-1]
    top = layers[-1]
    for layer in layers:
        w, h = layer.width, layer.height
        if w is None or h is None:
            scale = 2 ** (len(layers) - 1 - layer.index)
            if top.width is not None and top.height is not None:
                w, h = top.width // scale, top.height // scale
            else:
                w, h = 1280 // scale, 720 // scale
        if w >= (width or 0) and h >= (height or 0):
            return layer
    return top
