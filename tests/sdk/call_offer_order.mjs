// The browser SDK's 1:1 call when the other side's offer and first candidate come before
// the call:accept (or call:reconnected) ack: they wait for it, so the connection is built
// with the ack's ICE servers, and the offer and candidate are then applied in order. Run
// in Node with a stand-in hub and RTCPeerConnection (a unit test: only the order is under
// test); prints what each connection was built with and given.
import { Calls } from "../../media/static/calls.js";

const ICE_SERVERS = {
  "call:accept": [{ urls: ["turns:198.18.0.20:443?transport=tcp"], username: "u", credential: "p" }],
  "call:reconnected": [{ urls: ["turns:198.18.0.21:443?transport=tcp"], username: "u2", credential: "p2" }],
};
const built = [];
globalThis.MediaStream = class { addTrack() {} getTracks() { return []; } };
globalThis.RTCPeerConnection = class {
  constructor(config) {
    this.seen = { urls: (config.iceServers || []).flatMap((s) => s.urls), given: [] };
    built.push(this.seen);
    this.signalingState = "stable";
    this.localDescription = null;
  }
  addEventListener() {}
  addTransceiver() {}
  addTrack() { return {}; }
  async setRemoteDescription(d) { this.seen.given.push(`${d.type}:${d.sdp}`); this.signalingState = "have-remote-offer"; }
  async setLocalDescription() { this.localDescription = { type: "answer", sdp: "v=0 answer" }; this.signalingState = "stable"; }
  async addIceCandidate(c) { this.seen.given.push(`candidate:${c.candidate}`); }
  close() { this.signalingState = "closed"; }
};

const participants = [
  { userId: "alice", name: "Alice", role: "caller", state: "joined" },
  { userId: "bob", name: "Bob", role: "callee", state: "joined" },
];
let round = 0;

class EarlyOfferHub extends EventTarget {
  session = { userId: "bob", iceServers: [] };
  async request(type) {
    if (type in ICE_SERVERS) {
      round += 1;
      await new Promise((r) => setTimeout(r, 0)); // sent; alice's offer is read first
      const detail = { callId: "k1", from: "alice" };
      this.dispatchEvent(new CustomEvent("call:offer", { detail: { ...detail, sdp: { type: "offer", sdp: `v=0 ${round}` } } }));
      this.dispatchEvent(new CustomEvent("call:ice-candidate", { detail: { ...detail, candidate: { candidate: `c${round}`, sdpMid: "0" } } }));
      for (let i = 0; i < 5; i++) await new Promise((r) => setTimeout(r, 0));
      return { callId: "k1", iceServers: ICE_SERVERS[type], participants };
    }
    return {};
  }
}

const hub = new EarlyOfferHub();
const calls = new Calls(hub);
hub.dispatchEvent(new CustomEvent("call:incoming", {
  detail: { callId: "k1", callType: "audio", from: { userId: "alice" }, participants: participants.slice(0, 1) },
}));
const call = calls.calls.get("k1");
const errors = [];
call.addEventListener("error", (e) => errors.push(e.detail.message));
await call.accept({ stream: new MediaStream() });
await new Promise((r) => setTimeout(r, 20));
await call._resume(); // alice's new connection offers before the ack of ours
await new Promise((r) => setTimeout(r, 20));
console.log(JSON.stringify({ built, errors, state: call.state }));
