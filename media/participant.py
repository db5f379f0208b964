"""One participant of a group call: a publish connection and a subscribe connection.

Two peer connections per participant, as LiveKit does: the client offers on the publish
connection (its own tracks, any time it changes them) and the server offers on the
subscribe connection (everyone else's tracks). Each side is always the offerer of its own
connection, so the two directions renegotiate independently and never collide (no glare).
Subscribe offers are serialized: a change that arrives while an offer is out is folded
into the next offer once the answer is in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from aiortc import (
    RTCConfiguration,
    RTCIceCandidate,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.exceptions import InvalidStateError
from aiortc.rtcconfiguration import RTCBundlePolicy
from aiortc.rtcrtpparameters import RTCRtpCodecCapability
from aiortc.sdp import SessionDescription, candidate_from_sdp

from media import aiortc_hooks, ice
from media.answer_sdp import accept_layers, accept_transport_cc, ask_opus_dtx, offered_layers
from media.downlink import Downlink
from media.forwarder import Preference
from media.ingest import PublisherRouting, SimulcastIngest
from media.published_track import PublishedTrack, TrackInfo
from media.send_slot import SendSlot
from signaling.protocol import ErrorCode, HubError

if TYPE_CHECKING:
    from config.sfu import SfuSettings

log = logging.getLogger("switchboard.sfu")

SENDING = ("sendonly", "sendrecv")
CLOSE_TIMEOUT = 5.0
SOURCES = ("camera", "microphone", "screen", "screen-audio")


class CallRoom(Protocol):
    """The group call a participant is in (:class:`media.group_call.GroupCall`)."""

    id: str
    settings: SfuSettings

    def tracks_for(self, participant: Participant) -> Iterable[PublishedTrack]: ...

    def demand_changed(self, track: PublishedTrack) -> None: ...

    async def send(self, participants: Iterable[Participant], type_: str, data: Any) -> None: ...


class Participant:
    """Lives on the room's media node; its WebSocket may be on any node.

    ``conn_id`` names the WebSocket its events go to. It is ``None`` while the participant
    is detached (its signaling connection was lost without a goodbye): media keeps
    flowing, offers wait, and a ``sfu:resume`` from a new connection within the reconnect
    grace attaches it again (proved by ``resume_token``).
    """

    def __init__(
        self,
        room: CallRoom,
        conn_id: str,
        user_id: str,
        name: str,
        ice_servers: list[RTCIceServer],
        policy: ice.IcePolicy,
        fail: Callable[[Participant, str], Awaitable[None]],
    ) -> None:
        self.room = room
        self.id = f"PA_{secrets.token_urlsafe(9)}"
        self.conn_id: str | None = conn_id
        # Its WebSocket while its node seemed dead (re-attached if the node comes back).
        self.lost_conn: str | None = None
        self.resume_token = secrets.token_urlsafe(18)
        self.user_id = user_id
        self.name = name
        self.grace: asyncio.TimerHandle | None = None
        self._offer: dict[str, Any] | None = None
        self._ice_servers = ice_servers
        self._policy = policy
        ice.ICE_POLICY.set(policy)
        self._fail = fail
        self.publisher: RTCPeerConnection | None = None
        self.subscriber = self._new_pc()
        self.tracks: dict[str, PublishedTrack] = {}  # by mid on the publish connection
        self._routing: PublisherRouting | None = None  # made at the first publish
        self.slots: list[SendSlot] = []
        #: what this participant asked for each remote video (sfu:subscription), by track id
        self.preferences: dict[str, Preference] = {}
        #: its downlink: the estimate it reports, and each video's share of it
        #: the publish cap the room API set for this user, else the room's (0: none)
        self.publish_limit = 0
        self.downlink = Downlink(
            room.settings.sfu_start_bitrate, room.settings.sfu_bandwidth_estimation
        )
        self.closed = False
        # Room permissions (the room API may change them while the participant is in).
        self.can_publish = True
        self.can_subscribe = True
        self._dirty = False
        self._negotiator: asyncio.Task[None] | None = None
        self._answer: asyncio.Future[str] | None = None
        self._ice_timers: list[asyncio.TimerHandle] = []
        # Watched from its first offer on: a participant alone in the room has nothing to
        # receive, and its subscribe connection rightly never connects until then.
        self._subscriber_watched = False

    def to_wire(self) -> dict[str, Any]:
        return {"participantId": self.id, "userId": self.user_id, "name": self.name}

    def summary(self) -> dict[str, Any]:
        """What the room record keeps of this participant (see the room API)."""
        return {
            **self.to_wire(),
            "canPublish": self.can_publish,
            "canSubscribe": self.can_subscribe,
            "tracks": [t.info.to_wire(t.muted) for t in self.tracks.values()],
        }

    # -- peer connections -------------------------------------------------------------------

    def _new_pc(self) -> RTCPeerConnection:
        """Everything on one transport (max-bundle), as every browser offers it.

        aiortc's default "balanced" policy also mis-bundles an offer with two sections of
        the same kind (camera and screen), which max-bundle avoids.
        """
        config = RTCConfiguration(
            iceServers=self._ice_servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE
        )
        return RTCPeerConnection(config)

    def _watch(self, pc: RTCPeerConnection, role: str) -> None:
        """Fail the participant if ``pc`` never connects, or fails after connecting."""
        loop = asyncio.get_running_loop()

        def check() -> None:
            if not self.closed and pc.connectionState != "connected":
                self._spawn(self._fail(self, f"ice_timeout ({role})"))

        self._ice_timers.append(loop.call_later(self.room.settings.sfu_ice_timeout, check))

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if self.closed:
                return
            if pc.connectionState == "failed":
                await self._fail(self, f"connection_failed ({role})")
            elif pc.connectionState == "connected" and pc is self.subscriber:
                self.activate_slots()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        task.add_done_callback(_log_failure)

    async def add_ice_candidate(self, target: str, candidate: dict[str, Any] | None) -> None:
        pc = self.publisher if target == "publisher" else self.subscriber
        if pc is None or pc.remoteDescription is None:
            raise HubError(ErrorCode.INVALID_STATE, f"no {target} connection is negotiated yet")
        if candidate is None or not candidate.get("candidate"):
            return  # end of candidates: aiortc needs no signal
        line = candidate["candidate"]
        try:
            parsed: RTCIceCandidate = candidate_from_sdp(line.removeprefix("candidate:"))
        except (AssertionError, ValueError, IndexError, KeyError):
            raise HubError(
                ErrorCode.INVALID_PAYLOAD, f"unparsable ICE candidate: {line[:100]!r}"
            ) from None
        parsed.sdpMid = candidate.get("sdpMid")
        parsed.sdpMLineIndex = candidate.get("sdpMLineIndex")
        if parsed.sdpMid is None and parsed.sdpMLineIndex is None:
            parsed.sdpMLineIndex = 0
        try:
            await pc.addIceCandidate(parsed)
        except ValueError as exc:
            raise HubError(ErrorCode.INVALID_PAYLOAD, f"ICE candidate refused: {exc}") from None

    # -- publishing -----------------------------------------------------------------------

    async def publish(
        self, sdp: str, sources: dict[str, str]
    ) -> tuple[str, list[PublishedTrack], list[PublishedTrack]]:
        """Apply the client's publish offer; returns (answer, added tracks, removed tracks)."""
        try:
            parsed = SessionDescription.parse(sdp)
        except Exception as exc:
            raise HubError(ErrorCode.INVALID_SDP, f"offer is not valid SDP: {exc}") from None
        if not parsed.media or not all(m.kind in ("audio", "video") for m in parsed.media):
            raise HubError(ErrorCode.INVALID_SDP, "offer must carry audio or video sections only")
        ice.ICE_POLICY.set(self._policy)
        first = self.publisher is None
        if first:
            self.publisher = self._new_pc()
        pc = self.publisher
        assert pc is not None
        layers = offered_layers(sdp)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
        except Exception as exc:
            if first:
                self.publisher = None
                await pc.close()
            code = (
                ErrorCode.UNSUPPORTED_CODEC if "parameters" in str(exc) else ErrorCode.INVALID_SDP
            )
            detail = "no codec in the offer is supported (opus, VP8, H264)"
            raise HubError(
                code, detail if code is ErrorCode.UNSUPPORTED_CODEC else f"offer refused: {exc}"
            ) from None
        if first:
            self._watch(pc, "publisher")
        offered = {m.rtp.muxId: m for m in parsed.media}
        added: list[PublishedTrack] = []
        removed: list[PublishedTrack] = []
        for transceiver in pc.getTransceivers():
            mid = transceiver.mid
            media = offered.get(mid) if mid is not None else None
            sending = media is not None and media.direction in SENDING and media.port != 0
            codecs = aiortc_hooks.negotiated_codecs(transceiver)
            if sending and mid not in self.tracks and codecs:
                rids = layers.get(mid, []) if transceiver.kind == "video" else []
                track = self._track_for(transceiver, codecs, mid, sources.get(mid), rids)
                self.tracks[mid] = track
                added.append(track)
            elif not sending and mid in self.tracks:
                removed.append(self.tracks.pop(mid))
                if self._routing is not None:
                    self._routing.remove(mid)
        for track in removed:
            track.close()
        simulcast = {
            mid: list(track.info.rids) for mid, track in self.tracks.items() if track.simulcast
        }
        if self._routing is None and pc.getTransceivers():
            self._routing = PublisherRouting(pc.getTransceivers()[0].receiver.transport)
        self.cap_publishing()
        answer = accept_transport_cc(sdp, accept_layers(pc.localDescription.sdp, simulcast))
        answer = ask_opus_dtx(answer)
        return answer, added, removed

    def _track_for(
        self, transceiver: Any, codecs: list[Any], mid: str, source: str | None, rids: list[str]
    ) -> PublishedTrack:
        kind = transceiver.kind
        if source not in SOURCES:
            source = "microphone" if kind == "audio" else "camera"
        info = TrackInfo(
            track_id=f"TR_{secrets.token_urlsafe(8)}",
            participant_id=self.id,
            user_id=self.user_id,
            kind=kind,
            source=source,
            codec=codecs[0].mimeType,
            rids=tuple(rids),
        )
        interval = self.room.settings.sfu_keyframe_min_interval
        if not rids:
            receiver = transceiver.receiver

            async def request_pli(ssrc: int) -> None:
                await aiortc_hooks.request_keyframe(receiver, ssrc)

            track = PublishedTrack(info, codecs[0], interval, request_pli)
            aiortc_hooks.tap_receiver(receiver, track.on_packet)
            aiortc_hooks.cap_receiver_estimate(receiver, lambda: self.publish_cap)
        else:
            transport = transceiver.receiver.transport
            aiortc_hooks.park_receiver(transceiver.receiver)
            if self._routing is None:
                self._routing = PublisherRouting(transport)
            ingest: SimulcastIngest | None = None

            async def request_layer_pli(ssrc: int) -> None:
                if ingest is not None:
                    await ingest.send_pli(ssrc)

            track = PublishedTrack(info, codecs[0], interval, request_layer_pli)
            ingest = SimulcastIngest(transport, track, codecs, lambda: self.publish_cap)
            self._routing.add(mid, ingest)
        track.on_demand = self.room.demand_changed
        return track

    # -- subscribing ----------------------------------------------------------------------

    def resubscribe(self) -> None:
        """Bring the subscribe connection in line with the room's tracks (coalesced)."""
        if self.closed:
            return
        self._dirty = True
        if self._negotiator is None or self._negotiator.done():
            self._negotiator = asyncio.ensure_future(self._negotiate())
            self._negotiator.add_done_callback(_log_failure)

    async def _negotiate(self) -> None:
        try:
            await self._negotiate_until_settled()
        except InvalidStateError:
            # The client went away and aiortc closed the connection under us; the
            # disconnect (or ICE) handling removes the participant.
            log.debug("subscriber connection closed during negotiation", extra={"conn": self.id})

    async def _negotiate_until_settled(self) -> None:
        ice.ICE_POLICY.set(self._policy)
        pc = self.subscriber
        while self._dirty and not self.closed:
            self._dirty = False
            if not self._apply_subscriptions():
                continue
            await pc.setLocalDescription(await pc.createOffer())
            if not self._subscriber_watched:
                self._subscriber_watched = True
                self._watch(pc, "subscriber")
            mids = {
                slot.mid: slot.track.info.to_wire(slot.track.muted)
                for slot in self.slots
                if slot.track is not None and slot.mid is not None
            }
            self._answer = asyncio.get_running_loop().create_future()
            offer = self.downlink.offer(pc.localDescription.sdp)
            self._offer = {"roomId": self.room.id, "sdp": offer, "tracks": mids}
            await self.room.send([self], "sfu:offer", self._offer)
            try:
                sdp = await self._wait_answer(self._answer)
            finally:
                self._answer = self._offer = None
            if sdp is None:
                await self._fail(self, "negotiation_timeout")
                return
            self.downlink.answered(sdp)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
            self.activate_slots()

    async def _wait_answer(self, waiter: asyncio.Future[str]) -> str | None:
        """The answer, or ``None`` on timeout. A detached participant waits on: its
        resume re-sends the offer, and the reconnect grace bounds the wait.
        ``asyncio.wait`` leaves the waiter alone on timeout and wakes this task one loop
        turn after the answer (``wait_for`` over ``shield`` took three)."""
        timeout = self.room.settings.sfu_negotiation_timeout
        while not (await asyncio.wait((waiter,), timeout=timeout))[0]:
            if self.conn_id is not None or self.closed:
                return None
        return waiter.result()

    # -- the signaling connection ----------------------------------------------------------

    async def attach(self, conn_id: str) -> None:
        """A resumed connection takes over; an offer still waiting is sent to it again."""
        self.conn_id = conn_id
        self.lost_conn = None
        if self.grace is not None:
            self.grace.cancel()
            self.grace = None
        if self._offer is not None and self._answer is not None and not self._answer.done():
            await self.room.send([self], "sfu:offer", self._offer)

    async def answer(self, sdp: str) -> None:
        waiter = self._answer
        if waiter is None or waiter.done():
            raise HubError(ErrorCode.INVALID_STATE, "no subscriber offer is waiting for an answer")
        try:
            SessionDescription.parse(sdp)
        except Exception as exc:
            raise HubError(ErrorCode.INVALID_SDP, f"answer is not valid SDP: {exc}") from None
        waiter.set_result(sdp)

    def _apply_subscriptions(self) -> bool:
        """Bind slots to wanted tracks, free the rest; True if the SDP must change."""
        wanted = {t.info.track_id: t for t in self.room.tracks_for(self)}
        changed = False
        for slot in self.slots:
            if slot.track is not None and wanted.get(slot.track.info.track_id) is not slot.track:
                slot.unbind()
                changed = True
        bound = {slot.track.info.track_id for slot in self.slots if slot.track is not None}
        for track_id, track in wanted.items():
            if track_id in bound:
                continue
            slot = next(
                (
                    s
                    for s in self.slots
                    if s.track is None and s.kind == track.kind and s.mid is not None
                ),
                None,
            )
            if slot is None:
                transceiver = self.subscriber.addTransceiver(track.kind, direction="sendonly")
                slot = SendSlot(transceiver, self.room.settings.sfu_compiled_writer)
                self.downlink.adopt(slot)
                self.slots.append(slot)
            slot.transceiver.setCodecPreferences(_preferences(track))
            slot.bind(track, self.preferences.get(track_id))
            changed = True
        return changed

    def prefer(self, track_id: str, preference: Preference) -> None:
        """This participant's wishes for one remote video (kept for later bindings)."""
        self.preferences[track_id] = preference
        for slot in self.slots:
            if slot.track is not None and slot.track.info.track_id == track_id:
                slot.prefer(preference)

    @property
    def publish_cap(self) -> int:
        """Bits/s this participant may publish, all tracks together (0: no cap): the
        room API's cap for its user (else the room's), never above the setting's."""
        caps = [c for c in (self.publish_limit, self.room.settings.sfu_max_publish_bitrate) if c]
        return min(caps, default=0)

    def cap_publishing(self, limit: int | None = None) -> None:
        """Apply the publish cap (``limit``: a new one from the room API) to the uplink."""
        if limit is not None:
            self.publish_limit = limit
        if self._routing is not None:
            self._routing.set_cap(self.publish_cap)

    def forget_track(self, track_id: str) -> None:
        self.preferences.pop(track_id, None)

    def activate_slots(self) -> None:
        if self.subscriber.connectionState != "connected" or self._answer is not None:
            return
        for slot in self.slots:
            slot.activate()
            self.downlink.activated(slot)
        # share the estimate before the first keyframe goes out, not a tick later
        self.downlink.share(self.slots)

    # -- leaving --------------------------------------------------------------------------

    def stop_media(self) -> list[PublishedTrack]:
        """Stop forwarding at once; returns the tracks that stopped being published.

        Synchronous, so the room can tell the others before the (slower) connection
        teardown in :meth:`close`.
        """
        if self.closed:
            return []
        self.closed = True
        if self.grace is not None:
            self.grace.cancel()
        for timer in self._ice_timers:
            timer.cancel()
        if self._answer is not None and not self._answer.done():
            self._answer.cancel()
        if self._negotiator is not None and self._negotiator is not asyncio.current_task():
            self._negotiator.cancel()
        tracks = list(self.tracks.values())
        self.tracks.clear()
        for track in tracks:
            track.close()
        if self._routing is not None:
            self._routing.close()
        for slot in self.slots:
            slot.close()
        self.downlink.close()
        return tracks

    async def close(self) -> list[PublishedTrack]:
        """Stop media, then tear down both connections (bounded: a stuck close is dropped)."""
        tracks = self.stop_media()
        for pc in (self.publisher, self.subscriber):
            if pc is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(pc.close(), CLOSE_TIMEOUT)
        return tracks


def _preferences(track: PublishedTrack) -> list[RTCRtpCodecCapability]:
    """The subscriber must receive exactly the codec the publisher sends (no transcoding),
    and for video RTX, so retransmissions come on their own SSRC (RFC 4588)."""
    codec = track.codec
    caps = RTCRtpSender.getCapabilities(track.kind).codecs
    same = [c for c in caps if c.mimeType.lower() == codec.mimeType.lower()]
    exact = [c for c in same if c.parameters == codec.parameters]
    rtx = [c for c in caps if c.mimeType.lower() == f"{track.kind}/rtx"]
    return (exact or same)[:1] + rtx[:1]


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("sfu task failed", exc_info=task.exception())
