// The stack Switchboard replaces, for side-by-side benchmarks: a Socket.IO 4 server with the
// realtime service's events, implemented the way that service does it (rooms are Socket.IO
// rooms, a user's devices share the room `user:<id>`, relays go to that room). With
// REDIS_URL it runs as one node of a cluster through @socket.io/redis-adapter and keeps
// calls in Redis, so two processes behave as one hub (on a Redis Cluster too, with the
// adapter's sharded variant).
//
// Environment: PORT, JWT_SECRET (HS256 join tokens, audience "switchboard"), REDIS_URL,
// MESSAGE_BACKEND_URL (the chat backend message:send is POSTed to).
import { randomUUID } from "node:crypto";
import { createServer } from "node:http";
import jwt from "jsonwebtoken";
import { Server } from "socket.io";

const port = Number(process.env.PORT);
const secret = process.env.JWT_SECRET;
const redisUrl = process.env.REDIS_URL;
const backendUrl = process.env.MESSAGE_BACKEND_URL;

const http = createServer();
const io = new Server(http, {
  transports: ["websocket"],
  perMessageDeflate: false,
  serveClient: false,
});

// Calls: in memory on one node; in Redis with several (any node may see any call).
const local = new Map();
let calls = {
  get: async (id) => local.get(id),
  set: async (call) => void local.set(call.callId, call),
  delete: async (id) => void local.delete(id),
};

if (redisUrl) {
  const { createClient, createCluster } = await import("redis");
  const { createAdapter, createShardedAdapter } = await import("@socket.io/redis-adapter");
  // redis+cluster://host:port,host:port (Switchboard's spelling): a Redis Cluster, with
  // the adapter's sharded variant (SSUBSCRIBE/SPUBLISH, Redis 7), as its docs advise.
  const clustered = redisUrl.startsWith("redis+cluster://");
  const pub = clustered
    ? createCluster({
        rootNodes: redisUrl
          .slice("redis+cluster://".length)
          .split(",")
          .map((host) => ({ url: `redis://${host}` })),
      })
    : createClient({ url: redisUrl });
  const sub = pub.duplicate();
  await Promise.all([pub.connect(), sub.connect()]);
  io.adapter(clustered ? createShardedAdapter(pub, sub) : createAdapter(pub, sub));
  calls = {
    get: async (id) => {
      const raw = await pub.get(`call:${id}`);
      return raw ? JSON.parse(raw) : undefined;
    },
    set: async (call) => void (await pub.set(`call:${call.callId}`, JSON.stringify(call), { EX: 3600 })),
    delete: async (id) => void (await pub.del(`call:${id}`)),
  };
}

// A relay only needs the (fixed) participant list, so it is cached per node.
const members = new Map();
async function participants(callId) {
  let list = members.get(callId);
  if (!list) {
    const call = await calls.get(callId);
    if (!call) return undefined;
    list = call.participants;
    members.set(callId, list);
  }
  return list;
}

const devices = new Map(); // userId -> sockets on this node

io.use((socket, next) => {
  try {
    const claims = jwt.verify(socket.handshake.auth?.token ?? "", secret, {
      algorithms: ["HS256"],
      audience: "switchboard",
    });
    socket.data.user = { userId: claims.sub, name: claims.name ?? claims.sub, rooms: claims.rooms ?? [] };
    next();
  } catch (err) {
    next(new Error(`token_invalid: ${err.message}`));
  }
});

function fail(socket, ack, code, message) {
  const error = { code, message };
  if (ack) ack({ error });
  else socket.emit("error", error);
}

function allowed(user, roomId) {
  return user.rooms.some((r) => r === "*" || r === roomId || (r.endsWith("*") && roomId.startsWith(r.slice(0, -1))));
}

io.on("connection", (socket) => {
  const user = socket.data.user;
  const { userId, name } = user;
  socket.join(`user:${userId}`);
  devices.set(userId, (devices.get(userId) ?? 0) + 1);
  socket.emit("session:ready", { connectionId: socket.id, userId, name });

  socket.on("room:join", ({ roomId } = {}, ack) => {
    if (typeof roomId !== "string") return fail(socket, ack, "invalid_payload", "data.roomId");
    if (!allowed(user, roomId)) return fail(socket, ack, "forbidden", roomId);
    if (!socket.rooms.has(roomId)) {
      socket.join(roomId);
      socket.to(roomId).emit("room:member-joined", { roomId, userId, name, status: "online" });
    }
    ack?.({ roomId });
  });

  socket.on("room:leave", ({ roomId } = {}, ack) => {
    if (!socket.rooms.has(roomId)) return fail(socket, ack, "not_in_room", roomId);
    socket.leave(roomId);
    socket.to(roomId).emit("room:member-left", { roomId, userId });
    ack?.({ roomId });
  });

  socket.on("message:typing", ({ conversationId, isTyping } = {}, ack) => {
    if (!socket.rooms.has(conversationId)) return fail(socket, ack, "not_in_room", conversationId);
    socket.to(conversationId).emit("user:typing", { userId, username: name, conversationId, isTyping });
    ack?.({});
  });

  // Chat messages as the replaced service took them: persisted by the chat backend, then
  // broadcast to the conversation, the sender told.
  socket.on("message:send", async (data = {}, ack) => {
    const { conversationId, tempId } = data;
    if (!socket.rooms.has(conversationId)) return fail(socket, ack, "not_in_room", conversationId);
    if (!backendUrl) return fail(socket, ack, "messages_disabled", "no backend");
    let message;
    try {
      const response = await fetch(backendUrl, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ type: "message.send", userId, connectionId: socket.id, ...data }),
      });
      message = (await response.json()).message;
    } catch (err) {
      socket.emit("message:error", { tempId, code: "backend_unavailable", message: String(err) });
      return;
    }
    io.to(conversationId).emit("message:new", { ...message, conversationId, tempId });
    socket.emit("message:sent", { tempId, messageId: message.id });
    ack?.({ tempId });
  });

  socket.on("call:initiate", async ({ participants: others, callType, conversationId } = {}, ack) => {
    if (!Array.isArray(others) || others.length === 0) return fail(socket, ack, "invalid_payload", "data.participants");
    const call = {
      callId: `call_${randomUUID()}`,
      callType,
      conversationId,
      callerId: userId,
      participants: [userId, ...others.filter((u) => u !== userId)],
      state: "ringing",
    };
    await calls.set(call);
    for (const callee of call.participants.slice(1)) {
      io.to(`user:${callee}`).emit("call:incoming", {
        callId: call.callId,
        callType,
        conversationId,
        from: { userId, name },
        participants: call.participants,
      });
    }
    ack?.({ callId: call.callId, call });
  });

  socket.on("call:accept", async ({ callId } = {}, ack) => {
    const call = await calls.get(callId);
    if (!call) return fail(socket, ack, "call_not_found", callId);
    if (!call.participants.includes(userId) || call.state === "ended") return fail(socket, ack, "invalid_state", callId);
    call.state = "active";
    await calls.set(call);
    io.to(`user:${call.callerId}`).emit("call:accepted", { callId, userId, name });
    ack?.(call);
  });

  socket.on("call:end", async ({ callId } = {}, ack) => {
    const call = await calls.get(callId);
    if (!call) return fail(socket, ack, "call_not_found", callId);
    await calls.delete(callId);
    members.delete(callId);
    for (const other of call.participants) {
      if (other !== userId) io.to(`user:${other}`).emit("call:ended", { callId, reason: "hangup", duration: 0 });
    }
    ack?.({ ...call, state: "ended" });
  });

  for (const event of ["call:offer", "call:answer", "call:ice-candidate"]) {
    socket.on(event, async (data = {}, ack) => {
      const list = await participants(data.callId);
      if (!list) return fail(socket, ack, "call_not_found", data.callId);
      if (!list.includes(userId) || !list.includes(data.to)) return fail(socket, ack, "not_in_call", data.to);
      const { to, ...rest } = data;
      io.to(`user:${to}`).emit(event, { ...rest, from: userId });
      ack?.({});
    });
  }

  socket.on("disconnecting", () => {
    const left = (devices.get(userId) ?? 1) - 1;
    if (left > 0) return devices.set(userId, left);
    devices.delete(userId);
    for (const roomId of socket.rooms) {
      if (roomId === socket.id || roomId.startsWith("user:")) continue;
      socket.to(roomId).emit("presence:changed", { userId, status: "offline", lastSeen: Date.now() });
      socket.to(roomId).emit("room:member-left", { roomId, userId });
    }
  });
});

http.listen(port, "127.0.0.1");
