"""``[api]`` and ``[webhooks]``: the room API for the chat backend and the webhooks sent to
it (both signed with the API secret)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, Field, SecretStr, field_validator

from config.fields import CommaList

WEBHOOK_EVENTS = (
    "room_started",
    "room_finished",
    "participant_joined",
    "participant_left",
    "call_started",
    "call_ended",
    "call_missed",
    "track_published",
    "track_unpublished",
    "recording_started",
    "recording_damaged",
    "recording_finished",
    "presence_changed",
    "messages_read",
)
#: Everything but presence and read receipts, which are chatty and opt-in.
DEFAULT_WEBHOOK_EVENTS = WEBHOOK_EVENTS[:-2]


class ApiSettings(BaseModel):
    toml_table: ClassVar[str] = "api"
    toml_prefix: ClassVar[str] = "api_"

    api_key: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="room API key id (iss)"
    )
    api_secret: SecretStr | None = Field(
        default=None, description="signs room API tokens and webhooks"
    )
    dev_api_secret_file: Path = Path(".switchboard/dev-api-secret")
    api_token_max_ttl: float = Field(default=600.0, gt=0, le=86400)
    api_rate_limit_per_second: float = Field(default=100.0, gt=0)
    api_rate_limit_burst: int = Field(default=200, ge=1)
    api_max_body_bytes: int = Field(default=1024 * 1024, ge=1024)


class WebhookSettings(BaseModel):
    toml_table: ClassVar[str] = "webhooks"
    toml_prefix: ClassVar[str] = "webhook_"

    webhook_urls: CommaList = Field(default_factory=list)
    webhook_events: CommaList = Field(default_factory=lambda: list(DEFAULT_WEBHOOK_EVENTS))
    webhook_timeout: float = Field(default=5.0, gt=0)
    webhook_retry_for: float = Field(default=600.0, ge=0)
    webhook_backoff_initial: float = Field(default=0.5, gt=0)
    webhook_backoff_max: float = Field(default=30.0, gt=0)
    webhook_concurrency: int = Field(default=16, ge=1)
    webhook_buffer: int = Field(default=100_000, ge=100)

    @field_validator("webhook_events")
    @classmethod
    def _check_events(cls, names: list[str]) -> list[str]:
        unknown = sorted(set(names) - set(WEBHOOK_EVENTS))
        if unknown:
            raise ValueError(f"unknown webhook events {unknown}; known: {list(WEBHOOK_EVENTS)}")
        return names

    @field_validator("webhook_urls")
    @classmethod
    def _check_webhook_urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} must be an http:// or https:// URL")
        return urls
