"""One typed settings object, filled from ``SWITCHBOARD_*`` variables and an optional TOML file.

Precedence (highest first): explicit overrides (CLI flags), environment variables, the TOML
file, built-in defaults. Defaults are chosen so ``switchboard serve --dev`` runs a complete
single-node hub with nothing else installed.
"""

from __future__ import annotations

from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from turn.credentials import ice_servers

_TOML_FILE: ContextVar[Path | None] = ContextVar("switchboard_toml_file", default=None)

CommaList = Annotated[list[str], NoDecode]

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
    "presence_changed",
)
#: Everything but presence, which is chatty and opt-in.
DEFAULT_WEBHOOK_EVENTS = WEBHOOK_EVENTS[:-1]
SecretList = Annotated[list[SecretStr], NoDecode]


class Settings(BaseSettings):
    """Every knob of a Switchboard node. Durations are seconds, sizes are bytes."""

    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_", extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=7880, ge=0, le=65535)

    jwt_secret: SecretStr | None = None
    jwt_leeway: float = Field(default=5.0, ge=0, description="clock skew allowed on exp/nbf")
    dev_secret_file: Path = Path(".switchboard/dev-secret")
    allowed_origins: CommaList = Field(default_factory=list)

    max_frame_bytes: int = Field(default=64 * 1024, ge=256)
    rate_limit_per_second: float = Field(default=20.0, gt=0)
    rate_limit_burst: int = Field(default=60, ge=1)
    error_budget: int = Field(default=20, ge=1, description="errors tolerated before close 1008")
    error_refill_per_second: float = Field(default=1.0, gt=0)
    heartbeat_interval: float = Field(default=25.0, gt=0)
    send_buffer_limit: int = Field(default=1024 * 1024, ge=4096)
    max_rooms_per_connection: int = Field(default=200, ge=1)
    max_presence_query: int = Field(default=200, ge=1)

    typing_timeout: float = Field(default=6.0, gt=0)
    typing_throttle: float = Field(default=2.0, ge=0)

    ring_timeout: float = Field(default=45.0, gt=0)
    call_grace_period: float = Field(default=30.0, ge=0)
    max_call_participants: int = Field(default=8, ge=2)
    call_history_ttl: float = Field(default=3600.0, ge=0)

    turn_secret: SecretList = Field(
        default_factory=list, description="coturn static-auth-secret(s); the first signs"
    )
    turn_urls: CommaList = Field(default_factory=list)
    stun_urls: CommaList = Field(default_factory=list)
    turn_ttl: int = Field(default=4 * 3600, ge=300, le=24 * 3600)
    turn_realm: str = "switchboard"
    turn_listening_port: int = Field(default=3478, ge=1, le=65535)
    turn_tls_port: int = Field(default=5349, ge=1, le=65535)
    turn_relay_min_port: int = Field(default=49160, ge=1024, le=65535)
    turn_relay_max_port: int = Field(default=49999, ge=1024, le=65535)
    turn_external_ip: str | None = None
    turn_cert: str | None = None
    turn_pkey: str | None = None

    sfu_room_capacity: int = Field(default=50, ge=2, le=500)
    sfu_listen_ips: CommaList = Field(default_factory=list)
    sfu_announced_ip: str | None = None
    sfu_udp_min_port: int = Field(default=40000, ge=1024, le=65535)
    sfu_udp_max_port: int = Field(default=49999, ge=1024, le=65535)
    sfu_use_ice_servers: bool = False
    sfu_ice_timeout: float = Field(default=20.0, gt=0)
    sfu_negotiation_timeout: float = Field(default=15.0, gt=0)
    sfu_keyframe_min_interval: float = Field(default=1.0, ge=0)
    sfu_speaker_interval: float = Field(default=0.3, gt=0)
    sfu_speaker_threshold_dbov: int = Field(default=60, ge=0, le=127)
    sfu_stats_log_interval: float = Field(default=30.0, ge=0)
    # Media placement in a cluster (0: no limit) and what survives a lost node.
    sfu_host_rooms: bool = True
    sfu_max_rooms: int = Field(default=0, ge=0)
    sfu_max_participants: int = Field(default=0, ge=0)
    sfu_max_cpu: float = Field(default=0.0, ge=0)
    sfu_reconnect_grace: float = Field(default=20.0, ge=0)
    sfu_drain_deadline: float = Field(default=300.0, ge=0)
    sfu_relay_timeout: float = Field(default=10.0, gt=0)
    demo_tokens: bool = False

    redis_url: str | None = Field(
        default=None, description="share state with other nodes through this Redis"
    )
    redis_prefix: str = Field(default="sb", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    node_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,32}$")
    node_heartbeat_interval: float = Field(default=5.0, gt=0)
    node_dead_after: float = Field(default=15.0, gt=0)

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

    room_auto_create: bool = Field(
        default=True, description="a first join opens a room that the API did not create"
    )
    room_empty_timeout: float = Field(default=300.0, ge=0)

    webhook_urls: CommaList = Field(default_factory=list)
    webhook_events: CommaList = Field(default_factory=lambda: list(DEFAULT_WEBHOOK_EVENTS))
    webhook_timeout: float = Field(default=5.0, gt=0)
    webhook_retry_for: float = Field(default=600.0, ge=0)
    webhook_backoff_initial: float = Field(default=0.5, gt=0)
    webhook_backoff_max: float = Field(default=30.0, gt=0)
    webhook_concurrency: int = Field(default=16, ge=1)
    webhook_buffer: int = Field(default=100_000, ge=100)

    drain_timeout: float = Field(default=10.0, ge=0)
    log_format: Literal["auto", "json", "text"] = "auto"
    log_level: str = "INFO"

    @field_validator(
        "allowed_origins",
        "turn_secret",
        "turn_urls",
        "stun_urls",
        "sfu_listen_ips",
        "webhook_urls",
        "webhook_events",
        mode="before",
    )
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("turn_urls", "stun_urls")
    @classmethod
    def _check_schemes(cls, urls: list[str], info: Any) -> list[str]:
        schemes = ("turn:", "turns:") if info.field_name == "turn_urls" else ("stun:", "stuns:")
        for url in urls:
            if not url.startswith(schemes):
                raise ValueError(f"{url!r} must start with {' or '.join(schemes)}")
        return urls

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

    def ice_servers(self, user_id: str) -> list[dict[str, Any]]:
        """The ``RTCIceServer`` list a user gets: STUN, and TURN with fresh credentials."""
        return ice_servers(
            stun_urls=self.stun_urls,
            turn_urls=self.turn_urls,
            turn_secrets=[s.get_secret_value() for s in self.turn_secret],
            user_id=user_id,
            ttl=self.turn_ttl,
        )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_file = _TOML_FILE.get()
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> Settings:
    """Build the settings; ``config_file`` falls back to ``SWITCHBOARD_CONFIG``.

    ``overrides`` whose value is ``None`` are ignored so CLI flags left unset do not mask
    the environment or the file.
    """
    import os

    path = config_file or os.environ.get("SWITCHBOARD_CONFIG")
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
    token = _TOML_FILE.set(path)
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    finally:
        _TOML_FILE.reset(token)
