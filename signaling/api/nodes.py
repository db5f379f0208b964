"""Room API: the cluster's nodes, their load as media placement sees it, and draining."""

from __future__ import annotations

from media.load import NodeLoad
from signaling.api.endpoints import AUTH_ERRORS, BODY_ERRORS, Context, endpoint
from signaling.api.errors import ApiError
from signaling.api.models import DrainBody, DrainOut, NodeLimits, NodeList, NodeOut


def node_out(name: str, data: dict[str, object]) -> NodeOut:
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


@endpoint("GET", "/nodes", tag="nodes", response=NodeList, errors=AUTH_ERRORS)
async def list_nodes(ctx: Context) -> NodeList:
    """The live nodes with the load they last published (what room placement ranks by)."""
    nodes = await ctx.hub.state.cluster_nodes()
    return NodeList(nodes=[node_out(name, data) for name, data in sorted(nodes.items())])


@endpoint(
    "POST",
    "/nodes/{nodeId}/drain",
    tag="nodes",
    body=DrainBody,
    body_optional=True,
    response=DrainOut,
    status=202,
    errors=(*BODY_ERRORS, 404),
)
async def drain_node(ctx: Context) -> DrainOut:
    """Drain a node: no new group call rooms; its calls move to other nodes after the
    deadline. WebSockets stay (stop the process with SIGTERM to close them too)."""
    node: str = ctx.params["nodeId"]
    body: DrainBody = ctx.body
    media = ctx.hub.room_lifecycle.media
    deadline = body.deadline if body.deadline is not None else ctx.hub.settings.sfu_drain_deadline
    if media is None or not await media.drain_node(node, deadline):
        raise ApiError(404, "node_not_found", f"no live node '{node}'")
    return DrainOut(nodeId=node, draining=True, deadline=deadline)
