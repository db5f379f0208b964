"""``switchboard`` command line: ``serve`` runs a node, ``token`` mints a join token,
``api-token`` a room API server token, ``turn-config`` prints a coturn config."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

from pydantic import SecretStr, ValidationError

from config import Settings, load_settings
from signaling import __version__
from signaling.tokens import mint_token, read_dev_secret
from switchboard.dev import DEV_API_KEY, dev_settings

log = logging.getLogger("switchboard")

NO_SECRET = (
    "no JWT secret configured: set SWITCHBOARD_JWT_SECRET (or jwt_secret in the TOML file), "
    "or run 'switchboard serve --dev' to generate a local development secret"
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="switchboard", description=__doc__)
    parser.add_argument("--version", action="version", version=f"switchboard {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run a Switchboard node")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 7880; 0 = any)")
    serve.add_argument("--config", type=Path, help="TOML settings file")
    serve.add_argument(
        "--redis-url",
        help="share state with other nodes through Redis (redis://, rediss://, unix://, "
        "redis+sentinel://)",
    )
    serve.add_argument("--node-id", help="this node's id in the cluster (default: random)")
    serve.add_argument(
        "--dev",
        action="store_true",
        help="development mode: generate and keep a local JWT secret if none is configured",
    )

    token = sub.add_parser("token", help="print a signed join token")
    token.add_argument("--user", required=True, help="user id (the 'sub' claim)")
    token.add_argument("--name", help="display name (defaults to the user id)")
    token.add_argument(
        "--room",
        action="append",
        dest="rooms",
        metavar="ROOM",
        help="room the holder may join; repeatable; 'prefix*' patterns allowed (default: *)",
    )
    token.add_argument(
        "--presence",
        action="append",
        metavar="USER",
        help="user whose presence the holder may query; repeatable; '*' for everyone",
    )
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")
    token.add_argument("--config", type=Path, help="TOML settings file")

    api = sub.add_parser("api-token", help="print a short-lived server token for the room API")
    api.add_argument("--ttl", type=int, default=300, help="lifetime in seconds")
    api.add_argument("--config", type=Path, help="TOML settings file")

    turn = sub.add_parser("turn-config", help="print a hardened coturn config from the settings")
    turn.add_argument("--config", type=Path, help="TOML settings file")
    turn.add_argument("--output", type=Path, help="write here instead of stdout")
    turn.add_argument("--listening-ip", action="append", default=[], metavar="IP")
    turn.add_argument("--port", type=int, help="listening port (default turn_listening_port)")
    turn.add_argument("--tls-port", type=int)
    turn.add_argument("--min-port", type=int, help="first relay port")
    turn.add_argument("--max-port", type=int, help="last relay port")
    turn.add_argument(
        "--allowed-peer-ip",
        action="append",
        default=[],
        metavar="RANGE",
        help="a range the relay may reach despite the denied ranges (repeatable)",
    )
    turn.add_argument(
        "--allow-loopback-peers",
        action="store_true",
        help="TESTS ONLY: let the relay reach 127.0.0.0/8",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            settings = load_settings(
                args.config,
                host=args.host,
                port=args.port,
                redis_url=args.redis_url,
                node_id=args.node_id,
            )
        else:
            settings = load_settings(args.config)
    except (ValidationError, FileNotFoundError, ValueError) as exc:
        print(f"switchboard: invalid settings: {exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        return _serve(settings, dev=args.dev)
    if args.command == "turn-config":
        return _turn_config(settings, args)
    if args.command == "api-token":
        return _api_token(settings, args)
    return _token(settings, args)


def _api_token(settings: Settings, args: argparse.Namespace) -> int:
    from signaling.api.auth import mint_api_token

    key, secret = settings.api_key, settings.api_secret
    if key is None or secret is None:
        dev = read_dev_secret(settings.dev_api_secret_file)
        if dev is None:
            print(
                "switchboard: no API key: set SWITCHBOARD_API_KEY and SWITCHBOARD_API_SECRET, "
                "or run 'switchboard serve --dev' once",
                file=sys.stderr,
            )
            return 2
        key, secret = DEV_API_KEY, SecretStr(dev)
    if not 0 < args.ttl <= settings.api_token_max_ttl:
        print(f"switchboard: --ttl must be 1..{settings.api_token_max_ttl:g}", file=sys.stderr)
        return 2
    print(mint_api_token(key, secret.get_secret_value(), ttl=args.ttl))
    return 0


def _turn_config(settings: Settings, args: argparse.Namespace) -> int:
    from turn.config import TurnConfig, render

    config = TurnConfig(
        secrets=[s.get_secret_value() for s in settings.turn_secret],
        realm=settings.turn_realm,
        listening_port=args.port or settings.turn_listening_port,
        tls_port=args.tls_port or settings.turn_tls_port,
        listening_ips=args.listening_ip,
        external_ip=settings.turn_external_ip,
        min_port=args.min_port or settings.turn_relay_min_port,
        max_port=args.max_port or settings.turn_relay_max_port,
        cert=settings.turn_cert,
        pkey=settings.turn_pkey,
        allow_loopback_peers=args.allow_loopback_peers,
        allowed_peer_ips=[*settings.turn_allowed_peer_ips, *args.allowed_peer_ip],
    )
    try:
        text = render(config)
    except ValueError as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 2
    if args.output:
        args.output.write_text(text)
        args.output.chmod(0o600)  # it holds the shared secret
    else:
        print(text, end="")
    return 0


def _token(settings: Settings, args: argparse.Namespace) -> int:
    if settings.jwt_secret is not None:
        secret = settings.jwt_secret.get_secret_value()
    else:
        secret = read_dev_secret(settings.dev_secret_file) or ""
    if not secret:
        print(f"switchboard: {NO_SECRET}", file=sys.stderr)
        return 2
    if args.ttl <= 0:
        print("switchboard: --ttl must be positive", file=sys.stderr)
        return 2
    print(
        mint_token(
            secret,
            args.user,
            name=args.name,
            rooms=args.rooms or ["*"],
            presence=args.presence or [],
            ttl=args.ttl,
        )
    )
    return 0


#: Allocations between collections of the youngest generation (Python's default: 700).
GC_YOUNG_THRESHOLD = 50_000


def _serve(settings: Settings, *, dev: bool) -> int:
    from signaling.logs import configure_logging

    configure_logging(settings.log_format, settings.log_level)
    if dev:
        settings = dev_settings(settings)
    elif settings.jwt_secret is None:
        print(f"switchboard: {NO_SECRET}", file=sys.stderr)
        return 2
    if settings.huge_pages:
        from signaling import huge_pages

        huge_pages.enable()
    import uvloop

    try:
        uvloop.run(_run(settings))
    except OSError as exc:
        log.error("cannot start: %s", exc, extra={"error": str(exc)})
        return 1
    return 0


def tune_gc() -> None:
    """Collect garbage cycles less often than Python's default (every 700 allocations).

    Forwarding allocates a few short-lived objects per packet; at 30,000 packets a second
    the default collects the youngest generation some 150 times a second, so anything
    alive for a few tens of milliseconds (a packet waiting in a queue, a pending write,
    a NACK entry) reaches the oldest generation, whose full collections then scanned the
    whole heap every few seconds and stalled the event loop for up to 900 ms (measured in
    the 50-person room: ``python -m benchmarks room``). With 50,000 allocations between
    young collections those objects die before any; what exists at start-up (modules,
    the app) is frozen out of collections altogether.
    """
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 10)


async def _run(settings: Settings) -> None:
    from aiohttp import web

    from switchboard.app import create_app, drain

    app = create_app(settings)
    tune_gc()
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, reuse_address=True)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    port = sockets[0].getsockname()[1] if sockets else settings.port
    log.info(
        "switchboard listening on http://%s:%s (ws path /ws)",
        settings.host,
        port,
        extra={"host": settings.host, "port": port},
    )
    stop = asyncio.Event()
    received: list[int] = []
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda s=sig: (received.append(s), stop.set()))
    await stop.wait()
    # SIGTERM (an orchestrator stopping the node): group calls hosted here may finish
    # until sfu_drain_deadline before they move; SIGINT (Ctrl-C) moves them at once.
    deadline = settings.sfu_drain_deadline if received[0] == signal.SIGTERM else 0.0
    log.info("shutting down: draining media and connections", extra={"deadline": deadline})
    with contextlib.suppress(Exception):
        await drain(app, media_deadline=deadline)
    await runner.cleanup()
    log.info("stopped")
