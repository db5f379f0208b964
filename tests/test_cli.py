"""The real ``switchboard`` command: dev mode, tokens, a full session, TOML config, SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from signaling.client import HubClient

SWITCHBOARD = str(Path(sys.executable).with_name("switchboard"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update(extra)
    return env


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SWITCHBOARD, *args],
        cwd=cwd,
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )


async def start_server(cwd: Path, *args: str, env: dict[str, str] | None = None):
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        SWITCHBOARD,
        "serve",
        "--port",
        str(port),
        *args,
        cwd=cwd,
        env=env or clean_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with aiohttp.ClientSession() as http:
        for _ in range(100):
            if proc.returncode is not None:
                raise AssertionError((await proc.stderr.read()).decode())
            try:
                async with http.get(f"http://127.0.0.1:{port}/health") as resp:
                    if resp.status == 200:
                        return proc, port
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.1)
    proc.kill()
    raise AssertionError("server did not come up")


def test_serve_refuses_without_secret(tmp_path):
    result = cli("serve", "--port", str(free_port()), cwd=tmp_path)
    assert result.returncode == 2
    assert "SWITCHBOARD_JWT_SECRET" in result.stderr and "--dev" in result.stderr


def test_token_without_secret_fails_clearly(tmp_path):
    result = cli("token", "--user", "alice", cwd=tmp_path)
    assert result.returncode == 2
    assert "no JWT secret configured" in result.stderr


def test_invalid_settings_are_reported(tmp_path):
    result = cli(
        "token", "--user", "a", cwd=tmp_path, env=clean_env(SWITCHBOARD_RING_TIMEOUT="soon")
    )
    assert result.returncode == 2 and "ring_timeout" in result.stderr
    result = cli("serve", "--config", str(tmp_path / "missing.toml"), cwd=tmp_path)
    assert result.returncode == 2 and "missing.toml" in result.stderr


async def test_dev_mode_session_and_graceful_shutdown(tmp_path):
    """Acceptance: serve --dev + switchboard token + a WebSocket client show presence,
    typing and a full 1:1 call exchange; SIGTERM tells clients to reconnect (1012)."""
    proc, port = await start_server(tmp_path, "--dev")
    assert (tmp_path / ".switchboard" / "dev-secret").is_file()
    alice_token = cli(
        "token", "--user", "alice", "--name", "Alice", "--room", "dm-ab", cwd=tmp_path
    ).stdout.strip()
    bob_token = cli(
        "token", "--user", "bob", "--room", "dm-*", "--ttl", "600", cwd=tmp_path
    ).stdout.strip()
    url = f"ws://127.0.0.1:{port}/ws"
    bob = await HubClient.connect(url, bob_token)
    alice = await HubClient.connect(url, alice_token)
    try:
        await bob.request("room:join", {"roomId": "dm-ab"})
        joined = await alice.request("room:join", {"roomId": "dm-ab"})
        assert {m["userId"] for m in joined["members"]} == {"alice", "bob"}
        assert (await bob.expect("room:member-joined"))["name"] == "Alice"

        await alice.request("presence:update", {"status": "away"})
        assert (await bob.expect("presence:changed"))["status"] == "away"

        await alice.request("message:typing", {"conversationId": "dm-ab", "isTyping": True})
        assert (await bob.expect("user:typing"))["username"] == "Alice"

        sdp = "v=0\r\ns=secret-sdp-body\r\n"
        call = await alice.request(
            "call:initiate",
            {"conversationId": "dm-ab", "callType": "audio", "participants": ["bob"]},
        )
        call_id = call["callId"]
        await bob.expect("call:incoming")
        await bob.request("call:accept", {"callId": call_id})
        await alice.expect("call:accepted")
        await alice.request("call:offer", {"callId": call_id, "to": "bob", "sdp": sdp})
        assert (await bob.expect("call:offer"))["sdp"] == sdp
        await bob.request("call:answer", {"callId": call_id, "to": "alice", "sdp": sdp})
        await alice.expect("call:answer")
        await bob.request(
            "call:ice-candidate",
            {"callId": call_id, "to": "alice", "candidate": {"candidate": "candidate:1"}},
        )
        await alice.expect("call:ice-candidate")

        proc.send_signal(signal.SIGTERM)
        assert await alice.wait_closed(10) == 1012
        assert await bob.wait_closed(10) == 1012
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    finally:
        await alice.close()
        await bob.close()
        if proc.returncode is None:
            proc.kill()
    logs = (await proc.stderr.read()).decode()
    assert '"level":"info"' in logs and "listening" in logs
    assert alice_token not in logs and bob_token not in logs
    assert "secret-sdp-body" not in logs
    assert (tmp_path / ".switchboard" / "dev-secret").read_text().strip() not in logs


async def test_toml_config_and_env_precedence(tmp_path):
    config = tmp_path / "switchboard.toml"
    config.write_text(
        'jwt_secret = "from-the-toml-file-0123456789abcdef"\nring_timeout = 7\n'
        "max_frame_bytes = 2048\n"
    )
    proc, port = await start_server(
        tmp_path, "--config", str(config), env=clean_env(SWITCHBOARD_MAX_FRAME_BYTES="4096")
    )
    try:
        token = cli("token", "--user", "carol", "--config", str(config), cwd=tmp_path)
        assert token.returncode == 0
        client = await HubClient.connect(f"ws://127.0.0.1:{port}/ws", token.stdout.strip())
        # The environment (4096) beats the file (2048).
        assert client.ready["maxFrameBytes"] == 4096
        await client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0


@pytest.mark.parametrize("args", [["--version"], ["token", "--help"], ["serve", "--help"]])
def test_help_and_version(tmp_path, args):
    result = cli(*args, cwd=tmp_path)
    assert result.returncode == 0 and result.stdout
