"""``[turn]``: the STUN/TURN servers handed to clients, their credentials, and the coturn
config rendered from the same values."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, Field, field_validator

from config.fields import CommaList, SecretList


class TurnSettings(BaseModel):
    toml_table: ClassVar[str] = "turn"
    toml_prefix: ClassVar[str] = "turn_"

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
    turn_allowed_peer_ips: CommaList = Field(
        default_factory=list,
        description="ranges the relay may reach despite the denied private ranges",
    )

    @field_validator("turn_urls", "stun_urls")
    @classmethod
    def _check_schemes(cls, urls: list[str], info: object) -> list[str]:
        name = getattr(info, "field_name", "")
        schemes = ("turn:", "turns:") if name == "turn_urls" else ("stun:", "stuns:")
        for url in urls:
            if not url.startswith(schemes):
                raise ValueError(f"{url!r} must start with {' or '.join(schemes)}")
        return urls
