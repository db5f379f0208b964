"""Calls through NATs, firewalls and bad links, in the network lab (tests/netlab/).

One lab per session: a "public" segment with the Switchboard node behind 1:1 NAT (its
SFU announcing the public address) and coturn (UDP/TCP 3478, TLS on 443), and client
hosts behind routers of each kind. Every scenario runs real aiortc peers (and one
Chromium) inside the namespaces, with the ICE servers the node hands out, and checks
which candidate pair ICE selected: what the placement forces.

How each placement connects (the partner of a 1:1 call is the host whose own network
leaves the placement's reason as the only one for the path):

==================  =====================  ==========================================
placement           1:1 call with          selected path
==================  =====================  ==========================================
direct              direct-b (public)      host <-> host
eim (masquerade)    direct-b               the EIM side seen as srflx
symmetric           eim-b (filtering NAT)  relay over UDP (no direct path exists)
udp-blocked         direct-b               relay over TCP
tcp443-only         direct-b               relay over TLS on 443 (signaling on 443 too)
symmetric           symmetric-b            relay over UDP (both peers symmetric)
==================  =====================  ==========================================

Group calls go to the SFU's public address: direct is host, an EIM NAT srflx, a symmetric
NAT prflx (the SFU answers whatever address the checks come from, no relay needed),
UDP blocked relay over TCP, TCP 443 only relay over TLS.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import av
import pytest
from playwright.async_api import async_playwright

from tests.netlab.clients import Agent, group_call, one_to_one
from tests.netlab.lab import Lab
from tests.netlab.topology import (
    SFU_PUBLIC,
    TURN_IP,
    Internet,
    api_token,
    running_internet,
    token,
)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="session")
def internet(tmp_path_factory: pytest.TempPathFactory):
    with running_internet(tmp_path_factory.mktemp("netlab")) as net:
        yield net


def assert_relay(end: dict, transport: str) -> None:
    assert end["type"] == "relay" and end["address"] == TURN_IP, end
    if "relayTransport" in end:
        assert end["relayTransport"] == transport, end


ONE_TO_ONE = [
    ("direct", "direct-b"),
    ("eim", "direct-b"),
    ("symmetric", "eim-b"),
    ("udp-blocked", "direct-b"),
    ("tcp443-only", "direct-b"),
    ("symmetric", "symmetric-b"),
]


@pytest.mark.parametrize(("a", "b"), ONE_TO_ONE, ids=[f"{a}-to-{b}" for a, b in ONE_TO_ONE])
async def test_one_to_one_call_connects(internet: Internet, a: str, b: str) -> None:
    place_a, place_b = internet.placements[a], internet.placements[b]
    report_a, report_b = await one_to_one(internet, place_a, place_b)
    for report in (report_a, report_b):  # media decoded both ways
        assert report["video"] >= 15 and report["audio"] >= 25, report
    mine, theirs = report_a["pair"], report_b["pair"]
    if a == "direct":
        assert mine["local"]["type"] == mine["remote"]["type"] == "host"
        assert theirs["remote"] == {**theirs["remote"], "type": "host", "address": place_a.address}
    elif a == "eim":
        assert mine["local"]["type"] == "host"
        assert theirs["remote"]["type"] in ("srflx", "prflx")
        assert theirs["remote"]["address"] == place_a.public
    elif a == "symmetric":
        # No direct path: one side relays (over UDP: both networks let UDP out).
        relayed = [end for end in (mine["local"], mine["remote"]) if end["type"] == "relay"]
        assert relayed, mine
        assert_relay(relayed[0], "udp")
    elif a == "udp-blocked":
        assert_relay(mine["local"], "tcp")
    else:
        assert_relay(mine["local"], "tls")


GROUP = [
    ("direct", "host"),
    ("eim", "srflx"),
    ("symmetric", "prflx"),
    ("udp-blocked", "relay"),
    ("tcp443-only", "relay"),
]


@pytest.mark.parametrize(("name", "seen_as"), GROUP, ids=[n for n, _ in GROUP])
async def test_group_call_join(internet: Internet, name: str, seen_as: str) -> None:
    """The placed client and a reference client on the public segment publish and
    subscribe; each decodes the other, and the server sees the placed one as forced."""
    placed = internet.placements[name]
    _, report = await group_call(internet, [internet.placements["direct-b"], placed])
    assert report["video"] >= 15 and report["audio"] >= 25, report
    for role in ("publisher", "subscriber"):
        assert report["server"][role] is not None, (role, report["server"])
        server_sees = report["server"][role]["remote"]
        assert server_sees["type"] == seen_as, (report["server"][role], report["signaled"][role])
        mine = report[role]["local"]
        if seen_as == "relay":
            assert server_sees["address"] == TURN_IP
            assert_relay(mine, "tcp" if name == "udp-blocked" else "tls")
        else:
            assert server_sees["address"] == placed.public
            assert mine["type"] == "host"
        # The client reaches the SFU at its announced (public) address, not its private one.
        assert report[role]["remote"]["address"] in (SFU_PUBLIC, TURN_IP)
        assert report["server"][role]["local"]["address"] == SFU_PUBLIC


async def test_group_call_with_both_peers_behind_symmetric_nats(internet: Internet) -> None:
    reports = await group_call(
        internet, [internet.placements["symmetric"], internet.placements["symmetric-b"]]
    )
    for placement, report in zip(
        (internet.placements["symmetric"], internet.placements["symmetric-b"]), reports, strict=True
    ):
        assert report["video"] >= 15 and report["audio"] >= 25
        for role in ("publisher", "subscriber"):
            assert report["server"][role]["remote"]["type"] == "prflx"
            assert report["server"][role]["remote"]["address"] == placement.public


#: Each connection's candidate pairs: the local end's kind ("relay/udp"...), the pair's
#: state and its checks sent and answered.
PAIRS = """async () => {
    const out = {};
    for (const role of ['publisher', 'subscriber']) {
        const pc = window.call[role];
        if (!pc) continue;
        const report = await pc.getStats();
        out[role] = [];
        report.forEach((s) => {
            if (s.type !== 'candidate-pair') return;
            const c = report.get(s.localCandidateId) || {};
            out[role].push({
                local: `${c.candidateType}/${c.relayProtocol || c.protocol}`,
                state: s.state, sent: s.requestsSent, answered: s.responsesReceived,
            });
        });
    }
    return out;
}"""


def succeeded(pairs: dict[str, list[dict[str, Any]]]) -> set[str]:
    """The local ends (``relay/udp``...) of the pairs whose checks succeeded."""
    return {p["local"] for found in pairs.values() for p in found if p["state"] == "succeeded"}


async def test_chromium_behind_a_symmetric_nat_joins_through_turn(internet: Internet) -> None:
    """Chromium runs inside the namespace (``ip netns exec``), behind a symmetric NAT
    whose network lets UDP out only to the TURN server: ICE falls back to the relay."""
    placed = internet.placements["symmetric-turn-only"]
    room = internet.room()
    bot = await Agent.start(
        internet,
        internet.placements["direct"],
        "group",
        "--url",
        internet.placements["direct"].ws_url,
        "--token",
        token("bot"),
        "--room",
        room,
    )
    wrapper = internet.workdir / "chromium-in-netns"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {placed.ns} {CHROMIUM} "$@"\n')
    wrapper.chmod(0o755)
    args = [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        "--disable-features=WebRtcHideLocalIpsWithMdns",
        "--autoplay-policy=no-user-gesture-required",
        "--no-sandbox",
        # The demo is served over plain HTTP from a non-loopback address: let it use media.
        f"--unsafely-treat-insecure-origin-as-secure={placed.http_base}",
    ]
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=str(wrapper), args=args, headless=True
            )
            try:
                page = await browser.new_page()
                await page.goto(f"{placed.http_base}/demo?room={room}&token={token('ada')}")
                await page.wait_for_function("window.callReady === true", timeout=30000)
                await bot.event("report", 60)  # the bot decodes the browser
                for _ in range(60):
                    stats = await page.evaluate("window.call.inboundStats()")
                    frames = [s["framesDecoded"] for s in stats.values() if s["kind"] == "video"]
                    if frames and frames[0] > 10:
                        break
                    await asyncio.sleep(0.5)
                else:
                    raise AssertionError(f"the browser decoded no video: {stats}")
                # The browser picks its publish connection's pair, usually the UDP relay.
                # It may start on its TURN/TCP relay when that pair is writable first
                # (seen in loaded full suite runs) and then switch to the better one, or
                # stay on it: which of two working relays it keeps is Chromium's choice.
                # On the subscribe connection the server picks among the relays the
                # browser trickled, and Chromium sometimes offers only its TURN/TCP one
                # there. What the server must allow is that the UDP relay works: a pair of
                # it succeeded on either connection (once, in a loaded full run, the publish
                # connection had none after 15 s: the report now lists every pair's checks
                # on both).
                pairs: dict[str, list[dict[str, Any]]] = {}
                for _ in range(30):
                    connection = await page.evaluate("window.call.connectionStats()")
                    pairs = await page.evaluate(PAIRS)
                    if "relay/udp" in succeeded(pairs):  # (as is a selected UDP relay's pair)
                        break
                    await asyncio.sleep(0.5)
                for role in ("publisher", "subscriber"):
                    local = connection[role]["local"]
                    assert local["candidateType"] == "relay", connection
                assert connection["subscriber"]["local"]["relayProtocol"] in ("udp", "tcp")
                assert "relay/udp" in succeeded(pairs), (connection, pairs)
            finally:
                await browser.close()
    finally:
        await bot.stop()


PROFILES = {
    "loss-3pct": {"loss": 3.0},
    "rtt-150ms-jitter-30ms": {"delay_ms": 75.0, "jitter_ms": 15.0},
    "downlink-500kbps": {"rate": "500kbit"},
}


@pytest.mark.parametrize("profile", sorted(PROFILES))
async def test_calls_keep_flowing_on_bad_links(internet: Internet, profile: str) -> None:
    """A group call over a lossy, slow or capped link connects and keeps decoding; the
    loss and freezes seen are recorded (benchmarks/README.md), not judged here."""
    placed = internet.shaped(**PROFILES[profile])
    reports = await group_call(
        internet, [internet.placements["direct-b"], placed], 90.0, "--watch", "8"
    )
    shaped = reports[1]
    assert shaped["video"] >= 15 and shaped["audio"] >= 25, shaped
    watched = shaped["watch"]
    assert watched["videoFrames"] > 8 and watched["audioFrames"] > 50, watched
    print(f"\n{profile}: {watched}")


async def test_health_checks_turn_over_udp_tcp_and_tls(internet: Internet) -> None:
    """/health sends a real STUN binding request over each configured TURN URL's own
    transport (TLS verified against the lab's CA), from the node's own namespace."""
    agent = await Agent.start(
        internet,
        internet.placements["direct"],
        "http",
        "--url",
        f"{internet.placements['direct'].http_base}/health",
    )
    try:
        report = await agent.event("report", 30)
    finally:
        await agent.stop()
    turn = {entry["url"]: entry["ok"] for entry in report["body"]["turn"]}
    assert turn == {
        f"turn:{TURN_IP}:3478?transport=udp": True,
        f"turn:{TURN_IP}:3478?transport=tcp": True,
        f"turns:{TURN_IP}:443?transport=tcp": True,
        f"stun:{TURN_IP}:3478": True,
    }
    assert report["body"]["status"] == "ok"


def test_lab_leaves_nothing_behind(tmp_path: Path) -> None:
    """A second lab, closed: its namespaces and processes are gone."""
    from tests.netlab.lab import run

    lab = Lab(tmp_path / "lab")
    ns = lab.host("probe")
    lab.spawn(ns, ["sleep", "60"], tmp_path / "sleep.log")
    assert ns in run(["ip", "netns", "list"])
    lab.close()
    assert ns not in run(["ip", "netns", "list"])
    assert all(p.poll() is not None for p in lab.processes) and not lab.processes


async def lab_api(internet: Internet, method: str, path: str, body: Any = None) -> dict:
    """A room API call from inside the lab (the node's address exists only there)."""
    placement = internet.placements["direct"]
    args = ["--url", f"{placement.http_base}/api/v1{path}", "--method", method]
    args += ["--token", api_token()]
    if body is not None:
        args += ["--body", json.dumps(body)]
    agent = await Agent.start(internet, placement, "http", *args)
    try:
        return await agent.event("report", 30)
    finally:
        await agent.stop()


async def test_a_track_recorded_over_a_lossy_link_plays(internet: Internet) -> None:
    """A publisher behind a link losing 5 % of packets both ways is recorded for 10 s;
    its files play: every frame written decodes, and they cover the time."""
    placed = internet.shaped(loss=5.0)
    room = internet.room()
    users = {"clean": f"clean-{room}", "lossy": f"lossy-{room}"}
    agents = []
    try:
        for key, placement in (("clean", internet.placements["direct-b"]), ("lossy", placed)):
            args = ["--url", placement.ws_url, "--token", token(users[key]), "--room", room]
            agents.append(await Agent.start(internet, placement, "group", *args, "--peers", "1"))
        await asyncio.gather(*(agent.event("report", 90) for agent in agents))
        started = await lab_api(internet, "POST", f"/rooms/{room}/recordings", {})
        assert started["status"] == 201, started
        await asyncio.sleep(10.0)
        recording = started["body"]["recordingId"]
        done = await lab_api(internet, "DELETE", f"/rooms/{room}/recordings/{recording}")
    finally:
        await asyncio.gather(*(agent.stop() for agent in agents))
    assert done["status"] == 200, done
    body = done["body"]
    lossy = {f["kind"]: f for f in body["files"] if f["userId"] == users["lossy"]}
    assert set(lossy) == {"audio", "video"}, body["files"]
    directory = Path(body["directory"])
    for kind, entry in lossy.items():
        assert entry["duration"] >= 8.0, entry
        with av.open(str(directory / entry["file"])) as container:
            decoded = sum(1 for _ in container.decode(container.streams[0]))
        assert decoded >= entry["frames"] - 2, (kind, decoded, entry)
    print(f"\nrecorded over 5% loss: {lossy}")
