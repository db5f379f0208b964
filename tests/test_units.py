"""Unit tests of the pure pieces: frames, presence aggregation, token bucket, tokens, settings."""

from __future__ import annotations

import dataclasses
import struct
import time

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from config import load_settings
from signaling.protocol import close_frame, encode, text_frame
from signaling.ratelimit import TokenBucket
from signaling.state.models import Call, CallParticipant, aggregate_status
from signaling.tokens import TokenError, load_or_create_dev_secret, mint_token, verify_token


def parse_frame(frame: bytes) -> tuple[int, bytes]:
    first, second = frame[0], frame[1]
    assert second & 0x80 == 0, "server frames are never masked"
    length, offset = second & 0x7F, 2
    if length == 126:
        (length,), offset = struct.unpack("!H", frame[2:4]), 4
    elif length == 127:
        (length,), offset = struct.unpack("!Q", frame[2:10]), 10
    assert len(frame) == offset + length
    return first, frame[offset:]


@given(st.binary(max_size=70_000))
def test_text_frame_round_trip(payload):
    opcode, body = parse_frame(text_frame(payload))
    assert opcode == 0x81 and body == payload


def test_text_frame_length_boundaries():
    for size in (0, 125, 126, 65535, 65536):
        assert parse_frame(text_frame(b"x" * size))[1] == b"x" * size


def test_close_frame_reason_is_bounded():
    opcode, body = parse_frame(close_frame(1008, "é" * 200))
    assert opcode == 0x88 and len(body) <= 125
    assert struct.unpack("!H", body[:2])[0] == 1008


def test_encode_envelope():
    assert orjson.loads(encode("ack", {"a": 1}, "r1")) == {
        "type": "ack",
        "id": "r1",
        "data": {"a": 1},
    }
    assert orjson.loads(encode("user:typing", {})) == {"type": "user:typing", "data": {}}


statuses = st.lists(st.sampled_from(["online", "away", "dnd", "invisible"]), max_size=6)


@given(statuses, st.randoms())
def test_aggregate_is_order_free_and_follows_precedence(devices, rnd):
    shuffled = list(devices)
    rnd.shuffle(shuffled)
    assert aggregate_status(devices) == aggregate_status(shuffled)
    if not devices:
        assert aggregate_status(devices) == "offline"
    elif "invisible" in devices:
        assert aggregate_status(devices) == "offline"
    elif "dnd" in devices:
        assert aggregate_status(devices) == "dnd"
    elif "online" in devices:
        assert aggregate_status(devices) == "online"
    else:
        assert aggregate_status(devices) == "away"


def test_token_bucket_with_fake_clock():
    now = [0.0]
    bucket = TokenBucket(rate=2, capacity=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    assert bucket.retry_after() == pytest.approx(0.5)
    now[0] += 0.5
    assert bucket.take() and not bucket.take()
    now[0] += 100
    assert bucket.tokens <= 3 and sum(bucket.take() for _ in range(5)) == 3


def test_tokens_round_trip_and_room_patterns():
    token = mint_token(
        "s" * 32, "alice", name="Alice", rooms=["general", "team-*"], presence=["bob"]
    )
    who = verify_token(token, "s" * 32)
    assert who.user_id == "alice" and who.name == "Alice"
    assert who.may_join("general") and who.may_join("team-x") and not who.may_join("other")
    assert who.may_see_presence_of("bob") and not who.may_see_presence_of("carol")
    assert verify_token(mint_token("s" * 32, "x"), "s" * 32).may_join("anything")
    with pytest.raises(TokenError) as err:
        verify_token(mint_token("s" * 32, "x", ttl=10, now=time.time() - 100), "s" * 32)
    assert err.value.code == "token_expired"
    # Leeway tolerates clock skew.
    verify_token(mint_token("s" * 32, "x", ttl=10, now=time.time() - 12), "s" * 32, leeway=5)


def test_dev_secret_is_created_once_and_private(tmp_path):
    path = tmp_path / "state" / "dev-secret"
    secret, created = load_or_create_dev_secret(path)
    assert created and len(secret) >= 32 and path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_dev_secret(path) == (secret, False)


def test_settings_sources(tmp_path, monkeypatch):
    config = tmp_path / "s.toml"
    config.write_text('port = 9001\nallowed_origins = ["https://a"]\ntyping_timeout = 3\n')
    monkeypatch.setenv("SWITCHBOARD_TYPING_TIMEOUT", "4.5")
    monkeypatch.setenv("SWITCHBOARD_ALLOWED_ORIGINS", "https://x, https://y")
    settings = load_settings(config, port=None)
    assert settings.port == 9001
    assert settings.typing_timeout == 4.5
    assert settings.allowed_origins == ["https://x", "https://y"]
    assert load_settings(config, port=1234).port == 1234
    with pytest.raises(ValueError):
        load_settings(config, port=70000)


def test_call_round_trips_through_dict():
    call = Call("c1", "video", "a", None, 1)
    call.participants["a"] = CallParticipant("a", "A", "caller", "joined", conn_id="c_1")
    call.participants["b"] = CallParticipant("b", "B", "callee", "ringing", video=False)
    call.version, call.end_reason = 3, "hangup"
    assert call.to_dict() == dataclasses.asdict(call)  # (built by hand for speed)
    assert Call.from_dict(call.to_dict()) == call


def test_example_config_loads():
    from pathlib import Path

    example = Path(__file__).resolve().parent.parent / "config" / "switchboard.example.toml"
    settings = load_settings(example)
    assert settings.host == "0.0.0.0" and settings.log_format == "json"


async def test_the_sdp_of_a_full_group_call_room_fits_a_frame_and_the_bounds() -> None:
    """aiortc's answer for 49 microphones and 49 cameras (a full room of 50): within the
    SDP bound and the default frame size, envelope included; twice the bound is not."""
    from aiortc import RTCPeerConnection
    from pydantic import ValidationError

    from signaling.events import MAX_SDP, SfuAnswer

    offerer, answerer = RTCPeerConnection(), RTCPeerConnection()
    for kind in ("audio", "video"):
        for _ in range(49):
            offerer.addTransceiver(kind, direction="sendonly")
    await offerer.setLocalDescription(await offerer.createOffer())
    await answerer.setRemoteDescription(offerer.localDescription)
    await answerer.setLocalDescription(await answerer.createAnswer())
    sdp = answerer.localDescription.sdp
    await offerer.close()
    await answerer.close()
    SfuAnswer(roomId="r", sdp=sdp)
    frame = encode("sfu:answer", {"roomId": "r", "sdp": sdp}, 1)
    assert len(frame) < load_settings({}).max_frame_bytes
    with pytest.raises(ValidationError):
        SfuAnswer(roomId="r", sdp="v=0\r\n" + "a" * MAX_SDP)


def test_the_server_collects_garbage_cycles_less_often_and_freezes_its_start_up() -> None:
    import gc

    from switchboard.cli import GC_YOUNG_THRESHOLD, tune_gc

    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD > before[0]
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
