"""Webhook signatures, in the Standard Webhooks format (https://www.standardwebhooks.com).

Every delivery carries three headers:

- ``webhook-id``: the event's unique id (the same on every retry: deduplicate on it);
- ``webhook-timestamp``: Unix seconds when this attempt was signed;
- ``webhook-signature``: ``v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">``, keyed
  with the API secret.

Signing the id and timestamp with the body stops a captured delivery from being replayed
later (the receiver refuses old timestamps) or passed off as another event. The format is
an open specification, so receivers may use its libraries instead of :func:`verify`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping

DEFAULT_TOLERANCE = 300.0


class WebhookVerificationError(Exception):
    """The delivery is not authentic, or too old (a replay)."""


def _digest(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    mac = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
    return base64.b64encode(mac).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers that authenticate ``body`` as event ``msg_id`` sent at ``timestamp``."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": "v1," + _digest(secret, msg_id, timestamp, body),
    }


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> str:
    """Check a delivery's signature and age; returns its event id (for deduplication).

    ``headers`` lookups must be case-insensitive as HTTP headers are (aiohttp's, Flask's
    and Django's header mappings are). Raises :class:`WebhookVerificationError`.
    """
    msg_id = headers.get("webhook-id")
    stamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not msg_id or not stamp or not signatures:
        raise WebhookVerificationError("missing webhook-id, -timestamp or -signature header")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not an integer") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise WebhookVerificationError("webhook-timestamp is outside the tolerance (replay?)")
    expected = _digest(secret, msg_id, timestamp, body)
    for candidate in signatures.split():
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return msg_id
    raise WebhookVerificationError("no signature matches")
