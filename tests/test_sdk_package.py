"""The browser SDK as a front-end team gets it: ``npm pack`` of ``media/static`` gives a
tarball that installs with npm, carries the modules and the declarations, has the
server's version, and a usage file type-checks against it with TypeScript from npm
(pinned by ``tests/sdk/typescript/package-lock.json``) while misuses do not. Also the
demo's own chat backend (``serve --dev``)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from signaling import __version__
from signaling.webhooks.signing import sign
from switchboard.dev import dev_settings
from tests.conftest import API_SECRET

STATE_KINDS = ("memory",)
ROOT = Path(__file__).resolve().parent.parent
SDK = ROOT / "media" / "static"
TYPESCRIPT = ROOT / "tests" / "sdk" / "typescript"


def ensure_typescript() -> Path:
    marker = TYPESCRIPT / "node_modules" / ".package-lock.json"
    lock = TYPESCRIPT / "package-lock.json"
    if not marker.exists() or marker.stat().st_mtime < lock.stat().st_mtime:
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=TYPESCRIPT,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return TYPESCRIPT / "node_modules" / ".bin" / "tsc"


def npm(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        ["npm", *args, "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return done.stdout


def test_the_sdk_packs_installs_and_type_checks(tmp_path: Path) -> None:
    tsc = ensure_typescript()
    package = json.loads((SDK / "package.json").read_text())
    assert package["version"] == __version__
    assert f'export const VERSION = "{__version__}";' in (SDK / "switchboard.js").read_text()

    packed = json.loads(
        npm("pack", str(SDK), "--json", "--pack-destination", str(tmp_path), cwd=tmp_path)
    )
    files = {f["path"] for f in packed[0]["files"]}
    modules = {p.name for p in SDK.glob("*.js")}
    assert modules | {"switchboard.d.ts", "package.json"} == files  # no demo, nothing else
    tarball = tmp_path / packed[0]["filename"]

    app = tmp_path / "app"
    app.mkdir()
    (app / "package.json").write_text(
        json.dumps({"name": "chat-app", "private": True, "type": "module"})
    )
    npm("install", str(tarball), cwd=app)
    installed = app / "node_modules" / "switchboard-sdk"
    assert json.loads((installed / "package.json").read_text())["version"] == __version__
    tsconfig = {
        "compilerOptions": {
            "strict": True,
            "noEmit": True,
            "target": "ES2022",
            "module": "NodeNext",
            "moduleResolution": "NodeNext",
            "lib": ["ES2022", "DOM"],
            "skipLibCheck": False,
        },
        "files": ["usage.ts"],
    }
    (app / "tsconfig.json").write_text(json.dumps(tsconfig))
    (app / "usage.ts").write_text((TYPESCRIPT / "usage.ts").read_text())
    ok = subprocess.run([str(tsc), "-p", str(app)], capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stdout + ok.stderr

    (app / "wrong.ts").write_text((TYPESCRIPT / "wrong.ts").read_text())
    (app / "tsconfig.json").write_text(json.dumps({**tsconfig, "files": ["wrong.ts"]}))
    bad = subprocess.run([str(tsc), "-p", str(app)], capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0
    assert bad.stdout.count("error TS") == 3, bad.stdout


async def test_the_served_sdk_has_its_types_and_package(hub: Any) -> None:
    async with aiohttp.ClientSession() as http:
        for name in ("switchboard.d.ts", "package.json", "calls.js", "peer_link.js"):
            async with http.get(f"{hub.base}/sdk/{name}") as resp:
                assert resp.status == 200, name
                assert await resp.read() == (SDK / name).read_bytes()


async def test_the_demo_backend_echoes_signed_messages_only(hub_factory: Any) -> None:
    hub = await hub_factory(demo_tokens=True)
    body = orjson.dumps(
        {
            "type": "message.send",
            "userId": "u-ann",
            "name": "Ann",
            "content": "hi",
            "messageType": "text",
        }
    )
    headers = {
        **sign(API_SECRET, "req_1", int(time.time()), body),
        "Content-Type": "application/json",
    }
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{hub.base}/demo/messages", data=body, headers=headers) as resp:
            assert resp.status == 200
            message = (await resp.json())["message"]
        assert message["senderName"] == "Ann" and message["content"] == "hi"
        assert message["id"].startswith("demo_")
        async with http.post(f"{hub.base}/demo/messages", data=body) as resp:
            assert resp.status == 400  # unsigned
        async with http.get(f"{hub.base}/demo/token", params={"name": "Ann Lee"}) as resp:
            assert (await resp.json())["userId"] == "u-ann-lee"


async def test_demo_messages_are_off_without_dev_mode(hub: Any) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{hub.base}/demo/messages", data=b"{}") as resp:
            assert resp.status == 404


def test_dev_mode_sends_messages_to_the_echo_backend(tmp_path: Path) -> None:
    from config import Settings

    settings = Settings(
        port=7999,
        dev_secret_file=tmp_path / "s",
        dev_api_secret_file=tmp_path / "a",
    )
    dev = dev_settings(settings)
    assert dev.message_backend_url == "http://127.0.0.1:7999/demo/messages"
    configured = dev_settings(settings.model_copy(update={"message_backend_url": "http://b/m"}))
    assert configured.message_backend_url == "http://b/m"
