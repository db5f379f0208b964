// Errors the Switchboard SDK throws. Every one carries a `code`: the server's error code
// (docs/protocol.md, "Error codes") when the server refused something, or one of the SDK's
// own codes below when the answer never came.

/** The server answered with an error: `code` is one of the protocol's error codes. */
export class SwitchboardError extends Error {
  constructor(code, message, data = {}) {
    super(`${code}: ${message}`);
    this.name = "SwitchboardError";
    this.code = code;
    /** Extra fields of the server's error (e.g. `retryAfterMs` for `rate_limited`). */
    this.data = data;
  }
}

/** No answer within the request's timeout (code `timeout`). */
export class RequestTimeoutError extends SwitchboardError {
  constructor(type, timeoutMs) {
    super("timeout", `${type}: no answer in ${timeoutMs} ms`);
    this.name = "RequestTimeoutError";
  }
}

/** The connection was lost before the answer came (code `connection_lost`); the request
 * may or may not have been handled. */
export class ConnectionLostError extends SwitchboardError {
  constructor(closeCode, reason = "") {
    super("connection_lost", `connection closed (${closeCode}${reason ? ` ${reason}` : ""})`);
    this.name = "ConnectionLostError";
    this.closeCode = closeCode;
  }
}
