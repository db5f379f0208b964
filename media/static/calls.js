// 1:1 and small mesh calls for the Switchboard SDK (docs/protocol.md, "Calls").
//
//   const call = await sb.call("bob", { video: true });       // rings every device of bob
//   call.addEventListener("accepted", ...);                    // or rejected, ended, ...
//   sb.addEventListener("incomingcall", ({ detail: { call } }) => call.accept());
//   call.addEventListener("track", ({ detail }) => video.srcObject = detail.stream);
//
// The SDK owns one RTCPeerConnection per other participant (ICE servers from the server)
// and negotiates with "perfect negotiation": either side may (re)negotiate at any time, a
// collision is settled by a fixed politeness (the user id that sorts first is polite).
// A call the page was in survives a refresh: it is kept in sessionStorage and resumed
// with `call:reconnected` when the page connects again within the server's grace period
// (`callresumed` on the session); a lost WebSocket is resumed the same way.

import { PeerLink } from "./peer_link.js";

const STORE_KEY = "switchboard.calls";

/** The server events that belong to one call, by `callId`. */
const CALL_EVENTS = [
  "call:accepted", "call:rejected", "call:ended", "call:missed", "call:cancelled",
  "call:participant-left", "call:peer-disconnected", "call:peer-reconnected",
  "call:offer", "call:answer", "call:ice-candidate",
  "peer:audio-toggled", "peer:video-toggled", "screen:sharing-started", "screen:sharing-stopped",
];
/** Negotiation from the others: held while an accept or resume waits for its ack. */
const NEGOTIATION = new Set(["call:offer", "call:answer", "call:ice-candidate"]);

export class Calls {
  constructor(sb) {
    this.sb = sb;
    /** callId -> Call, for calls ringing or in progress on this page. */
    this.calls = new Map();
    sb.addEventListener("call:incoming", (e) => this._incoming(e.detail));
    for (const type of CALL_EVENTS) {
      sb.addEventListener(type, (e) => this.calls.get(e.detail.callId)?._event(type, e.detail));
    }
    sb.addEventListener("reconnected", () => {
      for (const call of this.calls.values()) if (call.state === "active") call._resume().catch((err) => call._fail(err));
    });
  }

  /** Ring one user (a string) or several (a small mesh call). */
  async start(userIds, { video = true, audio = true, conversationId, stream } = {}) {
    const participants = Array.isArray(userIds) ? userIds : [userIds];
    const call = new Call(this, { callType: video ? "video" : "audio", role: "caller" });
    await call._openMedia({ audio, video, stream });
    const data = { callType: call.callType, participants };
    if (conversationId) data.conversationId = conversationId;
    let ack;
    try {
      ack = await this.sb.request("call:initiate", data);
    } catch (err) {
      call._stopMedia();
      throw err;
    }
    call.callId = ack.callId;
    call.iceServers = ack.iceServers || this.sb.session.iceServers || [];
    call.offline = ack.offline || [];
    call._snapshot(ack.call);
    this.calls.set(call.callId, call);
    call.state = "ringing";
    setTimeout(() => call._emit("ringing", { offline: call.offline }), 0); // after `await sb.call()`
    return call;
  }

  _incoming(d) {
    if (this.calls.has(d.callId)) return;
    const call = new Call(this, { callType: d.callType, role: "callee" });
    call.callId = d.callId;
    call.from = d.from;
    call.conversationId = d.conversationId ?? null;
    call.state = "ringing";
    for (const p of d.participants || []) call.participants.set(p.userId, { ...p });
    this.calls.set(call.callId, call);
    this.sb.dispatchEvent(new CustomEvent("incomingcall", { detail: { call } }));
  }

  _forget(call) {
    this.calls.delete(call.callId);
    this._store();
  }

  /** Keep the calls in progress for a page refresh. */
  _store() {
    if (typeof sessionStorage === "undefined") return;
    const active = [...this.calls.values()].filter((c) => c.state === "active").map((c) => c._saved());
    sessionStorage.setItem(STORE_KEY, JSON.stringify(active));
  }

  /** After a page (re)load: resume the calls the page was in (each dispatches
   * `callresumed` {call} on the session, or `callresumefailed` {callId, error}). */
  async _restore() {
    if (typeof sessionStorage === "undefined") return;
    let saved = [];
    try { saved = JSON.parse(sessionStorage.getItem(STORE_KEY) || "[]"); } catch { saved = []; }
    for (const s of saved) {
      const call = new Call(this, { callType: s.callType, role: s.role });
      call.callId = s.callId;
      call.conversationId = s.conversationId ?? null;
      call.from = s.from ?? null;
      call.state = "active";
      this.calls.set(call.callId, call);
      try {
        await call._openMedia({ audio: true, video: s.callType === "video" });
        call._setLocal("audio", s.audio !== false);
        call._setLocal("video", s.video !== false);
        await call._resume();
        this.sb.dispatchEvent(new CustomEvent("callresumed", { detail: { call } }));
      } catch (error) {
        call._cleanup();
        this._forget(call);
        this.sb.dispatchEvent(new CustomEvent("callresumefailed", { detail: { callId: s.callId, error } }));
      }
    }
    this._store();
  }
}

/**
 * One call. `state`: "ringing" → "active" → "ended". Events (CustomEvent, data in `detail`):
 * `ringing` {offline} (yours, once the server rings the callees), `accepted` {userId, name},
 * `rejected` {userId, reason}, `cancelled` {reason} (an incoming call stopped ringing here:
 * answered or rejected on another device, or the caller gave up), `missed`, `ended`
 * {reason, duration}, `track` {userId, track, stream}, `participantleft` {userId, reason},
 * `peerdisconnected` {userId, gracePeriod}, `peerreconnected` {userId}, `media` {userId,
 * audio, video, screen} (someone toggled), `reconnected` (this page resumed the call),
 * `error` (a negotiation failed).
 */
export class Call extends EventTarget {
  constructor(calls, { callType, role }) {
    super();
    this._calls = calls;
    this.sb = calls.sb;
    this.callId = null;
    this.callType = callType;
    this.role = role;
    this.state = "new";
    this.from = null;
    this.conversationId = null;
    this.iceServers = [];
    /** While an accept or resume waits for its ack: the offers, answers and candidates
     * that came meanwhile (`_enter`). */
    this._held = null;
    /** userId -> {userId, name, role, state, audio, video, screen} */
    this.participants = new Map();
    /** userId -> MediaStream of what that participant sends. */
    this.remoteStreams = new Map();
    this.localStream = null;
    this.audio = true;
    this.video = callType === "video";
    this.screen = null;
    this._links = new Map(); // userId -> PeerLink
  }

  get me() {
    return this.sb.session.userId;
  }

  /** Answer an incoming call on this device (the caller's other ringing devices stop). */
  async accept({ audio = true, video = this.callType === "video", stream } = {}) {
    if (this.state !== "ringing" || this.role !== "callee") throw new Error("not an incoming ringing call");
    await this._openMedia({ audio, video, stream });
    try {
      await this._enter("call:accept");
    } catch (err) {
      this._stopMedia();
      throw err;
    }
    return this;
  }

  /** Send `type` (accept, reconnected) and take its ack: the ICE servers and who is in
   * the call, then the connections this side starts. The others start as soon as the
   * server tells them, so their offers and candidates may come before the ack: they
   * wait for it, and the connections they make are built with the ack's ICE servers
   * (TURN credentials) instead of none or the last connection's. */
  async _enter(type) {
    this._held = [];
    let ack;
    let held;
    try {
      ack = await this.sb.request(type, { callId: this.callId });
    } finally {
      [held, this._held] = [this._held, null];
    }
    this.iceServers = ack.iceServers || this.sb.session.iceServers || [];
    this._snapshot(ack);
    this._activate();
    for (const p of this.participants.values()) {
      if (p.userId !== this.me && p.state === "joined") this._connect(p.userId);
    }
    for (const [heldType, d] of held) this._event(heldType, d);
  }

  async reject(reason) {
    const data = reason ? { callId: this.callId, reason } : { callId: this.callId };
    try {
      return await this.sb.request("call:reject", data);
    } finally {
      this._end("rejected", 0);
    }
  }

  /** Leave the call (or cancel it while it rings); the others are told. */
  async hangup() {
    if (this.state === "ended") return;
    try {
      await this.sb.request("call:end", { callId: this.callId });
    } finally {
      this._end("hangup", this._duration());
    }
  }

  async setAudioEnabled(enabled) {
    this._setLocal("audio", enabled);
    this._calls._store();
    await this.sb.request("media:toggle-audio", { callId: this.callId, enabled });
  }

  async setVideoEnabled(enabled) {
    this._setLocal("video", enabled);
    this._calls._store();
    await this.sb.request("media:toggle-video", { callId: this.callId, enabled });
  }

  /** Send the screen instead of the camera until `stopScreenShare()` (or the browser's
   * own "stop sharing"). */
  async shareScreen() {
    const display = await navigator.mediaDevices.getDisplayMedia({ video: true });
    const track = display.getVideoTracks()[0];
    this.screen = track;
    track.addEventListener("ended", () => this.stopScreenShare().catch(() => {}));
    for (const link of this._links.values()) link.sendVideo(track);
    await this.sb.request("screen:share-start", { callId: this.callId });
  }

  async stopScreenShare() {
    if (!this.screen) return;
    this.screen.stop();
    this.screen = null;
    const camera = this.localStream?.getVideoTracks()[0] ?? null;
    for (const link of this._links.values()) link.sendVideo(camera);
    await this.sb.request("screen:share-stop", { callId: this.callId });
  }

  /** Per other participant: inbound RTP statistics of its peer connection. */
  async stats() {
    const out = {};
    for (const [userId, link] of this._links) out[userId] = await link.inboundStats();
    return out;
  }

  // -- inside the SDK -------------------------------------------------------------------

  _emit(type, detail = {}) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _fail(error) {
    this._emit("error", { error, message: error?.message || String(error) });
  }

  async _openMedia({ audio, video, stream }) {
    this.audio = !!audio;
    this.video = !!video;
    if (stream) {
      this.localStream = stream;
      return;
    }
    if (!audio && !video) {
      this.localStream = new MediaStream();
      return;
    }
    const constraints = { audio: !!audio, video: video ? (video === true ? { width: 640, height: 480 } : video) : false };
    this.localStream = await navigator.mediaDevices.getUserMedia(constraints);
  }

  _setLocal(kind, enabled) {
    this[kind] = enabled;
    const tracks = kind === "audio" ? this.localStream?.getAudioTracks() : this.localStream?.getVideoTracks();
    for (const t of tracks || []) t.enabled = enabled;
  }

  _stopMedia() {
    for (const t of this.localStream?.getTracks() || []) t.stop();
    this.screen?.stop();
  }

  _snapshot(snapshot) {
    if (!snapshot) return;
    this.conversationId = snapshot.conversationId ?? this.conversationId;
    this.answeredAt = snapshot.answeredAt ?? this.answeredAt ?? null;
    for (const p of snapshot.participants || []) {
      this.participants.set(p.userId, { ...this.participants.get(p.userId), ...p });
      if (p.role === "caller" && !this.from) this.from = { userId: p.userId, name: p.name };
    }
  }

  _activate() {
    this.state = "active";
    this.answeredAt ??= Date.now();
    this._calls._store();
  }

  _duration() {
    return this.answeredAt ? Math.round((Date.now() - this.answeredAt) / 1000) : 0;
  }

  /** The connection to one other participant (made by its first offer if we are not the
   * side that starts). */
  _link(userId) {
    let link = this._links.get(userId);
    if (!link) {
      link = new PeerLink(this, userId, this._starts(userId));
      this._links.set(userId, link);
    }
    return link;
  }

  /** Whether this side offers first to `userId`: the caller does; between callees, the
   * user id that sorts last. */
  _starts(userId) {
    const role = (id) => this.participants.get(id)?.role;
    if (role(this.me) === "caller" || this.role === "caller") return true;
    if (role(userId) === "caller") return false;
    return this.me > userId;
  }

  /** Connect to a participant now if this side starts; otherwise its offer will come. */
  _connect(userId) {
    if (this._starts(userId)) this._link(userId);
  }

  _dropLink(userId) {
    this._links.get(userId)?.close();
    this._links.delete(userId);
    this.remoteStreams.delete(userId);
  }

  _participant(userId, change) {
    const p = this.participants.get(userId) || { userId };
    Object.assign(p, change);
    this.participants.set(userId, p);
    return p;
  }

  /** A server event about this call. */
  _event(type, d) {
    if (this._held && NEGOTIATION.has(type)) return void this._held.push([type, d]);
    switch (type) {
      case "call:accepted":
        this._participant(d.userId, { name: d.name, state: "joined" });
        if (this.state === "ringing") this._activate();
        this._connect(d.userId);
        this._emit("accepted", { userId: d.userId, name: d.name });
        break;
      case "call:rejected":
        this._participant(d.userId, { state: "rejected" });
        this._emit("rejected", { userId: d.userId, reason: d.reason });
        break;
      case "call:participant-left":
        this._participant(d.userId, { state: "left" });
        this._dropLink(d.userId);
        this._emit("participantleft", { userId: d.userId, reason: d.reason });
        break;
      case "call:peer-disconnected":
        this._participant(d.userId, { state: "reconnecting" });
        this._emit("peerdisconnected", { userId: d.userId, gracePeriod: d.gracePeriod });
        break;
      case "call:peer-reconnected":
        // Its old peer connection is gone with its page: start a fresh one.
        this._participant(d.userId, { state: "joined" });
        this._dropLink(d.userId);
        this._connect(d.userId);
        this._emit("peerreconnected", { userId: d.userId });
        break;
      case "call:cancelled":
        this._end(d.reason, 0, "cancelled");
        break;
      case "call:missed":
        this._end("missed", 0, "missed");
        break;
      case "call:ended":
        this._end(d.reason, d.duration ?? this._duration());
        break;
      case "call:offer":
      case "call:answer": {
        if (this.state !== "active") return;
        const sdp = typeof d.sdp === "string" ? { type: type === "call:offer" ? "offer" : "answer", sdp: d.sdp } : d.sdp;
        this._link(d.from).description(sdp);
        break;
      }
      case "call:ice-candidate":
        if (this.state === "active") this._links.get(d.from)?.candidate(d.candidate);
        break;
      case "peer:audio-toggled":
        this._emit("media", this._participant(d.userId, { audio: d.enabled }));
        break;
      case "peer:video-toggled":
        this._emit("media", this._participant(d.userId, { video: d.enabled }));
        break;
      case "screen:sharing-started":
        this._emit("media", this._participant(d.userId, { screen: true }));
        break;
      case "screen:sharing-stopped":
        this._emit("media", this._participant(d.userId, { screen: false }));
        break;
    }
  }

  /** Take the call over on this connection (after a refresh or a lost WebSocket). */
  async _resume() {
    // The old peer connections went with the old connection. Drop them first: the others
    // start negotiating as soon as the server tells them, maybe before the ack is here.
    for (const userId of [...this._links.keys()]) this._dropLink(userId);
    await this._enter("call:reconnected");
    this._emit("reconnected", {});
  }

  _saved() {
    return {
      callId: this.callId, callType: this.callType, role: this.role,
      conversationId: this.conversationId, from: this.from, audio: this.audio, video: this.video,
    };
  }

  _cleanup() {
    for (const userId of [...this._links.keys()]) this._dropLink(userId);
    this._stopMedia();
  }

  /** The call is over here: `event` (cancelled, missed) first if it says why, then
   * `ended` in every case. */
  _end(reason, duration, event = "ended") {
    if (this.state === "ended") return;
    this.state = "ended";
    this.endReason = reason;
    this._cleanup();
    this._calls._forget(this);
    if (event !== "ended") this._emit(event, { reason });
    this._emit("ended", { reason, duration });
  }
}
