"""The room API over real HTTP, against both state implementations, and its agreement with
what WebSocket clients see."""

from __future__ import annotations

import asyncio
import time

import jwt
import pytest

from signaling.api.auth import API_AUDIENCE, mint_api_token
from signaling.client import RequestError
from tests.conftest import API_KEY, API_SECRET, unrecorded

# -- authentication -------------------------------------------------------------------------


async def test_server_tokens_are_checked_precisely(hub, api, http):
    now = int(time.time())
    cases = {
        "token_malformed": "not-a-jwt",
        "token_invalid_signature": mint_api_token(API_KEY, "some-other-secret-0123456789abcdef"),
        "token_wrong_audience": hub.token("alice"),
        "token_expired": mint_api_token(API_KEY, API_SECRET, now=now - 1000, ttl=60),
        "token_unknown_key": mint_api_token("other-key", API_SECRET),
        "token_too_long_lived": mint_api_token(API_KEY, API_SECRET, ttl=86400),
        "token_invalid_claims": jwt.encode(
            {"iss": API_KEY, "aud": API_AUDIENCE, "exp": now + 60}, API_SECRET, "HS256"
        ),
    }
    for code, token in cases.items():
        status, body = await api.get("/rooms", token=token)
        assert (status, body["error"]["code"]) == (401, code), code
    async with http.get(hub.base + "/api/v1/rooms") as response:
        assert response.status == 401
        assert (await response.json())["error"]["code"] == "token_missing"
        assert "Bearer" in response.headers["WWW-Authenticate"]
    # ... and the WebSocket never takes a server token.
    async with http.get(
        hub.base + "/ws", headers={"Authorization": f"Bearer {mint_api_token(API_KEY, API_SECRET)}"}
    ) as response:
        assert response.status == 401


async def test_api_off_without_credentials(hub_factory, http):
    hub = await hub_factory(api_key=None, api_secret=None)
    status, body = await hub.api(http).get("/rooms")
    assert status == 503 and body["error"]["code"] == "api_disabled"


async def test_rate_limit_answers_429_with_retry_after(hub_factory, http):
    hub = await hub_factory(api_rate_limit_per_second=0.5, api_rate_limit_burst=3)
    api = hub.api(http)
    statuses = [(await api.get("/rooms"))[0] for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    assert int(api.last_headers["Retry-After"]) >= 1
    # The WebSocket side is unaffected.
    alice = await hub.connect("alice")
    assert "serverTime" in await alice.request("ping")


# -- rooms ----------------------------------------------------------------------------------


async def test_room_lifecycle_through_the_api(hub, api):
    status, room = await api.post(
        "/rooms",
        {"roomId": "standup", "type": "conference", "capacity": 10, "metadata": {"topic": "a"}},
    )
    assert status == 201
    assert room["roomId"] == "standup" and room["createdBy"] == "api" and room["capacity"] == 10
    status, body = await api.post("/rooms", {"roomId": "standup"})
    assert (status, body["error"]["code"]) == (409, "room_exists")

    alice = await hub.connect("alice", token=hub.token("alice", name="Alice"))
    ack = await alice.request("room:join", {"roomId": "standup"})
    assert ack["metadata"] == {"topic": "a"} and ack["type"] == "conference"
    await alice.request("presence:update", {"status": "dnd"})

    status, listing = await api.get("/rooms")
    assert status == 200
    assert {r["roomId"]: r["memberCount"] for r in listing["rooms"]}["standup"] == 1
    status, detail = await api.get("/rooms/standup")
    assert status == 200
    [member] = detail["participants"]
    assert member["userId"] == "alice" and member["name"] == "Alice"
    assert member["status"] == "dnd" and member["member"] is True and member["media"] == []
    assert detail["calls"] == [] and detail["media"] == []

    status, updated = await api.patch("/rooms/standup", {"metadata": {"topic": "b"}})
    assert status == 200 and updated["metadata"] == {"topic": "b"}
    assert unrecorded(await alice.expect("room:metadata-updated")) == {
        "roomId": "standup",
        "metadata": {"topic": "b"},
    }

    status, closed = await api.delete("/rooms/standup", params={"reason": "meeting over"})
    assert status == 200 and closed["roomId"] == "standup"
    assert await alice.expect("room:closed") == {"roomId": "standup", "reason": "meeting over"}
    with pytest.raises(RequestError) as err:
        await alice.request("room:leave", {"roomId": "standup"})
    assert err.value.code == "not_in_room"
    assert (await api.get("/rooms/standup"))[0] == 404
    assert (await api.delete("/rooms/standup"))[0] == 404
    assert (await api.patch("/rooms/standup", {"metadata": {}}))[0] == 404


async def test_first_join_opens_a_room_unless_auto_create_is_off(hub_factory, http):
    hub = await hub_factory()
    api = hub.api(http)
    await hub.connect_in("alice", "chat-1")
    status, room = await api.get("/rooms/chat-1")
    assert status == 200 and room["createdBy"] == "join" and room["type"] == "chat"

    strict = await hub_factory(room_auto_create=False)
    bob = await strict.connect("bob")
    with pytest.raises(RequestError) as err:
        await bob.request("room:join", {"roomId": "unknown"})
    assert err.value.code == "room_not_found"
    assert (await strict.api(http).post("/rooms", {"roomId": "known"}))[0] == 201
    await bob.request("room:join", {"roomId": "known"})


async def test_capacity_refuses_extra_members(hub, api):
    await api.post("/rooms", {"roomId": "small", "capacity": 2})
    alice = await hub.connect_in("alice", "small")
    await hub.connect_in("bob", "small")
    # A second device of a member still gets in.
    await hub.connect_in("alice", "small")
    carol = await hub.connect("carol")
    with pytest.raises(RequestError) as err:
        await carol.request("room:join", {"roomId": "small"})
    assert err.value.code == "room_full"
    await alice.close()
    # alice still has her second device: the room stays full.
    with pytest.raises(RequestError):
        await carol.request("room:join", {"roomId": "small"})


async def test_empty_room_is_finished_after_its_timeout(hub, api):
    await api.post("/rooms", {"roomId": "brief", "emptyTimeout": 0.3})
    alice = await hub.connect_in("alice", "brief")
    await asyncio.sleep(0.5)
    assert (await api.get("/rooms/brief"))[0] == 200  # occupied: kept
    await alice.request("room:leave", {"roomId": "brief"})
    for _ in range(40):
        if (await api.get("/rooms/brief"))[0] == 404:
            break
        await asyncio.sleep(0.05)
    assert (await api.get("/rooms/brief"))[0] == 404


# -- participants ---------------------------------------------------------------------------


async def test_kick_takes_every_device_out_of_the_room(hub, api):
    phone = await hub.connect_in("alice", "team")
    laptop = await hub.connect_in("alice", "team")
    bob = await hub.connect_in("bob", "team")
    status, _ = await api.delete("/rooms/team/participants/alice", params={"reason": "spam"})
    assert status == 204
    for device in (phone, laptop):
        assert await device.expect("room:removed") == {"roomId": "team", "reason": "spam"}
    left = unrecorded(await bob.expect("room:member-left"))
    assert left == {"roomId": "team", "userId": "alice"}
    status, people = await api.get("/rooms/team/participants")
    assert [p["userId"] for p in people["participants"]] == ["bob"]
    # Room events no longer reach her.
    await api.post("/rooms/team/events", {"type": "message:new", "data": {"text": "hi"}})
    assert (await bob.expect("message:new"))["text"] == "hi"
    await phone.expect_none("message:new", within=0.2)
    status, body = await api.delete("/rooms/team/participants/alice")
    assert (status, body["error"]["code"]) == (404, "not_in_room")
    status, body = await api.get("/rooms/team/participants/alice")
    assert (status, body["error"]["code"]) == (404, "not_in_room")
    assert (await api.get("/rooms/team/participants/bob"))[1]["userId"] == "bob"


async def test_permissions_are_stored_per_user(hub, api):
    await api.post("/rooms", {"roomId": "webinar", "type": "conference"})
    status, body = await api.patch(
        "/rooms/webinar/participants/viewer/permissions", {"canPublish": False}
    )
    assert status == 200
    assert body == {
        "roomId": "webinar",
        "userId": "viewer",
        "canPublish": False,
        "canSubscribe": True,
        "maxPublishBitrate": 0,
    }
    status, body = await api.patch("/rooms/webinar/participants/viewer/permissions", {})
    assert status == 400 and "canPublish" in body["error"]["message"]
    status, body = await api.post(
        "/rooms/webinar/participants/viewer/tracks/TR_x/mute", {"muted": True}
    )
    assert (status, body["error"]["code"]) == (404, "track_not_found")


# -- messaging and presence -----------------------------------------------------------------


async def test_pushed_events_reach_every_device(hub, api):
    phone = await hub.connect("alice")
    laptop = await hub.connect("alice")
    bob = await hub.connect_in("bob", "general")
    carol = await hub.connect("carol")
    message = {"type": "message:new", "data": {"id": "m1", "text": "hello"}}
    status, body = await api.post("/users/alice/events", message)
    assert status == 200 and body["delivered"] >= 1
    for device in (phone, laptop):
        assert await device.expect("message:new") == {"id": "m1", "text": "hello"}
    await bob.expect_none("message:new", within=0.1)

    status, _ = await api.post(
        "/events", {"userIds": ["alice", "carol"], "type": "message:status", "data": {"s": 1}}
    )
    assert status == 200
    for device in (phone, laptop, carol):
        assert await device.expect("message:status") == {"s": 1}

    status, body = await api.post(
        "/events/batch",
        {
            "events": [
                {"roomId": "general", "type": "message:new", "data": {"n": 1}},
                {"userIds": ["carol"], "type": "message:read", "data": {"n": 2}},
            ]
        },
    )
    assert status == 200 and len(body["results"]) == 2
    assert unrecorded(await bob.expect("message:new")) == {"n": 1}
    assert await carol.expect("message:read") == {"n": 2}
    await phone.expect_none("message:new", within=0.1)


async def test_presence_query(hub, api):
    alice = await hub.connect("alice")
    await alice.request("presence:update", {"status": "away"})
    status, body = await api.post("/presence/query", {"userIds": ["alice", "nobody", "alice"]})
    assert status == 200
    users = {u["userId"]: u for u in body["users"]}
    assert list(users) == ["alice", "nobody"]
    assert users["alice"]["status"] == "away" and users["alice"]["lastSeen"] is not None
    assert users["nobody"] == {"userId": "nobody", "status": "offline", "lastSeen": None}


async def test_minted_join_token_connects(hub, api):
    status, body = await api.post(
        "/tokens", {"userId": "dave", "name": "Dave", "rooms": ["team-*"], "ttl": 120}
    )
    assert status == 201 and body["userId"] == "dave"
    assert body["expiresAt"] - time.time() == pytest.approx(120, abs=5)
    dave = await hub.connect("dave", token=body["token"])
    await dave.request("room:join", {"roomId": "team-x"})
    with pytest.raises(RequestError) as err:
        await dave.request("room:join", {"roomId": "other"})
    assert err.value.code == "forbidden"
    # The server token is never a join token (checked above); a join token is no API token.
    assert (await api.get("/rooms", token=body["token"]))[0] == 401


# -- calls ----------------------------------------------------------------------------------


async def _call(hub, room: str | None = "team"):
    alice = await hub.connect_in("alice", "team")
    bob = await hub.connect_in("bob", "team")
    ack = await alice.request(
        "call:initiate", {"participants": ["bob"], "callType": "audio", "conversationId": room}
    )
    await bob.expect("call:incoming")
    await bob.request("call:accept", {"callId": ack["callId"]})
    await alice.expect("call:accepted")
    return alice, bob, ack["callId"]


async def test_calls_status_history_and_end(hub, api):
    alice, bob, call_id = await _call(hub)
    status, body = await api.get(f"/calls/{call_id}")
    assert status == 200 and body["state"] == "active" and body["callerId"] == "alice"
    status, listing = await api.get("/calls", params={"state": "active", "userId": "bob"})
    assert [c["callId"] for c in listing["calls"]] == [call_id]
    assert (await api.get("/calls", params={"conversationId": "elsewhere"}))[1]["calls"] == []
    status, ended = await api.post(f"/calls/{call_id}/end", {"reason": "moderated"})
    assert status == 200 and ended["state"] == "ended" and ended["endReason"] == "moderated"
    for client in (alice, bob):
        assert (await client.expect("call:ended"))["reason"] == "moderated"
    status, body = await api.post(f"/calls/{call_id}/end")
    assert (status, body["error"]["code"]) == (409, "invalid_state")
    status, body = await api.get("/calls/call_nope")
    assert (status, body["error"]["code"]) == (404, "call_not_found")
    assert (await api.get("/calls", params={"state": "ended"}))[1]["calls"][0]["duration"] >= 0


async def test_closing_a_room_ends_its_call(hub, api):
    alice, bob, call_id = await _call(hub)
    _status, detail = await api.get("/rooms/team")
    assert [c["callId"] for c in detail["calls"]] == [call_id]
    assert (await api.delete("/rooms/team"))[0] == 200
    for client in (alice, bob):
        assert (await client.expect("room:closed"))["reason"] == "closed"
        assert (await client.expect("call:ended"))["reason"] == "room_closed"
    assert (await api.get(f"/calls/{call_id}"))[1]["state"] == "ended"


# -- bad requests ---------------------------------------------------------------------------


async def test_bad_requests_get_precise_errors(hub, api):
    big = {"roomId": "x", "metadata": {"blob": "x" * 20_000}}
    cases = [
        (
            ("POST", "/rooms", None),
            {"data": b"{nope", "headers": {"Content-Type": "application/json"}},
            400,
            "invalid_json",
        ),
        (("POST", "/rooms", {"roomId": 5}), {}, 400, "invalid_request"),
        (("POST", "/rooms", {"roomId": "a", "colour": "red"}), {}, 400, "invalid_request"),
        (("POST", "/rooms", {"roomId": "bad id!"}), {}, 400, "invalid_request"),
        (("POST", "/rooms", big), {}, 400, "invalid_request"),
        (
            ("POST", "/rooms", None),
            {"data": b"roomId=a", "headers": {"Content-Type": "text/plain"}},
            415,
            "unsupported_media_type",
        ),
        (("POST", "/rooms", None), {}, 400, "invalid_request"),
        (("GET", "/rooms/bad%20id", None), {}, 400, "invalid_request"),
        (("POST", "/users/bob/events", {"type": "call:incoming"}), {}, 400, "invalid_request"),
        (("POST", "/users/bob/events", {"type": "NoNamespace"}), {}, 400, "invalid_request"),
        (("GET", "/calls", None), {"params": {"state": "weird"}}, 400, "invalid_request"),
    ]
    for (method, path, body), extra, status, code in cases:
        got, answer = await api.call(method, path, body, **extra)
        assert (got, answer["error"]["code"]) == (status, code), (path, body, answer)
    _, answer = await api.post("/rooms", {"roomId": 5})
    assert answer["error"]["message"].startswith("body.roomId")
    got, answer = await api.call(
        "POST",
        "/rooms",
        None,
        data=b"{" + b" " * 2_000_000 + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert (got, answer["error"]["code"]) == (413, "body_too_large")
    # Nothing of this disturbed the server.
    assert (await api.get("/rooms"))[0] == 200


async def test_openapi_document_and_docs_page(hub, http):
    async with http.get(hub.base + "/api/openapi.json") as response:
        assert response.status == 200
        document = await response.json()
    assert document["openapi"].startswith("3.1")
    operations = {
        op["operationId"] for methods in document["paths"].values() for op in methods.values()
    }
    assert {"create_room", "close_room", "remove_participant", "push_to_users"} <= operations
    async with http.get(hub.base + "/api/docs") as response:
        assert response.status == 200 and "/api/v1/rooms" in await response.text()
