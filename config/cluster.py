"""``[cluster]``: sharing state with other nodes through Redis, and this node's place in
the node registry."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, Field


class ClusterSettings(BaseModel):
    toml_table: ClassVar[str] = "cluster"
    toml_prefix: ClassVar[str] = ""

    redis_url: str | None = Field(
        default=None, description="share state with other nodes through this Redis"
    )
    redis_prefix: str = Field(default="sb", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    redis_busy_timeout: float = Field(
        default=30.0,
        gt=0,
        description=(
            "how long a command waits for a free pooled Redis connection under load "
            "(rediss://, Sentinel, and cluster commands redis-py places itself)"
        ),
    )
    redis_flush_delay: float = Field(
        default=0.0,
        ge=0,
        le=0.1,
        description=(
            "seconds a typing change may wait after the previous write to Redis, so that "
            "several share one write (and Redis, and every node, one wake-up): less Redis "
            "CPU per typing event for up to this much more latency; 0 writes each at once"
        ),
    )
    node_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,32}$")
    node_heartbeat_interval: float = Field(default=5.0, gt=0)
    node_dead_after: float = Field(default=15.0, gt=0)
