"""Structured logging: JSON lines in production, readable lines in a terminal.

Callers pass context with ``extra={...}``; only these keys are emitted, so a token or an
SDP body can never reach the log by accident through a generic field dump.
"""

from __future__ import annotations

import logging
import sys
import time

import orjson

SAFE_FIELDS = (
    "conn",
    "user",
    "room",
    "call",
    "event",
    "code",
    "reason",
    "status",
    "host",
    "port",
    "path",
    "count",
    "remote",
    "error",
    "state",
    "secret_file",
    "participant",
    "stats",
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in SAFE_FIELDS:
            if key in record.__dict__:
                entry[key] = record.__dict__[key]
        if record.exc_info and record.exc_info[0] is not None:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        fields = " ".join(f"{k}={record.__dict__[k]}" for k in SAFE_FIELDS if k in record.__dict__)
        line = f"{stamp} {record.levelname:<7} {record.getMessage()}"
        if fields:
            line += f"  {fields}"
        if record.exc_info and record.exc_info[0] is not None:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(fmt: str = "auto", level: str = "INFO") -> None:
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Libraries that narrate every ICE check and packet at INFO: their warnings only,
    # unless the operator asked for DEBUG.
    quiet = logging.WARNING if root.level > logging.DEBUG else logging.DEBUG
    for name in ("aiohttp.access", "aioice", "aiortc"):
        logging.getLogger(name).setLevel(quiet)
