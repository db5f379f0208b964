// Load generator for the signaling benchmarks. The same scenario code drives Switchboard
// (its JSON envelopes over a plain WebSocket) and, with socket.io-client, the Socket.IO
// peer or Switchboard's /socket.io/ endpoint, so only the transport differs.
//
// Protocol with the orchestrator (benchmarks/signaling.py): the config is JSON in argv[2];
// after connecting, the generator prints {"ready": n} on stdout and waits for a line on
// stdin; it then runs for config.duration seconds, drains and prints one result line. A
// further "go" runs another window of the same load on the same connections (fanout only:
// the orchestrator's --windows; "go S" runs it for S seconds instead, a warm-up whose
// result is not kept); any other line closes the connections and exits.
// Senders and receivers of a room (or call) live in one generator, so latency is measured
// on one clock.
import { createInterface } from "node:readline";
import { monitorEventLoopDelay, performance, PerformanceObserver } from "node:perf_hooks";
import jwt from "jsonwebtoken";
import { io } from "socket.io-client";
import WebSocket from "ws";

const cfg = JSON.parse(process.argv[2]);
const DRAIN_MS = 1000;
const SAMPLE_CAP = 200000;

const stats = {};
const extra = {};

// A window's counts start from nothing (the connections and the scenario's state stay).
function resetStats() {
  Object.assign(stats, { deliveries: 0, expected: 0, errors: 0, errorCodes: {}, latencies: [], seen: 0, max: 0 });
  for (const key of Object.keys(extra)) delete extra[key];
}
resetStats();

function record(sentAt) {
  if (sentAt === undefined) return;
  const ms = performance.now() - sentAt;
  stats.deliveries += 1;
  stats.seen += 1;
  if (ms > stats.max) stats.max = ms;
  // reservoir sample: bounded memory, unbiased percentiles
  if (stats.latencies.length < SAMPLE_CAP) stats.latencies.push(ms);
  else {
    const j = Math.floor(Math.random() * stats.seen);
    if (j < SAMPLE_CAP) stats.latencies[j] = ms;
  }
}

function noteError(code) {
  stats.errors += 1;
  stats.errorCodes[code] = (stats.errorCodes[code] ?? 0) + 1;
}

function token(userId, rooms) {
  const now = Math.floor(Date.now() / 1000);
  return jwt.sign({ sub: userId, name: userId, rooms, aud: "switchboard", iat: now, nbf: now, exp: now + 3600 }, cfg.secret, {
    algorithm: "HS256",
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// -- transports: connect(url, token, onEvent) -> {send, request, close, open} -----------------

function connectSwitchboard(url, tok, onEvent) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${url}?access_token=${tok}`, { perMessageDeflate: false });
    const pending = new Map();
    let nextId = 1;
    const conn = {
      open: true,
      send: (type, data) => ws.send(JSON.stringify({ type, data })),
      request: (type, data) =>
        new Promise((res, rej) => {
          const id = nextId++;
          pending.set(id, { res, rej });
          ws.send(JSON.stringify({ type, id, data }));
        }),
      close: () => ws.close(),
    };
    ws.on("message", (raw) => {
      const msg = JSON.parse(raw);
      if (msg.id !== undefined && pending.has(msg.id)) {
        const p = pending.get(msg.id);
        pending.delete(msg.id);
        if (msg.type === "error") p.rej(new Error(msg.data.code));
        else p.res(msg.data);
      } else if (msg.type === "session:ready") resolve(conn);
      else if (msg.type === "error") noteError(msg.data.code);
      else onEvent(msg.type, msg.data);
    });
    ws.on("error", (err) => (conn.open ? reject(err) : undefined));
    ws.on("close", () => {
      conn.open = false;
      reject(new Error("closed before session:ready"));
    });
  });
}

function connectSocketIO(url, tok, onEvent) {
  return new Promise((resolve, reject) => {
    const socket = io(url, { transports: ["websocket"], auth: { token: tok }, reconnection: false, forceNew: true });
    const conn = {
      open: true,
      send: (type, data) => socket.emit(type, data),
      request: async (type, data) => {
        const reply = await socket.timeout(15000).emitWithAck(type, data);
        if (reply?.error) throw new Error(reply.error.code);
        return reply;
      },
      close: () => socket.disconnect(),
    };
    socket.on("session:ready", () => resolve(conn));
    socket.on("error", (e) => noteError(e.code));
    socket.on("connect_error", reject);
    socket.on("disconnect", () => (conn.open = false));
    socket.onAny((type, data) => {
      if (type !== "session:ready" && type !== "error") onEvent(type, data);
    });
  });
}

const connect = cfg.system === "socketio" ? connectSocketIO : connectSwitchboard;
const urlFor = (i) => cfg.urls[i % cfg.urls.length];

// -- scenarios: setup() connects, then run() loads for cfg.duration seconds and returns what
// closes the connections held ---------------------------------------------------------------

// Rooms of cfg.roomSize members; member i of a room on node i mod nodes, so with two nodes
// most deliveries cross nodes. Typing toggles are counted per (receiver, sender) in order.
async function joinRooms(onTyping) {
  const members = [];
  for (const room of cfg.rooms) {
    for (let i = 0; i < cfg.roomSize; i++) {
      const user = `${room}-u${i}`;
      const member = { user, room, sentAt: [] };
      member.conn = await connect(urlFor(i), token(user, [room]), (type, data) => onTyping(member, type, data));
      await member.conn.request("room:join", { roomId: room });
      members.push(member);
    }
  }
  return members;
}

function typingCounter(bySender, measuring) {
  const seen = new Map();
  return (member, type, data) => {
    if (type !== "user:typing") return;
    const key = `${member.user}|${data.userId}`;
    const index = seen.get(key) ?? 0;
    seen.set(key, index + 1);
    const times = bySender.get(data.userId)?.sentAt;
    if (measuring() && times && index < times.length) record(times[index]);
  };
}

// After the last send: wait until every expected delivery arrived, for at least DRAIN_MS
// and at most cfg.drainMax ms (overload runs: delivered late, or never?). drainMs is how
// long the deliveries still due took to arrive after the sending stopped.
async function drainDeliveries() {
  const start = performance.now();
  const limit = Math.max(DRAIN_MS, cfg.drainMax ?? 0);
  let done = null;
  for (;;) {
    const t = performance.now() - start;
    if (done === null && stats.deliveries >= stats.expected) done = t;
    if (t >= limit || (done !== null && t >= DRAIN_MS)) break;
    await sleep(20);
  }
  extra.drainMs = done === null ? null : Math.round(done);
}

// Rooms whose members type: after `hold()`, every member runs `type(member)`, which
// stamps each toggle it sends in member.sentAt; the K-1 others must receive each one.
function typingRooms(hold, type) {
  let measuring = false;
  const bySender = new Map();
  let members;
  return {
    async setup() {
      members = await joinRooms(typingCounter(bySender, () => measuring));
      for (const m of members) bySender.set(m.user, m);
      return members.length;
    },
    async run() {
      await hold();
      measuring = true;
      const sent = () => members.reduce((n, m) => n + m.sentAt.length, 0);
      const before = sent(); // an earlier window's sends were counted in its own result
      await Promise.all(members.map(type));
      stats.expected = (sent() - before) * (cfg.roomSize - 1);
      await drainDeliveries();
      extra.connections = members.filter((m) => m.conn.open).length;
      return () => members.forEach((m) => m.conn.close());
    },
  };
}

function sendTyping(m, isTyping) {
  m.sentAt.push(performance.now());
  m.conn.send("message:typing", { conversationId: m.room, isTyping });
}

// Fan-out: every member toggles typing cfg.rate times a second for the window.
function fanout() {
  const interval = 1000 / cfg.rate;
  return typingRooms(
    async () => {},
    async (m) => {
      const end = performance.now() + cfg.duration * 1000;
      await sleep(Math.random() * interval);
      // Past the end only to say it stopped, in its next slot: a state left on would run
      // out before another window (the server announcing its end unasked, and the next
      // window's first toggle, a stop, then ending nothing and announcing nothing).
      for (let next = performance.now(); next < end || m.typing; next += interval) {
        m.typing = !m.typing;
        sendTyping(m, m.typing);
        await sleep(Math.max(0, next + interval - performance.now()));
      }
    },
  );
}

// Idle: hold connections for the window, then prove each is alive with one broadcast per
// room (its first member types once; every other member must receive it).
function idle() {
  return typingRooms(
    () => sleep(cfg.duration * 1000),
    async (m) => {
      if (m.user.endsWith("-u0")) sendTyping(m, true);
    },
  );
}

// Call storms: pairs (caller on node 0, callee on the next) run complete set-ups back to
// back at cfg.rate per pair per second: initiate -> incoming -> accept -> accepted -> offer
// and cfg.iceBurst candidates -> answer and candidates -> end -> ended. Every server-to-
// client event of a set-up is a delivery, timed from the request that caused it.
const SDP = `v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n${"a=x-bench:padding-line-of-a-realistic-sdp-body\r\n".repeat(50)}`;

function calls() {
  const pairs = [];
  let measuring = false;
  const perSetup = 5 + 2 * cfg.iceBurst; // incoming, accepted, offer, answer, ended + ICE

  // One set-up at a time per pair: its send times and the count it still waits for.
  function delivered(pair, kind) {
    if (measuring) record(pair.sent.get(kind));
    if (pair.waiter && --pair.waiter.remaining === 0) pair.waiter.resolve();
  }

  function candidate(i) {
    return { candidate: `candidate:${i} 1 udp 2122260223 127.0.0.1 ${50000 + i} typ host`, sdpMid: "0", sdpMLineIndex: 0 };
  }

  function burst(pair, conn, to, side) {
    for (let i = 0; i < cfg.iceBurst; i++) {
      pair.sent.set(`ice-${side}${i}`, performance.now());
      conn.send("call:ice-candidate", { callId: pair.callId, to, candidate: candidate(i) });
    }
  }

  function onEvent(role, pair) {
    return (type, data) => {
      pair.callId ??= data.callId; // call:incoming may arrive before the initiate ack
      if (data.callId !== pair.callId) return; // a late event of a timed-out set-up
      switch (type) {
        case "call:incoming":
          delivered(pair, "initiate");
          pair.sent.set("accept", performance.now());
          pair.callee.request("call:accept", { callId: pair.callId }).catch((e) => noteError(e.message));
          break;
        case "call:accepted":
          delivered(pair, "accept");
          pair.sent.set("offer", performance.now());
          pair.caller.send("call:offer", { callId: pair.callId, to: pair.b, sdp: { type: "offer", sdp: SDP } });
          burst(pair, pair.caller, pair.b, "a");
          break;
        case "call:offer":
          delivered(pair, "offer");
          pair.sent.set("answer", performance.now());
          pair.callee.send("call:answer", { callId: pair.callId, to: pair.a, sdp: { type: "answer", sdp: SDP } });
          burst(pair, pair.callee, pair.a, "b");
          break;
        case "call:answer":
          delivered(pair, "answer");
          break;
        case "call:ice-candidate":
          delivered(pair, `ice-${role === "caller" ? "b" : "a"}${data.candidate.candidate.split(" ")[0].slice(10)}`);
          break;
        case "call:ended":
          delivered(pair, "end");
          break;
      }
    };
  }

  async function phase(pair, remaining, action) {
    const done = new Promise((resolve) => (pair.waiter = { remaining, resolve }));
    await action();
    const outcome = await Promise.race([done, sleep(10000).then(() => "timeout")]);
    pair.waiter = undefined;
    return outcome !== "timeout";
  }

  async function setupOnce(pair) {
    const t0 = performance.now();
    pair.sent = new Map([["initiate", t0]]);
    pair.callId = undefined;
    const connected = await phase(pair, perSetup - 1, async () => {
      const { callId } = await pair.caller.request("call:initiate", { callType: "video", participants: [pair.b] });
      pair.callId = callId;
    });
    if (!connected) return noteError("setup_timeout");
    const ended = await phase(pair, 1, async () => {
      pair.sent.set("end", performance.now());
      await pair.caller.request("call:end", { callId: pair.callId });
    });
    if (!ended) return noteError("end_timeout");
    if (measuring) {
      extra.setups = (extra.setups ?? 0) + 1;
      (extra.setupMs ??= []).push(performance.now() - t0);
    }
  }

  return {
    async setup() {
      for (let p = 0; p < cfg.pairs; p++) {
        const pair = { a: `${cfg.prefix}p${p}-a`, b: `${cfg.prefix}p${p}-b` };
        pair.caller = await connect(urlFor(0), token(pair.a, []), onEvent("caller", pair));
        pair.callee = await connect(urlFor(1), token(pair.b, []), onEvent("callee", pair));
        pairs.push(pair);
      }
      return pairs.length * 2;
    },
    async run() {
      measuring = true;
      const interval = 1000 / cfg.rate;
      const end = performance.now() + cfg.duration * 1000;
      let started = 0;
      await Promise.all(
        pairs.map(async (pair) => {
          await sleep(Math.random() * interval);
          let next = performance.now();
          while (next < end) {
            started += 1;
            await setupOnce(pair).catch((e) => noteError(e.message));
            next += interval;
            await sleep(Math.max(0, next - performance.now()));
          }
        }),
      );
      await sleep(DRAIN_MS);
      stats.expected = started * perSetup;
      extra.connections = pairs.filter((p) => p.caller.open && p.callee.open).length * 2;
      return () => pairs.forEach((p) => [p.caller, p.callee].forEach((c) => c.close()));
    },
  };
}

// Messages: every member sends message:send cfg.rate times a second; the server POSTs it to
// the chat backend (benchmarks/message_backend.py), which persists and answers it, and
// broadcasts message:new to the room, sender included: each message is roomSize
// deliveries, timed from the send (matched by tempId).
function messages() {
  let measuring = false;
  const sentAt = new Map(); // tempId -> send time
  let members;
  let sent = 0;
  const onEvent = (_member, type, data) => {
    if (type === "message:new" && measuring) record(sentAt.get(data.tempId));
    else if (type === "message:error") noteError(data.code);
  };
  return {
    async setup() {
      members = await joinRooms(onEvent);
      return members.length;
    },
    async run() {
      measuring = true;
      const interval = 1000 / cfg.rate;
      const end = performance.now() + cfg.duration * 1000;
      await Promise.all(
        members.map(async (m, i) => {
          await sleep(Math.random() * interval);
          for (let next = performance.now(), k = 0; next < end; next += interval, k++) {
            const tempId = `${m.user}-${k}`;
            sentAt.set(tempId, performance.now());
            sent += 1;
            m.conn.send("message:send", { conversationId: m.room, tempId, content: `message ${k} from ${i}` });
            await sleep(Math.max(0, next + interval - performance.now()));
          }
        }),
      );
      stats.expected = sent * cfg.roomSize;
      await sleep(DRAIN_MS);
      extra.connections = members.filter((m) => m.conn.open).length;
      return () => members.forEach((m) => m.conn.close());
    },
  };
}

// Presence churn: rooms of cfg.roomSize - 1 members who stay; churners come and go at
// cfg.rate per second in all: connect, join a room (members get room:member-joined), stay
// cfg.hold seconds, disconnect (members get presence:changed offline and room:member-left).
function churn() {
  let measuring = false;
  let members = [];
  const times = new Map(); // `${user}|${event}` -> send time
  const observers = cfg.roomSize - 1;
  const onEvent = (_member, type, data) => {
    if (!measuring) return;
    if (type === "room:member-joined") record(times.get(`${data.userId}|join`));
    else if (type === "presence:changed" || type === "room:member-left") record(times.get(`${data.userId}|leave`));
  };
  return {
    async setup() {
      for (const room of cfg.rooms) {
        for (let i = 0; i < observers; i++) {
          const user = `${room}-u${i}`;
          const member = { user, room };
          member.conn = await connect(urlFor(i), token(user, [room]), (t, d) => onEvent(member, t, d));
          await member.conn.request("room:join", { roomId: room });
          members.push(member);
        }
      }
      return members.length;
    },
    async run() {
      measuring = true;
      const interval = 1000 / cfg.rate;
      const end = performance.now() + cfg.duration * 1000;
      const cycles = [];
      const connectMs = [];
      let n = 0;
      for (let next = performance.now(); next < end; next += interval) {
        await sleep(Math.max(0, next - performance.now()));
        const k = n++;
        const room = cfg.rooms[k % cfg.rooms.length];
        const user = `${cfg.prefix}c${k}`;
        cycles.push(
          (async () => {
            const t0 = performance.now();
            const conn = await connect(urlFor(k), token(user, [room]), () => {});
            connectMs.push(performance.now() - t0);
            times.set(`${user}|join`, performance.now());
            await conn.request("room:join", { roomId: room });
            await sleep(cfg.hold * 1000);
            times.set(`${user}|leave`, performance.now());
            conn.close();
            stats.expected += 3 * observers;
          })().catch((e) => noteError(e.message)),
        );
      }
      await Promise.all(cycles);
      await sleep(DRAIN_MS);
      extra.churnCycles = n;
      extra.connectMs = connectMs;
      extra.connections = members.filter((m) => m.conn.open).length;
      return () => members.forEach((m) => m.conn.close());
    },
  };
}

const scenarios = { fanout, idle, calls, churn, messages };

const scenario = scenarios[cfg.scenario]();
const ready = await scenario.setup();
process.stdout.write(`${JSON.stringify({ ready })}\n`);
const lines = createInterface({ input: process.stdin });
const nextLine = () => new Promise((r) => lines.once("line", r));

// One window of load: its result line. This process's own stalls over the load (its event
// loop's lateness, its garbage collections) are in it: a delivery's latency includes them,
// whichever server sent it.
async function runWindow(seconds) {
  resetStats();
  cfg.duration = seconds;
  const loopDelay = monitorEventLoopDelay({ resolution: 1 });
  const gc = { pauses: 0, totalMs: 0, maxMs: 0 };
  const gcObserver = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      gc.pauses += 1;
      gc.totalMs += e.duration;
      gc.maxMs = Math.max(gc.maxMs, e.duration);
    }
  });
  gcObserver.observe({ entryTypes: ["gc"] });
  loopDelay.enable();
  const t0 = performance.now();
  const closeAll = await scenario.run();
  const elapsed = (performance.now() - t0) / 1000;
  loopDelay.disable();
  gcObserver.disconnect();
  extra.loopDelayP99Ms = loopDelay.percentile(99) / 1e6;
  extra.loopDelayMaxMs = loopDelay.max / 1e6;
  extra.gc = gc;
  process.stdout.write(`${JSON.stringify({ ...stats, ...extra, elapsed })}\n`);
  // The window's garbage collected now, while nobody is measured (run with --expose-gc),
  // not during another system's window: the systems' generators share their CPUs.
  resetStats();
  globalThis.gc?.();
  return closeAll;
}

const windowSeconds = cfg.duration;
const goSeconds = (line) => (line === "go" ? windowSeconds : Number(line.slice(3)));
let closeAll = await runWindow(goSeconds(await nextLine()));
// The held connections close only when told, after the servers' CPU was read: thousands
// of disconnects (presence and member-left broadcasts on both systems) are not the load.
for (;;) {
  const line = await nextLine();
  if (!line.startsWith("go") || cfg.scenario !== "fanout") break;
  closeAll = await runWindow(goSeconds(line));
}
closeAll();
setTimeout(() => process.exit(0), 200);
