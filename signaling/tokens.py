"""Client join tokens: HS256 JWTs minted by the chat backend (or ``switchboard token``).

Claims (documented in docs/protocol.md):

- ``sub``: user id (required), ``name``: display name (defaults to ``sub``)
- ``rooms``: room ids the holder may join; ``"*"`` is every room, ``"team-*"`` a prefix
- ``presence``: user ids whose presence the holder may query besides room co-members
- ``exp`` (required), ``iat``, ``nbf``; ``aud`` must be ``switchboard`` so tokens meant for
  other services (or the server API) are never accepted as join tokens.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

import jwt

AUDIENCE = "switchboard"
ALGORITHM = "HS256"
MAX_USER_ID_LENGTH = 128


class TokenError(Exception):
    """A token was refused; ``code`` is the machine-readable reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Principal:
    """Who holds a verified token, and what it allows."""

    user_id: str
    name: str
    rooms: tuple[str, ...] = ()
    presence: tuple[str, ...] = ()
    expires_at: float = 0.0
    _exact_rooms: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Exact ids are looked up in a set; only ``prefix*`` patterns need a scan.
        exact = frozenset(r for r in self.rooms if not r.endswith("*"))
        object.__setattr__(self, "_exact_rooms", exact)

    def may_join(self, room_id: str) -> bool:
        """Exact id, ``*``, or a ``prefix*`` pattern in the ``rooms`` claim."""
        if room_id in self._exact_rooms:
            return True
        return any(p.endswith("*") and room_id.startswith(p[:-1]) for p in self.rooms)

    def may_see_presence_of(self, user_id: str) -> bool:
        return "*" in self.presence or user_id in self.presence


def mint_token(
    secret: str,
    user_id: str,
    *,
    name: str | None = None,
    rooms: list[str] | tuple[str, ...] = ("*",),
    presence: list[str] | tuple[str, ...] = (),
    ttl: float = 3600,
    now: float | None = None,
) -> str:
    """Sign a join token; the same format the chat backend is expected to produce."""
    issued = int(now if now is not None else time.time())
    claims: dict[str, object] = {
        "sub": user_id,
        "name": name or user_id,
        "rooms": list(rooms),
        "aud": AUDIENCE,
        "iat": issued,
        "nbf": issued,
        "exp": issued + int(ttl),
    }
    if presence:
        claims["presence"] = list(presence)
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def _str_list(claims: dict[str, object], key: str) -> tuple[str, ...]:
    value = claims.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TokenError("token_invalid_claims", f"claim '{key}' must be a list of strings")
    return tuple(value)


def verify_token(token: str, secret: str, *, leeway: float = 0.0) -> Principal:
    """Check signature, expiry and claim shapes; raise :class:`TokenError` with a reason."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            leeway=leeway,
            options={"require": ["exp", "sub"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenError("token_expired", "token has expired") from exc
    except jwt.ImmatureSignatureError as exc:
        raise TokenError("token_not_yet_valid", "token is not valid yet (nbf/iat)") from exc
    except jwt.InvalidSignatureError as exc:
        raise TokenError("token_invalid_signature", "token signature does not verify") from exc
    except jwt.DecodeError as exc:
        raise TokenError("token_malformed", "token is not a well-formed JWT") from exc
    except jwt.InvalidAlgorithmError as exc:
        raise TokenError("token_invalid_algorithm", "token must be signed with HS256") from exc
    except jwt.InvalidTokenError as exc:  # audience, missing claims, ...
        raise TokenError("token_invalid_claims", str(exc)) from exc
    user_id = claims.get("sub")
    if not isinstance(user_id, str) or not 0 < len(user_id) <= MAX_USER_ID_LENGTH:
        raise TokenError("token_invalid_claims", "claim 'sub' must be a non-empty string")
    name = claims.get("name", user_id)
    if not isinstance(name, str):
        raise TokenError("token_invalid_claims", "claim 'name' must be a string")
    rooms = _str_list(claims, "rooms")
    return Principal(
        user_id=user_id,
        name=name[:256] or user_id,
        rooms=rooms,
        presence=_str_list(claims, "presence"),
        expires_at=float(claims["exp"]),
    )


def load_or_create_dev_secret(path: Path) -> tuple[str, bool]:
    """Return the dev-mode secret kept at ``path``, creating it (mode 0600) if absent."""
    if path.is_file():
        secret = path.read_text().strip()
        if secret:
            return secret, False
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret + "\n")
    return secret, True


def read_dev_secret(path: Path) -> str | None:
    if path.is_file():
        return path.read_text().strip() or None
    return None
