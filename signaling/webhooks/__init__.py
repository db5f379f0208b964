"""Signed webhooks to the chat backend: events are queued in the hub state per ordering
key (room) and delivered, in order and with retries, by one node at a time."""

from signaling.webhooks.signing import WebhookVerificationError, sign, verify

__all__ = ["WebhookVerificationError", "sign", "verify"]
