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
});

/** What a user id may be: 1 to 255 letters, digits, `@`, `_` and `-`. */
const USER_ID_PATTERN = /^[A-Za-z0-9@_-]{1,255}$/;
const HS256 = "HS256";
const MICROS_PER_SECOND = 1_000_000;
const EMPTY = Object.freeze({});
const own = (object, key) => Object.prototype.hasOwnProperty.call(object, key);

/**
 * An API secret the app accepts, from the verifier's own configuration: `expiresAt` (micros) is set once it was
 * rotated out (it verifies until then).
 */
function secret(keyId, value, expiresAt = null) {
  return Object.freeze({ keyId, value, expiresAt, hmacKey: crypto.createSecretKey(Buffer.from(value, "utf8")) });
}

/** True while the secret is valid. */
function secretActive(secret, now) {
  return secret.expiresAt === null || now < secret.expiresAt;
}

/** True when `signature` is the secret's HS256 (HMAC-SHA256) of `signingInput`; constant-time compare. */
function secretSigned(secret, signingInput, signature) {
  if (signature.length !== 32) return false;
  const digest = crypto.createHmac("sha256", secret.hmacKey).update(signingInput, "latin1").digest();
  return crypto.timingSafeEqual(digest, signature);
}

/**
 * What the token rules need to know of an app, as authsvc/tokens.py App (the verifying fields).
 * @param {object} fields apiKey, algorithm, secrets (from `secret`), keyPairs ({keyId, key (keys.fromJwk),
 *   signsFrom}), authChecksDisabled, requireIat, revokedBefore (micros or null), maxTokenLifetimeSeconds (or null)
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
    // Only a secret rotated out has an expiry: without one, every secret verifies at any time (hot path).
    secretsExpire: secrets.some((s) => s.expiresAt !== null),
  });
}

/** The keys that may have signed a token with this `kid` header (null: every key). */
function verifyingKeys(app, kid, now) {
  if (app.keyPairs.length > 0 || app.algorithm !== HS256) {
    return kid === null ? app.keyPairs : app.keyPairs.filter((pair) => pair.keyId === kid);
  }
  const secrets = app.secretsExpire ? app.secrets.filter((s) => secretActive(s, now)) : app.secrets;
  return kid === null ? secrets : secrets.filter((s) => s.keyId === kid);
}

/** The compact key of a user inside an app: the first 8 bytes of SHA-256(user id), big-endian, as {hi, lo}. */
function userHash(userId) {
  const digest = crypto.createHash("sha256").update(userId, "utf8").digest();
  return { hi: digest.readInt32BE(0), lo: digest.readUInt32BE(4) };
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
    const matches = candidate.hmacKey
      ? secretSigned(candidate, token.signingInput, token.signature)
      : keys.signatureMatches(candidate.key, token.signingInput, token.signature);
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
 */

/** A verdict that says only its outcome (the token did not get as far as its claims). */
function verdict(outcome) {
  return { outcome, userId: "", issuedAt: null, expiresAt: null, claims: EMPTY, devToken: false };
}

/**
 * Steps 4 to 7, on a token whose signature checked out: times, audience, user, revocations.
 * `userRevokedBefore(userId)` gives the user's revocation time (micros) or null; it is asked only when needed.
 * @returns {Verdict}
 */
function checkClaims(token, app, now, leeway, userRevokedBefore) {
  const devToken = isDevToken(token);
  const claims = token.payload;
  let iat, exp, nbf;
  try {
    [iat, exp, nbf] = readTimes(claims);
  } catch (error) {
    if (!(error instanceof jws.MalformedToken)) throw error;
    return { outcome: Outcome.MALFORMED, userId: "", issuedAt: null, expiresAt: null, claims: token.claims, devToken };
  }
  const userId = typeof claims.user_id === "string" && own(claims, "user_id") ? claims.user_id : "";
  let outcome = timeOutcome(iat, exp, nbf, now, leeway);
  // The first check that fails decides, in the token model's order.
  if (outcome !== null) {
    // EXPIRED or NOT_YET_VALID
  } else if (
    app.maxTokenLifetimeSeconds !== null &&
    (exp === null || (iat !== null && exp - iat > app.maxTokenLifetimeSeconds * MICROS_PER_SECOND))
  ) {
    // A token that may outlive the app's maximum lifetime would also outlive pruned revocations.
    outcome = Outcome.MALFORMED;
  } else if (own(claims, "aud") && !audienceMatches(claims.aud, app.apiKey)) {
    outcome = Outcome.WRONG_AUDIENCE; // absent: this app's
  } else if ((own(claims, "server") && claims.server !== null) || !USER_ID_PATTERN.test(userId)) {
    // A server token (or anything without a proper user id) never passes for a user.
    outcome = Outcome.MALFORMED;
  } else if (app.revokedBefore !== null && (iat === null || iat < app.revokedBefore)) {
    outcome = Outcome.REVOKED; // app revocation: a token without iat predates it
  } else if (iat === null) {
    outcome = app.requireIat ? Outcome.REVOKED : Outcome.VALID; // user revocations need an iat
  } else {
    const revokedBefore = userRevokedBefore(userId);
    outcome = revokedBefore !== null && iat < revokedBefore ? Outcome.REVOKED : Outcome.VALID;
  }
  return { outcome, userId, issuedAt: iat, expiresAt: exp, claims: token.claims, devToken };
}

module.exports = {
  HS256,
  MICROS_PER_SECOND,
  Outcome,
  USER_ID_PATTERN,
  app,
  checkClaims,
  checkSignature,
  isDevToken,
  parse,
  readTimes,
  secondsToMicros,
  secret,
  secretActive,
  timeOutcome,
  userHash,
  verdict,
};
