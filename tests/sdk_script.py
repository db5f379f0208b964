"""Running one of the browser SDK's unit scripts (``tests/sdk/*.mjs``) in Node: each
drives an SDK module against stand-ins and prints one JSON line of what it saw."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson

SCRIPTS = Path(__file__).resolve().parent / "sdk"


async def run_sdk_script(name: str) -> Any:
    """What ``tests/sdk/<name>`` printed (it must exit 0 within 30 s)."""
    proc = await asyncio.create_subprocess_exec(
        "node", str(SCRIPTS / name), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    return orjson.loads(out)
