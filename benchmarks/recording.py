"""The recording variant of the media benchmark (``python -m benchmarks media --record``):
the same load on two Switchboard servers, one only forwarding and one also recording
every room (every published track to disk), so the difference in server CPU is what
recording costs next to forwarding. Files go to a temporary directory that is removed
afterwards; what was written (files, frames, damaged) is in the report."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from signaling.api.auth import mint_api_token

API_KEY = "bench"
API_SECRET = "bench-api-secret-0123456789abcdef01234567"
SYSTEM = "switchboard-record"


def server_env() -> tuple[dict[str, str], Callable[[], None]]:
    """What the recording server needs: a room API key and a directory to fill."""
    folder = Path(tempfile.mkdtemp(prefix="switchboard-record-"))
    env = {
        "SWITCHBOARD_API_KEY": API_KEY,
        "SWITCHBOARD_API_SECRET": API_SECRET,
        "SWITCHBOARD_RECORDING_DIR": str(folder),
    }
    return env, lambda: shutil.rmtree(folder, ignore_errors=True)


async def record_rooms(
    base: str, rooms: list[str], report: dict[str, Any]
) -> Callable[[], Awaitable[None]]:
    """Start recording each room; returns the closer that stops them (and fills
    ``report`` with what was written)."""
    headers = {"Authorization": f"Bearer {mint_api_token(API_KEY, API_SECRET)}"}
    started: list[tuple[str, str]] = []
    async with aiohttp.ClientSession(headers=headers) as http:
        for room in rooms:
            async with http.post(f"{base}/api/v1/rooms/{room}/recordings", json={}) as resp:
                body = await resp.json()
                if resp.status != 201:
                    raise RuntimeError(f"recording {room} not started: {resp.status} {body}")
                started.append((room, body["recordingId"]))

    async def stop() -> None:
        files: list[dict[str, Any]] = []
        async with aiohttp.ClientSession(headers=headers) as http:
            for room, recording in started:
                url = f"{base}/api/v1/rooms/{room}/recordings/{recording}"
                async with http.delete(url) as resp:
                    body = await resp.json()
                    files += body.get("files", [])
        report["recorded_tracks"] = len(files)
        report["recorded_frames"] = sum(f["frames"] for f in files)
        report["recorded_mbytes"] = round(sum(f["size"] for f in files) / 1e6, 2)
        report["recordings_damaged"] = sorted({f["damaged"] for f in files if f["damaged"]})

    return stop


def cost(results: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Recording's extra server CPU, per recorded track and relative to forwarding."""
    plain = next((r for r in results if r["system"] == "switchboard-sfu"), None)
    recording = next((r for r in results if r["system"] == SYSTEM), None)
    if plain is None or recording is None or not recording.get("recorded_tracks"):
        return None
    extra = recording["server_cpu_share"] - plain["server_cpu_share"]
    return {
        "extra_cores": round(extra, 3),
        "extra_cores_per_track": round(extra / recording["recorded_tracks"], 4),
        "cpu_ratio_recording_over_forwarding": round(
            recording["server_cpu_share"] / plain["server_cpu_share"], 3
        ),
        "packets_per_server_cpu_s_ratio": round(
            recording["packets_per_server_cpu_s"] / plain["packets_per_server_cpu_s"], 3
        ),
    }
