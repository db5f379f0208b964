"""``[messages]``: chat messages sent over the socket, proxied to the chat backend."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, Field


class MessageSettings(BaseModel):
    toml_table: ClassVar[str] = "messages"
    toml_prefix: ClassVar[str] = "message_"

    message_backend_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="where message:send is POSTed (signed with the API secret); unset: refused",
    )
    message_backend_timeout: float = Field(default=5.0, gt=0)
    message_backend_concurrency: int = Field(default=32, ge=1)
    message_backend_queue: int = Field(default=1000, ge=0)
    message_max_content_bytes: int = Field(default=16 * 1024, ge=16)
    message_dedupe_ttl: float = Field(default=600.0, ge=0)
