"""The upgrade is refused over HTTP, with a JSON reason, for every kind of bad token."""

from __future__ import annotations

import time

import jwt
import pytest

from signaling.tokens import mint_token
from tests.conftest import SECRET


async def refused(http, hub, status: int, *, params=None, headers=None) -> dict:
    async with http.get(
        hub.ws_url,
        params=params,
        headers={
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            **(headers or {}),
        },
    ) as resp:
        assert resp.status == status
        assert resp.content_type == "application/json"
        return (await resp.json())["error"]


async def test_missing_token(hub, http):
    err = await refused(http, hub, 401)
    assert err["code"] == "token_missing"


async def test_expired_token(hub, http):
    token = mint_token(SECRET, "alice", ttl=60, now=time.time() - 3600)
    err = await refused(http, hub, 401, params={"access_token": token})
    assert err["code"] == "token_expired"


async def test_forged_token(hub, http):
    token = mint_token("another-secret-another-secret-123", "alice")
    err = await refused(http, hub, 401, params={"access_token": token})
    assert err["code"] == "token_invalid_signature"


@pytest.mark.parametrize("garbage", ["not-a-jwt", "a.b.c", "eyJhbGciOiJIUzI1NiJ9..."])
async def test_malformed_token(hub, http, garbage):
    err = await refused(http, hub, 401, params={"access_token": garbage})
    assert err["code"] == "token_malformed"


async def test_wrong_audience_and_missing_claims(hub, http):
    now = int(time.time())
    other_aud = jwt.encode({"sub": "a", "exp": now + 60, "aud": "api"}, SECRET, "HS256")
    err = await refused(http, hub, 401, params={"access_token": other_aud})
    assert err["code"] == "token_invalid_claims"
    no_exp = jwt.encode({"sub": "a", "aud": "switchboard"}, SECRET, "HS256")
    err = await refused(http, hub, 401, params={"access_token": no_exp})
    assert err["code"] == "token_invalid_claims"
    bad_rooms = jwt.encode(
        {"sub": "a", "exp": now + 60, "aud": "switchboard", "rooms": "x"}, SECRET, "HS256"
    )
    err = await refused(http, hub, 401, params={"access_token": bad_rooms})
    assert err["code"] == "token_invalid_claims"


async def test_none_algorithm_refused(hub, http):
    token = jwt.encode(
        {"sub": "a", "exp": int(time.time()) + 60, "aud": "switchboard"}, None, algorithm="none"
    )
    err = await refused(http, hub, 401, params={"access_token": token})
    assert err["code"] in {"token_invalid_algorithm", "token_malformed"}


async def test_bearer_header_accepted(hub):
    client = await hub.connect(
        "alice",
        token="unused-placeholder",
        headers={"Authorization": f"Bearer {hub.token('alice')}"},
    )
    # The header wins over the (bogus) query parameter.
    assert client.ready["userId"] == "alice"


async def test_allowed_origins(hub_factory, http):
    hub = await hub_factory(allowed_origins=["https://chat.example"])
    token = hub.token("alice")
    err = await refused(
        http, hub, 403, params={"access_token": token}, headers={"Origin": "https://evil.example"}
    )
    assert err["code"] == "origin_not_allowed"
    client = await hub.connect("alice", headers={"Origin": "https://chat.example"})
    assert client.ready["userId"] == "alice"


async def test_plain_http_get_needs_upgrade(hub, http):
    async with http.get(hub.ws_url, params={"access_token": hub.token("a")}) as resp:
        assert resp.status == 426
        assert (await resp.json())["error"]["code"] == "upgrade_required"


async def test_session_ready_describes_connection(hub):
    client = await hub.connect("alice")
    ready = client.ready
    assert ready["userId"] == "alice"
    assert ready["connectionId"].startswith("c_")
    assert ready["maxFrameBytes"] == 256 * 1024
