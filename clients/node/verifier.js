"use strict";
/**
 * Verification on the hot path, each token parsed and signature-checked once, then remembered: the twin of
 * authsvc/verifier.py.
 *
 * A bounded cache keyed by the whole token holds tokens whose signature checked out for an app's current key at
 * least twice (a token presented once is likely never presented again); a hit skips parsing and the signature,
 * never the expiry, audience or revocation checks, which run on every call against the current state.
 */

const { MAX_TOKEN_BYTES } = require("./jws");
const tokens = require("./tokens");

const MALFORMED = tokens.verdict(tokens.Outcome.MALFORMED);
const FAILED = Object.freeze(
  Object.fromEntries(Object.values(tokens.Outcome).map((outcome) => [outcome, tokens.verdict(outcome)])),
);

/**
 * What the doorkeeper holds of a token that checked out: a small integer from the last characters of its signature
 * (an HMAC or a signature: as good as a hash), as Python's holds hash(token); a Set of them costs a fraction of one of
 * the tokens themselves, which it would compare by their text. A developer token's signature is always the same:
 * its whole text, then.
 */
function fingerprint(token, parsed) {
  if (tokens.isDevToken(parsed)) return token;
  const signature = parsed.signatureSegment;
  const end = signature.length - 1; // the last character carries fewer bits in a canonical segment
  let hash = 0;
  for (let i = end - 6; i < end; i++) hash = Math.imul(hash ^ signature.charCodeAt(i), 0x01000193);
  return hash >> 2; // a small integer (Smi): no number object to make or follow
}

/** Verifies tokens, remembering up to `cacheSize` tokens whose signature checked out. */
class Verifier {
  constructor(cacheSize = 10_000) {
    this._cacheSize = cacheSize;
    // token → {app: the app as it was when checked, secret: the API secret that signed it (null: a key pair, or
    // none for a developer token), parsed}. Any change of an app replaces its app object, so an entry for an older
    // one no longer matches; only an API secret rotated out expires by itself (asked on every hit).
    /** @type {Map<string, {app: object, secret: object | null, parsed: object}>} */
    this._checked = new Map();
    // A doorkeeper: the fingerprints of tokens that checked out once. A token enters the cache on its second good
    // check, so tokens presented once (most of a stream of fresh logins) do not push out tokens in real use. A
    // fingerprint collision only admits a token early: the cache itself is keyed by the whole token.
    /** @type {Set<number | string>} */
    this._seenOnce = new Set();
  }

  /**
   * The token model's verdict on `token` for `app` at `now` (micros), with the clock `leeway` (micros);
   * `revokedBefore(userId, issuedAt)` is the user's revocation time or null (tokens.checkClaims);
   * `tokenRevokedAt(jti)` when the token was revoked or null (pass null when the app has no token revocations).
   * `revokedBeforeOnce` (default: revokedBefore) is the same look-up as revokedBefore, asked for a token not
   * remembered, whose user is likely asked about once: a look-up that remembers its answers by user can leave
   * those out.
   * @returns {import("./tokens").Verdict} (a verdict with no claims may be shared: treat every verdict as read-only)
   */
  verify(token, app, now, leeway, revokedBefore, tokenRevokedAt = null, revokedBeforeOnce = revokedBefore) {
    // Refused before the look-up, which would hash the whole string.
    if (typeof token !== "string" || token.length > MAX_TOKEN_BYTES) return MALFORMED;
    const hit = this._checked.get(token);
    let parsed;
    let lookUp = revokedBefore;
    if (hit !== undefined && hit.app === app && (hit.secret === null || tokens.secretActive(hit.secret, now))) {
      parsed = hit.parsed;
    } else {
      parsed = tokens.parse(token);
      // An empty token is an anonymous user (looked at only here, off the path of a token seen before).
      if (parsed === null) return token === "" ? tokens.anonymous(app) : MALFORMED;
      const { failed, key } = tokens.checkSignature(parsed, app, now);
      if (failed !== null) return FAILED[failed];
      this._remember(token, app, key, parsed);
      lookUp = revokedBeforeOnce;
    }
    return tokens.checkClaims(parsed, app, now, leeway, lookUp, tokenRevokedAt);
  }

  _remember(token, app, key, parsed) {
    if (this._cacheSize <= 0) return;
    const seenOnce = this._seenOnce;
    const mark = fingerprint(token, parsed);
    if (!seenOnce.has(mark)) {
      if (seenOnce.size >= this._cacheSize) seenOnce.clear(); // bounded; a token marked before just takes one more check
      seenOnce.add(mark);
      return;
    }
    seenOnce.delete(mark);
    const checked = this._checked;
    if (checked.size >= this._cacheSize) checked.delete(checked.keys().next().value); // the oldest entry
    checked.set(token, { app, secret: key !== null && key.hmac ? key : null, parsed });
  }

  /** The number of tokens remembered. */
  get size() {
    return this._checked.size;
  }

  /** True when `token` is remembered. */
  has(token) {
    return this._checked.has(token);
  }
}

module.exports = { Verifier };
