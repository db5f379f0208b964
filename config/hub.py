"""``[hub]``: presence queries, rooms, typing indicators and 1:1 calls."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, Field


class HubSettings(BaseModel):
    toml_table: ClassVar[str] = "hub"
    toml_prefix: ClassVar[str] = ""

    max_rooms_per_connection: int = Field(default=200, ge=1)
    max_presence_query: int = Field(default=200, ge=1)

    typing_timeout: float = Field(default=6.0, gt=0)
    typing_throttle: float = Field(default=2.0, ge=0)
    read_receipt_throttle: float = Field(default=1.0, ge=0)
    presence_grace: float = Field(default=3.0, ge=0)
    history_size: int = Field(default=100, ge=0, le=10_000)
    history_ttl: float = Field(default=300.0, gt=0)

    ring_timeout: float = Field(default=45.0, gt=0)
    call_grace_period: float = Field(default=30.0, ge=0)
    max_call_participants: int = Field(default=8, ge=2)
    call_history_ttl: float = Field(default=3600.0, ge=0)

    room_auto_create: bool = Field(
        default=True, description="a first join opens a room that the API did not create"
    )
    room_empty_timeout: float = Field(default=300.0, ge=0)
