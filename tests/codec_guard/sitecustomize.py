"""Loaded at start-up of a server process under test: records every codec it creates.

Put this directory on PYTHONPATH and set CODEC_GUARD_LOG to a file. Each decoder or encoder
object built (aiortc's Decoder/Encoder classes, get_decoder/get_encoder, av's
CodecContext.create, and an output stream made with a codec context by
OutputContainer.add_stream or add_stream_from_template) appends a line to the file; an
"armed" line proves the guard ran.
"""

from __future__ import annotations

import os
from typing import Any

LOG = os.environ.get("CODEC_GUARD_LOG")


def _record(what: str) -> None:
    assert LOG is not None
    with open(LOG, "a") as fh:
        fh.write(what + "\n")


class _CodecContextProxy:
    def __init__(self, real: Any) -> None:
        self._real = real

    def create(self, *args: Any, **kwargs: Any) -> Any:
        _record(f"CodecContext.create{args}")
        return self._real.create(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _arm() -> None:
    import aiortc.codecs as codecs
    import aiortc.codecs.opus as opus
    import aiortc.codecs.vpx as vpx
    import aiortc.rtcrtpreceiver as receiver
    import aiortc.rtcrtpsender as sender
    import av
    from aiortc.codecs.base import Decoder, Encoder

    def subclasses(cls: type) -> list[type]:
        out = []
        for sub in cls.__subclasses__():
            out += [sub, *subclasses(sub)]
        return out

    for cls in subclasses(Decoder) + subclasses(Encoder):
        original = cls.__init__

        def init(self: Any, *a: Any, __original: Any = original, **kw: Any) -> None:
            _record(f"{type(self).__name__}()")
            __original(self, *a, **kw)

        cls.__init__ = init

    for module, name in (
        (codecs, "get_decoder"),
        (codecs, "get_encoder"),
        (receiver, "get_decoder"),
        (sender, "get_encoder"),
    ):
        real = getattr(module, name)

        def wrapper(*a: Any, __real: Any = real, __name: str = name, **kw: Any) -> Any:
            _record(f"{__name}{a}")
            return __real(*a, **kw)

        setattr(module, name, wrapper)

    from av.container.output import OutputContainer

    for name in ("add_stream", "add_stream_from_template"):
        real_method = getattr(OutputContainer, name)

        def method(
            self: Any, *a: Any, __real: Any = real_method, __name: str = name, **kw: Any
        ) -> Any:
            _record(f"OutputContainer.{__name}{a}")
            return __real(self, *a, **kw)

        setattr(OutputContainer, name, method)

    proxy = _CodecContextProxy(av.CodecContext)
    av.CodecContext = proxy
    vpx.CodecContext = proxy
    opus.CodecContext = proxy
    _record("armed")


if LOG:
    _arm()
