"""Server credentials for the room API: an API key id and secret.

The chat backend signs a short-lived HS256 JWT with the secret for each request (or reuses
one for a few minutes), as LiveKit's server SDKs do:

- ``iss``: the API key id; ``aud``: ``switchboard-api``;
- ``iat`` and ``exp`` required, at most ``api_token_max_ttl`` seconds apart.

Client join tokens have the audience ``switchboard`` and are refused here by name, and the
WebSocket refuses these tokens for the same reason, even if both secrets were the same.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import jwt

from signaling.api.errors import ApiError
from signaling.tokens import ALGORITHM
from signaling.tokens import AUDIENCE as JOIN_AUDIENCE

if TYPE_CHECKING:
    from aiohttp import web

    from signaling.settings import Settings

API_AUDIENCE = "switchboard-api"
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="switchboard-api"'}


def mint_api_token(key: str, secret: str, *, ttl: float = 300, now: float | None = None) -> str:
    """A server token for the room API, as the chat backend would make it."""
    issued = int(now if now is not None else time.time())
    claims = {"iss": key, "aud": API_AUDIENCE, "iat": issued, "exp": issued + int(ttl)}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def _refuse(code: str, message: str) -> ApiError:
    return ApiError(401, code, message, **CHALLENGE)


def authenticate_api(request: web.Request, settings: Settings) -> str:
    """The API key id the request is signed with; raises a 401 :class:`ApiError`."""
    if settings.api_key is None or settings.api_secret is None:
        raise ApiError(
            503, "api_disabled", "the room API is off: set SWITCHBOARD_API_KEY and _API_SECRET"
        )
    header = request.headers.get("Authorization", "")
    if header[:7].lower() != "bearer " or not header[7:].strip():
        raise _refuse("token_missing", "an 'Authorization: Bearer <server token>' is required")
    token = header[7:].strip()
    try:
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.DecodeError:
        raise _refuse("token_malformed", "token is not a well-formed JWT") from None
    if unverified.get("aud") == JOIN_AUDIENCE:
        raise _refuse(
            "token_wrong_audience",
            "this is a client join token; the room API needs a server token (aud "
            f"'{API_AUDIENCE}')",
        )
    try:
        claims = jwt.decode(
            token,
            settings.api_secret.get_secret_value(),
            algorithms=[ALGORITHM],
            audience=API_AUDIENCE,
            issuer=settings.api_key,
            leeway=settings.jwt_leeway,
            options={"require": ["exp", "iat", "iss"]},
        )
    except jwt.ExpiredSignatureError:
        raise _refuse("token_expired", "token has expired") from None
    except jwt.ImmatureSignatureError:
        raise _refuse("token_not_yet_valid", "token is not valid yet (iat/nbf)") from None
    except jwt.InvalidSignatureError:
        raise _refuse("token_invalid_signature", "token signature does not verify") from None
    except jwt.InvalidAlgorithmError:
        raise _refuse("token_invalid_algorithm", "token must be signed with HS256") from None
    except jwt.InvalidIssuerError:
        raise _refuse("token_unknown_key", "the token's 'iss' is not a known API key") from None
    except jwt.InvalidTokenError as exc:
        raise _refuse("token_invalid_claims", str(exc)) from None
    lifetime = float(claims["exp"]) - float(claims["iat"])
    if lifetime > settings.api_token_max_ttl:
        raise _refuse(
            "token_too_long_lived",
            f"server tokens may live at most {settings.api_token_max_ttl:g} s (exp - iat)",
        )
    return settings.api_key
