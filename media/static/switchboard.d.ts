// Types of the Switchboard browser SDK (switchboard.js). The wire protocol they wrap is
// docs/protocol.md; a test compiles a usage file against this with `tsc --noEmit`.

export const VERSION: string;

/** The server's error codes (docs/protocol.md, "Error codes"). */
export type ServerErrorCode =
  | "invalid_json" | "invalid_envelope" | "unknown_event" | "invalid_payload"
  | "frame_too_large" | "unsupported_frame" | "rate_limited" | "forbidden" | "not_in_room"
  | "too_many_rooms" | "call_not_found" | "not_in_call" | "invalid_state"
  | "too_many_participants" | "peer_unavailable" | "room_full" | "room_not_found"
  | "track_not_found" | "invalid_sdp" | "unsupported_codec" | "no_capacity" | "resume_failed"
  | "token_invalid" | "messages_disabled" | "unavailable" | "internal_error";

/** Codes of `message:error`: the chat backend's own, or the proxy's. */
export type MessageErrorCode =
  | "backend_timeout" | "backend_unavailable" | "backend_error" | "backend_invalid_response"
  | (string & {});

export type ErrorCode = ServerErrorCode | "timeout" | "connection_lost" | MessageErrorCode;

export class SwitchboardError extends Error {
  readonly code: ErrorCode;
  /** Extra fields of the server's error (e.g. `retryAfterMs` with `rate_limited`). */
  readonly data: Record<string, unknown>;
  constructor(code: ErrorCode, message: string, data?: Record<string, unknown>);
}
export class RequestTimeoutError extends SwitchboardError {
  readonly code: "timeout";
}
export class ConnectionLostError extends SwitchboardError {
  readonly code: "connection_lost";
  readonly closeCode: number;
}

export type Status = "online" | "away" | "dnd" | "invisible";
export type VisibleStatus = "online" | "away" | "dnd" | "offline";

export interface UserPresence {
  userId: string;
  status: VisibleStatus;
  /** Unix ms of the last moment the user was visibly present. */
  lastSeen: number | null;
  name?: string;
}

export interface IceServer {
  urls: string[];
  username?: string;
  credential?: string;
}

export interface SessionInfo {
  connectionId: string;
  userId: string;
  name: string;
  heartbeatInterval: number;
  maxFrameBytes: number;
  rateLimit: { perSecond: number; burst: number };
  serverTime: number;
  tokenExpiresAt: number;
  iceServers: IceServer[];
}

export interface Position {
  room: string;
  epoch: string;
  offset: number;
}

export interface RoomMember extends UserPresence {
  name: string;
}

export interface RoomJoinAck {
  roomId: string;
  type: "chat" | "conference";
  metadata: Record<string, unknown>;
  members: RoomMember[];
  position: Position;
  recovered?: boolean;
}

export interface ChatMessage {
  id: string;
  conversationId: string;
  tempId?: string;
  content?: string;
  messageType?: string;
  senderId?: string;
  position?: Position;
  [field: string]: unknown;
}

export interface SendOptions {
  messageType?: string;
  /** Your own id for the message (made up if absent); a resend with it is never a duplicate. */
  tempId?: string;
  replyTo?: string;
  metadata?: Record<string, unknown>;
}

export interface Typer {
  userId: string;
  name: string;
}

export type TokenSource = string | (() => string | Promise<string>);

export interface ConnectOptions {
  /** Reconnect with back-off when the connection is lost (default true). */
  reconnect?: boolean;
}

export interface CallOptions {
  video?: boolean;
  audio?: boolean;
  /** A chat room the call belongs to (the token must allow it). */
  conversationId?: string;
  /** Send this stream instead of asking getUserMedia. */
  stream?: MediaStream;
}

export interface CallParticipant {
  userId: string;
  name?: string;
  role?: "caller" | "callee";
  state?: "ringing" | "joined" | "reconnecting" | "rejected" | "missed" | "left";
  audio?: boolean;
  video?: boolean;
  screen?: boolean;
}

export interface SwitchboardEventMap {
  close: CustomEvent<{ code: number; reason: string }>;
  reconnected: CustomEvent<{ connectionId: string }>;
  presence: CustomEvent<UserPresence>;
  typing: CustomEvent<{ conversationId: string; users: Typer[] }>;
  incomingcall: CustomEvent<{ call: Call }>;
  callresumed: CustomEvent<{ call: Call }>;
  callresumefailed: CustomEvent<{ callId: string; error: Error }>;
  roomrecovered: CustomEvent<{ roomId: string; recovered: boolean; missed?: number; error?: Error }>;
  tokenrefreshed: CustomEvent<{ tokenExpiresAt: number }>;
  tokenrefreshfailed: CustomEvent<{ error: Error }>;
  "message:new": CustomEvent<ChatMessage>;
  "messages:read": CustomEvent<{ userId: string; conversationId: string; messageIds: string[]; timestamp: number }>;
  "room:member-joined": CustomEvent<RoomMember & { roomId: string; position?: Position }>;
  "room:member-left": CustomEvent<{ roomId: string; userId: string; position?: Position }>;
  "presence:changed": CustomEvent<UserPresence>;
}

export class Presence {
  readonly users: Map<string, UserPresence>;
  set(status: Status): Promise<{ deviceStatus: Status; userId: string; status: VisibleStatus; lastSeen: number | null }>;
  query(userIds: string[]): Promise<{ users: UserPresence[]; denied: string[] }>;
  get(userId: string): UserPresence | undefined;
}

export class Switchboard extends EventTarget {
  static connect(url: string, token: TokenSource, options?: ConnectOptions): Promise<Switchboard>;
  readonly session: SessionInfo;
  readonly userId: string;
  readonly presence: Presence;
  joinRoom(roomId: string): Promise<RoomJoinAck>;
  leaveRoom(roomId: string): Promise<{ roomId: string }>;
  setStatus(status: Status): ReturnType<Presence["set"]>;
  /** Call on every keystroke: sends at most one typing event per 2 s. */
  typing(conversationId: string): void;
  stopTyping(conversationId: string): void;
  sendMessage(conversationId: string, content: string, options?: SendOptions): Promise<{ tempId: string; messageId: string }>;
  markRead(conversationId: string, messageIds: string[]): Promise<{ conversationId: string; timestamp: number }>;
  call(userIds: string | string[], options?: CallOptions): Promise<Call>;
  joinGroupCall(roomId: string): Promise<GroupCall>;
  request<T = Record<string, unknown>>(type: string, data?: Record<string, unknown>, timeoutMs?: number): Promise<T>;
  send(type: string, data?: Record<string, unknown>): void;
  close(): void;
  addEventListener<K extends keyof SwitchboardEventMap>(type: K, listener: (ev: SwitchboardEventMap[K]) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
}

export interface CallEventMap {
  ringing: CustomEvent<{ offline: string[] }>;
  accepted: CustomEvent<{ userId: string; name: string }>;
  rejected: CustomEvent<{ userId: string; reason?: string }>;
  cancelled: CustomEvent<{ reason: string }>;
  missed: CustomEvent<{ reason: string }>;
  ended: CustomEvent<{ reason: string; duration: number }>;
  track: CustomEvent<{ userId: string; track: MediaStreamTrack; stream: MediaStream }>;
  participantleft: CustomEvent<{ userId: string; reason: string }>;
  peerdisconnected: CustomEvent<{ userId: string; gracePeriod: number }>;
  peerreconnected: CustomEvent<{ userId: string }>;
  media: CustomEvent<CallParticipant>;
  connectionstate: CustomEvent<{ userId: string; state: RTCPeerConnectionState }>;
  reconnected: CustomEvent<Record<string, never>>;
  error: CustomEvent<{ error: unknown; message: string }>;
}

export class Call extends EventTarget {
  readonly callId: string;
  readonly callType: "audio" | "video";
  readonly role: "caller" | "callee";
  readonly state: "new" | "ringing" | "active" | "ended";
  readonly from: { userId: string; name: string } | null;
  readonly conversationId: string | null;
  readonly participants: Map<string, CallParticipant>;
  readonly remoteStreams: Map<string, MediaStream>;
  readonly localStream: MediaStream | null;
  readonly audio: boolean;
  readonly video: boolean;
  accept(options?: Omit<CallOptions, "conversationId">): Promise<Call>;
  reject(reason?: string): Promise<unknown>;
  hangup(): Promise<void>;
  setAudioEnabled(enabled: boolean): Promise<void>;
  setVideoEnabled(enabled: boolean): Promise<void>;
  shareScreen(): Promise<void>;
  stopScreenShare(): Promise<void>;
  stats(): Promise<Record<string, { audio: RtpCounts | null; video: RtpCounts | null; connectionState: RTCPeerConnectionState }>>;
  addEventListener<K extends keyof CallEventMap>(type: K, listener: (ev: CallEventMap[K]) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
}

export interface RtpCounts {
  packetsReceived: number;
  framesDecoded: number;
  bytesReceived: number;
}

export interface TrackInfo {
  trackId: string;
  participantId: string;
  userId: string;
  kind: "audio" | "video";
  source: "camera" | "microphone" | "screen" | "screen-audio";
  codec: string;
  muted: boolean;
  simulcast?: string[];
}

export interface SimulcastLayer {
  rid: string;
  scaleResolutionDownBy: number;
  maxBitrate: number;
}
export const SIMULCAST_LAYERS: SimulcastLayer[];

export interface GroupCallEventMap {
  track: CustomEvent<{ info: TrackInfo; track: MediaStreamTrack; stream: MediaStream }>;
  trackended: CustomEvent<{ trackId: string }>;
  participantjoined: CustomEvent<{ participantId: string; userId: string; name: string }>;
  participantleft: CustomEvent<{ participantId: string; userId: string; name: string; reason: string }>;
  activespeakers: CustomEvent<{ participantId: string; userId: string; trackId: string; level: number }[]>;
  left: CustomEvent<{ reason: string }>;
  reconnecting: CustomEvent<{ reason: string }>;
  reconnected: CustomEvent<{ resumed: boolean; mediaNode?: string }>;
}

export class GroupCall extends EventTarget {
  readonly roomId: string;
  readonly participantId: string;
  readonly participants: Map<string, { participantId: string; userId: string; name: string }>;
  publish(options?: { audio?: boolean | MediaTrackConstraints; video?: boolean | MediaTrackConstraints; simulcast?: boolean; layers?: SimulcastLayer[] }): Promise<MediaStreamTrack[]>;
  publishScreen(): Promise<MediaStreamTrack[]>;
  unpublish(track: MediaStreamTrack): Promise<void>;
  attach(trackId: string, element: HTMLVideoElement): void;
  detach(element: HTMLVideoElement): void;
  setTrackSettings(trackId: string, settings: { quality?: "low" | "medium" | "high"; fps?: number; visible?: boolean }): void;
  setEnabled(kind: "audio" | "video", enabled: boolean): Promise<void>;
  leave(): Promise<void>;
  addEventListener<K extends keyof GroupCallEventMap>(type: K, listener: (ev: GroupCallEventMap[K]) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
}
