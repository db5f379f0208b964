"""TURN REST API credentials, as coturn verifies them under ``use-auth-secret``.

username = ``<expiry unix time>:<user id>``; credential = base64(HMAC-SHA1(secret, username)).
Credentials cannot be revoked, only expire, so they are short-lived and minted per user.
Rotation: coturn accepts any of its configured secrets, Switchboard signs with the first
one of ``turn_secret``; keep the old secret listed (in both) until the last credential
signed with it has expired.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from config.turn import TurnSettings

MIN_TTL = 300
MAX_TTL = 24 * 3600


@dataclass(frozen=True, slots=True)
class TurnCredential:
    username: str
    credential: str
    expires_at: int


def mint_turn_credential(
    secret: str, user_id: str, ttl: int, *, now: float | None = None
) -> TurnCredential:
    """Sign a credential valid for ``ttl`` seconds (clamped to 5 min .. 24 h)."""
    ttl = max(MIN_TTL, min(MAX_TTL, int(ttl)))
    expires = int(now if now is not None else time.time()) + ttl
    username = f"{expires}:{user_id}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return TurnCredential(username, base64.b64encode(digest).decode(), expires)


def ice_servers(
    *,
    stun_urls: list[str],
    turn_urls: list[str],
    turn_secrets: list[str],
    user_id: str,
    ttl: int,
) -> list[dict[str, Any]]:
    """``RTCIceServer`` entries for a user: STUN as configured, TURN with fresh credentials."""
    servers: list[dict[str, Any]] = []
    if stun_urls:
        servers.append({"urls": list(stun_urls)})
    if turn_urls and turn_secrets:
        cred = mint_turn_credential(turn_secrets[0], user_id, ttl)
        servers.append(
            {"urls": list(turn_urls), "username": cred.username, "credential": cred.credential}
        )
    return servers


class IceServers:
    """Hands each user the ICE servers of the ``[turn]`` section, with TURN credentials
    minted for that user (in ``session:ready``, call answers and ``/api/ice-servers``)."""

    def __init__(self, settings: TurnSettings) -> None:
        self.stun_urls = list(settings.stun_urls)
        self.turn_urls = list(settings.turn_urls)
        self.secrets = [s.get_secret_value() for s in settings.turn_secret]
        self.ttl = settings.turn_ttl

    def for_user(self, user_id: str) -> list[dict[str, Any]]:
        return ice_servers(
            stun_urls=self.stun_urls,
            turn_urls=self.turn_urls,
            turn_secrets=self.secrets,
            user_id=user_id,
            ttl=self.ttl,
        )
