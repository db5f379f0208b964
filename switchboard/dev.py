"""What ``switchboard serve --dev`` changes: a local JWT secret and room API key when none
is configured (kept under ``.switchboard/`` so tokens minted later still verify), and the
demo's guest tokens."""

from __future__ import annotations

import logging

from pydantic import SecretStr

from config import Settings
from signaling.tokens import load_or_create_dev_secret

log = logging.getLogger("switchboard")

DEV_API_KEY = "dev"


def dev_settings(settings: Settings) -> Settings:
    if settings.jwt_secret is None:
        secret, created = load_or_create_dev_secret(settings.dev_secret_file)
        settings = settings.model_copy(update={"jwt_secret": SecretStr(secret)})
        log.warning(
            "dev mode: %s JWT secret in %s; mint tokens with 'switchboard token --user NAME'",
            "generated a new" if created else "using the",
            settings.dev_secret_file,
            extra={"secret_file": str(settings.dev_secret_file)},
        )
    if settings.api_key is None or settings.api_secret is None:
        api_secret, _ = load_or_create_dev_secret(settings.dev_api_secret_file)
        settings = settings.model_copy(
            update={"api_key": DEV_API_KEY, "api_secret": SecretStr(api_secret)}
        )
        log.warning(
            "dev mode: room API key 'dev' with the secret in %s; "
            "'switchboard api-token' prints a bearer token, docs at /api/docs",
            settings.dev_api_secret_file,
        )
    settings = settings.model_copy(update={"demo_tokens": True})
    if settings.message_backend_url is None and settings.port:
        # The demo's echo backend on this very node (media/web.py, /demo/messages).
        url = f"http://127.0.0.1:{settings.port}/demo/messages"
        settings = settings.model_copy(update={"message_backend_url": url})
        log.info("dev mode: chat messages go to the built-in echo backend at %s", url)
    log.info("dev mode: try the demo at http://%s:%s/demo", settings.host, settings.port)
    return settings
