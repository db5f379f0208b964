"""Proof that the SFU forwards without transcoding: the server process builds no codec.

The server runs as a real ``switchboard serve`` process with a start-up guard
(tests/codec_guard/sitecustomize.py) that logs every decoder, encoder and libav codec
context created in that process. Three aiortc participants in this process exchange audio
and video and decode each other's frames; the guard's log must then hold nothing but its
"armed" line.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp

from media.client import SfuClient
from media.synthetic import PatternTrack, ToneTrack
from signaling.client import HubClient
from signaling.tokens import mint_token
from tests.conftest import API_KEY, API_SECRET, ApiClient
from tests.sfu_helpers import FrameCounter, count_remote, wait_until
from tests.test_cli import clean_env, start_server

STATE_KINDS = ("memory",)  # the SFU is node-local

GUARD = Path(__file__).parent / "codec_guard"
SECRET = "codec-guard-secret-0123456789abcdef"


def test_guard_records_codecs(tmp_path):
    """Control: the guard does see a decoder being built."""
    log = tmp_path / "codecs.log"
    env = {**os.environ, "PYTHONPATH": str(GUARD), "CODEC_GUARD_LOG": str(log)}
    code = (
        "from aiortc.codecs.vpx import Vp8Decoder; Vp8Decoder(); import av, io; "
        "av.open(io.BytesIO(), 'w', format='ogg').add_stream('libopus')"
    )
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    lines = log.read_text().splitlines()
    assert lines[0] == "armed"
    assert "Vp8Decoder()" in lines and any(line.startswith("CodecContext.create") for line in lines)
    assert "OutputContainer.add_stream('libopus',)" in lines


async def test_server_creates_no_decoder_or_encoder_during_a_call(tmp_path):
    """... while the call is also being recorded."""
    log = tmp_path / "codecs.log"
    env = clean_env(
        PYTHONPATH=str(GUARD),
        CODEC_GUARD_LOG=str(log),
        SWITCHBOARD_JWT_SECRET=SECRET,
        SWITCHBOARD_API_KEY=API_KEY,
        SWITCHBOARD_API_SECRET=API_SECRET,
        SWITCHBOARD_RECORDING_DIR=str(tmp_path / "rec"),
        SWITCHBOARD_SFU_LISTEN_IPS="127.0.0.1",
        SWITCHBOARD_LOG_LEVEL="WARNING",
    )
    proc, port = await start_server(tmp_path, env=env)
    clients: list[SfuClient] = []
    http = aiohttp.ClientSession()
    try:
        url = f"ws://127.0.0.1:{port}/ws"
        for user in ("ann", "ben", "cat"):
            hub = await HubClient.connect(url, mint_token(SECRET, user))
            client = SfuClient(hub, "nocodec")
            await client.join()
            await client.publish([(ToneTrack(), "microphone"), (PatternTrack(), "camera")])
            clients.append(client)
        api = ApiClient(http, f"http://127.0.0.1:{port}")
        status, recording = await api.post("/rooms/nocodec/recordings")
        assert status == 201, recording
        counters: list[dict[str, FrameCounter]] = []
        for client in clients:
            await client.wait_for(lambda c: len(c.remote) == 4, timeout=15)
            mine: dict[str, FrameCounter] = {}
            count_remote(client, mine)
            counters.append(mine)

        def decoded() -> bool:
            return all(all(fc.video + fc.audio >= 10 for fc in mine.values()) for mine in counters)

        await wait_until(decoded, timeout=20)
        for mine in counters:
            for fc in mine.values():
                fc.stop()
        await asyncio.sleep(1.0)
        status, done = await api.delete(f"/rooms/nocodec/recordings/{recording['recordingId']}")
        assert status == 200, done
        assert len(done["files"]) == 6 and all(f["frames"] > 0 for f in done["files"])
    finally:
        await http.close()
        for client in clients:
            await client.close()
            await client.hub.close()
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 20)
    assert log.read_text().splitlines() == ["armed"]
