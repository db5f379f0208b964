"""Room API handlers: the cluster's nodes, their load as media placement sees it, and
draining (what the SFU reports through :class:`~signaling.api.endpoints.MediaAdmin`)."""

from __future__ import annotations

from signaling.api.endpoints import Context
from signaling.api.errors import ApiError
from signaling.api.models import DrainBody, DrainOut, NodeList


async def list_nodes(ctx: Context) -> NodeList:
    """The live nodes with the load they last published (what room placement ranks by)."""
    return await ctx.api.media.list_nodes()


async def drain_node(ctx: Context) -> DrainOut:
    """Drain a node: no new group call rooms; its calls move to other nodes after the
    deadline. WebSockets stay (stop the process with SIGTERM to close them too)."""
    node: str = ctx.params["nodeId"]
    body: DrainBody = ctx.body
    settings = ctx.api.settings
    deadline = body.deadline if body.deadline is not None else settings.sfu_drain_deadline
    if not await ctx.api.media.drain_node(node, deadline):
        raise ApiError(404, "node_not_found", f"no live node '{node}'")
    return DrainOut(nodeId=node, draining=True, deadline=deadline)
