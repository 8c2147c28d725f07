"use strict";
/**
 * LocalVerifier: an app's tokens verified in this process, with no round trip; the twin of the Python
 * authsvc.client.LocalVerifier (authsvc/local_verifier.py).
 *
 *   const verifier = new LocalVerifier({ target: "localhost:50051", apiKey, credential: apiSecret, hs256Secret: apiSecret });
 *   await verifier.start();                  // once the first snapshot is loaded
 *   const { outcome, userId } = verifier.verify(token); // synchronous, no I/O; "UNAVAILABLE" past maxLag
 *   await verifier.close();
 *
 * It follows the app's state over AuthService.WatchState (a snapshot, then each change, then heartbeats) and runs
 * authsvc's token rules on it (tokens.js, jws.js, keys.js: the rules of authsvc/tokens.py, jws.py, keys.py, checked
 * against the server by the shared conformance vectors). Nothing here logs; no secret or token is put in an error.
 */

const { performance } = require("node:perf_hooks");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const { RevocationSet } = require("./revocations");
const tokens = require("./tokens");
const { Verifier } = require("./verifier");
const wire = require("./watch_wire");

const { PROTO_ROOT, PROTO_FILE } = require("./protos");
// As index.js loads it: the messages reach the handler as grpc-js hands them to any client of this package.
const LOADER_OPTIONS = Object.freeze({ keepCase: true, enums: String, longs: String, defaults: true, oneofs: true });
const WATCH_STATE = protoLoader.loadSync(PROTO_FILE, { ...LOADER_OPTIONS, includeDirs: [PROTO_ROOT] })[
  "authsvc.v1.AuthService"
].WatchState;

/** Codes after which a first connection will not succeed by trying again: start() rejects with them. */
const FATAL_AT_START = new Set([
  grpc.status.UNAUTHENTICATED,
  grpc.status.PERMISSION_DENIED,
  grpc.status.NOT_FOUND,
  grpc.status.INVALID_ARGUMENT,
  grpc.status.UNIMPLEMENTED,
]);

const UNAVAILABLE = Object.freeze(tokens.verdict(tokens.Outcome.UNAVAILABLE));

/** Seconds on a monotonic clock: lag is measured with it, never with the wall clock (which may jump). */
function monotonic() {
  return performance.now() / 1000;
}

/** The wall clock in microseconds since the epoch. */
function systemClock() {
  return Date.now() * 1000;
}

/** A time in microseconds as a Date (millisecond precision, as AuthClient's), or null. */
function toDate(micros) {
  return micros === null ? null : new Date((micros - (micros % 1000)) / 1000);
}

/** The Verification of a verdict: the shape AuthClient.verifyToken answers. */
function verification(verdict) {
  return {
    outcome: verdict.outcome,
    valid: verdict.outcome === "VALID",
    userId: verdict.userId || null,
    issuedAt: toDate(verdict.issuedAt),
    expiresAt: toDate(verdict.expiresAt),
    claims: verdict.claims,
    devToken: verdict.devToken,
    revokedBy: verdict.revokedBy,
    revokedBefore: toDate(verdict.revokedBefore),
    validFrom: toDate(verdict.validFrom),
    clientAction: verdict.clientAction,
    role: verdict.role,
  };
}

/** A TokenRevocations message's (jti, revoked at) pairs into `target` (a Map); TypeError for a broken one. */
function addTokenRevocations(target, revocations) {
  if (!revocations) return;
  const { jtis, revoked_before: times } = revocations;
  if (jtis.length !== times.length) throw new TypeError("a token revocation without its time");
  for (let i = 0; i < jtis.length; i++) target.set(jtis[i], Number(times[i]));
}

function positive(value, name) {
  if (typeof value !== "number" || !(value > 0) || !Number.isFinite(value)) {
    throw new TypeError(`${name} must be a positive number of seconds`);
  }
  return value;
}

// Loaded when first needed: index.js requires this file lazily too, so either may be loaded first.
function clientError(fields) {
  const { AuthsvcClientError } = require("./index");
  return new AuthsvcClientError(fields);
}

function fromServiceError(error) {
  const { AuthsvcClientError } = require("./index");
  return AuthsvcClientError.fromServiceError(error);
}

/**
 * Verifies the tokens of one app in this process, with authsvc's token rules, on a copy of the app's state that the
 * WatchState stream keeps current (revocations arrive within milliseconds).
 *
 * `credential` (the API secret or a server token) opens the stream. For an HS256 app, `hs256Secret` is the API
 * secret that signs its tokens (or several, during a rotation): the stream never carries a secret, only a
 * fingerprint that says whether the configured one is still accepted, and until when. EdDSA and ES256 apps need
 * none: the stream carries their public keys.
 *
 * `verify(token)` is synchronous and does no I/O. When the copy is older than `maxLag` seconds (no message, not even
 * a heartbeat, since), it fails closed: outcome "UNAVAILABLE". The stream reconnects by itself with jittered
 * backoff and resumes from `version`.
 */
class LocalVerifier {
  /**
   * @param {object} options
   * @param {string} options.target host:port of authsvc, or any gRPC target
   * @param {string} options.apiKey the app's API key
   * @param {string} options.credential the API secret or a server token: it opens the stream
   * @param {string | string[]} [options.hs256Secret] HS256 apps: the API secret(s) that sign the app's tokens
   * @param {number} [options.maxLag=10] seconds; past it, verify answers "UNAVAILABLE"
   * @param {number} [options.cacheSize=10000] tokens whose signature checked out, remembered
   * @param {number} [options.startTimeout=30] seconds start() waits for the first snapshot
   * @param {number} [options.reconnectBackoff=0.1] seconds before the first reconnection (jittered, doubling)
   * @param {number} [options.reconnectMaxBackoff=5] seconds, the longest wait between reconnections
   * @param {import("@grpc/grpc-js").ChannelCredentials} [options.channelCredentials] default: insecure (plaintext)
   * @param {object} [options.channelOptions] gRPC channel options
   * @param {() => number} [options.clock] now, in microseconds since the epoch (default: the wall clock)
   */
  constructor({
    target,
    apiKey,
    credential,
    hs256Secret,
    maxLag = 10,
    cacheSize = 10_000,
    startTimeout = 30,
    reconnectBackoff = 0.1,
    reconnectMaxBackoff = 5,
    channelCredentials,
    channelOptions = {},
    clock = systemClock,
  } = {}) {
    if (!target) throw new TypeError("target is empty; pass host:port of authsvc");
    if (!apiKey) throw new TypeError("apiKey is empty; pass the app's API key");
    if (!credential) throw new TypeError("credential is empty; pass the app's API secret or a server token");
    const secrets = hs256Secret === undefined || hs256Secret === null ? [] : [].concat(hs256Secret);
    if (!secrets.every((value) => typeof value === "string" && value.length > 0)) {
      throw new TypeError("hs256Secret must be a non-empty string or an array of them");
    }
    positive(maxLag, "maxLag");
    positive(startTimeout, "startTimeout");
    positive(reconnectBackoff, "reconnectBackoff");
    if (positive(reconnectMaxBackoff, "reconnectMaxBackoff") < reconnectBackoff) {
      throw new TypeError("reconnectMaxBackoff must be at least reconnectBackoff");
    }
    if (!Number.isInteger(cacheSize) || cacheSize < 0) throw new TypeError("cacheSize must be a whole number");
    if (typeof clock !== "function") throw new TypeError("clock must be a function returning microseconds");
    this.target = target;
    this.apiKey = apiKey;
    // Not enumerable: a console.log of the verifier shows neither the credential nor the secrets.
    Object.defineProperty(this, "_credential", { value: credential, enumerable: false });
    Object.defineProperty(this, "_secrets", { value: Object.freeze(secrets), enumerable: false });
    this._maxLag = maxLag;
    this._startTimeout = startTimeout;
    this._initialBackoff = reconnectBackoff;
    this._maxBackoff = reconnectMaxBackoff;
    this._backoff = reconnectBackoff;
    this._clock = clock;
    this._channel = { credentials: channelCredentials || grpc.credentials.createInsecure(), options: channelOptions };
    this._verifier = new Verifier(cacheSize);
    this._listeners = [];
    this._client = null;
    this._call = null;
    this._retryTimer = null;
    this._starting = null; // {resolve, reject, timer} while start() waits
    this._started = false;
    this._closed = false;
    // The state: replaced as a whole by a snapshot, changed in place by changes; read by verify().
    this._app = null;
    this._leeway = 0;
    this._revocations = RevocationSet.builder().build();
    /** @type {Map<string, number>} token revocations (RevokeToken): jti → when revoked, in microseconds */
    this._tokenRevocations = new Map();
    this._version = 0;
    this._confirmedAt = -Infinity;
    this._pending = null; // a snapshot being received: {state, fresh, builder}
    /** Why the stream last failed (an AuthsvcClientError), or null: for logs and health checks. */
    this.lastError = null;
    // A user's revocation time, or null when it does not apply to a token issued at `issuedAt`: none does when every
    // revocation held is older (so a token verified as soon as it is issued costs no look-up).
    this._revokedBefore = (userId, issuedAt) => this._revocations.revoking(userId, issuedAt);
    // For a token verified the first time (most of them never again), whose user's answer is not worth keeping.
    this._revokedBeforeOnce = (userId, issuedAt) => this._revocations.revoking(userId, issuedAt, false);
    this._tokenRevokedAt = (jti) => this._tokenRevocations.get(jti) ?? null;
  }

  /** The state version held: for monitoring only (0 before the first snapshot). */
  get version() {
    return this._version;
  }

  /** Seconds since the state held was last known current (Infinity before the first snapshot). */
  get lag() {
    return monotonic() - this._confirmedAt;
  }

  /**
   * Calls `callback({userIds, app, resync, jtis})` for each revocation as it arrives: `userIds` names revoked users
   * (as far as the server could tell), `jtis` revoked tokens (RevokeToken: one device each), `app` is true when the
   * whole app was revoked, `resync` when changes were missed
   * (a fresh snapshot after a reconnection: verify the open connections again). A callback that throws (or
   * rejects) is reported as a process warning; the stream goes on. Returns a function that removes the callback.
   */
  onRevoked(callback) {
    if (typeof callback !== "function") throw new TypeError("onRevoked takes a function");
    this._listeners.push(callback);
    return () => {
      this._listeners = this._listeners.filter((listener) => listener !== callback);
    };
  }

  /** onRevoked under the name the issue and the Python SDK give it (`on_revoked`). */
  on_revoked(callback) {
    return this.onRevoked(callback);
  }

  /**
   * Opens the stream; resolves once the first snapshot is loaded. Rejects with AuthsvcClientError when the server
   * refuses the credential or the app (UNAUTHENTICATED, PERMISSION_DENIED, NOT_FOUND: no retry would help) or with
   * code UNAVAILABLE when no snapshot came within startTimeout; with TypeError when the app signs with HS256 and
   * none of the hs256Secret given is one it accepts (every token would be refused).
   * @returns {Promise<void>}
   */
  async start() {
    if (this._started || this._closed) throw new Error("a LocalVerifier starts once; make a new one");
    this._started = true;
    this._client = new grpc.Client(this.target, this._channel.credentials, this._channel.options);
    try {
      await new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          const cause = this.lastError ? `: ${this.lastError.message}` : "";
          reject(
            clientError({
              code: grpc.status.UNAVAILABLE,
              reason: "",
              message: `no state from ${this.target} within ${this._startTimeout}s${cause}`,
            }),
          );
        }, this._startTimeout * 1000);
        this._starting = { resolve, reject, timer };
        this._connect();
      });
    } catch (error) {
      await this.close();
      throw error;
    } finally {
      if (this._starting) clearTimeout(this._starting.timer);
      this._starting = null;
    }
    const app = this._app;
    if (app !== null && app.algorithm === tokens.HS256 && app.secrets.length === 0) {
      await this.close();
      throw new TypeError(
        "this app signs its tokens with HS256: pass its API secret as hs256Secret (none given, or not one the app accepts)",
      );
    }
  }

  /** Stops following the state (verify answers "UNAVAILABLE" once maxLag passes) and closes the channel. */
  async close() {
    this._closed = true;
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    const call = this._call;
    this._call = null;
    if (call !== null) call.cancel();
    if (this._starting) {
      this._starting.reject(clientError({ code: grpc.status.CANCELLED, reason: "", message: "the LocalVerifier was closed" }));
    }
    if (this._client !== null) {
      this._client.close();
      this._client = null;
    }
  }

  /**
   * authsvc's verdict on `token` for this app, reached here, now: the same shape as AuthClient.verifyToken's
   * Verification (claims are frozen: the calls that verify one token share them). Outcome "UNAVAILABLE" when the
   * state held is older than maxLag.
   * @param {string} token
   */
  verify(token) {
    return verification(this._check(token));
  }

  /** The verdict, its times in microseconds (what the conformance vectors compare). */
  _check(token) {
    const app = this._app;
    if (app === null || monotonic() - this._confirmedAt > this._maxLag) return UNAVAILABLE;
    // The token revocations are asked (one Map look-up by jti) only when the app has some.
    const tokenRevokedAt = this._tokenRevocations.size === 0 ? null : this._tokenRevokedAt;
    return this._verifier.verify(
      token,
      app,
      this._clock(),
      this._leeway,
      this._revokedBefore,
      tokenRevokedAt,
      this._revokedBeforeOnce,
    );
  }

  _connect() {
    if (this._closed) return;
    const metadata = new grpc.Metadata();
    metadata.set("x-api-key", this.apiKey);
    metadata.set("authorization", `Bearer ${this._credential}`);
    const request = this._app !== null ? { from_version: String(this._version) } : {};
    const call = this._client.makeServerStreamRequest(
      WATCH_STATE.path,
      WATCH_STATE.requestSerialize,
      WATCH_STATE.responseDeserialize,
      request,
      metadata,
    );
    this._call = call;
    call.on("data", (message) => {
      if (this._call !== call) return;
      try {
        this._receive(message);
        this._backoff = this._initialBackoff;
      } catch (error) {
        // A message that does not decode (a key that does not load): start over, from the version held.
        this.lastError = clientError({ code: grpc.status.INTERNAL, reason: "", message: `undecodable state: ${error.message}` });
        this._pending = null;
        this._call = null;
        call.cancel();
        this._retry();
      }
    });
    call.on("error", () => {}); // its status comes as the "status" event too
    call.on("status", (status) => {
      if (this._call !== call) return;
      this._call = null;
      if (status.code !== grpc.status.OK) this.lastError = fromServiceError(status);
      if (this._starting && FATAL_AT_START.has(status.code)) {
        this._starting.reject(this.lastError);
        return;
      }
      this._retry();
    });
  }

  _retry() {
    if (this._closed) return;
    // Jittered, so that the watchers of a server that went away do not all come back at once.
    const wait = this._backoff * (0.5 + Math.random() / 2);
    this._backoff = Math.min(this._backoff * 2, this._maxBackoff);
    this._retryTimer = setTimeout(() => {
      this._retryTimer = null;
      this._connect();
    }, wait * 1000);
  }

  /** Applies one WatchStateResponse (as grpc-js hands it). */
  _receive(message) {
    if (message.event === "snapshot") {
      if (!this._snapshotChunk(message.snapshot)) return; // more chunks to come: the state held is unchanged
    } else if (message.event === "change") {
      this._change(message.change);
    }
    this._version = Number(message.version);
    this._confirmedAt = monotonic() - wire.seconds(message.staleness);
  }

  _snapshotChunk(chunk) {
    if (chunk.app) {
      this._pending = { state: chunk.app, fresh: chunk.fresh, builder: RevocationSet.builder(), revokedTokens: new Map() };
    }
    if (this._pending === null) throw new TypeError("a snapshot chunk without its first");
    const { state, fresh, builder, revokedTokens } = this._pending;
    builder.add(chunk.user_hashes, chunk.revoked_before);
    addTokenRevocations(revokedTokens, chunk.token_revocations);
    if (!chunk.last) return false;
    this._pending = null;
    const previous = this._app;
    this._setApp(state);
    this._revocations = builder.build();
    this._tokenRevocations = revokedTokens;
    if (fresh && previous !== null) this._tell({ userIds: [], app: false, resync: true });
    else if (previous !== null) this._tellAppRevoked(previous);
    if (this._starting) this._starting.resolve();
    return true;
  }

  _change(change) {
    if (change.change === "app") {
      const previous = this._app;
      this._setApp(change.app);
      this._tellAppRevoked(previous);
    } else if (change.change === "revoked") {
      const { user_hashes: hashes, revoked_before: times, user_ids: userIds } = change.revoked;
      if (hashes.length !== times.length) throw new TypeError("a revocation without its times");
      for (let i = 0; i < hashes.length; i++) this._revocations.set(hashes[i], times[i]);
      this._tell({ userIds: [...userIds], app: false, resync: false });
    } else if (change.change === "cleared") {
      for (const hash of change.cleared.user_hashes) this._revocations.remove(hash);
    } else if (change.change === "tokens_revoked") {
      addTokenRevocations(this._tokenRevocations, change.tokens_revoked);
      this._tell({ userIds: [], app: false, resync: false, jtis: [...change.tokens_revoked.jtis] });
    } else if (change.change === "tokens_cleared") {
      for (const jti of change.tokens_cleared.jtis) this._tokenRevocations.delete(jti);
    }
  }

  _setApp(state) {
    this._app = wire.appFromState(state, this._secrets);
    this._leeway = wire.leewayOf(state);
  }

  _tellAppRevoked(previous) {
    const now = this._app !== null ? this._app.revokedBefore : null;
    const before = previous !== null ? previous.revokedBefore : null;
    if (now !== null && (before === null || now > before)) this._tell({ userIds: [], app: true, resync: false });
  }

  _tell(event) {
    if (event.jtis === undefined) event.jtis = [];
    Object.freeze(event.jtis);
    Object.freeze(event.userIds);
    Object.freeze(event);
    for (const callback of this._listeners) {
      try {
        const result = callback(event);
        if (result && typeof result.then === "function") result.then(undefined, reportCallbackError);
      } catch (error) {
        reportCallbackError(error);
      }
    }
  }
}

// The caller's bug: visible (a process warning), and the stream goes on.
function reportCallbackError(error) {
  process.emitWarning(`LocalVerifier onRevoked callback failed: ${error && error.stack ? error.stack : error}`);
}

module.exports = { LocalVerifier };
