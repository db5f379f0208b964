// Misuses the declarations must reject (the test expects tsc to fail on each line).
import { Switchboard } from "switchboard-sdk";

export async function wrong(sb: Switchboard): Promise<void> {
  await sb.setStatus("sleeping");
  await sb.call(42);
  sb.addEventListener("presence", (e) => e.detail.nonsense.length);
}
