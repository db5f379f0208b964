"""The browser SDK's 1:1 call (``calls.js``) when the other side's offer and candidates
are read before the ``call:accept`` or ``call:reconnected`` ack: the caller starts
negotiating as soon as the server tells it, so its offer can overtake our ack. Before,
an offer read while the call was still ringing was dropped, and one read during a resume
made the connection with the previous connection's ICE servers (or none after a page
reload), so a client that needs TURN got no media. Now they wait for the ack. A unit test:
the hub and RTCPeerConnection are stand-ins (``tests/sdk/call_offer_order.mjs``)."""

from __future__ import annotations

from tests.sdk_script import run_sdk_script


async def test_offers_before_the_ack_wait_for_its_ice_servers() -> None:
    result = await run_sdk_script("call_offer_order.mjs")
    assert result["built"] == [
        # the accept's servers; the offer and candidate read while ringing, then applied
        {"urls": ["turns:198.18.0.20:443?transport=tcp"], "given": ["offer:v=0 1", "candidate:c1"]},
        # the resume's servers, not the accept's
        {"urls": ["turns:198.18.0.21:443?transport=tcp"], "given": ["offer:v=0 2", "candidate:c2"]},
    ]
    assert result["errors"] == [] and result["state"] == "active"
