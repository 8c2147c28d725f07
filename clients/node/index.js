"use strict";
/**
 * A small Node.js client for authsvc (authsvc.v1.AuthService), over @grpc/grpc-js and @grpc/proto-loader.
 *
 *   const { AuthClient } = require("@authsvc/client");
 *   const client = new AuthClient({ target: "localhost:50051", apiKey, credential: apiSecret });
 *   const { token } = await client.issueToken({ userId: "alice", ttlSeconds: 3600 });
 *   const { outcome, userId } = await client.verifyToken(token); // "VALID", "alice"
 *
 * Every call sends `x-api-key`; issue, revoke and clear also send `authorization: Bearer <credential>` and
 * reject with a TypeError, before any network traffic, when the client has no credential. Every call has a
 * deadline (`timeoutMs`, covering retries). Failed calls reject with AuthsvcClientError, whose `reason` (e.g.
 * "INVALID_USER_ID") is decoded from the google.rpc.ErrorInfo in the `grpc-status-details-bin` trailer.
 *
 * Retries, through gRPC's own retry policy (a service config on the channel): VerifyToken and VerifyTokens (they
 * only read) and RevokeUser, RevokeApp, RevokeToken and ClearRevocation (idempotent: revoking again never moves a
 * revocation backwards, clearing twice is harmless) are retried on UNAVAILABLE, up to `retryAttempts` attempts with
 * exponential backoff. IssueToken is never retried: a retry after a lost answer would mint a second token.
 * Nothing here logs; no secret or token is put in an error message.
 */

const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const protobuf = require("protobufjs");

const { PROTO_ROOT, PROTO_FILE, RPC_PROTOS } = require("./protos");
const LOADER_OPTIONS = Object.freeze({ keepCase: true, enums: String, longs: String, defaults: true, oneofs: true });
const OUTCOME_PREFIX = "VERIFY_OUTCOME_";
const STATUS_DETAILS_KEY = "grpc-status-details-bin";
const ERROR_INFO_TYPE = "type.googleapis.com/google.rpc.ErrorInfo";
const RETRY_INFO_TYPE = "type.googleapis.com/google.rpc.RetryInfo";
const SERVICE_NAME = "authsvc.v1.AuthService";
/** The calls that are safe to repeat; IssueToken is not among them. */
const RETRIED_METHODS = Object.freeze([
  "VerifyToken",
  "VerifyTokens",
  "RevokeUser",
  "RevokeApp",
  "RevokeToken",
  "ClearRevocation",
]);

/** Channel options for client-side round robin over every address the target resolves to. */
const ROUND_ROBIN = Object.freeze({
  "grpc.service_config": JSON.stringify({ loadBalancingConfig: [{ round_robin: {} }] }),
});

const packageDefinition = protoLoader.loadSync(PROTO_FILE, { ...LOADER_OPTIONS, includeDirs: [PROTO_ROOT] });
const AuthService = grpc.loadPackageDefinition(packageDefinition).authsvc.v1.AuthService;

const rpcRoot = new protobuf.Root();
rpcRoot.resolvePath = (origin, target) => path.resolve(RPC_PROTOS, target);
rpcRoot.loadSync(["google/rpc/status.proto", "google/rpc/error_details.proto"], { keepCase: true });
const StatusMessage = rpcRoot.lookupType("google.rpc.Status");
const ErrorInfoMessage = rpcRoot.lookupType("google.rpc.ErrorInfo");
const RetryInfoMessage = rpcRoot.lookupType("google.rpc.RetryInfo");

/** The outcomes of a verification: authsvc.v1.VerifyOutcome without the `VERIFY_OUTCOME_` prefix. */
const VerifyOutcome = Object.freeze(
  Object.fromEntries(
    packageDefinition["authsvc.v1.VerifyOutcome"].type.value
      .map(({ name }) => name.slice(OUTCOME_PREFIX.length))
      .map((name) => [name, name]),
  ),
);

const ROLE_PREFIX = "ROLE_";
const ROLE_NAMES = new Set(packageDefinition["authsvc.v1.Role"].type.value.map(({ name }) => name));

/** Who a verified token speaks for: authsvc.v1.Role without the `ROLE_` prefix. */
const Role = Object.freeze(
  Object.fromEntries([...ROLE_NAMES].map((name) => name.slice(ROLE_PREFIX.length)).map((name) => [name, name])),
);

const STATUS_NAMES = Object.fromEntries(Object.entries(grpc.status).map(([name, code]) => [code, name]));

/**
 * A failed call: the gRPC status code (number and name), the ErrorInfo reason and domain, the message, and for a rate
 * limit the milliseconds to wait before trying again (a google.rpc.RetryInfo).
 */
class AuthsvcClientError extends Error {
  constructor({ code, reason, message, domain = "", metadata = {}, retryAfterMs = null }) {
    super(`${STATUS_NAMES[code] || code} ${reason || "(no reason)"}: ${message}`);
    this.name = "AuthsvcClientError";
    /** @type {number} the gRPC status code, as in grpc.status */
    this.code = code;
    /** @type {string} e.g. "INVALID_ARGUMENT" */
    this.codeName = STATUS_NAMES[code] || String(code);
    /** @type {string} the ErrorInfo reason, e.g. "INVALID_USER_ID"; "" when the status carried none */
    this.reason = reason;
    /** @type {string} the ErrorInfo domain, "authsvc" for authsvc's own errors */
    this.domain = domain;
    /** @type {Record<string, string>} the ErrorInfo metadata */
    this.metadata = metadata;
    /** @type {string} the status message, meant for people */
    this.details = message;
    /**
     * @type {number | null} milliseconds to wait before a retry may succeed, when the server said so (a rate limit:
     * RESOURCE_EXHAUSTED GUEST_RATE_LIMITED); null otherwise
     */
    this.retryAfterMs = retryAfterMs;
  }

  /** Decodes a grpc-js ServiceError, reading the google.rpc.Status from the `grpc-status-details-bin` trailer. */
  static fromServiceError(error) {
    const message = error.details || error.message || "";
    const values = error.metadata ? error.metadata.get(STATUS_DETAILS_KEY) : [];
    for (const value of values) {
      let status;
      try {
        status = StatusMessage.decode(Buffer.isBuffer(value) ? value : Buffer.from(String(value), "base64"));
      } catch {
        continue;
      }
      let info = null;
      let retryAfterMs = null;
      for (const detail of status.details || []) {
        try {
          if (detail.type_url === ERROR_INFO_TYPE && info === null) info = ErrorInfoMessage.decode(detail.value);
          else if (detail.type_url === RETRY_INFO_TYPE && retryAfterMs === null) {
            retryAfterMs = retryDelayMs(RetryInfoMessage.decode(detail.value));
          }
        } catch {
          // a malformed detail: left out rather than a crash
        }
      }
      if (info !== null) {
        return new AuthsvcClientError({
          code: error.code,
          reason: info.reason,
          message: status.message || message,
          domain: info.domain,
          metadata: { ...info.metadata },
          retryAfterMs,
        });
      }
      if (retryAfterMs !== null) return new AuthsvcClientError({ code: error.code, reason: "", message, retryAfterMs });
    }
    return new AuthsvcClientError({ code: error.code, reason: "", message });
  }
}

/** A RetryInfo's delay in milliseconds, or null when it has none (or a negative one, which says nothing usable). */
function retryDelayMs(retryInfo) {
  const delay = RetryInfoMessage.toObject(retryInfo, { longs: Number }).retry_delay;
  if (!delay) return null;
  const seconds = Number(delay.seconds || 0);
  const nanos = Number(delay.nanos || 0);
  if (!(seconds >= 0 && nanos >= 0)) return null;
  return seconds * 1000 + nanos / 1e6;
}

class AuthClient {
  /**
   * @param {object} options
   * @param {string} options.target host:port, or any gRPC target such as dns:///authsvc-headless.ns.svc.cluster.local:50051
   * @param {string} options.apiKey the app's API key, sent as `x-api-key` on every call
   * @param {string} [options.credential] the API secret or a server token, for issue, revoke and clear
   * @param {number} [options.timeoutMs=5000] the deadline of each call, retries included
   * @param {number} [options.retryAttempts=3] attempts of the retried calls on UNAVAILABLE (1: no retry; at most 5)
   * @param {import("@grpc/grpc-js").ChannelCredentials} [options.channelCredentials] default: insecure (plaintext)
   * @param {object} [options.channelOptions] gRPC channel options, e.g. ROUND_ROBIN
   */
  constructor({ target, apiKey, credential, timeoutMs = 5000, retryAttempts = 3, channelCredentials, channelOptions = {} }) {
    if (!target) throw new TypeError("target is empty; pass host:port of authsvc");
    if (!apiKey) throw new TypeError("apiKey is empty; pass the app's API key");
    if (!(timeoutMs > 0)) throw new TypeError("timeoutMs must be a positive number");
    if (!Number.isInteger(retryAttempts) || retryAttempts < 1 || retryAttempts > 5) {
      throw new TypeError("retryAttempts must be an integer from 1 to 5");
    }
    this.target = target;
    this.timeoutMs = timeoutMs;
    Object.defineProperty(this, "_apiKey", { value: apiKey, enumerable: false });
    Object.defineProperty(this, "_credential", { value: credential || null, enumerable: false });
    this._client = new AuthService(
      target,
      channelCredentials || grpc.credentials.createInsecure(),
      withRetryPolicy(channelOptions, retryAttempts),
    );
  }

  /**
   * Mints a token for a user (IssueToken). Needs the credential.
   * @param {{userId: string, ttlSeconds?: number, expiresAt?: Date, claims?: Record<string, unknown>}} request
   * @returns {Promise<{token: string, issuedAt: Date, expiresAt: Date | null, keyId: string}>}
   */
  async issueToken({ userId, ttlSeconds, expiresAt, claims } = {}) {
    if (ttlSeconds !== undefined && expiresAt !== undefined) throw new TypeError("pass ttlSeconds or expiresAt, not both");
    const request = { user_id: userId ?? "" };
    if (ttlSeconds !== undefined) request.ttl = duration(ttlSeconds);
    if (expiresAt !== undefined) request.expires_at = timestamp(expiresAt);
    if (claims !== undefined) request.claims = toStruct(claims);
    const response = await this._call("IssueToken", request, true);
    return {
      token: response.token,
      issuedAt: toDate(response.issued_at),
      expiresAt: toDate(response.expires_at),
      keyId: response.key_id,
    };
  }

  /**
   * Mints a guest token (IssueGuestToken). Needs only the API key, and the app's guest_access on. Never retried.
   * @param {{userId?: string, name?: string}} [request] userId: the guest's id without the `guest-` prefix
   *   (empty: a random one); name: a display name, carried as the `name` claim
   * @returns {Promise<{token: string, userId: string, issuedAt: Date, expiresAt: Date | null, keyId: string}>}
   */
  async issueGuestToken({ userId, name } = {}) {
    const response = await this._call("IssueGuestToken", { user_id: userId ?? "", name: name ?? "" }, false);
    return {
      token: response.token,
      userId: response.user_id,
      issuedAt: toDate(response.issued_at),
      expiresAt: toDate(response.expires_at),
      keyId: response.key_id,
    };
  }

  /**
   * Verifies a token (VerifyToken). Needs only the API key. An outcome is an answer, not an error.
   * @param {string} token
   * @returns {Promise<Verification>}
   */
  async verifyToken(token) {
    return verification(await this._call("VerifyToken", { token }, false));
  }

  /**
   * Verifies 1 to 1,000 tokens in one call (VerifyTokens), answering in order.
   * @param {string[]} tokens
   * @returns {Promise<Verification[]>}
   */
  async verifyTokens(tokens) {
    const response = await this._call("VerifyTokens", { tokens: list(tokens, "tokens") }, false);
    return response.results.map(verification);
  }

  /**
   * Revokes the tokens of 1 to 1,000 users issued before `before` (default now). Needs the credential.
   * @param {string[]} userIds
   * @param {{before?: Date}} [options]
   * @returns {Promise<Map<string, Date>>} the revocation in force per user, in request order
   */
  async revokeUsers(userIds, { before } = {}) {
    const request = { user_ids: list(userIds, "userIds") };
    if (before !== undefined) request.revoke_before = timestamp(before);
    const response = await this._call("RevokeUser", request, true);
    return new Map(response.revocations.map((r) => [r.user_id, toDate(r.revoked_before)]));
  }

  /**
   * Revokes every token of the app issued before `before` (default now), and tokens without `iat`.
   * @param {{before?: Date}} [options]
   * @returns {Promise<Date>} the app's revocation in force
   */
  async revokeApp({ before } = {}) {
    const request = before !== undefined ? { revoke_before: timestamp(before) } : {};
    return toDate((await this._call("RevokeApp", request, true)).revoked_before);
  }

  /**
   * Revokes one token (one device) by its jti, given the token itself or `{ jti }`: every encoding of it is REVOKED
   * until it expires. Needs the credential. A token without jti is refused (FAILED_PRECONDITION TOKEN_WITHOUT_JTI):
   * revoke its user instead.
   * @param {string | {jti: string}} target
   * @returns {Promise<{jti: string, revokedBefore: Date, expiresAt: Date | null}>}
   */
  async revokeToken(target) {
    let request;
    if (typeof target === "string") request = { token: target };
    else if (target && typeof target.jti === "string") request = { jti: target.jti };
    else throw new TypeError("revokeToken takes a token (a string) or { jti }");
    const response = await this._call("RevokeToken", request, true);
    return { jti: response.jti, revokedBefore: toDate(response.revoked_before), expiresAt: toDate(response.expires_at) };
  }

  /**
   * Removes the revocation of these tokens, by jti. Needs the credential.
   * @param {string[]} jtis
   * @returns {Promise<string[]>} the jtis that had one
   */
  async clearTokenRevocations(jtis) {
    const response = await this._call("ClearRevocation", { tokens: { jtis: list(jtis, "jtis") } }, true);
    return response.cleared_jtis;
  }

  /**
   * Removes the revocation of these users. Needs the credential.
   * @param {string[]} userIds
   * @returns {Promise<string[]>} the users that had one
   */
  async clearUserRevocations(userIds) {
    const response = await this._call("ClearRevocation", { users: { user_ids: list(userIds, "userIds") } }, true);
    return response.cleared_user_ids;
  }

  /**
   * Removes the app's revocation. Needs the credential.
   * @returns {Promise<boolean>} true when there was one
   */
  async clearAppRevocation() {
    return (await this._call("ClearRevocation", { app: true }, true)).app_cleared;
  }

  /** Closes the channel. */
  close() {
    this._client.close();
  }

  _call(method, request, authorized) {
    const metadata = new grpc.Metadata();
    metadata.set("x-api-key", this._apiKey);
    if (authorized) {
      if (!this._credential) {
        return Promise.reject(
          new TypeError(
            `${method} needs the app's credential (its API secret or a server token): pass credential to AuthClient`,
          ),
        );
      }
      metadata.set("authorization", `Bearer ${this._credential}`);
    }
    const deadline = new Date(Date.now() + this.timeoutMs);
    return new Promise((resolve, reject) => {
      this._client[method](request, metadata, { deadline }, (error, response) => {
        if (error) reject(AuthsvcClientError.fromServiceError(error));
        else resolve(response);
      });
    });
  }
}

/**
 * The channel options with a service config whose retry policy covers RETRIED_METHODS. A service config given in
 * `grpc.service_config` (e.g. ROUND_ROBIN) is kept; one that already has a methodConfig is left as it is.
 */
function withRetryPolicy(channelOptions, attempts) {
  const given = channelOptions["grpc.service_config"];
  const config = given ? JSON.parse(given) : {};
  if (attempts > 1 && !config.methodConfig) {
    config.methodConfig = [
      {
        name: RETRIED_METHODS.map((method) => ({ service: SERVICE_NAME, method })),
        retryPolicy: {
          maxAttempts: attempts,
          initialBackoff: "0.1s",
          maxBackoff: "1s",
          backoffMultiplier: 2,
          retryableStatusCodes: ["UNAVAILABLE"],
        },
      },
    ];
  }
  return { ...channelOptions, "grpc.service_config": JSON.stringify(config) };
}

/**
 * @typedef {object} Verification
 * @property {string} outcome one of VerifyOutcome: "VALID", "MALFORMED", ..., "REVOKED"
 * @property {boolean} valid
 * @property {string | null} userId
 * @property {Date | null} issuedAt
 * @property {Date | null} expiresAt
 * @property {Record<string, unknown>} claims
 * @property {boolean} devToken
 * @property {string | null} revokedBy for REVOKED: "APP", "USER" or "TOKEN" (which revocation decided)
 * @property {Date | null} revokedBefore for REVOKED: the deciding revocation's time
 * @property {Date | null} validFrom for NOT_YET_VALID: from when the token is valid
 * @property {string | null} clientAction for every outcome but VALID: "REFRESH", "LOGOUT" or "RETRY_LATER"
 * @property {string} role one of Role: "USER", "GUEST", "ANONYMOUS" (an empty token), or "UNSPECIFIED"
 */
function verification(response) {
  const outcome = String(response.outcome);
  return {
    outcome: outcome.startsWith(OUTCOME_PREFIX) ? outcome.slice(OUTCOME_PREFIX.length) : "UNSPECIFIED",
    valid: response.valid,
    userId: response.user_id || null,
    issuedAt: toDate(response.issued_at),
    expiresAt: toDate(response.expires_at),
    claims: response.claims ? fromStruct(response.claims) : {},
    devToken: response.dev_token,
    revokedBy: unprefixed(response.revoked_by, "REVOCATION_SCOPE_"),
    revokedBefore: toDate(response.revoked_before),
    validFrom: toDate(response.valid_from),
    clientAction: unprefixed(response.client_action, "CLIENT_ACTION_"),
    role: ROLE_NAMES.has(String(response.role)) ? String(response.role).slice(ROLE_PREFIX.length) : "UNSPECIFIED",
  };
}

/** An enum's name without its prefix; null when unset; "UNSPECIFIED" for a number this client does not know. */
function unprefixed(value, prefix) {
  const name = String(value);
  if (name === `${prefix}UNSPECIFIED` || value === 0 || value === undefined || value === null) return null;
  return name.startsWith(prefix) ? name.slice(prefix.length) : "UNSPECIFIED";
}

function list(values, name) {
  if (!Array.isArray(values)) throw new TypeError(`${name} must be an array of strings`);
  return values;
}

function duration(seconds) {
  if (!Number.isFinite(seconds)) throw new TypeError("ttlSeconds must be a finite number");
  const whole = Math.trunc(seconds);
  return { seconds: String(whole), nanos: Math.round((seconds - whole) * 1e9) };
}

function timestamp(date) {
  if (!(date instanceof Date) || Number.isNaN(date.getTime())) throw new TypeError("times must be valid Date objects");
  const millis = date.getTime();
  const seconds = Math.floor(millis / 1000);
  return { seconds: String(seconds), nanos: (millis - seconds * 1000) * 1e6 };
}

/** A Timestamp as a Date (millisecond precision), or null when unset. */
function toDate(stamp) {
  if (!stamp) return null;
  return new Date(Number(stamp.seconds) * 1000 + Math.floor(stamp.nanos / 1e6));
}

function toValue(value) {
  if (value === null || value === undefined) return { nullValue: "NULL_VALUE" };
  if (typeof value === "number") return { numberValue: value };
  if (typeof value === "string") return { stringValue: value };
  if (typeof value === "boolean") return { boolValue: value };
  if (Array.isArray(value)) return { listValue: { values: value.map(toValue) } };
  if (typeof value === "object") return { structValue: toStruct(value) };
  throw new TypeError(`claims can hold JSON values only, not ${typeof value}`);
}

function toStruct(object) {
  if (object === null || typeof object !== "object" || Array.isArray(object)) {
    throw new TypeError("claims must be a plain object");
  }
  return { fields: Object.fromEntries(Object.entries(object).map(([key, value]) => [key, toValue(value)])) };
}

function fromValue(value) {
  switch (value.kind) {
    case "numberValue":
      return value.numberValue;
    case "stringValue":
      return value.stringValue;
    case "boolValue":
      return value.boolValue;
    case "structValue":
      return fromStruct(value.structValue);
    case "listValue":
      return (value.listValue.values || []).map(fromValue);
    default:
      return null;
  }
}

function fromStruct(struct) {
  // Object.fromEntries makes own properties, so a claim named "__proto__" stays a plain claim.
  return Object.fromEntries(Object.entries(struct.fields || {}).map(([key, value]) => [key, fromValue(value)]));
}

module.exports = { AuthClient, AuthsvcClientError, VerifyOutcome, Role, ROUND_ROBIN, RETRIED_METHODS, status: grpc.status };
// The LocalVerifier (local_verifier.js, which requires this file) is loaded on first use.
Object.defineProperty(module.exports, "LocalVerifier", {
  enumerable: true,
  get: () => require("./local_verifier").LocalVerifier,
});

// The web-stack middleware (middleware.js): bearerAuth and tokenProvider.
Object.assign(module.exports, require("./middleware"));
