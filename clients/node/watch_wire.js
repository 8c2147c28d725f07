"use strict";
/**
 * The state stream's messages (AuthService.WatchState, as @grpc/proto-loader hands them: keepCase, longs and enums
 * as String, defaults, oneofs) ↔ token-core values: the twin of authsvc/watch_wire.py.
 *
 * The server describes an app as an AppState: its settings, its public keys and a fingerprint of each API secret,
 * never a secret. A verifier turns it back into an app (tokens.app) holding those public keys and the HS256
 * secrets of its own configuration that the fingerprints vouch for.
 */

const crypto = require("node:crypto");
const keys = require("./keys");
const tokens = require("./tokens");

const FINGERPRINT_LABEL = "authsvc secret fingerprint ";
const RETIRED = "KEY_STATE_RETIRED";
// Timestamp's documented range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
const FIRST_SECOND = -62135596800;
const LAST_SECOND = 253402300799;

/**
 * What the stream says of an API secret instead of the secret: hex HMAC-SHA256 keyed by the secret, over a label and
 * the app's API key. Whoever holds a secret can tell whether it is the one; no one can recover it.
 */
function secretFingerprint(secret, apiKey) {
  return crypto.createHmac("sha256", Buffer.from(secret, "utf8")).update(FINGERPRINT_LABEL + apiKey, "utf8").digest("hex");
}

/** A Timestamp in microseconds; TypeError outside Timestamp's range (a broken message). */
function micros(stamp, field) {
  const seconds = Number(stamp.seconds);
  const nanos = Number(stamp.nanos);
  if (!(seconds >= FIRST_SECOND && seconds <= LAST_SECOND) || !(nanos >= 0 && nanos < 1e9) || !Number.isInteger(seconds)) {
    throw new TypeError(`${field} is not a valid timestamp`);
  }
  return seconds * tokens.MICROS_PER_SECOND + Math.floor(nanos / 1000);
}

/** A Duration in seconds (a Number; 0 when unset). */
function seconds(duration) {
  return duration ? Number(duration.seconds) + Number(duration.nanos) / 1e9 : 0;
}

/** The clock leeway an AppState names, in microseconds. */
function leewayOf(state) {
  const leeway = state.clock_leeway;
  return leeway ? Number(leeway.seconds) * tokens.MICROS_PER_SECOND + Math.floor(Number(leeway.nanos) / 1000) : 0;
}

function sameText(a, b) {
  const left = Buffer.from(a, "utf8");
  const right = Buffer.from(b, "utf8");
  return left.length === right.length && crypto.timingSafeEqual(left, right);
}

/**
 * The app an AppState describes, for verifying its tokens: its public keys (retired ones left out) and, among
 * `secrets` (the verifier's own configuration), those the app accepts, in the app's order. Throws TypeError for a
 * public key that does not load.
 */
function appFromState(state, secrets) {
  const keyPairs = (state.public_keys || [])
    .filter((entry) => entry.state !== RETIRED)
    .map((entry) => {
      const jwk = entry.jwk || {};
      return Object.freeze({
        keyId: jwk.kid,
        key: keys.fromJwk({ kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y, alg: jwk.alg }),
        signsFrom: entry.signs_from ? micros(entry.signs_from, "signs_from") : 0,
      });
    });
  const known = secrets.map((value) => [secretFingerprint(value, state.api_key), value]);
  const accepted = [];
  for (const entry of state.secrets || []) {
    for (const [fingerprint, value] of known) {
      if (sameText(fingerprint, entry.fingerprint)) {
        const expires = entry.expires_at ? micros(entry.expires_at, "expires_at") : null;
        accepted.push(tokens.secret(entry.kid, value, expires));
      }
    }
  }
  return tokens.app({
    apiKey: state.api_key,
    algorithm: state.algorithm,
    secrets: accepted,
    keyPairs,
    authChecksDisabled: state.auth_checks_disabled,
    requireIat: state.require_iat,
    revokedBefore: state.revoked_before ? micros(state.revoked_before, "revoked_before") : null,
    maxTokenLifetimeSeconds: state.max_token_lifetime ? Number(state.max_token_lifetime.seconds) : null,
    anonymousAccess: state.anonymous_access,
    // A server without the field sends none: guest tokens then keep the default bound (24 h).
    guestTokenTtlSeconds: state.guest_token_ttl ? Number(state.guest_token_ttl.seconds) : null,
  });
}

module.exports = { appFromState, leewayOf, micros, secretFingerprint, seconds };
