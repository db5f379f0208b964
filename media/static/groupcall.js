// Group calls through the server's SFU, for the Switchboard SDK (docs/protocol.md,
// "Group calls (SFU)"). Made by `sb.joinGroupCall(roomId)`.

import { Subscriptions } from "./subscriptions.js";

/** Camera simulcast: three encodings, lowest first (the server picks one per subscriber). */
export const SIMULCAST_LAYERS = [
  { rid: "q", scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  { rid: "h", scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { rid: "f", scaleResolutionDownBy: 1, maxBitrate: 1_500_000 },
];

const SOURCE_OF = (track) => (track.kind === "audio" ? "microphone" : "camera");

/**
 * A group call through the server's SFU. Events (CustomEvent, data in `detail`):
 * `track` {info, track, stream}, `trackended` {trackId}, `participantjoined`,
 * `participantleft`, `activespeakers`, `trackmuted`, `left` (dropped by the server),
 * `reconnecting` {reason} and `reconnected` {resumed} when the call follows the cluster:
 * after `sfu:rejoin` (its media node died or is draining) it joins again and publishes the
 * same local tracks; after a lost WebSocket it resumes the session, or joins again if the
 * session is gone.
 */
export class GroupCall extends EventTarget {
  constructor(sb, roomId) {
    super();
    this.sb = sb;
    this.roomId = roomId;
    this.participantId = null;
    this.participants = new Map();
    this.remote = new Map(); // trackId -> {info, track, stream, mid}
    this.local = new Map(); // mid -> {track, source, transceiver}
    this.publisher = null;
    this.subscriber = null;
    this._subscriberQueue = Promise.resolve();
    this._handlers = [];
    this.simulcast = true;
    this.subscriptions = new Subscriptions((tracks) => {
      this.sb.request("sfu:subscription", { roomId: this.roomId, tracks }).catch(() => {});
    });
  }

  _on(type, fn) {
    const handler = (e) => { if (e.detail.roomId === this.roomId) fn(e.detail); };
    this.sb.addEventListener(type, handler);
    this._handlers.push([type, handler]);
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  async _join() {
    this._listen();
    return this._joinRequest();
  }

  async _joinRequest() {
    return this._holdingOffers(this.sb.request("sfu:join", { roomId: this.roomId }));
  }

  /** The ack of a join or resume, applied (`_joined`) before any sfu:offer queued
   * meanwhile is answered: the server may send the offer first, and the subscribe
   * connection must be built with the ack's ICE servers. */
  _holdingOffers(request) {
    const applied = request.then((ack) => { this._joined(ack); return ack; });
    this._subscriberQueue = this._subscriberQueue.then(() => applied.then(() => {}, () => {}));
    return applied;
  }

  _joined(ack) {
    this.participantId = ack.participantId;
    this.resumeToken = ack.resumeToken;
    this.mediaNode = ack.mediaNode;
    this.iceServers = ack.iceServers || [];
    this.participants.clear();
    for (const p of ack.participants) this.participants.set(p.participantId, p);
  }

  _listen() {
    this._on("sfu:offer", (d) => {
      this._subscriberQueue = this._subscriberQueue.then(() => this._answer(d)).catch((err) => this._emit("error", err));
    });
    this._on("sfu:participant-joined", (d) => { this.participants.set(d.participantId, d); this._emit("participantjoined", d); });
    this._on("sfu:participant-left", (d) => { this.participants.delete(d.participantId); this._emit("participantleft", d); });
    this._on("sfu:active-speakers", (d) => this._emit("activespeakers", d.speakers));
    this._on("sfu:track-muted", (d) => {
      for (const r of this.remote.values()) if (r.info.trackId === d.trackId) r.info.muted = d.muted;
      this._emit("trackmuted", d);
    });
    this._on("sfu:left", (d) => { this._teardown(); this._emit("left", d); });
    this._on("sfu:rejoin", (d) => this._rejoin(d).catch((err) => this._emit("error", err)));
    this._on("sfu:layers", (d) => this._setLayers(d).catch((err) => this._emit("error", err)));
    const onReconnected = () => this._resume().catch((err) => this._emit("error", err));
    this.sb.addEventListener("reconnected", onReconnected);
    this._handlers.push(["reconnected", onReconnected]);
  }

  /** The WebSocket came back (maybe on another node): take the session over. */
  async _resume() {
    this._emit("reconnecting", { reason: "signaling_lost" });
    try {
      await this._holdingOffers(this.sb.request("sfu:resume", {
        roomId: this.roomId, participantId: this.participantId, resumeToken: this.resumeToken,
      }));
      this._emit("reconnected", { resumed: true });
    } catch (err) {
      if (err.code !== "resume_failed") throw err;
      await this._rejoin({ reason: "session_lost" });
    }
  }

  /** Start over on the room's (new) media node with the same local tracks. */
  async _rejoin(notice) {
    this._emit("reconnecting", notice);
    const tracks = [...this.local.values()].map(({ track, source }) => ({ track, source }));
    for (const pc of [this.publisher, this.subscriber]) if (pc) pc.close();
    this.publisher = this.subscriber = null;
    this.local.clear();
    for (const trackId of [...this.remote.keys()]) {
      this.remote.delete(trackId);
      this._emit("trackended", { trackId });
    }
    this._subscriberQueue = Promise.resolve();
    let delay = 250;
    for (;;) {
      try {
        await this._joinRequest();
        break;
      } catch (err) {
        // The room may still be moving, or every node may be full for a moment.
        if (!["unavailable", "no_capacity"].includes(err.code) || delay > 8000) throw err;
        await new Promise((r) => setTimeout(r, delay));
        delay *= 2;
      }
    }
    if (tracks.length) await this._publishTracks(tracks);
    this.subscriptions.resend();
    this._emit("reconnected", { resumed: false, mediaNode: this.mediaNode });
  }

  _newPeerConnection(target) {
    const pc = new RTCPeerConnection({ iceServers: this.iceServers, bundlePolicy: "max-bundle" });
    const early = [];
    pc._ready = false;
    pc._flush = () => {
      pc._ready = true;
      for (const c of early.splice(0)) this._sendCandidate(target, c);
    };
    pc.addEventListener("icecandidate", (e) => {
      const c = e.candidate ? e.candidate.toJSON() : null;
      if (pc._ready) this._sendCandidate(target, c);
      else early.push(c);
    });
    return pc;
  }

  _sendCandidate(target, candidate) {
    this.sb.request("sfu:ice-candidate", { roomId: this.roomId, target, candidate }).catch(() => {});
  }

  /** Publish camera and/or microphone (getUserMedia constraints) or given tracks. The
   *  camera is sent in simulcast layers (`layers`, lowest first: RTCRtpEncodingParameters
   *  with a `rid`; SIMULCAST_LAYERS by default) unless `simulcast` is false. */
  async publish({ audio = true, video = true, tracks = null, simulcast = true, layers = SIMULCAST_LAYERS } = {}) {
    this.simulcast = simulcast;
    this.layers = layers;
    let list = tracks;
    if (!list) {
      if (video === true && simulcast) video = { width: 1280, height: 720 };
      const stream = await navigator.mediaDevices.getUserMedia({ audio, video });
      list = stream.getTracks().map((track) => ({ track, source: SOURCE_OF(track) }));
    }
    return this._publishTracks(list);
  }

  /** Share the screen as a second video track. */
  async publishScreen() {
    const stream = await navigator.mediaDevices.getDisplayMedia({ video: true });
    return this._publishTracks(stream.getVideoTracks().map((track) => ({ track, source: "screen" })));
  }

  async _publishTracks(list) {
    if (!this.publisher) this.publisher = this._newPeerConnection("publisher");
    const pc = this.publisher;
    const added = list.map(({ track, source }) => ({
      track, source, transceiver: this._addTransceiver(pc, track, source),
    }));
    await this._renegotiatePublisher(added);
    return added.map((a) => a.track);
  }

  _addTransceiver(pc, track, source) {
    if (!(this.simulcast && source === "camera" && track.kind === "video")) {
      return pc.addTransceiver(track, { direction: "sendonly" });
    }
    // Three temporal layers let a subscriber take a lower frame rate (sfu:subscription fps).
    const chosen = this.layers || SIMULCAST_LAYERS;
    const layers = chosen.map((l) => ({ scalabilityMode: "L1T3", ...l }));
    try {
      return pc.addTransceiver(track, { direction: "sendonly", sendEncodings: layers });
    } catch {
      return pc.addTransceiver(track, { direction: "sendonly", sendEncodings: chosen.map((l) => ({ ...l })) });
    }
  }

  /** The server says which layers of a simulcast track anybody watches: pause the rest. */
  async _setLayers({ trackId, active }) {
    const mid = Object.keys(this._publishedMids || {}).find((m) => this._publishedMids[m] === trackId);
    const entry = mid !== undefined ? this.local.get(mid) : undefined;
    if (!entry) {
      // Came before the publish answer that names the track: applied once it arrives.
      (this._pendingLayers ||= new Map()).set(trackId, active);
      return;
    }
    const sender = entry.transceiver.sender;
    const params = sender.getParameters();
    if (!params.encodings || params.encodings.length < 2) return;
    let changed = false;
    for (const encoding of params.encodings) {
      const on = active.includes(encoding.rid);
      if (encoding.active !== on) { encoding.active = on; changed = true; }
    }
    if (changed) await sender.setParameters(params);
    this._emit("layers", { trackId, active });
  }

  /** Show a remote video track in `element`: the server then sends the layer that fits its
   *  size, and nothing while it is off screen or the tab is hidden. An element that has
   *  no `srcObject` yet gets the track's stream; one that has (say, a participant's tile
   *  playing audio and video together) keeps its own. */
  attach(trackId, element) {
    const entry = this.remote.get(trackId);
    if (entry && !element.srcObject) element.srcObject = entry.stream;
    this.subscriptions.attach(trackId, element);
  }

  detach(element) {
    this.subscriptions.detach(element);
  }

  /** The app's wishes for one remote video, over what `attach` measures: `quality`
   *  ("low" | "medium" | "high", e.g. "high" for a pinned speaker), `fps`, `visible`. */
  setTrackSettings(trackId, settings) {
    this.subscriptions.set(trackId, settings);
  }

  /** The server's view of this call (sfu:stats): per-track layers, what you are sent. */
  async serverStats() {
    return this.sb.request("sfu:stats", { roomId: this.roomId });
  }

  /** Stop publishing a local track (the others see it go away). */
  async unpublish(track) {
    for (const [mid, entry] of this.local) {
      if (entry.track === track) {
        entry.transceiver.direction = "inactive";
        track.stop();
        this.local.delete(mid);
      }
    }
    await this._renegotiatePublisher([]);
  }

  async _renegotiatePublisher(added) {
    const pc = this.publisher;
    await pc.setLocalDescription(await pc.createOffer());
    const sources = {};
    for (const a of added) {
      const mid = a.transceiver.mid;
      this.local.set(mid, a);
      sources[mid] = a.source;
    }
    const ask = this.sb.request("sfu:publish", { roomId: this.roomId, sdp: pc.localDescription.sdp, sources });
    pc._flush();
    const ack = await ask;
    await pc.setRemoteDescription({ type: "answer", sdp: ack.sdp });
    this.published = ack.tracks;
    this._publishedMids = ack.mids || {};
    const pending = this._pendingLayers || new Map();
    this._pendingLayers = new Map();
    for (const [trackId, active] of pending) await this._setLayers({ trackId, active });
    return ack;
  }

  async _answer({ sdp, tracks }) {
    if (!this.subscriber) {
      this.subscriber = this._newPeerConnection("subscriber");
    }
    const pc = this.subscriber;
    await pc.setRemoteDescription({ type: "offer", sdp });
    await pc.setLocalDescription(await pc.createAnswer());
    await this.sb.request("sfu:answer", { roomId: this.roomId, sdp: pc.localDescription.sdp });
    pc._flush();
    const seen = new Set();
    for (const transceiver of pc.getTransceivers()) {
      const info = tracks[transceiver.mid];
      if (!info) continue;
      seen.add(info.trackId);
      if (this.remote.has(info.trackId)) continue;
      const track = transceiver.receiver.track;
      const entry = { info, track, stream: new MediaStream([track]), mid: transceiver.mid };
      this.remote.set(info.trackId, entry);
      this._emit("track", entry);
    }
    for (const trackId of [...this.remote.keys()]) {
      if (!seen.has(trackId)) {
        this.remote.delete(trackId);
        this.subscriptions.forget(trackId);
        this._emit("trackended", { trackId });
      }
    }
  }

  /** Mute or unmute your microphone ("audio") or camera ("video"); everyone is told. */
  async setEnabled(kind, enabled) {
    for (const entry of this.local.values()) {
      if (entry.track.kind === kind && entry.source !== "screen") entry.track.enabled = enabled;
    }
    await this.sb.request(`media:toggle-${kind}`, { roomId: this.roomId, enabled });
  }

  /** Per remote track: inbound RTP statistics of the subscribe connection. */
  async inboundStats() {
    const out = {};
    if (!this.subscriber) return out;
    const report = await this.subscriber.getStats();
    const byMid = new Map([...this.remote.values()].map((r) => [r.mid, r.info]));
    report.forEach((s) => {
      if (s.type !== "inbound-rtp") return;
      const info = byMid.get(s.mid);
      if (!info) return;
      out[info.trackId] = {
        kind: s.kind,
        participantId: info.participantId,
        packetsReceived: s.packetsReceived,
        packetsLost: s.packetsLost || 0,
        framesDecoded: s.framesDecoded || 0,
        bytesReceived: s.bytesReceived,
        frameWidth: s.frameWidth || 0,
        frameHeight: s.frameHeight || 0,
        framesPerSecond: s.framesPerSecond || 0,
        pliCount: s.pliCount || 0,
        freezeCount: s.freezeCount || 0,
      };
    });
    return out;
  }

  /** Per published encoding (`rid`, or "" for a track without simulcast): what the
   *  browser sends, so an app can show it (and tests can watch dynacast pause layers). */
  async outboundStats() {
    const out = {};
    if (!this.publisher) return out;
    const report = await this.publisher.getStats();
    report.forEach((s) => {
      if (s.type !== "outbound-rtp" || s.kind !== "video") return;
      out[s.rid || ""] = {
        mid: s.mid,
        active: s.active !== false,
        bytesSent: s.bytesSent,
        packetsSent: s.packetsSent,
        frameWidth: s.frameWidth || 0,
        framesPerSecond: s.framesPerSecond || 0,
        qualityLimitationReason: s.qualityLimitationReason,
      };
    });
    return out;
  }

  /** How each connection reaches the server: the selected candidate pair's two ends
   *  (`candidateType` host/srflx/prflx/relay, `protocol`, `address`, and for a local relay
   *  `relayProtocol`: how it reaches the TURN server, udp/tcp/tls). */
  async connectionStats() {
    const out = {};
    for (const [role, pc] of [["publisher", this.publisher], ["subscriber", this.subscriber]]) {
      if (!pc) continue;
      const report = await pc.getStats();
      let pairId = null;
      report.forEach((s) => { if (s.type === "transport" && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId; });
      const pair = pairId ? report.get(pairId) : null;
      if (!pair) continue;
      const end = (id) => {
        const c = report.get(id) || {};
        return { candidateType: c.candidateType, protocol: c.protocol, address: c.address, relayProtocol: c.relayProtocol };
      };
      out[role] = { local: end(pair.localCandidateId), remote: end(pair.remoteCandidateId) };
    }
    return out;
  }

  _teardown() {
    this.subscriptions.close();
    for (const [type, handler] of this._handlers) this.sb.removeEventListener(type, handler);
    this._handlers = [];
    for (const pc of [this.publisher, this.subscriber]) if (pc) pc.close();
    for (const entry of this.local.values()) entry.track.stop();
    this.publisher = this.subscriber = null;
  }

  async leave() {
    try {
      await this.sb.request("sfu:leave", { roomId: this.roomId });
    } finally {
      this._teardown();
    }
  }
}
