// The browser SDK's group call when the server's first sfu:offer comes before the
// sfu:join (or sfu:resume) ack: the subscribe connection must be built with the ack's ICE
// servers (and after a resume, the resume's). Run in Node with a stand-in hub and RTCPeerConnection (a unit test: only the
// order is under test); prints the ICE server URLs each connection was built with.
import { GroupCall } from "../../media/static/groupcall.js";

const ICE_SERVERS = {
  "sfu:join": [{ urls: ["turns:198.18.0.20:443?transport=tcp"], username: "u", credential: "p" }],
  "sfu:resume": [{ urls: ["turns:198.18.0.21:443?transport=tcp"], username: "u2", credential: "p2" }],
};
const built = [];
globalThis.RTCPeerConnection = class {
  constructor(config) {
    built.push((config.iceServers || []).flatMap((s) => s.urls));
    throw new Error("enough: the connection was built");
  }
};

class OfferFirstHub extends EventTarget {
  async request(type) {
    if (type === "sfu:join" || type === "sfu:resume") {
      await new Promise((r) => setTimeout(r, 0)); // sent; the offer is read first
      this.dispatchEvent(new CustomEvent("sfu:offer", { detail: { roomId: "r", sdp: "v=0", tracks: {} } }));
      for (let i = 0; i < 5; i++) await new Promise((r) => setTimeout(r, 0));
      return { participantId: "PA_1", resumeToken: "t", mediaNode: "n1", iceServers: ICE_SERVERS[type], participants: [] };
    }
    return {};
  }
}

const call = new GroupCall(new OfferFirstHub(), "r");
const errors = [];
call.addEventListener("error", (e) => errors.push(String(e.detail.message ?? e.detail)));
await call._join();
await new Promise((r) => setTimeout(r, 50));
await call._resume(); // the server re-sends a waiting offer before the resume's ack
await new Promise((r) => setTimeout(r, 50));
console.log(JSON.stringify({ built, errors }));
