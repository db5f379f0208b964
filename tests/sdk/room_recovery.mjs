// The browser SDK's room recovery, run in Node: join a room, lose the connection, miss
// events while away, reconnect, and see the missed events dispatched in order followed by
// `roomrecovered`. The test drives it over stdin/stdout: it prints "ready" once joined and
// "dropped" once the server cut the connection, and reconnects when it reads "resume".
import { createInterface } from "node:readline";
import { Switchboard } from "../../media/static/switchboard.js";

const [url, token] = process.argv.slice(2);
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const say = (msg) => console.log(JSON.stringify(msg));
let connects = 0;
const sb = await Switchboard.connect(url, async () => {
  if (connects++ > 0) await lines.next(); // the reconnect waits for "resume"
  return token;
});
const seen = [];
sb.addEventListener("message:new", (e) => seen.push(e.detail.n));
const recovered = new Promise((resolve) => sb.addEventListener("roomrecovered", (e) => resolve(e.detail)));
const joined = await sb.joinRoom("team");
sb.addEventListener("close", (e) => say({ dropped: e.detail.code }), { once: true });
say({ ready: joined.position });
const outcome = await recovered;
await new Promise((r) => setTimeout(r, 300)); // a live event after the recovery
say({ outcome, seen, position: sb.rooms.rooms.get("team").position });
sb.close();
process.exit(0);
