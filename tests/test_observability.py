"""/health and /metrics report what the hub is doing."""

from __future__ import annotations


async def test_health(hub, http):
    await hub.connect("alice")
    async with http.get(f"{hub.base}/health") as resp:
        body = await resp.json()
    assert resp.status == 200
    assert body["status"] == "ok" and body["connections"] == 1
    assert body["uptimeSeconds"] >= 0 and body["version"]


async def test_metrics_count_events_errors_and_fanout(hub, http):
    alice = await hub.connect_in("alice", "r")
    bob = await hub.connect_in("bob", "r")
    await alice.request("message:typing", {"conversationId": "r", "isTyping": True})
    await bob.expect("user:typing")
    await alice.send_raw("nonsense")
    await alice.expect("error")
    async with http.get(f"{hub.base}/metrics") as resp:
        text = await resp.text()
    assert resp.status == 200
    assert "switchboard_connections 2.0" in text
    assert 'switchboard_events_in_total{type="message:typing"} 1.0' in text
    assert 'switchboard_events_out_total{type="user:typing"} 1.0' in text
    assert 'switchboard_errors_total{code="invalid_json"} 1.0' in text
    assert "switchboard_fanout_seconds_bucket" in text
    # the suite runs where io_uring works: flushes use it, and no send was parked
    assert "switchboard_fanout_io_uring 1.0" in text
    assert "switchboard_fanout_io_uring_parked_total 0.0" in text
    assert "switchboard_fanout_direct_writes_total" in text


async def test_draining_hub_refuses_upgrades(hub, http):
    from switchboard.app import drain

    client = await hub.connect("alice")
    await drain(hub.server.app)
    assert await client.wait_closed() == 1012
    async with http.get(f"{hub.base}/health") as resp:
        assert resp.status == 503 and (await resp.json())["status"] == "draining"
    async with http.get(hub.ws_url, params={"access_token": hub.token("bob")}) as resp:
        assert resp.status == 503
        assert (await resp.json())["error"]["code"] == "server_draining"


def test_plain_counts_expose_what_prometheus_clients_metrics_would():
    """The per-event metrics are counted in plain numbers and turned into metrics when
    scraped: the same samples as prometheus_client's own Counter and Histogram."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    from signaling.metrics import Tally, Timings

    buckets = (0.001, 0.01, 0.1)
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    tally, timings = Tally("t", "a tally", "type"), Timings("h", "a histogram", buckets)
    ours.register(tally)
    ours.register(timings)
    counter = Counter("t", "a tally", ["type"], registry=theirs)
    histogram = Histogram("h", "a histogram", buckets=buckets, registry=theirs)
    for kind, amount in (("a", 1), ("b", 3), ("a", 2)):
        tally.inc(kind, amount)
        counter.labels(kind).inc(amount)
    for seconds in (0.0005, 0.001, 0.002, 0.01, 0.5, 7.0):  # on a bound counts in it (le)
        timings.observe(seconds)
        histogram.observe(seconds)

    def samples(registry: CollectorRegistry) -> list[str]:
        text = generate_latest(registry).decode()
        return sorted(line for line in text.splitlines() if line and "_created" not in line)

    assert samples(ours) == samples(theirs)
