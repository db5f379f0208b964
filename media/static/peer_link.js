// One peer connection of a call (calls.js) to one other participant.
//
// One side of each pair starts: the caller, or between two callees the one whose user id
// sorts last (the replaced service's clients expect the caller's offer). It adds its
// tracks at once and offers; the other side makes its connection when that offer comes,
// and adds its tracks to the answer. After that either side may renegotiate (screen
// share) with "perfect negotiation" (https://w3c.github.io/webrtc-pc/#perfect-negotiation-example):
// when both offer at once, the starting side ignores the other's offer and the other
// rolls its own back. Offers, answers and candidates travel as call:offer, call:answer
// and call:ice-candidate; what arrives is handled one at a time, in order.

export class PeerLink {
  constructor(call, userId, initiator) {
    this.call = call;
    this.userId = userId;
    this.polite = !initiator;
    this.makingOffer = false;
    this.ignoreOffer = false;
    this._queue = Promise.resolve();
    const pc = (this.pc = new RTCPeerConnection({ iceServers: call.iceServers }));
    this.stream = new MediaStream();
    call.remoteStreams.set(userId, this.stream);
    this._senders = {};
    this._tracksAdded = false;
    pc.addEventListener("negotiationneeded", () => this._offer());
    pc.addEventListener("icecandidate", ({ candidate }) => {
      this._send("call:ice-candidate", { candidate: candidate ? candidate.toJSON() : null });
    });
    pc.addEventListener("track", ({ track }) => {
      this.stream.addTrack(track);
      call._emit("track", { userId, track, stream: this.stream });
    });
    pc.addEventListener("connectionstatechange", () => {
      call._emit("connectionstate", { userId, state: pc.connectionState });
      if (pc.connectionState === "failed" && !this.polite) pc.restartIce();
    });
    if (initiator) {
      this._addTracks();
      if (!this._senders.video && call.callType === "video") {
        // Camera off or missing: still ask for the other's video.
        pc.addTransceiver("video", { direction: "recvonly" });
      }
      if (!this._senders.audio) pc.addTransceiver("audio", { direction: "recvonly" });
    }
  }

  /** Send the call's local tracks (the screen instead of the camera while sharing). On
   * the answering side this fills the transceivers the offer made. */
  _addTracks() {
    if (this._tracksAdded) return;
    this._tracksAdded = true;
    const call = this.call;
    for (const track of call.localStream?.getTracks() || []) {
      const sent = track.kind === "video" && call.screen ? call.screen : track;
      this._senders[track.kind] = this.pc.addTrack(sent, call.localStream);
    }
  }

  _send(type, data) {
    this.call.sb.request(type, { callId: this.call.callId, to: this.userId, ...data }).catch((error) => {
      // The peer may be between connections (peer_unavailable): it renegotiates when back.
      if (error.code !== "peer_unavailable" && error.code !== "connection_lost") this.call._fail(error);
    });
  }

  async _offer() {
    try {
      this.makingOffer = true;
      await this.pc.setLocalDescription();
      this._send("call:offer", { sdp: { type: this.pc.localDescription.type, sdp: this.pc.localDescription.sdp } });
    } catch (error) {
      this.call._fail(error);
    } finally {
      this.makingOffer = false;
    }
  }

  _then(step) {
    this._queue = this._queue.then(step).catch((error) => this.call._fail(error));
  }

  /** An offer or answer from the other side. */
  description(description) {
    this._then(async () => {
      const pc = this.pc;
      if (pc.signalingState === "closed") return;
      const collision = description.type === "offer" && (this.makingOffer || pc.signalingState !== "stable");
      this.ignoreOffer = !this.polite && collision;
      if (this.ignoreOffer) return;
      if (description.type === "answer" && pc.signalingState !== "have-local-offer") return; // stale
      await pc.setRemoteDescription(description);
      if (description.type === "offer") {
        this._addTracks();
        await pc.setLocalDescription();
        this._send("call:answer", { sdp: { type: pc.localDescription.type, sdp: pc.localDescription.sdp } });
      }
    });
  }

  /** An ICE candidate from the other side (`null`: it has no more). */
  candidate(candidate) {
    this._then(async () => {
      if (this.pc.signalingState === "closed") return;
      const init = typeof candidate === "string" ? { candidate, sdpMid: "0" } : candidate;
      try {
        await this.pc.addIceCandidate(init ?? undefined);
      } catch (error) {
        if (!this.ignoreOffer) throw error;
      }
    });
  }

  /** Send `track` as this link's video (the camera, the screen, or nothing). */
  sendVideo(track) {
    if (!this._tracksAdded) return; // the answer will carry it
    const sender = this._senders.video;
    if (sender) sender.replaceTrack(track).catch((error) => this.call._fail(error));
    else if (track) this._senders.video = this.pc.addTrack(track, this.call.localStream);
  }

  async inboundStats() {
    const out = { audio: null, video: null, connectionState: this.pc.connectionState };
    const report = await this.pc.getStats();
    report.forEach((s) => {
      if (s.type !== "inbound-rtp") return;
      out[s.kind] = {
        packetsReceived: s.packetsReceived || 0,
        framesDecoded: s.framesDecoded || 0,
        bytesReceived: s.bytesReceived || 0,
      };
    });
    return out;
  }

  close() {
    this.pc.close();
  }
}
