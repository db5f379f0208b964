// Switchboard browser SDK: plain ES modules, no build step (types: switchboard.d.ts).
//
//   import { Switchboard } from "/sdk/switchboard.js";
//   const sb = await Switchboard.connect("wss://host/ws", () => fetchJoinToken());
//   sb.addEventListener("presence", ({ detail }) => showDot(detail.userId, detail.status));
//   await sb.joinRoom("dm-alice-bob");
//   sb.typing("dm-alice-bob");                        // on each keystroke; throttled
//   await sb.sendMessage("dm-alice-bob", "hi");       // resolves once persisted
//   const call = await sb.call("bob", { video: true });
//   sb.addEventListener("incomingcall", ({ detail }) => detail.call.accept());
//   const group = await sb.joinGroupCall("room-1");   // through the SFU
//
// The wire protocol is documented in docs/protocol.md.

import { Calls } from "./calls.js";
import { ConnectionLostError, RequestTimeoutError, SwitchboardError } from "./errors.js";
import { GroupCall } from "./groupcall.js";
import { Messages } from "./messages.js";
import { Presence } from "./presence.js";
import { Rooms } from "./rooms.js";
import { Typing } from "./typing.js";

export { Call } from "./calls.js";
export { ConnectionLostError, RequestTimeoutError, SwitchboardError } from "./errors.js";
export { GroupCall, SIMULCAST_LAYERS } from "./groupcall.js";

export const VERSION = "0.1.0";

/** Close codes after which reconnecting would not help (or was asked not to). */
const FINAL_CLOSES = new Set([1000, 1008]);

/**
 * A session with the hub: requests with acks, and server events.
 *
 * If the WebSocket is lost (not closed by you), it reconnects with back-off and jitter
 * (the load balancer may pick another node) and dispatches `reconnected`: rooms are
 * rejoined with what was missed (`roomrecovered`), pending messages are sent again, calls
 * and group calls resume. Events: `close` {code, reason} on every loss, `reconnected`
 * {connectionId}, `presence`, `typing`, `incomingcall` {call}, `callresumed` {call}, and
 * every server event under its own name (`message:new`, `room:member-joined`, ...).
 *
 * With `token` a function (sync or async, e.g. a fetch to the chat backend), the session
 * also refreshes its token before it expires: on `session:expiring` it calls the function
 * and sends `session:refresh`, then dispatches `tokenrefreshed` {tokenExpiresAt}, or
 * `tokenrefreshfailed` {error} (the server will close with 4001 at expiry, and the
 * reconnect asks the function again).
 */
export class Switchboard extends EventTarget {
  /** `token` may be a string or a function returning one or a promise of one (a fresh
   * token per reconnect and before expiry). A call this page was in before a refresh is
   * resumed by itself (`callresumed`). */
  static async connect(url, token, { reconnect = true } = {}) {
    const sb = new Switchboard(url, token, reconnect);
    await sb._open();
    setTimeout(() => sb.calls._restore(), 0); // after the caller's listeners are set
    return sb;
  }

  constructor(url, token, reconnect = true) {
    super();
    this.url = url;
    this.token = token;
    this.reconnect = reconnect;
    this.ws = null;
    this.session = null;
    this.status = "online";
    this._next = 1;
    this._pending = new Map();
    this._closing = false;
    this.rooms = new Rooms(this);
    this.presence = new Presence(this);
    this.typingIndicators = new Typing(this);
    this.messages = new Messages(this);
    this.calls = new Calls(this);
    this.addEventListener("session:expiring", () => this._refreshToken());
  }

  get userId() {
    return this.session?.userId;
  }

  async _refreshToken() {
    if (typeof this.token !== "function") return;
    try {
      const ack = await this.request("session:refresh", { token: await this.token() });
      this.session.tokenExpiresAt = ack.tokenExpiresAt;
      this.dispatchEvent(new CustomEvent("tokenrefreshed", { detail: ack }));
    } catch (err) {
      this.dispatchEvent(new CustomEvent("tokenrefreshfailed", { detail: { error: err } }));
    }
  }

  async _open() {
    const token = typeof this.token === "function" ? await this.token() : this.token;
    return new Promise((resolve, reject) => {
      const sep = this.url.includes("?") ? "&" : "?";
      const ws = new WebSocket(`${this.url}${sep}access_token=${encodeURIComponent(token)}`);
      let ready = false;
      ws.addEventListener("message", (e) => {
        const frame = JSON.parse(e.data);
        if (frame.type === "session:ready" && !ready) {
          ready = true;
          this.ws = ws;
          this.session = frame.data;
          resolve(this);
        }
        this._onMessage(frame);
      });
      ws.addEventListener("close", (e) => {
        if (!ready) reject(new ConnectionLostError(e.code, e.reason));
        else this._lost(e);
      });
    });
  }

  _lost(e) {
    for (const { reject } of this._pending.values()) reject(new ConnectionLostError(e.code, e.reason));
    this._pending.clear();
    this.dispatchEvent(new CustomEvent("close", { detail: { code: e.code, reason: e.reason } }));
    if (!this.reconnect || this._closing || FINAL_CLOSES.has(e.code)) return;
    let delay = 250;
    const retry = async () => {
      try {
        await this._open();
        if (this.status !== "online") this.presence.set(this.status).catch(() => {});
        this.dispatchEvent(new CustomEvent("reconnected", { detail: { connectionId: this.session.connectionId } }));
        this.rooms.rejoinAll();
      } catch {
        delay = Math.min(delay * 2, 5000);
        setTimeout(retry, delay * (0.75 + Math.random() / 2));
      }
    };
    setTimeout(retry, delay);
  }

  _onMessage(frame) {
    const waiter = frame.id !== undefined ? this._pending.get(frame.id) : undefined;
    if (waiter) {
      this._pending.delete(frame.id);
      if (frame.type === "error") {
        const { code, message, ...rest } = frame.data;
        waiter.reject(new SwitchboardError(code, message, rest));
      } else waiter.resolve(frame.data);
      return;
    }
    if (!this.rooms.accept(frame)) return;
    this.dispatchEvent(new CustomEvent(frame.type, { detail: frame.data }));
  }

  /** Join a chat room. Its recorded events (messages, membership, receipts) are tracked:
   * after a reconnect the room is rejoined and what was missed is dispatched as ordinary
   * events, then `roomrecovered` {roomId, recovered, missed}; with `recovered: false`,
   * reload the room from your backend. The members' presence is remembered
   * (`sb.presence.get`). */
  async joinRoom(roomId) {
    const ack = await this.rooms.join(roomId);
    for (const member of ack.members || []) this.presence._learn(member, false);
    return ack;
  }

  leaveRoom(roomId) {
    return this.rooms.leave(roomId);
  }

  /** Set this device's presence: "online" | "away" | "dnd" | "invisible". */
  setStatus(status) {
    return this.presence.set(status);
  }

  /** Say you are typing in a conversation (call it on every keystroke: it throttles). */
  typing(conversationId) {
    this.typingIndicators.typing(conversationId);
  }

  stopTyping(conversationId) {
    this.typingIndicators.stop(conversationId);
  }

  /** Send a chat message through the server's message proxy; resolves with
   * {tempId, messageId} once the backend persisted it. */
  sendMessage(conversationId, content, options) {
    return this.messages.send(conversationId, content, options);
  }

  markRead(conversationId, messageIds) {
    return this.messages.markRead(conversationId, messageIds);
  }

  /** Ring a user (every device) or a few (a mesh call); resolves with the Call. */
  call(userIds, options) {
    return this.calls.start(userIds, options);
  }

  /** Send an event and wait for its ack (resolves with the ack's data). */
  request(type, data = {}, timeoutMs = 15000) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) {
      return Promise.reject(new ConnectionLostError(0, "not connected"));
    }
    const id = `c${this._next++}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new RequestTimeoutError(type, timeoutMs));
      }, timeoutMs);
      this._pending.set(id, {
        resolve: (v) => { clearTimeout(timer); resolve(v); },
        reject: (e) => { clearTimeout(timer); reject(e); },
      });
      this.ws.send(JSON.stringify({ type, id, data }));
    });
  }

  /** Send an event without waiting for an answer (dropped while disconnected). */
  send(type, data = {}) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({ type, data }));
  }

  async joinGroupCall(roomId) {
    const call = new GroupCall(this, roomId);
    await call._join();
    return call;
  }

  close() {
    this._closing = true;
    this.ws.close(1000, "bye");
  }
}
