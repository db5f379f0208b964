// The browser SDK's token refresh, run in Node (WebSocket, EventTarget and CustomEvent are
// the same web APIs): connect with a token function, get warned, refresh, stay connected
// past the first token's expiry. Prints one JSON line with what happened.
import { Switchboard } from "../../media/static/switchboard.js";

const [url, ...tokens] = process.argv.slice(2);
let asked = 0;
const sb = await Switchboard.connect(url, async () => tokens[Math.min(asked++, tokens.length - 1)]);
const first = sb.session.tokenExpiresAt;
const refreshed = await new Promise((resolve, reject) => {
  sb.addEventListener("tokenrefreshed", (e) => resolve(e.detail), { once: true });
  sb.addEventListener("tokenrefreshfailed", (e) => reject(e.detail.error), { once: true });
});
await new Promise((r) => setTimeout(r, 2500)); // past the first token's expiry
const pong = await sb.request("ping");
const closes = [];
sb.addEventListener("close", (e) => closes.push(e.detail.code));
console.log(JSON.stringify({ asked, first, refreshed, pong, closes }));
sb.close();
process.exit(0);
