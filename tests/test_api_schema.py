"""schemathesis against a live ``switchboard serve``: every operation of the served OpenAPI
document, with generated requests, answers as documented (status, content type, body
schema) and never with a 500."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings

from signaling.api.auth import mint_api_token
from signaling.api.openapi import build_document
from tests.cluster import SWITCHBOARD
from tests.redis_server import free_port

KEY, SECRET = "schema-key", "schema-api-secret-0123456789abcdef0123"


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("schema")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update(
        SWITCHBOARD_JWT_SECRET="schema-join-secret-0123456789abcdef0123",
        SWITCHBOARD_API_KEY=KEY,
        SWITCHBOARD_API_SECRET=SECRET,
        SWITCHBOARD_API_RATE_LIMIT_PER_SECOND="100000",
        SWITCHBOARD_API_RATE_LIMIT_BURST="100000",
        SWITCHBOARD_LOG_FORMAT="text",
    )
    log = (tmp / "server.log").open("wb")
    proc = subprocess.Popen(
        [SWITCHBOARD, "serve", "--port", str(port)],
        cwd=tmp,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if requests.get(base + "/health").status_code == 200:
                break
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline and proc.poll() is None, Path(log.name).read_text()
        time.sleep(0.1)
    yield base
    proc.terminate()
    proc.wait(10)
    # The server logged no unhandled error while being fuzzed.
    output = Path(log.name).read_text(errors="replace")
    assert "Traceback" not in output, output[-4000:]


# The document the server builds; the first test checks that it is the one it serves.
SCHEMA = schemathesis.openapi.from_dict(build_document())
OPERATIONS = {op.label: op for op in (r.ok() for r in SCHEMA.get_all_operations())}


def test_served_document_is_the_built_one(live_server: str) -> None:
    served = requests.get(live_server + "/api/openapi.json").json()
    assert served == orjson.loads(orjson.dumps(build_document()))


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_operation_matches_its_document(label: str, live_server: str) -> None:
    operation = OPERATIONS[label]

    @given(case=operation.as_strategy())
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    def run(case: schemathesis.Case) -> None:
        token = mint_api_token(KEY, SECRET)
        case.call_and_validate(base_url=live_server, headers={"Authorization": f"Bearer {token}"})

    run()
