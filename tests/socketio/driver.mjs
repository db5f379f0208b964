// Drives real socket.io-client sockets for the tests: JSON commands on stdin, one JSON line
// per event on stdout. The client comes from benchmarks/peers (pinned by its lockfile), so
// the tests speak to Switchboard with the exact client the replaced service's web app uses.
//
// Commands: {op: "connect", ref, url, opts} · {op: "emit", ref, req, event, data, ack}
//           {op: "disconnect", ref} · {op: "drop", ref, url?} (close the transport, as a
//           lost network does: the client reconnects, to ``url`` if given)
//           {op: "point", ref, url} (reconnect to ``url`` from now on) · {op: "exit"}
// Output:   {ref, event, args} for every event (connect, connect_error, disconnect and
//           upgrade included) · {req, ack} or {req, error} for emits.
import { createRequire } from "node:module";
import { createInterface } from "node:readline";

const require = createRequire(`${process.env.PEERS}/package.json`);
const { io } = require("socket.io-client");

const sockets = new Map();
const out = (msg) => process.stdout.write(`${JSON.stringify(msg)}\n`);

function connect({ ref, url, opts }) {
  const socket = io(url, { forceNew: true, reconnectionDelay: 100, reconnectionDelayMax: 500, ...opts });
  sockets.set(ref, socket);
  const engineEvents = (engine) => {
    out({ ref, event: "transport", args: [engine.transport.name] });
    engine.on("upgrade", (transport) => out({ ref, event: "upgrade", args: [transport.name] }));
  };
  socket.io.on("open", () => engineEvents(socket.io.engine));
  socket.on("connect", () =>
    out({ ref, event: "connect", args: [socket.id, socket.io.engine.transport.name, socket.recovered] }),
  );
  socket.on("connect_error", (err) => out({ ref, event: "connect_error", args: [err.message, err.data ?? null] }));
  socket.on("disconnect", (reason) => out({ ref, event: "disconnect", args: [reason] }));
  socket.io.on("reconnect_attempt", (n) => out({ ref, event: "reconnect_attempt", args: [n] }));
  socket.onAny((event, ...args) => out({ ref, event, args }));
}

async function emit({ ref, req, event, data, ack }) {
  const socket = sockets.get(ref);
  if (!ack) {
    socket.emit(event, data);
    out({ req, ack: null });
    return;
  }
  try {
    out({ req, ack: await socket.timeout(10000).emitWithAck(event, data) });
  } catch (err) {
    out({ req, error: String(err.message ?? err) });
  }
}

function drop({ ref, url }) {
  const manager = sockets.get(ref).io;
  if (url) manager.uri = url;
  manager.engine.close();
}

for await (const line of createInterface({ input: process.stdin })) {
  const cmd = JSON.parse(line);
  if (cmd.op === "connect") connect(cmd);
  else if (cmd.op === "emit") emit(cmd);
  else if (cmd.op === "disconnect") sockets.get(cmd.ref)?.disconnect();
  else if (cmd.op === "drop") drop(cmd);
  else if (cmd.op === "point") sockets.get(cmd.ref).io.uri = cmd.url;
  else if (cmd.op === "exit") break;
}
for (const socket of sockets.values()) socket.disconnect();
process.exit(0);
