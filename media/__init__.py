"""Group calls: the selective forwarding unit (SFU) on aiortc.

Each participant has a publish and a subscribe peer connection on the room's media node;
RTP is forwarded packet by packet (header rewritten, payload untouched), never decoded or
re-encoded. :mod:`media.signaling` is the ``sfu:*`` protocol on any node (relayed to the
media node over :mod:`media.relay`); :mod:`media.host` and :mod:`media.operations` are the
media node's side; :mod:`media.published_track`, :mod:`media.send_slot` and
:mod:`media.rtp` the per-packet path; :mod:`media.aiortc_hooks` every place aiortc's
internals are touched.

The top layer but for the composition root: it uses :mod:`signaling` (state, fan-out,
room lifecycle), :mod:`turn` and :mod:`config`; none of them uses it.
"""
