// Chat rooms with missed-event recovery, for the Switchboard SDK (see docs/protocol.md,
// "room:join"). The session remembers the last position ({room, epoch, offset}) seen in
// each joined room; after a reconnect it rejoins with it, replays what was missed as
// ordinary events, and tells the app whether the recovery was whole.

export class Rooms {
  constructor(sb) {
    this.sb = sb;
    this.rooms = new Map(); // roomId -> {position, held}
  }

  /** Join (or, after a reconnect, rejoin) a room; resolves with the join's ack. */
  async join(roomId) {
    let room = this.rooms.get(roomId);
    if (!room) this.rooms.set(roomId, (room = { position: null, held: null }));
    const recovering = room.position !== null;
    const data = recovering ? { roomId, recover: room.position } : { roomId };
    room.held = []; // recorded events of this room that arrive before the ack
    let ack;
    try {
      ack = await this.sb.request("room:join", data);
    } catch (err) {
      room.held = null;
      throw err;
    }
    const held = room.held;
    room.held = null;
    if (recovering && !ack.recovered) {
      room.position = ack.position;
      this.sb.dispatchEvent(new CustomEvent("roomrecovered", { detail: { roomId, recovered: false, missed: 0 } }));
    } else if (!recovering) {
      room.position = ack.position;
    }
    const missed = recovering && ack.recovered ? ack.publications : [];
    for (const frame of [...missed, ...held]) this._deliver(room, frame);
    if (recovering && ack.recovered) {
      this.sb.dispatchEvent(new CustomEvent("roomrecovered", { detail: { roomId, recovered: true, missed: missed.length } }));
    }
    return ack;
  }

  async leave(roomId) {
    this.rooms.delete(roomId);
    return this.sb.request("room:leave", { roomId });
  }

  /** For every server event: false if the session must not dispatch it now (it is held
   * until its room's join ack, or it was already delivered). */
  accept(frame) {
    const position = frame.data?.position;
    const room = position && this.rooms.get(position.room);
    if (!room) return true;
    if (room.held) {
      room.held.push(frame);
      return false;
    }
    return this._advance(room, position);
  }

  rejoinAll() {
    for (const roomId of this.rooms.keys()) {
      this.join(roomId).catch((error) =>
        this.sb.dispatchEvent(new CustomEvent("roomrecovered", { detail: { roomId, recovered: false, error } })),
      );
    }
  }

  _deliver(room, frame) {
    if (this._advance(room, frame.data.position)) {
      this.sb.dispatchEvent(new CustomEvent(frame.type, { detail: frame.data }));
    }
  }

  _advance(room, position) {
    const last = room.position;
    if (last && last.epoch === position.epoch && position.offset <= last.offset) return false;
    room.position = { room: position.room, epoch: position.epoch, offset: position.offset };
    return true;
  }
}
