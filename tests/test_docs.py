"""Keep the documents true: every event, error code, close code and setting is described."""

from __future__ import annotations

import re
from pathlib import Path

from config import Settings
from signaling.protocol import CloseCode, ErrorCode
from switchboard.app import NODE_KEY, create_app

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL = (ROOT / "docs" / "protocol.md").read_text()
README = (ROOT / "README.md").read_text()


def outbound_event_names() -> set[str]:
    """Event types the server sends, as written in the source (``"area:name"`` literals)."""
    names: set[str] = set()
    for path in [*(ROOT / "signaling").rglob("*.py"), *(ROOT / "media").rglob("*.py")]:
        names |= set(
            re.findall(
                r'"((?:call|peer|screen|room|user|presence|session|sfu):[a-z-]+)"',
                path.read_text(),
            )
        )
    return names


def test_every_inbound_event_is_documented():
    hub = create_app(Settings(jwt_secret="x" * 32))[NODE_KEY].hub
    missing = [name for name in hub.routes if f"`{name}`" not in PROTOCOL]
    assert not missing


def test_every_outbound_event_is_documented():
    missing = sorted(n for n in outbound_event_names() if f"`{n}`" not in PROTOCOL)
    assert not missing


def test_every_error_and_close_code_is_documented():
    assert not [c.value for c in ErrorCode if f"`{c.value}`" not in PROTOCOL]
    assert not [c for c in CloseCode if f"| {int(c)} |" not in PROTOCOL]


def test_every_setting_is_in_the_readme():
    missing = [
        name for name in Settings.model_fields if f"SWITCHBOARD_{name.upper()}" not in README
    ]
    assert not missing


def test_readme_test_command_is_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "make test" in README and "make run" in README
