"use strict";
/**
 * The token model of authsvc (shared/TOKEN_MODEL.md, docs/token-model.md) as pure functions: the twin of the
 * verifying half of authsvc/tokens.py, check for check and in the same order. No I/O, no gRPC.
 *
 * Times are microseconds since the Unix epoch, as Numbers (exact below 2**53, i.e. until the year 2255).
 */

const crypto = require("node:crypto");
const jws = require("./jws");
const keys = require("./keys");

/** The verdicts of a verification: authsvc.v1.VerifyOutcome without the `VERIFY_OUTCOME_` prefix. */
const Outcome = Object.freeze({
  VALID: "VALID",
  MALFORMED: "MALFORMED",
  INVALID_SIGNATURE: "INVALID_SIGNATURE",
  UNKNOWN_KEY: "UNKNOWN_KEY",
  EXPIRED: "EXPIRED",
  NOT_YET_VALID: "NOT_YET_VALID",
  WRONG_AUDIENCE: "WRONG_AUDIENCE",
  REVOKED: "REVOKED",
  UNAVAILABLE: "UNAVAILABLE",
  ANONYMOUS_DISABLED: "ANONYMOUS_DISABLED",
});

/** Which revocation rejected a REVOKED token: authsvc.v1.RevocationScope without its prefix. */
const RevocationScope = Object.freeze({ APP: "APP", USER: "USER", TOKEN: "TOKEN" });

/** What a chat client should do with a refused token: authsvc.v1.ClientAction without its prefix. */
const ClientAction = Object.freeze({ REFRESH: "REFRESH", LOGOUT: "LOGOUT", RETRY_LATER: "RETRY_LATER" });

/** The client action of every outcome but VALID (authsvc/tokens.py CLIENT_ACTIONS); UNAVAILABLE: retry later. */
const CLIENT_ACTIONS = Object.freeze({
  EXPIRED: ClientAction.REFRESH,
  NOT_YET_VALID: ClientAction.RETRY_LATER,
  REVOKED: ClientAction.LOGOUT,
  INVALID_SIGNATURE: ClientAction.LOGOUT,
  UNKNOWN_KEY: ClientAction.LOGOUT,
  WRONG_AUDIENCE: ClientAction.LOGOUT,
  MALFORMED: ClientAction.LOGOUT,
  ANONYMOUS_DISABLED: ClientAction.LOGOUT,
  UNAVAILABLE: ClientAction.RETRY_LATER,
});

/** Who a verified token speaks for: authsvc.v1.Role without the `ROLE_` prefix. */
const Role = Object.freeze({
  UNSPECIFIED: "UNSPECIFIED",
  USER: "USER",
  GUEST: "GUEST",
  ANONYMOUS: "ANONYMOUS",
});

/** The guest namespace: a user id starting with it is a guest's (authsvc's IssueGuestToken). */
const GUEST_PREFIX = "guest-";
const DEFAULT_GUEST_TOKEN_TTL_SECONDS = 86_400;

/** The role a user id speaks for: its namespace decides ("UNSPECIFIED" for no user id). */
function roleOf(userId) {
  if (userId === "") return Role.UNSPECIFIED;
  return userId.startsWith(GUEST_PREFIX) ? Role.GUEST : Role.USER;
}

/** What a user id may be: 1 to 255 letters, digits, `@`, `_` and `-`. */
const USER_ID_PATTERN = /^[A-Za-z0-9@_-]{1,255}$/;
const HS256 = "HS256";
const MICROS_PER_SECOND = 1_000_000;
const EMPTY = Object.freeze({});
const own = (object, key) => Object.prototype.hasOwnProperty.call(object, key);

const SHA256_BLOCK = 64;
// crypto.hash (node 20.12 and 21.7 on) hashes without making a Hash object: HMAC from two of them over the padded
// keys (RFC 2104) costs less than createHmac. On older nodes, createHmac.
const oneShot = typeof crypto.hash === "function";

/** HMAC-SHA256 of an ASCII string, keyed once: a function of the message returning the MAC in base64url. */
function hmacSha256(keyBytes) {
  if (!oneShot) {
    const key = crypto.createSecretKey(keyBytes);
    return (message) => crypto.createHmac("sha256", key).update(message, "latin1").digest("base64url");
  }
  const key = keyBytes.length > SHA256_BLOCK ? crypto.hash("sha256", keyBytes, "buffer") : keyBytes;
  // Buffers of this key's own, reused by every call (verification is synchronous).
  const inner = Buffer.alloc(SHA256_BLOCK + jws.MAX_TOKEN_BYTES, 0x36);
  const outer = Buffer.alloc(SHA256_BLOCK + 32, 0x5c);
  for (let i = 0; i < key.length; i++) {
    inner[i] ^= key[i];
    outer[i] ^= key[i];
  }
  // Digests as strings: a "buffer" output costs a Buffer object, as much as the hash itself.
  if (inner.subarray(0, SHA256_BLOCK).every((byte) => byte < 0x80)) {
    // An ASCII key (most API secrets) pads to ASCII: the padded key and the message, one string, hash as their
    // UTF-8, the very bytes, with no copy into a buffer and no view of it to make.
    const innerPad = inner.latin1Slice(0, SHA256_BLOCK);
    return (message) => {
      outer.latin1Write(crypto.hash("sha256", innerPad + message, "latin1"), SHA256_BLOCK);
      return crypto.hash("sha256", outer, "base64url");
    };
  }
  return (message) => {
    const length = inner.latin1Write(message, SHA256_BLOCK);
    outer.latin1Write(crypto.hash("sha256", inner.subarray(0, SHA256_BLOCK + length), "latin1"), SHA256_BLOCK);
    return crypto.hash("sha256", outer, "base64url");
  };
}

/** Whether two strings are equal, in time that depends on their length only. */
function sameText(a, b) {
  if (a.length !== b.length) return false;
  let difference = 0;
  for (let i = 0; i < a.length; i++) difference |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return difference === 0;
}

/**
 * An API secret the app accepts, from the verifier's own configuration: `expiresAt` (micros) is set once it was
 * rotated out (it verifies until then).
 */
function secret(keyId, value, expiresAt = null) {
  return Object.freeze({ keyId, value, expiresAt, hmac: hmacSha256(Buffer.from(value, "utf8")) });
}

/** True while the secret is valid. */
function secretActive(secret, now) {
  return secret.expiresAt === null || now < secret.expiresAt;
}

/**
 * True when `signatureSegment` (canonical base64url, as the parser leaves it) is the secret's HS256 (HMAC-SHA256)
 * of `signingInput`; constant-time compare. Canonical base64url stands for one byte string only, so comparing the
 * text compares the bytes.
 */
function secretSigned(secret, signingInput, signatureSegment) {
  if (signingInput.length > jws.MAX_TOKEN_BYTES) return false;
  return sameText(secret.hmac(signingInput), signatureSegment);
}

/**
 * What the token rules need to know of an app, as authsvc/tokens.py App (the verifying fields).
 * @param {object} fields apiKey, algorithm, secrets (from `secret`), keyPairs ({keyId, key (keys.fromJwk),
 *   signsFrom}), authChecksDisabled, requireIat, revokedBefore (micros or null), maxTokenLifetimeSeconds (or null),
 *   anonymousAccess, guestTokenTtlSeconds (default 24 h)
 */
function app(fields) {
  const secrets = Object.freeze([...(fields.secrets || [])]);
  return Object.freeze({
    apiKey: fields.apiKey,
    algorithm: fields.algorithm || HS256,
    secrets,
    keyPairs: Object.freeze([...(fields.keyPairs || [])]),
    authChecksDisabled: Boolean(fields.authChecksDisabled),
    requireIat: Boolean(fields.requireIat),
    revokedBefore: fields.revokedBefore ?? null,
    maxTokenLifetimeSeconds: fields.maxTokenLifetimeSeconds ?? null,
    anonymousAccess: Boolean(fields.anonymousAccess),
    guestTokenTtlSeconds: fields.guestTokenTtlSeconds || DEFAULT_GUEST_TOKEN_TTL_SECONDS,
    // Only a secret rotated out has an expiry: without one, every secret verifies at any time (hot path).
    secretsExpire: secrets.some((s) => s.expiresAt !== null),
    byKid: byKid(fields.keyPairs && fields.keyPairs.length > 0 ? fields.keyPairs : secrets),
  });
}

function byKid(keys) {
  const found = new Map();
  for (const key of keys) found.set(key.keyId, [...(found.get(key.keyId) || []), key]);
  return found;
}

const NONE = Object.freeze([]);

/** The keys that may have signed a token with this `kid` header (null: every key). */
function verifyingKeys(app, kid, now) {
  if (app.keyPairs.length > 0 || app.algorithm !== HS256) {
    return kid === null ? app.keyPairs : app.byKid.get(kid) || NONE;
  }
  const secrets = kid === null ? app.secrets : app.byKid.get(kid) || NONE;
  return app.secretsExpire ? secrets.filter((s) => secretActive(s, now)) : secrets;
}

/** The compact key of a user inside an app: the first 8 bytes of SHA-256(user id), big-endian, as {hi, lo}. */
function userHash(userId) {
  const digest = oneShot
    ? crypto.hash("sha256", userId, "latin1")
    : crypto.createHash("sha256").update(userId, "utf8").digest("latin1");
  const byte = (i) => digest.charCodeAt(i);
  return {
    hi: (byte(0) << 24) | (byte(1) << 16) | (byte(2) << 8) | byte(3),
    lo: ((byte(4) << 24) | (byte(5) << 16) | (byte(6) << 8) | byte(7)) >>> 0,
  };
}

/** Step 1: the token strictly parsed, or null when it is not a well-formed compact JWS (MALFORMED). */
function parse(token) {
  try {
    return jws.parseCompact(token);
  } catch (error) {
    if (error instanceof jws.MalformedToken) return null;
    throw error;
  }
}

/** True for a developer token: its signature part is the literal `devtoken`. */
function isDevToken(token) {
  return token.signatureSegment === jws.DEV_SIGNATURE;
}

/**
 * Steps 2 and 3: the header's alg and kid, then the signature. Returns {failed: null, key} with the key that signed
 * (null for a developer token), or {failed: the outcome, key: null}.
 */
function checkSignature(token, app, now) {
  if (isDevToken(token)) {
    return app.authChecksDisabled ? { failed: null, key: null } : { failed: Outcome.INVALID_SIGNATURE, key: null };
  }
  // The allow-list is the app's one algorithm, compared exactly: "hs256", "none" and every other spelling fail.
  if (token.header.alg !== app.algorithm) return { failed: Outcome.INVALID_SIGNATURE, key: null };
  const kid = own(token.header, "kid") ? token.header.kid : null;
  const candidates = verifyingKeys(app, kid, now);
  if (candidates.length === 0) {
    return { failed: kid !== null ? Outcome.UNKNOWN_KEY : Outcome.INVALID_SIGNATURE, key: null };
  }
  for (const candidate of candidates) {
    const matches = candidate.hmac
      ? secretSigned(candidate, token.signingInput, token.signatureSegment)
      : keys.signatureMatches(candidate.key, token.signingInput, jws.signature(token));
    if (matches) return { failed: null, key: candidate };
  }
  return { failed: Outcome.INVALID_SIGNATURE, key: null };
}

// Python's round(): to the nearest integer, halves to even.
function roundHalfEven(x) {
  const floor = Math.floor(x);
  const rest = x - floor;
  if (rest < 0.5) return floor;
  if (rest > 0.5) return floor + 1;
  return floor % 2 === 0 ? floor : floor + 1;
}

/** A JWT NumericDate (which may carry a fraction of a second) in microseconds, as authsvc/clock.py rounds it. */
function secondsToMicros(seconds) {
  return roundHalfEven(seconds * MICROS_PER_SECOND);
}

function microsOrNull(seconds) {
  return seconds === null ? null : secondsToMicros(seconds);
}

/** The token's iat, exp and nbf in microseconds (null when absent); throws jws.MalformedToken for a bad one. */
function readTimes(claims) {
  return [
    microsOrNull(jws.numericDate(claims, "iat")),
    microsOrNull(jws.numericDate(claims, "exp")),
    microsOrNull(jws.numericDate(claims, "nbf")),
  ];
}

/** Step 4's times: EXPIRED once exp is past (beyond the leeway), NOT_YET_VALID while nbf or iat is ahead, else null. */
function timeOutcome(iat, exp, nbf, now, leeway) {
  if (exp !== null && now >= exp + leeway) return Outcome.EXPIRED;
  if ((nbf !== null && nbf > now + leeway) || (iat !== null && iat > now + leeway)) return Outcome.NOT_YET_VALID;
  return null;
}

function audienceMatches(aud, apiKey) {
  if (typeof aud === "string") return aud === apiKey;
  if (Array.isArray(aud)) return aud.includes(apiKey);
  return false;
}

/**
 * @typedef {object} Verdict the answer of the token rules, times in microseconds
 * @property {string} outcome one of Outcome
 * @property {string} userId "" when none
 * @property {number | null} issuedAt
 * @property {number | null} expiresAt
 * @property {Readonly<Record<string, unknown>>} claims
 * @property {boolean} devToken
 * @property {string | null} revokedBy for REVOKED: which revocation decided, one of RevocationScope
 * @property {number | null} revokedBefore for REVOKED: the deciding revocation's time (null for requireIat)
 * @property {number | null} validFrom for NOT_YET_VALID: the later of nbf and iat
 * @property {string | null} clientAction for every outcome but VALID: one of ClientAction
 * @property {string} role one of Role
 */

/** A verdict that says only its outcome (the token did not get as far as its claims). */
function verdict(outcome) {
  return {
    outcome,
    userId: "",
    issuedAt: null,
    expiresAt: null,
    claims: EMPTY,
    devToken: false,
    revokedBy: null,
    revokedBefore: null,
    validFrom: null,
    clientAction: CLIENT_ACTIONS[outcome] ?? null,
    role: Role.UNSPECIFIED,
  };
}

const ANONYMOUS = Object.freeze({ ...verdict(Outcome.VALID), role: Role.ANONYMOUS });
const ANONYMOUS_DISABLED = Object.freeze(verdict(Outcome.ANONYMOUS_DISABLED));

/** The verdict on an empty token: an anonymous user, VALID when the app allows them, else ANONYMOUS_DISABLED. */
function anonymous(app) {
  return app.anonymousAccess ? ANONYMOUS : ANONYMOUS_DISABLED;
}

/**
 * Steps 4 to 7, on a token whose signature checked out: times, audience, user, revocations, and what decided.
 * `userRevokedBefore(userId, issuedAt)` gives the user's revocation time (micros) or null, null too when it knows
 * none applies to a token issued at `issuedAt` (micros); it is asked only when needed.
 * `tokenRevokedAt(jti)` gives when the token's jti was revoked (micros) or null; pass null when the app has no
 * token revocations (no look-up at all).
 * @returns {Verdict}
 */
function checkClaims(token, app, now, leeway, userRevokedBefore, tokenRevokedAt = null) {
  const devToken = isDevToken(token);
  const claims = token.payload;
  let iat, exp, nbf;
  try {
    [iat, exp, nbf] = readTimes(claims);
  } catch (error) {
    if (!(error instanceof jws.MalformedToken)) throw error;
    return {
      outcome: Outcome.MALFORMED,
      userId: "",
      issuedAt: null,
      expiresAt: null,
      claims: token.claims,
      devToken,
      revokedBy: null,
      revokedBefore: null,
      validFrom: null,
      clientAction: ClientAction.LOGOUT,
      role: Role.UNSPECIFIED,
    };
  }
  const userId = typeof claims.user_id === "string" && own(claims, "user_id") ? claims.user_id : "";
  const role = roleOf(userId);
  if (role === Role.GUEST && iat !== null) {
    // A guest token never outlives the app's guest token lifetime, as it is now: it expires then.
    const latest = iat + app.guestTokenTtlSeconds * MICROS_PER_SECOND;
    if (exp === null || exp > latest) exp = latest;
  }
  let outcome = timeOutcome(iat, exp, nbf, now, leeway);
  let revokedBy = null;
  let revokedBefore = null;
  let validFrom = null;
  // The first check that fails decides, in the token model's order.
  if (outcome !== null) {
    if (outcome === Outcome.NOT_YET_VALID) validFrom = nbf === null ? iat : iat === null ? nbf : Math.max(nbf, iat);
  } else if (
    (app.maxTokenLifetimeSeconds !== null &&
      (exp === null || (iat !== null && exp - iat > app.maxTokenLifetimeSeconds * MICROS_PER_SECOND))) ||
    (role === Role.GUEST && iat === null)
  ) {
    // A token that may outlive the app's maximum lifetime would also outlive pruned revocations; a guest token
    // without iat cannot be held to the guest token lifetime.
    outcome = Outcome.MALFORMED;
  } else if (own(claims, "aud") && !audienceMatches(claims.aud, app.apiKey)) {
    outcome = Outcome.WRONG_AUDIENCE; // absent: this app's
  } else if ((own(claims, "server") && claims.server !== null) || !USER_ID_PATTERN.test(userId)) {
    // A server token (or anything without a proper user id) never passes for a user.
    outcome = Outcome.MALFORMED;
  } else if (app.revokedBefore !== null && (iat === null || iat < app.revokedBefore)) {
    outcome = Outcome.REVOKED; // app revocation: a token without iat predates it
    revokedBy = RevocationScope.APP;
    revokedBefore = app.revokedBefore;
  } else if (iat === null) {
    outcome = app.requireIat ? Outcome.REVOKED : Outcome.VALID; // user revocations need an iat
    if (app.requireIat) revokedBy = RevocationScope.APP;
  } else {
    const userRevoked = userRevokedBefore(userId, iat);
    if (userRevoked !== null && iat < userRevoked) {
      outcome = Outcome.REVOKED;
      revokedBy = RevocationScope.USER;
      revokedBefore = userRevoked;
    } else {
      outcome = Outcome.VALID;
    }
  }
  if (outcome === Outcome.VALID && tokenRevokedAt !== null && typeof claims.jti === "string" && own(claims, "jti")) {
    const revokedAt = tokenRevokedAt(claims.jti);
    if (revokedAt !== null && revokedAt !== undefined) {
      outcome = Outcome.REVOKED;
      revokedBy = RevocationScope.TOKEN;
      revokedBefore = revokedAt;
    }
  }
  const clientAction = outcome === Outcome.VALID ? null : CLIENT_ACTIONS[outcome];
  return {
    outcome,
    userId,
    issuedAt: iat,
    expiresAt: exp,
    claims: token.claims,
    devToken,
    revokedBy,
    revokedBefore,
    validFrom,
    clientAction,
    role,
  };
}

module.exports = {
  CLIENT_ACTIONS,
  ClientAction,
  RevocationScope,
  GUEST_PREFIX,
  HS256,
  MICROS_PER_SECOND,
  Outcome,
  Role,
  USER_ID_PATTERN,
  anonymous,
  app,
  checkClaims,
  checkSignature,
  isDevToken,
  parse,
  readTimes,
  roleOf,
  secondsToMicros,
  secret,
  secretActive,
  timeOutcome,
  userHash,
  verdict,
};
