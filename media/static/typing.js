// Typing indicators for the Switchboard SDK (docs/protocol.md, "Typing").
//
// Sending: call `sb.typing(conversationId)` on every keystroke; it sends at most one
// `message:typing` per THROTTLE_MS, which keeps the server's state fresh. `sb.stopTyping()`
// when the text is sent or cleared.
// Receiving: `typing` events {conversationId, users: [{userId, name}]} whenever the set of
// people typing in a conversation changes. The server announces the end of typing itself;
// the SDK also forgets a typer it has not heard from for EXPIRY_MS (a lost message or a
// dropped connection must not leave "Bob is typing…" forever).

export const THROTTLE_MS = 2000;
export const EXPIRY_MS = 7000;

export class Typing {
  constructor(sb) {
    this.sb = sb;
    this._sentAt = new Map(); // conversationId -> ms of the last "typing" sent
    this._typers = new Map(); // conversationId -> Map userId -> {name, timer}
    sb.addEventListener("user:typing", (e) => this._received(e.detail));
    sb.addEventListener("reconnected", () => this._sentAt.clear());
  }

  typing(conversationId) {
    const now = Date.now();
    if (now - (this._sentAt.get(conversationId) ?? 0) < THROTTLE_MS) return;
    this._sentAt.set(conversationId, now);
    this.sb.send("message:typing", { conversationId, isTyping: true });
  }

  stop(conversationId) {
    if (!this._sentAt.delete(conversationId)) return;
    this.sb.send("message:typing", { conversationId, isTyping: false });
  }

  /** Who is typing in a conversation now: [{userId, name}]. */
  typers(conversationId) {
    const typers = this._typers.get(conversationId);
    return typers ? [...typers].map(([userId, { name }]) => ({ userId, name })) : [];
  }

  _received({ userId, username, conversationId, isTyping }) {
    let typers = this._typers.get(conversationId);
    if (!typers) this._typers.set(conversationId, (typers = new Map()));
    const known = typers.get(userId);
    if (known) clearTimeout(known.timer);
    if (isTyping) {
      const timer = setTimeout(() => this._forget(conversationId, userId), EXPIRY_MS);
      typers.set(userId, { name: username || userId, timer });
      if (known) return; // still typing: nothing changed
    } else {
      if (!known) return;
      typers.delete(userId);
    }
    this._announce(conversationId);
  }

  _forget(conversationId, userId) {
    if (this._typers.get(conversationId)?.delete(userId)) this._announce(conversationId);
  }

  _announce(conversationId) {
    const detail = { conversationId, users: this.typers(conversationId) };
    this.sb.dispatchEvent(new CustomEvent("typing", { detail }));
  }
}
