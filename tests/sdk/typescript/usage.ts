// A chat app's use of the SDK, compiled with `tsc --noEmit` against the package installed
// from its npm tarball: the declarations must describe what the app calls.
import { Switchboard, SwitchboardError, type Call, type UserPresence } from "switchboard-sdk";

export async function main(): Promise<void> {
  const sb = await Switchboard.connect("wss://chat.example.com/ws", async () => "token");
  sb.addEventListener("presence", (e) => {
    const who: UserPresence = e.detail;
    console.log(who.userId, who.status, who.lastSeen);
  });
  sb.addEventListener("typing", (e) => console.log(e.detail.users.map((u) => u.name)));
  sb.addEventListener("message:new", (e) => console.log(e.detail.id, e.detail.conversationId));
  const room = await sb.joinRoom("dm-alice-bob");
  console.log(room.members.length, room.position.offset);
  await sb.setStatus("away");
  const seen = await sb.presence.query(["bob"]);
  console.log(seen.denied);
  sb.typing("dm-alice-bob");
  sb.stopTyping("dm-alice-bob");
  try {
    const { messageId } = await sb.sendMessage("dm-alice-bob", "hi", { tempId: "t-1" });
    await sb.markRead("dm-alice-bob", [messageId]);
  } catch (err) {
    if (err instanceof SwitchboardError && err.code === "messages_disabled") console.log("off");
  }
  const call: Call = await sb.call("bob", { video: true });
  call.addEventListener("accepted", (e) => console.log(e.detail.userId));
  call.addEventListener("track", (e) => {
    const video = document.createElement("video");
    video.srcObject = e.detail.stream;
  });
  call.addEventListener("ended", (e) => console.log(e.detail.reason, e.detail.duration));
  await call.setAudioEnabled(false);
  await call.hangup();
  sb.addEventListener("incomingcall", async (e) => {
    const incoming = e.detail.call;
    if (incoming.from?.name === "Mallory") await incoming.reject("busy");
    else await incoming.accept({ video: false });
  });
  const group = await sb.joinGroupCall("standup");
  group.addEventListener("track", (e) => console.log(e.detail.info.kind, e.detail.info.source));
  await group.publish({ audio: true, video: true });
  await group.leave();
  sb.close();
}
