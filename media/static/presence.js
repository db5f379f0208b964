// Presence for the Switchboard SDK: this device's status, other users' statuses, and
// their changes (docs/protocol.md, "Presence"). Used through `sb.presence`.

export class Presence {
  constructor(sb) {
    this.sb = sb;
    /** userId -> {userId, status, lastSeen}: what this session last heard of each user. */
    this.users = new Map();
    sb.addEventListener("presence:changed", (e) => this._learn(e.detail, true));
    sb.addEventListener("room:member-joined", (e) => this._learn(e.detail, true));
  }

  /** Set this device's status: "online" | "away" | "dnd" | "invisible". Resolves with the
   * ack (`status` is the user's aggregate over all devices). */
  async set(status) {
    const ack = await this.sb.request("presence:update", { status });
    this.sb.status = status;
    return ack;
  }

  /** Ask for users' statuses (those you may see); resolves with `{users, denied}`. */
  async query(userIds) {
    const ack = await this.sb.request("presence:query", { userIds });
    for (const user of ack.users) this._learn(user, false);
    return ack;
  }

  /** The last known presence of a user, or undefined. */
  get(userId) {
    return this.users.get(userId);
  }

  /** Note users' presence (from a room join's members); `announce` dispatches `presence`
   * {userId, status, lastSeen} when it changed. */
  _learn(user, announce) {
    if (!user || !user.userId || !user.status) return;
    const before = this.users.get(user.userId);
    const now = { userId: user.userId, status: user.status, lastSeen: user.lastSeen ?? null };
    if (user.name) now.name = user.name;
    else if (before?.name) now.name = before.name;
    this.users.set(user.userId, now);
    if (announce && before?.status !== now.status) {
      this.sb.dispatchEvent(new CustomEvent("presence", { detail: now }));
    }
  }
}
