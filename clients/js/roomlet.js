// roomlet browser client, protocol version 1 (see docs/protocol.md).
//
// A plain ES module with no dependencies. Works in modern browsers.
//
//   import { RoomletClient } from '/demo/roomlet.js';
//   const client = new RoomletClient('wss://example.org/v1/ws', { token, room: 'demo' });
//   client.addEventListener('signal', (e) => console.log(e.detail));
//   const joined = await client.connect();

/** Close codes after which the client never reconnects by itself. */
const FINAL_CLOSE_CODES = new Set([1000, 4001, 4004, 4007, 4008, 4009]);
/** `resume-failed`: final for a session the server no longer has, not for the client. */
const RESUME_FAILED = 4007;

const BACKOFF_START_MS = 250;
const BACKOFF_FACTOR = 2;
const BACKOFF_MAX_MS = 5000;
/** The server keeps a dropped session for this long (docs/protocol.md, Liveness). */
const RESUME_GRACE_MS = 30000;
/** How long one socket may take to open and answer `joined`. */
const ATTEMPT_TIMEOUT_MS = 10000;
/** After an `error` frame before `joined`, how long to wait for the server's close. */
const REFUSED_CLOSE_WAIT_MS = 2000;
/** How long leave() waits for the server's close before closing itself. */
const LEAVE_CLOSE_WAIT_MS = 2000;

const ACK_EVERY_FRAMES = 20;
const ACK_EVERY_MS = 1000;

/** Frames sent while (re)connecting are kept until `joined`, up to this many. */
const MAX_QUEUED_FRAMES = 1000;

/**
 * Signals and messages the server has not confirmed are kept to send again
 * after a resume, up to this many (past it, sending throws, as a full queue does).
 */
const MAX_UNCONFIRMED = 2000;
/** A received (sender, id) is remembered this many ids back, to drop a copy. */
const SEEN_WINDOW = 64;
/** Senders remembered for that before the table starts afresh. */
const SEEN_SENDERS = 1024;

const SIGNAL_KINDS = new Set(['offer', 'answer', 'candidate']);

/** Server frame types that are dispatched as events of the same name. */
const FRAME_EVENTS = new Set([
  'peer-joined', 'peer-left', 'signal', 'message', 'error', 'kicked', 'room-metadata', 'reconnect',
  'refreshed', 'confirmed',
]);

/** Token errors after which a fresh token (getToken) is worth one more try. */
const TOKEN_STALE = new Set(['token-expired', 'token-not-yet-valid']);
/** A refresh goes out when a third of the token's remaining life is left, at most this early. */
const REFRESH_MARGIN_MAX_MS = 60000;
/** The server answers `media-token` at most this often per session. */
const MEDIA_MIN_INTERVAL_MS = 10000;

/**
 * An error from roomlet: a refused `join`/`resume`, a failed connection, a ping timeout.
 * `code` is the protocol error code (e.g. `token-expired`) when the server sent one,
 * `closeCode` the WebSocket close code when the socket closed.
 */
export class RoomletError extends Error {
  /**
   * @param {string} message
   * @param {{code?: string, closeCode?: number, frame?: object}} [info]
   */
  constructor(message, { code = null, closeCode = null, frame = null } = {}) {
    super(message);
    this.name = 'RoomletError';
    /** @type {string|null} */
    this.code = code;
    /** @type {number|null} */
    this.closeCode = closeCode;
    /** @type {object|null} */
    this.frame = frame;
  }
}

/**
 * Client for the roomlet signaling server.
 *
 * Events (all `CustomEvent`s; `detail` is the server frame unless said otherwise):
 * - `joined`        the `joined` frame of a fresh join (again, with a new peer id, after a
 *                   drain or when a resume failed: the server had lost the session)
 * - `resumed`       the `joined` frame (with `resumed: true`) after an automatic resume
 * - `peer-joined`, `peer-left`, `signal`, `message`, `error`, `kicked`, `room-metadata`, `reconnect`
 *                   (a `signal` or `message` the client already delivered, re-sent by a peer
 *                   after a failure, is dropped; an `error` with an `id` refuses that frame)
 * - `confirmed`     `{type: 'confirmed', id}`: every signal and message sent up to that id
 *                   was handled (see {@link RoomletClient#unconfirmed}); what was not is
 *                   sent again after a resume, before anything new
 * - `closed`        the client is closed for good: `{type: 'closed', code, reason}`
 *                   (no further reconnect; call connect() again to start a new session)
 * - `reconnecting`  a reconnect attempt is scheduled:
 *                   `{type: 'reconnecting', attempt, delayMs, code, reason, url}`
 * - `statechange`   `{type: 'statechange', state}`, see {@link RoomletClient#state}
 * - `pong`          the `pong` frame
 * - `media`         fresh media-plane credentials: `{type: 'media', media}`, as
 *                   {@link RoomletClient#media} now holds them
 *
 * Stream frames (those with a `seq`) are delivered exactly once, in order, across
 * reconnects: a frame whose `seq` is not above the highest seen is dropped.
 */
export class RoomletClient extends EventTarget {
  #initialUrl;
  #url;
  #token;
  /** () => Promise<string>: a fresh access token (refresh, fresh joins). */
  #getToken = null;
  /** The token's expiry as the server last said it (Unix ms), or 0. */
  #expiresAt = 0;
  #refreshTimer = null;
  /** A token sent in `refresh`, kept once the server answers `refreshed`. */
  #refreshing = null;
  /** Media-plane credentials by provider, as the server last issued them. */
  #media = {};
  #mediaTimer = null;
  /** When `media-token` was last sent (ms), for the server's rate limit. */
  #mediaAskedAt = 0;
  /** Whether the join in flight already retried with a fresh token. */
  #retriedToken = false;
  #room;
  #protocol;
  #codec;
  #reconnectEnabled;
  #statsIntervalMs;

  /** 'idle' | 'connecting' | 'joined' | 'reconnecting' | 'closed' */
  #state = 'idle';
  #ws = null;
  #socketJoined = false;
  #attemptTimer = null;

  #joinedFrame = null;
  #peerId = null;
  #resumeToken = null;

  #highestSeq = 0;
  #unacked = 0;
  #ackTimer = null;

  #left = false;
  #redirectUrl = null;
  /** The `reconnect` frame's reason: after `moved` the session is over and the client joins afresh. */
  #redirectReason = null;
  /** A draining node sent us elsewhere: join afresh there (its sessions stay behind). */
  #rejoining = false;
  #reconnectTimer = null;
  #reconnectAttempt = 0;
  #droppedAt = 0;

  #connectPromise = null;
  #connectWaiter = null;

  #queue = [];
  /** The id of the last signal or message sent (ids rise for the client's life). */
  #lastId = 0;
  /** Signals and messages sent and not yet confirmed, oldest first. */
  #unconfirmed = [];
  /** sender peer id -> {newest, ids: Set} of the ids delivered lately. */
  #seen = new Map();
  #pings = new Map();
  #lastPingTs = 0;

  /** RTCPeerConnection -> {timer, busy} */
  #statsReporters = new Map();

  /**
   * @param {string} url ws:// or wss:// URL of the server's `/v1/ws`.
   * @param {object} options
   * @param {string} [options.token] access token for `join` (required without `getToken`).
   * @param {() => Promise<string>} [options.getToken] returns a fresh access token: called before
   *   the token expires (sent as `refresh`, so the session always holds a valid one), for every
   *   fresh join after the first (a resume needs no token), and when a join is refused as expired.
   * @param {string} options.room room to join.
   * @param {string} [options.protocol='roomlet.v1.json'] WebSocket subprotocol:
   *   `roomlet.v1.json` or `roomlet.v1.msgpack`.
   * @param {boolean} [options.reconnect=true] reconnect and resume automatically when the socket drops
   *   (or join afresh when the server no longer has the session).
   * @param {number} [options.statsIntervalMs=5000] period of the stats reporter (attachPeerConnection).
   */
  constructor(url, { token, getToken, room, protocol = 'roomlet.v1.json', reconnect = true, statsIntervalMs = 5000 } = {}) {
    super();
    if (typeof url !== 'string' || url === '') throw new TypeError('RoomletClient: url must be a ws(s):// URL');
    if (getToken !== undefined && typeof getToken !== 'function') throw new TypeError('RoomletClient: getToken must be a function');
    if ((typeof token !== 'string' || token === '') && !getToken) throw new TypeError('RoomletClient: token (or getToken) is required');
    this.#getToken = getToken || null;
    if (typeof room !== 'string' || room === '') throw new TypeError('RoomletClient: room is required');
    this.#initialUrl = url;
    this.#url = url;
    this.#token = typeof token === 'string' ? token : '';
    this.#room = room;
    this.#protocol = protocol;
    this.#codec = codecFor(protocol);
    this.#reconnectEnabled = reconnect !== false;
    this.#statsIntervalMs = Number.isFinite(statsIntervalMs) && statsIntervalMs > 0 ? statsIntervalMs : 5000;
  }

  /** Connection state: `idle`, `connecting`, `joined`, `reconnecting` or `closed`. */
  get state() { return this.#state; }

  /** This client's peer id, once joined. */
  get peerId() { return this.#peerId; }

  /** The room name. */
  get room() { return this.#room; }

  /**
   * Signals and messages sent that the server has not confirmed yet: after a
   * resume they are sent again (the server and the receivers drop copies).
   */
  get unconfirmed() { return this.#unconfirmed.length; }

  /** The last `joined` frame (fresh or resumed), or null. */
  get joinedFrame() { return this.#joinedFrame; }

  /** Highest stream `seq` seen in this session. */
  get lastSeq() { return this.#highestSeq; }

  /** The URL in use (changes when the server redirects with a `reconnect` frame). */
  get url() { return this.#url; }

  /**
   * Open the socket and join the room.
   * Calling it while connecting returns the same promise; calling it when the
   * client is closed starts a new session.
   * @returns {Promise<object>} the `joined` frame.
   * @throws {RoomletError} (rejects) if the join is refused or the socket fails first;
   *   `err.code` is the server's error code when it sent one.
   */
  connect() {
    if (this.#state === 'connecting' && this.#connectPromise) return this.#connectPromise;
    if (this.#state === 'joined' || this.#state === 'reconnecting') {
      return Promise.reject(new RoomletError('already connected'));
    }
    this.#resetSession();
    this.#url = this.#initialUrl;
    this.#setState('connecting');
    this.#connectPromise = new Promise((resolve, reject) => {
      this.#connectWaiter = { resolve, reject };
    });
    // The caller may not await; avoid an unhandled-rejection report for this copy.
    this.#connectPromise.catch(() => {});
    this.#retriedToken = false;
    this.#openJoin(this.#token === '');
    return this.#connectPromise;
  }

  /**
   * Send a WebRTC signal to one peer.
   * @param {string} to peer id.
   * @param {'offer'|'answer'|'candidate'} kind
   * @param {*} payload any JSON value, e.g. `pc.localDescription` or `candidate.toJSON()`.
   */
  signal(to, kind, payload) {
    if (typeof to !== 'string' || to === '') throw new TypeError('signal: `to` must be a peer id');
    if (!SIGNAL_KINDS.has(kind)) throw new TypeError('signal: `kind` must be offer, answer or candidate');
    this.#sendRoomFrame({ type: 'signal', to, kind, payload: toPlain(payload) });
  }

  /**
   * Send an application message; the room's module decides delivery.
   * @param {*} data any JSON value.
   * @param {string|null} [to=null] a peer id, or null for the whole room.
   */
  send(data, to = null) {
    const frame = { type: 'message', data: toPlain(data) };
    if (to !== null && to !== undefined) {
      if (typeof to !== 'string' || to === '') throw new TypeError('send: `to` must be a peer id or null');
      frame.to = to;
    }
    this.#sendRoomFrame(frame);
  }

  /**
   * Leave the room. The server closes the socket with 1000; no reconnect follows.
   * @returns {Promise<void>} resolved once the client is closed.
   */
  leave() {
    if (this.#state === 'idle' || this.#state === 'closed') return Promise.resolve();
    this.#left = true;
    const done = new Promise((resolve) => this.addEventListener('closed', () => resolve(), { once: true }));
    const ws = this.#ws;
    if (this.#state === 'joined' && ws && ws.readyState === WebSocket.OPEN) {
      this.#queue = [];
      this.#sendNow({ type: 'leave' });
      clearTimeout(this.#attemptTimer);
      this.#attemptTimer = setTimeout(() => this.#abandonSocket(ws, 1000, 'left'), LEAVE_CLOSE_WAIT_MS);
    } else if (ws) {
      this.#abandonSocket(ws, 1000, 'left');
    } else {
      this.#finish(1000, 'left');
    }
    return done;
  }

  /**
   * Room admins only: remove a peer from the room.
   * @param {string} peer peer id.
   * @param {string} [reason='']
   */
  kick(peer, reason = '') {
    if (typeof peer !== 'string' || peer === '') throw new TypeError('kick: `peer` must be a peer id');
    this.#sendRoomFrame({ type: 'kick', peer, reason: String(reason ?? '') });
  }

  /**
   * Room admins only: set the room's metadata.
   * @param {string} metadata
   */
  setMetadata(metadata) {
    if (typeof metadata !== 'string') throw new TypeError('setMetadata: metadata must be a string');
    this.#sendRoomFrame({ type: 'room-metadata', metadata });
  }

  /**
   * Send `ping` and wait for the matching `pong`.
   * @param {{timeoutMs?: number}} [options]
   * @returns {Promise<number>} the round-trip time in milliseconds.
   */
  ping({ timeoutMs = 5000 } = {}) {
    const ws = this.#ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      return Promise.reject(new RoomletError('ping: not connected'));
    }
    const ts = nextPingTs(this.#lastPingTs);
    this.#lastPingTs = ts;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pings.delete(ts);
        reject(new RoomletError('ping: no pong in time'));
      }, timeoutMs);
      this.#pings.set(ts, { start: performance.now(), resolve, reject, timer });
      this.#sendNow({ type: 'ping', ts });
    });
  }

  /**
   * Report call quality for a peer connection: every `statsIntervalMs` the client calls
   * `pc.getStats()` and sends a `stats` frame with the figures that are present and finite
   * (rttMs, jitterMs, packetLoss, fps, width, height, freezeCount, concealedSamples).
   * Reporting stops by itself when the peer connection is closed.
   * @param {RTCPeerConnection} pc
   * @returns {() => void} a function that stops reporting for this connection.
   */
  attachPeerConnection(pc) {
    if (!pc || typeof pc.getStats !== 'function') throw new TypeError('attachPeerConnection: expected an RTCPeerConnection');
    if (!this.#statsReporters.has(pc)) {
      const reporter = { timer: null, busy: false };
      reporter.timer = setInterval(() => this.#reportStats(pc, reporter), this.#statsIntervalMs);
      this.#statsReporters.set(pc, reporter);
    }
    return () => this.#detachPeerConnection(pc);
  }

  /**
   * Measure the round-trip time to each region and pick the fastest.
   * For each region a WebSocket is opened with the subprotocol, 3 pings are sent one after
   * the other (2 s timeout each) and the median round trip is taken. Regions are measured
   * in parallel; each socket is closed afterwards (no `join` is sent).
   * @param {Array<{name: string, url: string}>} regions e.g. `joined.regions`.
   * @param {{protocol?: string, pings?: number, timeoutMs?: number}} [options]
   * @returns {Promise<{name: string, url: string, rttMs: number}|null>} the fastest region,
   *   or null when `regions` is empty; rejects when no region answered.
   */
  static async pickFastestRegion(regions, { protocol = 'roomlet.v1.json', pings = 3, timeoutMs = 2000 } = {}) {
    if (!Array.isArray(regions)) throw new TypeError('pickFastestRegion: regions must be an array');
    if (regions.length === 0) return null;
    const codec = codecFor(protocol);
    const measured = await Promise.all(regions.map(async (region) => {
      try {
        const rttMs = await measureRtt(region.url, protocol, codec, pings, timeoutMs);
        return { name: region.name, url: region.url, rttMs };
      } catch {
        return null;
      }
    }));
    let best = null;
    for (const m of measured) {
      if (m && Number.isFinite(m.rttMs) && (best === null || m.rttMs < best.rttMs)) best = m;
    }
    if (best === null) throw new RoomletError('pickFastestRegion: no region answered');
    return best;
  }

  // ---------------------------------------------------------------- internals

  #setState(state) {
    if (this.#state === state) return;
    this.#state = state;
    this.#emit('statechange', { type: 'statechange', state });
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  #resetSession() {
    this.#joinedFrame = null;
    this.#peerId = null;
    this.#resumeToken = null;
    this.#highestSeq = 0;
    this.#unacked = 0;
    clearTimeout(this.#ackTimer);
    this.#ackTimer = null;
    this.#left = false;
    this.#redirectUrl = null;
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = null;
    this.#reconnectAttempt = 0;
    this.#queue = [];
    this.#unconfirmed = [];
    this.#seen.clear();
  }

  /**
   * Open a socket and send `join`, with a token from getToken when `fresh`
   * (and getToken is set); a getToken that fails ends the attempt like a
   * socket that closed at once.
   */
  #openJoin(fresh) {
    if (!fresh || !this.#getToken) {
      this.#openSocket({ type: 'join', room: this.#room, token: this.#token });
      return;
    }
    const state = this.#state;
    this.#freshToken()
      .then((token) => {
        if (this.#state !== state) return;
        this.#token = token;
        this.#openSocket({ type: 'join', room: this.#room, token });
      })
      .catch((err) => {
        if (this.#state !== state) return;
        this.#ws = null;
        this.#socketClosed(null, 1006, `getToken failed: ${err && err.message || err}`);
      });
  }

  /** A token from getToken; rejects when it fails or returns none. */
  async #freshToken() {
    const token = await this.#getToken();
    if (typeof token !== 'string' || token === '') throw new Error('getToken returned no token');
    return token;
  }

  /**
   * Media-plane credentials by provider, fresh as of the last `joined` or `media-token`:
   * `client.media.agora` ({appId, channel, account, token, expiresAt}) and
   * `client.media.livekit` ({url, channel, account, token, expiresAt}), when the server
   * issues them. Refreshed before they expire; listen for `media` to hand new ones to the SDK.
   */
  get media() {
    return this.#media;
  }

  /** Ask the server for fresh media credentials now (answered by a `media` event). */
  refreshMedia() {
    clearTimeout(this.#mediaTimer);
    this.#mediaTimer = null;
    const wait = this.#mediaAskedAt + MEDIA_MIN_INTERVAL_MS - Date.now();
    if (wait > 0) {
      this.#mediaTimer = setTimeout(() => this.refreshMedia(), wait);
      return;
    }
    this.#mediaAskedAt = Date.now();
    this.#sendRoomFrame({ type: 'media-token' });
  }

  #takeMedia(media) {
    if (!media || typeof media !== 'object' || Object.keys(media).length === 0) return;
    this.#media = media;
    this.#scheduleMediaRefresh();
    this.#emit('media', { type: 'media', media });
  }

  /** Fresh credentials before the first of them expires. */
  #scheduleMediaRefresh() {
    clearTimeout(this.#mediaTimer);
    this.#mediaTimer = null;
    const ends = Object.values(this.#media).map((c) => c && c.expiresAt).filter((t) => typeof t === 'number');
    if (ends.length === 0) return;
    const left = Math.min(...ends) - Date.now();
    const delay = Math.max(0, left - Math.min(REFRESH_MARGIN_MAX_MS, left / 3));
    this.#mediaTimer = setTimeout(() => this.refreshMedia(), delay);
  }

  /** Ask for a fresh token before this one expires (when the server said when). */
  #scheduleRefresh() {
    clearTimeout(this.#refreshTimer);
    this.#refreshTimer = null;
    if (!this.#getToken || !this.#expiresAt) return;
    const left = this.#expiresAt - Date.now();
    const delay = Math.max(0, left - Math.min(REFRESH_MARGIN_MAX_MS, left / 3));
    this.#refreshTimer = setTimeout(() => this.#refresh(), delay);
  }

  #refresh() {
    this.#refreshTimer = null;
    if (this.#state !== 'joined' && this.#state !== 'reconnecting') return;
    this.#freshToken()
      .then((token) => {
        this.#refreshing = token;
        this.#sendRoomFrame({ type: 'refresh', token });
      })
      .catch((err) => {
        this.#emit('error', { type: 'error', code: 'refresh-failed', message: `getToken failed: ${err && err.message || err}` });
        // Try again in a while, if the token has not expired meanwhile.
        if (this.#expiresAt > Date.now() + 2000) this.#refreshTimer = setTimeout(() => this.#refresh(), 2000);
      });
  }

  /** Open a socket to the current URL and send `firstFrame` (join or resume) on open. */
  #openSocket(firstFrame) {
    let ws;
    try {
      ws = new WebSocket(this.#url, this.#protocol);
    } catch (err) {
      // Malformed URL and the like: fail like a socket that closed at once.
      this.#ws = null;
      queueMicrotask(() => this.#socketClosed(null, 1006, String(err && err.message || err)));
      return;
    }
    ws.binaryType = 'arraybuffer';
    this.#ws = ws;
    this.#socketJoined = false;
    this.#redirectUrl = null;
    clearTimeout(this.#attemptTimer);
    this.#attemptTimer = setTimeout(() => this.#abandonSocket(ws, 1006, 'no joined in time'), ATTEMPT_TIMEOUT_MS);
    ws.onopen = () => {
      if (ws !== this.#ws) return;
      this.#sendNow(firstFrame);
    };
    ws.onmessage = (ev) => {
      if (ws !== this.#ws) return;
      let frame;
      try {
        frame = this.#codec.decode(ev.data);
      } catch {
        return; // not a frame of our encoding; nothing sensible to do with it
      }
      if (frame && typeof frame === 'object' && typeof frame.type === 'string') this.#onFrame(frame);
    };
    ws.onclose = (ev) => {
      if (ws !== this.#ws) return;
      this.#socketClosed(ws, ev.code, ev.reason);
    };
    ws.onerror = () => {}; // a close event always follows
  }

  /** Stop using `ws` (closing it) and handle it as closed with `code`. */
  #abandonSocket(ws, code, reason) {
    if (ws !== this.#ws) return;
    try { ws.close(1000); } catch { /* already closing */ }
    this.#socketClosed(ws, code, reason);
  }

  #sendNow(frame) {
    const ws = this.#ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(this.#codec.encode(frame));
    return true;
  }

  /**
   * Send a frame that needs a joined session; queue it while (re)connecting.
   * A signal or message gets the next id and is kept until confirmed.
   */
  #sendRoomFrame(frame) {
    const live = this.#state === 'connecting' || this.#state === 'reconnecting' || this.#state === 'joined';
    if (!live) throw new RoomletError(`not connected (state ${this.#state})`);
    const numbered = frame.type === 'signal' || frame.type === 'message';
    if (numbered) {
      if (this.#unconfirmed.length >= MAX_UNCONFIRMED) throw new RoomletError('too many frames not yet confirmed');
      this.#lastId += 1;
      frame.id = this.#lastId;
    }
    if (this.#state === 'joined' && this.#sendNow(frame)) {
      if (numbered) this.#unconfirmed.push(frame);
      return;
    }
    if (this.#queue.length >= MAX_QUEUED_FRAMES) throw new RoomletError('send queue full while reconnecting');
    this.#queue.push(frame);
    if (numbered) this.#unconfirmed.push(frame);
  }

  /** After a resume: what was not confirmed goes again, in order, before anything new. */
  #resendUnconfirmed() {
    const again = this.#unconfirmed;
    const queued = new Set(this.#queue);
    for (const frame of again) {
      if (!queued.has(frame) && !this.#sendNow(frame)) return;
    }
  }

  /** Drops what a `confirmed` (every id up to it) or a refusal (that id) settles. */
  #settle(upTo, only = null) {
    if (only !== null) {
      this.#unconfirmed = this.#unconfirmed.filter((f) => f.id !== only);
      return;
    }
    let n = 0;
    while (n < this.#unconfirmed.length && this.#unconfirmed[n].id <= upTo) n += 1;
    if (n > 0) this.#unconfirmed = this.#unconfirmed.slice(n);
  }

  /** Whether a delivered signal or message is a copy of one already delivered. */
  #isCopy(frame) {
    if (typeof frame.id !== 'number' || typeof frame.from !== 'string') return false;
    let w = this.#seen.get(frame.from);
    if (!w) {
      if (this.#seen.size >= SEEN_SENDERS) this.#seen.clear();
      w = { newest: 0, ids: new Set() };
      this.#seen.set(frame.from, w);
    }
    if (frame.id <= w.newest - SEEN_WINDOW) return false; // too old to tell: deliver
    if (w.ids.has(frame.id)) return true;
    w.ids.add(frame.id);
    if (frame.id > w.newest) {
      w.newest = frame.id;
      for (const id of w.ids) if (id <= w.newest - SEEN_WINDOW) w.ids.delete(id);
    }
    return false;
  }

  #flushQueue() {
    const queued = this.#queue;
    this.#queue = [];
    for (let i = 0; i < queued.length; i++) {
      if (!this.#sendNow(queued[i])) {
        this.#queue = queued.slice(i).concat(this.#queue);
        return;
      }
    }
  }

  #onFrame(frame) {
    if (frame.type === 'pong') {
      const ping = this.#pings.get(frame.ts);
      if (ping) {
        this.#pings.delete(frame.ts);
        clearTimeout(ping.timer);
        ping.resolve(performance.now() - ping.start);
      }
      this.#emit('pong', frame);
      return;
    }
    if (frame.type === 'joined') {
      this.#onJoined(frame);
      return;
    }
    if (frame.type === 'confirmed') {
      if (typeof frame.id === 'number') this.#settle(frame.id);
      this.#emit('confirmed', frame);
      return;
    }
    if (typeof frame.seq === 'number') {
      if (frame.seq <= this.#highestSeq) return; // already delivered (replayed after resume)
      this.#highestSeq = frame.seq;
      this.#noteStreamFrame();
    }
    if ((frame.type === 'signal' || frame.type === 'message') && this.#isCopy(frame)) return;
    if (frame.type === 'error' && typeof frame.id === 'number') this.#settle(0, frame.id);
    if (frame.type === 'reconnect') {
      // Without a hint, the same URL: the load balancer picks a node that is not draining.
      this.#redirectUrl = typeof frame.url === 'string' && frame.url !== '' ? frame.url : this.#url;
      this.#redirectReason = frame.reason;
    } else if (frame.type === 'refreshed') {
      if (this.#refreshing) this.#token = this.#refreshing;
      this.#refreshing = null;
      if (typeof frame.expiresAt === 'number') this.#expiresAt = frame.expiresAt;
      this.#scheduleRefresh();
      // Media credentials never outlive the access token: with a new one they may last longer.
      if (Object.keys(this.#media).length > 0) this.refreshMedia();
    } else if (frame.type === 'media-token') {
      this.#takeMedia(frame.media);
      return;
    } else if (frame.type === 'error' && frame.code === 'rate-limited' && this.#mediaAskedAt > Date.now() - 2000) {
      // Our media-token came too soon (another tab of logic asked): once more, later.
      this.#mediaTimer = this.#mediaTimer ?? setTimeout(() => this.refreshMedia(), MEDIA_MIN_INTERVAL_MS);
    } else if (frame.type === 'error' && !this.#socketJoined && TOKEN_STALE.has(frame.code)
      && this.#getToken && !this.#retriedToken && (this.#state === 'connecting' || this.#rejoining)) {
      // The join was refused for its token's age: one more try with a fresh one.
      this.#retriedToken = true;
      const ws = this.#ws;
      this.#ws = null;
      try { ws.close(1000); } catch { /* closing already */ }
      clearTimeout(this.#attemptTimer);
      this.#openJoin(true);
      return;
    } else if (frame.type === 'error' && !this.#socketJoined && this.#connectWaiter) {
      // The join was refused. Reject now; the server normally closes right after.
      const waiter = this.#connectWaiter;
      this.#connectWaiter = null;
      waiter.reject(new RoomletError(`join refused: ${frame.code}: ${frame.message ?? ''}`, { code: frame.code, frame }));
      const ws = this.#ws;
      clearTimeout(this.#attemptTimer);
      this.#attemptTimer = setTimeout(() => this.#abandonSocket(ws, 1000, `join refused: ${frame.code}`), REFUSED_CLOSE_WAIT_MS);
    }
    if (FRAME_EVENTS.has(frame.type)) this.#emit(frame.type, frame);
  }

  #onJoined(frame) {
    if (this.#socketJoined) return; // one `joined` per socket; ignore anything else
    this.#socketJoined = true;
    clearTimeout(this.#attemptTimer);
    this.#attemptTimer = null;
    // After a drain the client joined afresh on another node: a new
    // session whose stream starts again at seq 1, announced as `joined`.
    const moved = this.#rejoining;
    this.#rejoining = false;
    if (moved) {
      this.#highestSeq = 0;
      this.#unacked = 0;
      // A new session, under a new peer id: what the old one sent is not
      // sent again (its signals named peers of the old session's view).
      this.#unconfirmed = this.#unconfirmed.filter((f) => this.#queue.includes(f));
    }
    const resuming = this.#state === 'reconnecting' && !moved;
    this.#joinedFrame = frame;
    this.#retriedToken = false;
    if (typeof frame.expiresAt === 'number' && frame.expiresAt > 0) {
      this.#expiresAt = frame.expiresAt;
      this.#scheduleRefresh();
    }
    if (typeof frame.peerId === 'string') this.#peerId = frame.peerId;
    // Only in the first `joined` of a socket: a replayed one never carries them.
    if (frame.media) this.#takeMedia(frame.media);
    if (typeof frame.resumeToken === 'string' && frame.resumeToken !== '') this.#resumeToken = frame.resumeToken;
    if (!resuming && typeof frame.seq === 'number') {
      // The fresh `joined` opens the stream (seq 1). A resumed `joined` is not counted:
      // the replay that follows starts at our lastSeq + 1.
      this.#highestSeq = Math.max(this.#highestSeq, frame.seq);
      this.#noteStreamFrame();
    }
    this.#reconnectAttempt = 0;
    this.#setState('joined');
    if (resuming) this.#resendUnconfirmed();
    this.#flushQueue();
    // Frames seen before the drop may not have been acked yet.
    if (this.#unacked > 0 && this.#ackTimer === null) this.#ackTimer = setTimeout(() => this.#sendAck(), ACK_EVERY_MS);
    if (resuming) {
      this.#emit('resumed', frame);
    } else {
      this.#emit('joined', frame);
      const waiter = this.#connectWaiter;
      this.#connectWaiter = null;
      if (waiter) waiter.resolve(frame);
    }
  }

  #noteStreamFrame() {
    this.#unacked += 1;
    if (this.#unacked >= ACK_EVERY_FRAMES) {
      this.#sendAck();
    } else if (this.#ackTimer === null) {
      this.#ackTimer = setTimeout(() => this.#sendAck(), ACK_EVERY_MS);
    }
  }

  #sendAck() {
    clearTimeout(this.#ackTimer);
    this.#ackTimer = null;
    if (this.#unacked === 0 || !this.#socketJoined) return; // resumed later; acked then
    if (this.#sendNow({ type: 'ack', seq: this.#highestSeq })) this.#unacked = 0;
  }

  #socketClosed(ws, code, reason) {
    if (ws !== this.#ws) return;
    this.#ws = null;
    this.#socketJoined = false;
    clearTimeout(this.#attemptTimer);
    this.#attemptTimer = null;
    clearTimeout(this.#ackTimer);
    this.#ackTimer = null;
    for (const [ts, ping] of this.#pings) {
      clearTimeout(ping.timer);
      ping.reject(new RoomletError('ping: socket closed', { closeCode: code }));
      this.#pings.delete(ts);
    }

    if (this.#state === 'connecting') {
      // The first join never completed: nothing to resume.
      this.#finish(code, reason);
      return;
    }
    // The server no longer has the session (it restarted, or the socket
    // reached a node that never held it): join afresh with the token, as
    // after a drain, instead of giving up.
    const sessionGone = code === RESUME_FAILED && this.#state === 'reconnecting' && !this.#rejoining;
    if (this.#left || !this.#reconnectEnabled || (FINAL_CLOSE_CODES.has(code) && !sessionGone) || !this.#resumeToken) {
      this.#finish(code, reason);
      return;
    }

    const now = performance.now();
    if (this.#state === 'joined') {
      this.#droppedAt = now;
      this.#reconnectAttempt = 0;
      this.#setState('reconnecting');
    }
    let delayMs;
    if (this.#redirectUrl) {
      // The node is draining and told us where to go: go there now.
      this.#url = this.#redirectUrl;
      this.#redirectUrl = null;
      // A draining node's sessions move to the node the client resumes at
      // (same peer id, nothing lost); a server that cannot move them answers
      // resume-failed, and the client joins afresh then. After `moved` the
      // session is over: join afresh at once.
      this.#rejoining = this.#redirectReason === 'moved';
      this.#redirectReason = null;
      delayMs = 0;
    } else if (sessionGone) {
      this.#rejoining = true;
      delayMs = 0;
    } else {
      delayMs = Math.min(BACKOFF_START_MS * BACKOFF_FACTOR ** this.#reconnectAttempt, BACKOFF_MAX_MS);
    }
    if (now + delayMs - this.#droppedAt > RESUME_GRACE_MS) {
      this.#finish(code, 'resume grace period elapsed');
      return;
    }
    this.#reconnectAttempt += 1;
    this.#emit('reconnecting', {
      type: 'reconnecting', attempt: this.#reconnectAttempt, delayMs, code, reason, url: this.#url,
    });
    this.#reconnectTimer = setTimeout(() => {
      this.#reconnectTimer = null;
      if (this.#state !== 'reconnecting') return;
      if (this.#rejoining) {
        this.#retriedToken = false;
        this.#openJoin(true);
      } else {
        this.#openSocket({ type: 'resume', resumeToken: this.#resumeToken, lastSeq: this.#highestSeq });
      }
    }, delayMs);
  }

  /** The session is over for good. */
  #finish(code, reason) {
    const ws = this.#ws;
    this.#ws = null;
    if (ws) { try { ws.close(1000); } catch { /* closing already */ } }
    clearTimeout(this.#attemptTimer);
    this.#attemptTimer = null;
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = null;
    clearTimeout(this.#ackTimer);
    this.#ackTimer = null;
    clearTimeout(this.#refreshTimer);
    this.#refreshTimer = null;
    clearTimeout(this.#mediaTimer);
    this.#mediaTimer = null;
    this.#queue = [];
    this.#unconfirmed = [];
    for (const pc of [...this.#statsReporters.keys()]) this.#detachPeerConnection(pc);
    const waiter = this.#connectWaiter;
    this.#connectWaiter = null;
    this.#connectPromise = null;
    this.#setState('closed');
    if (waiter) {
      waiter.reject(new RoomletError(`connection closed before joined (${code}${reason ? ` ${reason}` : ''})`, { closeCode: code }));
    }
    this.#emit('closed', { type: 'closed', code, reason: reason || '' });
  }

  #detachPeerConnection(pc) {
    const reporter = this.#statsReporters.get(pc);
    if (!reporter) return;
    clearInterval(reporter.timer);
    this.#statsReporters.delete(pc);
  }

  async #reportStats(pc, reporter) {
    if (pc.connectionState === 'closed' || pc.signalingState === 'closed') {
      this.#detachPeerConnection(pc);
      return;
    }
    if (reporter.busy || this.#state !== 'joined') return;
    reporter.busy = true;
    try {
      const figures = statsFigures(await pc.getStats());
      if (Object.keys(figures).length > 0 && this.#state === 'joined') {
        this.#sendNow({ type: 'stats', ...figures });
      }
    } catch {
      // getStats fails on a closing connection; the next tick decides.
    } finally {
      reporter.busy = false;
    }
  }
}

// ------------------------------------------------------------------- stats

function finite(x) {
  return typeof x === 'number' && Number.isFinite(x);
}

/**
 * Extract the `stats` frame figures from an RTCStatsReport.
 * @param {RTCStatsReport} report
 * @returns {object} only the figures that are present and finite.
 */
function statsFigures(report) {
  const all = [];
  report.forEach((s) => all.push(s));

  // The selected candidate pair: via the transport (Chromium), `selected` (Firefox),
  // or a nominated succeeded pair as a last resort.
  let pair = null;
  for (const s of all) {
    if (s.type === 'transport' && s.selectedCandidatePairId) {
      pair = report.get(s.selectedCandidatePairId) || null;
      if (pair) break;
    }
  }
  if (!pair) pair = all.find((s) => s.type === 'candidate-pair' && s.selected === true) || null;
  if (!pair) pair = all.find((s) => s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') || null;

  const out = {};
  if (pair && finite(pair.currentRoundTripTime)) out.rttMs = pair.currentRoundTripTime * 1000;

  let jitter = null;
  let lost = 0;
  let received = 0;
  let haveLoss = false;
  let concealed = null;
  let video = null;
  for (const s of all) {
    if (s.type !== 'inbound-rtp') continue;
    const kind = s.kind || s.mediaType;
    if (finite(s.jitter)) jitter = jitter === null ? s.jitter : Math.max(jitter, s.jitter);
    if (finite(s.packetsLost) && finite(s.packetsReceived)) {
      lost += Math.max(0, s.packetsLost); // negative with duplicates
      received += s.packetsReceived;
      haveLoss = true;
    }
    if (kind === 'audio' && finite(s.concealedSamples)) concealed = (concealed ?? 0) + s.concealedSamples;
    // With several video streams, report the one receiving the most frames.
    if (kind === 'video' && (video === null || (s.framesReceived ?? 0) > (video.framesReceived ?? 0))) video = s;
  }
  if (jitter !== null) out.jitterMs = jitter * 1000;
  if (haveLoss && lost + received > 0) out.packetLoss = Math.min(1, lost / (lost + received));
  if (video) {
    if (finite(video.framesPerSecond)) out.fps = video.framesPerSecond;
    if (finite(video.frameWidth)) out.width = video.frameWidth;
    if (finite(video.frameHeight)) out.height = video.frameHeight;
    if (finite(video.freezeCount)) out.freezeCount = video.freezeCount;
  }
  if (concealed !== null) out.concealedSamples = concealed;
  return out;
}

// ---------------------------------------------------------------- regions

/** Median round trip of `count` sequential pings on a fresh socket, in ms. */
function measureRtt(url, protocol, codec, count, timeoutMs) {
  return new Promise((resolve, reject) => {
    let ws;
    try {
      ws = new WebSocket(url, protocol);
    } catch (err) {
      reject(err);
      return;
    }
    ws.binaryType = 'arraybuffer';
    const rtts = [];
    let pending = null; // {ts, start, timer}
    let lastTs = 0;
    let done = false;
    let openTimer = null;

    const finish = (err) => {
      if (done) return;
      done = true;
      if (pending) clearTimeout(pending.timer);
      clearTimeout(openTimer);
      try { ws.close(1000); } catch { /* closing already */ }
      const ok = rtts.filter(Number.isFinite).length > 0;
      if (!ok) {
        reject(err || new RoomletError('no pong'));
        return;
      }
      // Missing answers count as infinitely slow, so they push the median up.
      while (rtts.length < count) rtts.push(Infinity);
      rtts.sort((a, b) => a - b);
      resolve(rtts[Math.floor((rtts.length - 1) / 2)]);
    };
    const next = () => {
      if (rtts.length >= count) { finish(); return; }
      const ts = nextPingTs(lastTs);
      lastTs = ts;
      pending = {
        ts,
        start: performance.now(),
        timer: setTimeout(() => { pending = null; rtts.push(Infinity); next(); }, timeoutMs),
      };
      try {
        ws.send(codec.encode({ type: 'ping', ts }));
      } catch (err) {
        finish(err);
      }
    };
    openTimer = setTimeout(() => finish(new RoomletError('open timed out')), timeoutMs);
    ws.onopen = () => { clearTimeout(openTimer); next(); };
    ws.onmessage = (ev) => {
      let frame;
      try { frame = codec.decode(ev.data); } catch { return; }
      if (!frame || frame.type !== 'pong' || !pending || frame.ts !== pending.ts) return;
      clearTimeout(pending.timer);
      rtts.push(performance.now() - pending.start);
      pending = null;
      next();
    };
    ws.onerror = () => {};
    ws.onclose = () => finish(new RoomletError('socket closed'));
  });
}

// ----------------------------------------------------------------- codecs

/** `payload`/`data` are required fields: send null rather than dropping the key. */
function toPlain(value) {
  return value === undefined ? null : value;
}

/** A ping `ts`: whole milliseconds since page load, strictly increasing (small, so it fits any integer type). */
function nextPingTs(last) {
  return Math.max(Math.floor(performance.now()), last + 1);
}

function codecFor(protocol) {
  if (typeof protocol === 'string' && protocol.endsWith('.msgpack')) return MSGPACK_CODEC;
  return JSON_CODEC;
}

const JSON_CODEC = {
  encode: (frame) => JSON.stringify(frame),
  decode: (data) => {
    if (typeof data !== 'string') throw new TypeError('binary frame on a json session');
    return JSON.parse(data);
  },
};

const MSGPACK_CODEC = {
  encode: (frame) => msgpackEncode(frame),
  decode: (data) => {
    if (typeof data === 'string') throw new TypeError('text frame on a msgpack session');
    return msgpackDecode(new Uint8Array(data));
  },
};

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder();

/** Minimal MessagePack encoder for JSON-like values. */
function msgpackEncode(value) {
  let buf = new Uint8Array(256);
  let view = new DataView(buf.buffer);
  let len = 0;
  const ensure = (n) => {
    if (len + n <= buf.length) return;
    let size = buf.length * 2;
    while (size < len + n) size *= 2;
    const bigger = new Uint8Array(size);
    bigger.set(buf.subarray(0, len));
    buf = bigger;
    view = new DataView(buf.buffer);
  };
  const u8 = (x) => { ensure(1); buf[len++] = x; };
  const u16 = (x) => { ensure(2); view.setUint16(len, x); len += 2; };
  const u32 = (x) => { ensure(4); view.setUint32(len, x); len += 4; };
  const bytes = (b) => { ensure(b.length); buf.set(b, len); len += b.length; };
  const header = (n, fix, fixMax, c8, c16, c32) => {
    if (n <= fixMax) u8(fix | n);
    else if (c8 !== null && n <= 0xff) { u8(c8); u8(n); }
    else if (n <= 0xffff) { u8(c16); u16(n); }
    else { u8(c32); u32(n); }
  };
  const write = (v) => {
    if (v === null || v === undefined) { u8(0xc0); return; }
    if (v === false) { u8(0xc2); return; }
    if (v === true) { u8(0xc3); return; }
    if (typeof v === 'number') {
      if (Number.isSafeInteger(v)) {
        if (v >= 0) {
          if (v < 0x80) u8(v);
          else if (v <= 0xff) { u8(0xcc); u8(v); }
          else if (v <= 0xffff) { u8(0xcd); u16(v); }
          else if (v <= 0xffffffff) { u8(0xce); u32(v); }
          else { u8(0xcf); ensure(8); view.setBigUint64(len, BigInt(v)); len += 8; }
        } else if (v >= -32) u8(v & 0xff);
        else if (v >= -0x80) { u8(0xd0); ensure(1); view.setInt8(len, v); len += 1; }
        else if (v >= -0x8000) { u8(0xd1); ensure(2); view.setInt16(len, v); len += 2; }
        else if (v >= -0x80000000) { u8(0xd2); ensure(4); view.setInt32(len, v); len += 4; }
        else { u8(0xd3); ensure(8); view.setBigInt64(len, BigInt(v)); len += 8; }
      } else if (Number.isFinite(v)) {
        u8(0xcb); ensure(8); view.setFloat64(len, v); len += 8;
      } else {
        u8(0xc0); // like JSON: NaN and Infinity become null
      }
      return;
    }
    if (typeof v === 'bigint') {
      if (v >= 0n) { u8(0xcf); ensure(8); view.setBigUint64(len, v); len += 8; }
      else { u8(0xd3); ensure(8); view.setBigInt64(len, v); len += 8; }
      return;
    }
    if (typeof v === 'string') {
      const b = utf8Encoder.encode(v);
      header(b.length, 0xa0, 31, 0xd9, 0xda, 0xdb);
      bytes(b);
      return;
    }
    if (v instanceof ArrayBuffer || ArrayBuffer.isView(v)) {
      const b = v instanceof ArrayBuffer ? new Uint8Array(v) : new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
      header(b.length, 0, -1, 0xc4, 0xc5, 0xc6);
      bytes(b);
      return;
    }
    if (typeof v.toJSON === 'function') { write(v.toJSON()); return; }
    if (Array.isArray(v)) {
      header(v.length, 0x90, 15, null, 0xdc, 0xdd);
      for (const item of v) write(item === undefined || typeof item === 'function' ? null : item);
      return;
    }
    if (typeof v === 'object') {
      const entries = Object.entries(v).filter(([, x]) => x !== undefined && typeof x !== 'function');
      header(entries.length, 0x80, 15, null, 0xde, 0xdf);
      for (const [k, x] of entries) { write(k); write(x); }
      return;
    }
    u8(0xc0); // functions, symbols
  };
  write(value);
  return buf.slice(0, len);
}

/** Minimal MessagePack decoder; maps become plain objects, bin becomes Uint8Array. */
function msgpackDecode(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let pos = 0;
  const need = (n) => { if (pos + n > bytes.length) throw new RangeError('msgpack: truncated'); };
  const str = (n) => { need(n); const s = utf8Decoder.decode(bytes.subarray(pos, pos + n)); pos += n; return s; };
  const bin = (n) => { need(n); const b = bytes.slice(pos, pos + n); pos += n; return b; };
  const num = (getter, size) => { need(size); const x = view[getter](pos); pos += size; return x; };
  const u64 = () => { const hi = num('getUint32', 4); const lo = num('getUint32', 4); return hi * 0x100000000 + lo; };
  const i64 = () => { const hi = num('getInt32', 4); const lo = num('getUint32', 4); return hi * 0x100000000 + lo; };
  const arr = (n) => { const a = new Array(n); for (let i = 0; i < n; i++) a[i] = read(); return a; };
  const map = (n) => {
    const o = {};
    for (let i = 0; i < n; i++) {
      const k = read();
      const v = read();
      Object.defineProperty(o, String(k), { value: v, enumerable: true, writable: true, configurable: true });
    }
    return o;
  };
  const ext = (n) => { num('getInt8', 1); bin(n); return null; };
  const read = () => {
    const b = num('getUint8', 1);
    if (b < 0x80) return b;
    if (b < 0x90) return map(b & 0x0f);
    if (b < 0xa0) return arr(b & 0x0f);
    if (b < 0xc0) return str(b & 0x1f);
    if (b >= 0xe0) return b - 0x100;
    switch (b) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: return bin(num('getUint8', 1));
      case 0xc5: return bin(num('getUint16', 2));
      case 0xc6: return bin(num('getUint32', 4));
      case 0xc7: return ext(num('getUint8', 1));
      case 0xc8: return ext(num('getUint16', 2));
      case 0xc9: return ext(num('getUint32', 4));
      case 0xca: return num('getFloat32', 4);
      case 0xcb: return num('getFloat64', 8);
      case 0xcc: return num('getUint8', 1);
      case 0xcd: return num('getUint16', 2);
      case 0xce: return num('getUint32', 4);
      case 0xcf: return u64();
      case 0xd0: return num('getInt8', 1);
      case 0xd1: return num('getInt16', 2);
      case 0xd2: return num('getInt32', 4);
      case 0xd3: return i64();
      case 0xd4: return ext(1);
      case 0xd5: return ext(2);
      case 0xd6: return ext(4);
      case 0xd7: return ext(8);
      case 0xd8: return ext(16);
      case 0xd9: return str(num('getUint8', 1));
      case 0xda: return str(num('getUint16', 2));
      case 0xdb: return str(num('getUint32', 4));
      case 0xdc: return arr(num('getUint16', 2));
      case 0xdd: return arr(num('getUint32', 4));
      case 0xde: return map(num('getUint16', 2));
      case 0xdf: return map(num('getUint32', 4));
      default: throw new RangeError(`msgpack: unknown byte 0x${b.toString(16)}`);
    }
  };
  const value = read();
  if (pos !== bytes.length) throw new RangeError('msgpack: trailing bytes');
  return value;
}
