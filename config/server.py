"""``[server]``: the process and its WebSocket endpoint (listen address, join tokens,
per-connection abuse limits, shutdown, logging)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, Field, SecretStr

from config.fields import CommaList


class ServerSettings(BaseModel):
    toml_table: ClassVar[str] = "server"
    toml_prefix: ClassVar[str] = ""

    host: str = "127.0.0.1"
    port: int = Field(default=7880, ge=0, le=65535)

    jwt_secret: SecretStr | None = None
    jwt_leeway: float = Field(default=5.0, ge=0, description="clock skew allowed on exp/nbf")
    token_expiry_warning: float = Field(default=60.0, ge=0)
    dev_secret_file: Path = Path(".switchboard/dev-secret")
    allowed_origins: CommaList = Field(default_factory=list)

    # fits the SDP of a full group call room (signaling.events.MAX_SDP) with its envelope
    max_frame_bytes: int = Field(default=256 * 1024, ge=256)
    rate_limit_per_second: float = Field(default=20.0, gt=0)
    rate_limit_burst: int = Field(default=60, ge=1)
    error_budget: int = Field(default=20, ge=1, description="errors tolerated before close 1008")
    error_refill_per_second: float = Field(default=1.0, gt=0)
    heartbeat_interval: float = Field(default=25.0, gt=0)
    send_buffer_limit: int = Field(default=1024 * 1024, ge=4096)
    # the batcher's write of queued frames in C (signaling/_fanout.c) when it was built
    compiled_fanout: bool = True
    # ... with the sends of one flush submitted together through io_uring where the kernel
    # allows it (one system call per flush instead of one per client)
    fanout_io_uring: bool = True
    # Python's object arenas on transparent huge pages where the kernel allows them
    # (signaling/huge_pages.py: fewer TLB misses on a broadcast's reads)
    huge_pages: bool = True
    # the Socket.IO endpoint (/socket.io/) for clients of the replaced service
    socketio: bool = True
    socketio_ping_timeout: float = Field(default=20.0, gt=0)
    socketio_connect_timeout: float = Field(default=45.0, gt=0)
    # Socket.IO connection-state recovery: how long a dropped session can be resumed
    # (seconds; 0 = off, as in Socket.IO, whose recovering clients get an extra argument)
    socketio_recovery: float = Field(default=0.0, ge=0)

    demo_tokens: bool = False
    drain_timeout: float = Field(default=10.0, ge=0)
    log_format: Literal["auto", "json", "text"] = "auto"
    log_level: str = "INFO"
