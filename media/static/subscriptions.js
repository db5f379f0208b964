// What a group call's page needs of each remote video, told to the server (sfu:subscription)
// so it sends the simulcast layer that fits: the size a <video> is shown at (in device
// pixels), whether it is on screen at all (scrolled away, hidden tab), and any quality or
// frame rate the app asks for (a pinned speaker, a thumbnail strip).
//
// Changes are batched (a grid resize touches every tile at once) and only what changed is
// sent. Used by GroupCall (switchboard.js); not meant to be imported on its own.

const DEBOUNCE_MS = 150;

export class Subscriptions {
  /** `send(tracks)` delivers one sfu:subscription's `tracks` list. */
  constructor(send) {
    this._send = send;
    this._elements = new Map(); // trackId -> Set of elements showing it
    this._settings = new Map(); // trackId -> {quality, fps, visible} set by the app
    this._sent = new Map(); // trackId -> JSON of what the server was last told
    this._onScreen = new WeakMap(); // element -> bool
    this._timer = null;
    this._resize = typeof ResizeObserver === "undefined" ? null : new ResizeObserver(() => this.schedule());
    this._intersect = typeof IntersectionObserver === "undefined" ? null : new IntersectionObserver((entries) => {
      for (const e of entries) this._onScreen.set(e.target, e.isIntersecting);
      this.schedule();
    });
    this._visibility = () => this.schedule();
    if (typeof document !== "undefined") document.addEventListener("visibilitychange", this._visibility);
  }

  /** Show `trackId` in `element` (a <video>): its size and visibility now drive the layer. */
  attach(trackId, element) {
    if (!this._elements.has(trackId)) this._elements.set(trackId, new Set());
    this._elements.get(trackId).add(element);
    this._resize?.observe(element);
    this._intersect?.observe(element);
    this.schedule();
  }

  detach(element) {
    for (const [trackId, set] of this._elements) {
      if (set.delete(element) && set.size === 0) this._elements.delete(trackId);
    }
    this._resize?.unobserve(element);
    this._intersect?.unobserve(element);
    this.schedule();
  }

  /** The app's own wishes for a track: `{quality: "low"|"medium"|"high"|null, fps, visible}`. */
  set(trackId, settings) {
    this._settings.set(trackId, { ...(this._settings.get(trackId) || {}), ...settings });
    this.schedule();
  }

  /** A track went away: forget it (the server does too). */
  forget(trackId) {
    const set = this._elements.get(trackId);
    if (set) for (const element of set) this.detach(element);
    this._elements.delete(trackId);
    this._settings.delete(trackId);
    this._sent.delete(trackId);
  }

  /** After a rejoin the server knows nothing: tell it everything again. */
  resend() {
    this._sent.clear();
    this.schedule();
  }

  schedule() {
    if (this._timer === null) this._timer = setTimeout(() => this.flush(), DEBOUNCE_MS);
  }

  flush() {
    this._timer = null;
    const tracks = [];
    const ids = new Set([...this._elements.keys(), ...this._settings.keys()]);
    for (const trackId of ids) {
      const wish = this._wish(trackId);
      const key = JSON.stringify(wish);
      if (this._sent.get(trackId) === key) continue;
      this._sent.set(trackId, key);
      tracks.push({ trackId, ...wish });
    }
    for (let i = 0; i < tracks.length; i += 100) this._send(tracks.slice(i, i + 100));
  }

  _wish(trackId) {
    const settings = this._settings.get(trackId) || {};
    const hidden = typeof document !== "undefined" && document.visibilityState === "hidden";
    const wish = {};
    const elements = [...(this._elements.get(trackId) || [])];
    if (elements.length) {
      const ratio = (typeof window !== "undefined" && window.devicePixelRatio) || 1;
      let width = 0;
      let height = 0;
      let shown = false;
      for (const el of elements) {
        if (this._onScreen.get(el) === false) continue;
        const w = el.clientWidth || 0;
        const h = el.clientHeight || 0;
        if (w === 0 && h === 0) continue; // display: none
        shown = true;
        width = Math.max(width, Math.round(w * ratio));
        height = Math.max(height, Math.round(h * ratio));
      }
      wish.visible = shown && !hidden;
      if (shown) Object.assign(wish, { width, height });
    } else {
      wish.visible = !hidden;
    }
    if (settings.visible === false) wish.visible = false;
    if (settings.quality) wish.quality = settings.quality;
    if (settings.fps) wish.fps = settings.fps;
    return wish;
  }

  close() {
    if (this._timer !== null) clearTimeout(this._timer);
    this._resize?.disconnect();
    this._intersect?.disconnect();
    if (typeof document !== "undefined") document.removeEventListener("visibilitychange", this._visibility);
  }
}
