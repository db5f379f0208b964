"""The one compiled module, ``media._rtpsend`` (the sending edge of forwarded RTP).

Everything else is in ``pyproject.toml``. The extension is optional: without a C compiler
the install still succeeds and the media node uses the pure-Python writer (setting
``sfu_compiled_writer``; ``make test`` installs the compiler, so the suite tests both).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("media._rtpsend", ["media/_rtpsend.c"], optional=True, extra_compile_args=["-O2"])
    ]
)
