"""The media nodes as the room API shows them: each live node's published load, limits,
score and whether placement would choose it now (``GET /api/v1/nodes``)."""

from __future__ import annotations

from typing import Any

from media.load import NodeLoad
from signaling.api.models import NodeLimits, NodeOut


def node_out(name: str, data: dict[str, Any]) -> NodeOut:
    load = NodeLoad.from_wire(name, data)
    reason = load.full()
    return NodeOut(
        nodeId=name,
        hostsMedia=load.media,
        draining=load.draining,
        open=reason is None,
        reason=reason,
        cpu=load.cpu,
        rooms=load.rooms,
        participants=load.participants,
        tracks=load.tracks,
        score=round(load.score, 4),
        limits=NodeLimits(
            rooms=load.max_rooms, participants=load.max_participants, cpu=load.max_cpu
        ),
        mediaAddress=str(data.get("mediaAddress", "")),
        udpPorts=str(data.get("udpPorts", "")),
    )
