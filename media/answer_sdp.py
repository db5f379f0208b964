"""What aiortc's answer to a publisher lacks, added to its SDP: simulcast, transport-wide
congestion feedback and Opus DTX/FEC, none of which aiortc negotiates.

**Simulcast** (RFC 8853).
A browser offering simulcast lists each encoding as ``a=rid:<id> send`` and their order in
``a=simulcast:send q;h;f`` (``~`` marks one paused from the start; ``,`` separates
alternatives, of which we take the first). The answer must repeat them with ``recv``, or
the browser sends one encoding only. Layers carry no SSRC in the SDP: the media sections'
RTP header extensions (mid, rid, repaired rid) name them in the first packets.

**Transport-cc.** When the offer has the transport-wide sequence number extension and
``a=rtcp-fb:<pt> transport-cc``, the answer accepts both (the server sends the feedback,
:mod:`media.twcc`) and drops abs-send-time and ``goog-remb``, so the browser's estimator
is driven by that feedback alone and not capped by aiortc's slower REMB. Towards
subscribers it is the other way round: the server's offer asks for the feedback on its
video (:func:`offer_transport_cc`), and a subscriber whose answer takes it (browsers do,
aiortc does not) gets its estimate made by the server (:mod:`media.send_side`).
"""

from __future__ import annotations

import re

from media.twcc import URI as TRANSPORT_CC

_SIMULCAST = re.compile(r"^a=simulcast:\s*send\s+(\S+)", re.MULTILINE)
_RID = re.compile(r"^a=rid:(\S+)\s+send\b", re.MULTILINE)
_MID = re.compile(r"^a=mid:(\S+)", re.MULTILINE)
_TRANSPORT_CC_FB = re.compile(r"^a=rtcp-fb:(\d+) transport-cc\s*$", re.MULTILINE)
_RTPMAP = re.compile(r"^a=rtpmap:(\d+) ", re.MULTILINE)
_ABS_SEND_TIME = re.compile(
    r"^a=extmap:\d+\S* http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\s*\n",
    re.MULTILINE,
)
_REMB = re.compile(r"^a=rtcp-fb:\d+ goog-remb\s*\n", re.MULTILINE)


def _sections(sdp: str) -> list[str]:
    """The session part, then one string per media section (each starting with ``m=``)."""
    parts = re.split(r"(?m)^(?=m=)", sdp)
    return parts


def offered_layers(sdp: str) -> dict[str, list[str]]:
    """For each media section offering simulcast to us: its mid -> the rids, in the
    order of ``a=simulcast:send`` (lowest quality first, as browsers list them)."""
    found: dict[str, list[str]] = {}
    for section in _sections(sdp)[1:]:
        mid, simulcast = _MID.search(section), _SIMULCAST.search(section)
        if mid is None or simulcast is None:
            continue
        declared = set(_RID.findall(section))
        rids = []
        for entry in simulcast.group(1).split(";"):
            rid = entry.split(",")[0].lstrip("~")
            if rid in declared and rid not in rids:
                rids.append(rid)
        if len(rids) > 1:
            found[mid.group(1)] = rids
    return found


def accept_layers(answer: str, layers: dict[str, list[str]]) -> str:
    """aiortc's ``answer`` with ``a=rid:<id> recv`` and ``a=simulcast:recv`` added to the
    media sections that take simulcast."""
    eol = "\r\n" if "\r\n" in answer else "\n"
    sections = _sections(answer)
    for i, section in enumerate(sections[1:], start=1):
        mid = _MID.search(section)
        rids = layers.get(mid.group(1)) if mid else None
        if not rids:
            continue
        lines = [f"a=rid:{rid} recv" for rid in rids]
        lines.append("a=simulcast:recv " + ";".join(rids))
        body = section if section.endswith(eol) else section + eol
        sections[i] = body + eol.join(lines) + eol
    return "".join(sections)


def accept_transport_cc(offer: str, answer: str) -> str:
    """``answer`` taking transport-wide congestion feedback for every payload type the
    offer asked it for, in sections where the extension was negotiated."""
    eol = "\r\n" if "\r\n" in answer else "\n"
    offered: dict[str, set[str]] = {}
    for section in _sections(offer)[1:]:
        mid = _MID.search(section)
        if mid is not None:
            offered[mid.group(1)] = set(_TRANSPORT_CC_FB.findall(section))
    sections = _sections(answer)
    for i, section in enumerate(sections[1:], start=1):
        mid = _MID.search(section)
        wanted = offered.get(mid.group(1), set()) if mid else set()
        if not wanted or TRANSPORT_CC not in section:
            continue
        pts = [pt for pt in _RTPMAP.findall(section) if pt in wanted]
        if not pts:
            continue
        body = section if section.endswith(eol) else section + eol
        body = _ABS_SEND_TIME.sub("", body)
        body = _REMB.sub("", body)
        sections[i] = body + "".join(f"a=rtcp-fb:{pt} transport-cc{eol}" for pt in pts)
    return "".join(sections)


_RTX = re.compile(r"^a=rtpmap:(\d+) (?:rtx|red|ulpfec)/", re.MULTILINE | re.IGNORECASE)


def offer_transport_cc(offer: str) -> str:
    """The server's ``offer`` to a subscriber asking for transport-wide congestion
    feedback on each video codec, in the video sections that offer the extension."""
    eol = "\r\n" if "\r\n" in offer else "\n"
    sections = _sections(offer)
    for i, section in enumerate(sections[1:], start=1):
        if not section.startswith("m=video") or TRANSPORT_CC not in section:
            continue
        skip = set(_RTX.findall(section)) | set(_TRANSPORT_CC_FB.findall(section))
        pts = [pt for pt in _RTPMAP.findall(section) if pt not in skip]
        body = section if section.endswith(eol) else section + eol
        sections[i] = body + "".join(f"a=rtcp-fb:{pt} transport-cc{eol}" for pt in pts)
    return "".join(sections)


def answered_transport_cc(answer: str) -> bool:
    """Whether a subscriber's ``answer`` takes transport-wide congestion feedback (the
    extension and the feedback type, in some video section)."""
    return any(
        section.startswith("m=video")
        and TRANSPORT_CC in section
        and _TRANSPORT_CC_FB.search(section) is not None
        for section in _sections(answer)[1:]
    )


_OPUS = re.compile(r"^a=rtpmap:(\d+) opus/48000", re.MULTILINE | re.IGNORECASE)
OPUS_WANTED = {"minptime": "10", "useinbandfec": "1", "usedtx": "1"}


def ask_opus_dtx(answer: str) -> str:
    """``answer`` asking the publisher's Opus encoder for in-band FEC (a lost packet is
    rebuilt from the next one) and DTX (a silence costs a packet every 400 ms instead of
    50 a second): receivers announce both in their ``a=fmtp``, as browsers do."""
    eol = "\r\n" if "\r\n" in answer else "\n"
    sections = _sections(answer)
    for i, section in enumerate(sections[1:], start=1):
        for pt in _OPUS.findall(section):
            fmtp = re.search(rf"(?m)^a=fmtp:{pt} ([^\r\n]*)", section)
            params = dict(OPUS_WANTED)
            if fmtp is not None:
                for item in fmtp.group(1).split(";"):
                    key, _, value = item.strip().partition("=")
                    if key and key not in OPUS_WANTED:
                        params[key] = value
            line = f"a=fmtp:{pt} " + ";".join(f"{k}={v}" for k, v in params.items())
            if fmtp is not None:
                section = section[: fmtp.start()] + line + section[fmtp.end() :]
            else:
                body = section if section.endswith(eol) else section + eol
                section = body + line + eol
        sections[i] = section
    return "".join(sections)
