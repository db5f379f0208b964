"""The two compiled modules: ``media._rtpsend`` (the sending edge of forwarded RTP, and a
steady subscriber's per-packet step before it) and
``signaling._fanout`` (the batcher's write of queued frames to clients, and a room's
broadcast written at once).

Everything else is in ``pyproject.toml``. Both extensions are optional: without a C
compiler the install still succeeds, and the node uses the pure-Python loops (settings
``sfu_compiled_writer`` and ``compiled_fanout``; ``make test`` installs the compiler, so
the suite tests both ways).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "media._rtpsend",
            ["media/_rtpsend.c", "media/_lane.c", "media/_lane_state.c", "media/_pace.c"],
            depends=["media/_rtpsend.h", "media/_lane.h"],
            optional=True,
            extra_compile_args=["-O2"],
        ),
        Extension(
            "signaling._fanout",
            [
                "signaling/_fanout.c",
                "signaling/_broadcast.c",
                "signaling/_uring.c",
                "signaling/_arenas.c",
            ],
            depends=["signaling/_fanout.h", "signaling/_uring.h"],
            optional=True,
            extra_compile_args=["-O2"],
        ),
    ]
)
