// Chat messages for the Switchboard SDK, through the server's message proxy
// (docs/protocol.md, "Messages" and "Read receipts").
//
// `sb.sendMessage(conversationId, content)` resolves with {tempId, messageId} once the
// chat backend persisted the message (`message:sent`), or rejects with a SwitchboardError
// carrying the backend's or the server's code (`message:error`, `messages_disabled`, ...).
// Everyone in the conversation, the sender included, gets the `message:new` event. A send
// still waiting when the connection drops is sent again with the same tempId after the
// reconnect: the server never persists or broadcasts it twice.

import { SwitchboardError } from "./errors.js";

let counter = 0;

export class Messages {
  constructor(sb) {
    this.sb = sb;
    this._pending = new Map(); // tempId -> {data, resolve, reject}
    sb.addEventListener("message:sent", (e) => this._settle(e.detail.tempId, null, e.detail));
    sb.addEventListener("message:error", (e) => {
      const { tempId, code, message, ...rest } = e.detail;
      this._settle(tempId, new SwitchboardError(code, message || code, rest));
    });
    sb.addEventListener("reconnected", () => {
      for (const [tempId, { data }] of this._pending) this._ask(tempId, data);
    });
  }

  send(conversationId, content, { messageType = "text", tempId, replyTo, metadata } = {}) {
    tempId ??= `t-${Date.now().toString(36)}-${(counter++).toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
    const data = { conversationId, tempId, content, messageType };
    if (replyTo !== undefined) data.replyTo = replyTo;
    if (metadata !== undefined) data.metadata = metadata;
    return new Promise((resolve, reject) => {
      this._pending.set(tempId, { data, resolve, reject });
      this._ask(tempId, data);
    });
  }

  /** Tell the others which messages you have read; resolves with {conversationId, timestamp}. */
  markRead(conversationId, messageIds) {
    return this.sb.request("message:read", { conversationId, messageIds });
  }

  _ask(tempId, data) {
    this.sb.request("message:send", data).catch((err) => {
      // Lost with the connection: sent again after the reconnect. Refused: final.
      if (err.code !== "connection_lost") this._settle(tempId, err);
    });
  }

  _settle(tempId, error, value) {
    const pending = this._pending.get(tempId);
    if (!pending) return;
    this._pending.delete(tempId);
    if (error) pending.reject(error);
    else pending.resolve({ tempId, messageId: value.messageId });
  }
}
