"use strict";
/**
 * Strict parsing of compact JWS tokens, before any signature check: the twin of authsvc/jws.py, rule for rule.
 *
 * Every byte of a token is treated as hostile: parseCompact either returns the decoded parts or throws
 * MalformedToken, never another error. It checks the shape only; the algorithm, the keys, the signature and the
 * claims are the verifier's business (tokens.js).
 *
 * What is rejected, as authsvc/jws.py rejects it:
 * - tokens longer than MAX_TOKEN_BYTES, before any decoding;
 * - anything but three non-empty segments of strict, canonical base64url (no padding, no whitespace, no non-zero
 *   trailing bits);
 * - header or payload that is not UTF-8, not a JSON object, or that has duplicate keys at any depth, NaN or
 *   Infinity, a number that overflows to infinity (an integer of more than 4,300 digits, Python's limit), nesting
 *   deeper than MAX_JSON_DEPTH, or a NUL or unpaired surrogate in any string;
 * - a header without a string `alg`, with a non-string `typ`, `kid` or `cty`, with `crit`, `b64` or `enc`, or a
 *   `cty` of JWT (nested tokens).
 * The JSON grammar is Python's json module's (strict mode), written out here because JSON.parse keeps the last of
 * duplicate keys and turns large integers into Infinity.
 */

const { TextDecoder } = require("node:util");

/** The longest token accepted, in UTF-8 bytes. */
const MAX_TOKEN_BYTES = 8192;
/** The deepest nesting of JSON objects and arrays accepted (the top object is 1). */
const MAX_JSON_DEPTH = 32;
/** The latest NumericDate accepted: 9999-12-31T23:59:59Z. */
const MAX_NUMERIC_DATE = 253402300799;
/** The literal signature segment of a developer token. */
const DEV_SIGNATURE = "devtoken";
/** Python's int() refuses longer digit strings (sys.get_int_max_str_digits), so the server finds them MALFORMED. */
const MAX_INT_DIGITS = 4300;
/** Integers from this magnitude on are claims the server renders as text (authsvc/wire.py fill_struct). */
const HUGE_INT = 2 ** 1023;

/** The token is not a well-formed compact JWS; `reason` says why in a few words (never the token). */
class MalformedToken extends Error {
  constructor(reason) {
    super(reason);
    this.name = "MalformedToken";
    this.reason = reason;
  }
}

/** The token is larger than MAX_TOKEN_BYTES or its JSON nests deeper than MAX_JSON_DEPTH. */
class LimitExceeded extends MalformedToken {
  constructor(reason) {
    super(reason);
    this.name = "LimitExceeded";
  }
}

// `$` without the m flag matches only at the very end (unlike Python's, never before a final newline).
const COMPACT_RE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;
// The last character of a segment whose length is 2 or 3 mod 4 carries 4 or 2 unused bits, which must be zero for
// the encoding to be canonical; these are the characters whose low bits are zero.
const CANONICAL_LAST_2 = "AQgw";
const CANONICAL_LAST_3 = "AEIMQUYcgkosw048";
const UTF8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
// Decoded headers by segment: an app's tokens share a handful. Frozen, so every caller may hold the same object.
const HEADER_CACHE_SIZE = 256;
const MAX_CACHED_HEADER_SEGMENT = 512;
const headerCache = new Map();
let lastHeaderSegment = null;
let lastHeader = null;

function checkCanonical(segment, name) {
  const rem = segment.length % 4;
  if (rem === 1) throw new MalformedToken(`${name} segment has an impossible base64url length`);
  const last = segment[segment.length - 1];
  if ((rem === 2 && !CANONICAL_LAST_2.includes(last)) || (rem === 3 && !CANONICAL_LAST_3.includes(last))) {
    throw new MalformedToken(`${name} segment is not canonical base64url`);
  }
}

// Segments are decoded into this buffer (a token's are shorter, with room for three more bytes), then read out as
// text: no Buffer a segment. Its words view the same bytes, to look for non-ASCII four bytes at a time.
const scratchWords = new Uint32Array((MAX_TOKEN_BYTES >> 2) + 1);
const scratch = Buffer.from(scratchWords.buffer);

/** A header or payload segment decoded, as text (UTF-8); MalformedToken when it is not canonical or not UTF-8. */
function segmentText(segment, name) {
  checkCanonical(segment, name);
  // The alphabet was checked by COMPACT_RE and the trailing bits by checkCanonical: this decoding is exact.
  const length = scratch.write(segment, 0, "base64url");
  // Zeros after the text, so that its last word holds none of an earlier segment's bytes.
  scratch[length] = 0;
  scratch[length + 1] = 0;
  scratch[length + 2] = 0;
  const words = (length + 3) >> 2;
  for (let i = 0; i < words; i++) {
    if ((scratchWords[i] & 0x80808080) !== 0) {
      try {
        return UTF8.decode(scratch.subarray(0, length));
      } catch {
        throw new MalformedToken(`${name} is not UTF-8`);
      }
    }
  }
  return scratch.latin1Slice(0, length);
}

// The JSON parser: recursive descent over one string at a time (module state; nothing re-enters it).
let src = "";
let pos = 0;
let depth = 0;
let sawHugeInt = false;

function syntax(what) {
  throw new MalformedToken(what || "is not valid JSON");
}

function skipWhitespace() {
  for (;;) {
    const c = src.charCodeAt(pos);
    if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) pos++;
    else return;
  }
}

function parseValue() {
  const c = src.charCodeAt(pos);
  if (c === 0x22) return parseString();
  if (c === 0x7b) return parseObject();
  if (c === 0x5b) return parseArray();
  if (c === 0x2d || (c >= 0x30 && c <= 0x39)) return parseNumber();
  if (c === 0x74 && src.startsWith("true", pos)) {
    pos += 4;
    return true;
  }
  if (c === 0x66 && src.startsWith("false", pos)) {
    pos += 5;
    return false;
  }
  if (c === 0x6e && src.startsWith("null", pos)) {
    pos += 4;
    return null;
  }
  // NaN, Infinity and -Infinity, which Python's json would read, are refused there too (parse_constant).
  return syntax(src.startsWith("NaN", pos) || src.startsWith("Infinity", pos) ? "has a non-finite number" : "");
}

function enter() {
  if (++depth > MAX_JSON_DEPTH) throw new LimitExceeded(`JSON nested too deeply (more than ${MAX_JSON_DEPTH} levels)`);
  pos++;
  skipWhitespace();
}

function parseObject() {
  enter();
  const object = {};
  if (src.charCodeAt(pos) === 0x7d) {
    pos++;
    depth--;
    return object;
  }
  for (;;) {
    if (src.charCodeAt(pos) !== 0x22) syntax();
    const key = parseString();
    skipWhitespace();
    if (src.charCodeAt(pos) !== 0x3a) syntax();
    pos++;
    skipWhitespace();
    const value = parseValue();
    if (Object.prototype.hasOwnProperty.call(object, key)) syntax("has a duplicate key");
    if (key === "__proto__") {
      // An own property, as Python has it: never the object's prototype.
      Object.defineProperty(object, key, { value, writable: true, enumerable: true, configurable: true });
    } else {
      object[key] = value;
    }
    skipWhitespace();
    const c = src.charCodeAt(pos++);
    if (c === 0x7d) break;
    if (c !== 0x2c) syntax();
    skipWhitespace();
  }
  depth--;
  return object;
}

function parseArray() {
  enter();
  const array = [];
  if (src.charCodeAt(pos) === 0x5d) {
    pos++;
    depth--;
    return array;
  }
  for (;;) {
    array.push(parseValue());
    skipWhitespace();
    const c = src.charCodeAt(pos++);
    if (c === 0x5d) break;
    if (c !== 0x2c) syntax();
    skipWhitespace();
  }
  depth--;
  return array;
}

function hex4(at) {
  let value = 0;
  for (let i = at; i < at + 4; i++) {
    const c = src.charCodeAt(i);
    let digit;
    if (c >= 0x30 && c <= 0x39) digit = c - 0x30;
    else if (c >= 0x61 && c <= 0x66) digit = c - 0x57;
    else if (c >= 0x41 && c <= 0x46) digit = c - 0x37;
    else return syntax("has an invalid \\u escape");
    value = value * 16 + digit;
  }
  return value;
}

const ESCAPES = { 0x22: '"', 0x5c: "\\", 0x2f: "/", 0x62: "\b", 0x66: "\f", 0x6e: "\n", 0x72: "\r", 0x74: "\t" };

function parseString() {
  let start = ++pos;
  let out = "";
  for (;;) {
    const c = src.charCodeAt(pos);
    if (c === 0x22) {
      out += src.slice(start, pos++);
      return out;
    }
    if (c < 0x20 || Number.isNaN(c)) syntax(c === 0 ? "contains NUL" : "has an unterminated string or control character");
    if (c !== 0x5c) {
      pos++;
      continue;
    }
    out += src.slice(start, pos);
    const e = src.charCodeAt(pos + 1);
    if (e === 0x75) {
      const unit = hex4(pos + 2);
      pos += 6;
      // Only an escape can put NUL or a lone surrogate in a string (the text is valid UTF-8): Python's json pairs
      // a high surrogate with a following \u low one, and authsvc refuses what is left unpaired.
      if (unit === 0) syntax("contains NUL or an unpaired surrogate");
      if (unit >= 0xd800 && unit <= 0xdbff) {
        if (src.charCodeAt(pos) !== 0x5c || src.charCodeAt(pos + 1) !== 0x75) syntax("contains an unpaired surrogate");
        const low = hex4(pos + 2);
        if (low < 0xdc00 || low > 0xdfff) syntax("contains an unpaired surrogate");
        pos += 6;
        out += String.fromCharCode(unit, low);
      } else if (unit >= 0xdc00 && unit <= 0xdfff) {
        syntax("contains an unpaired surrogate");
      } else {
        out += String.fromCharCode(unit);
      }
    } else {
      const escaped = ESCAPES[e];
      if (escaped === undefined) syntax("has an invalid escape");
      out += escaped;
      pos += 2;
    }
    start = pos;
  }
}

function isDigit(c) {
  return c >= 0x30 && c <= 0x39;
}

function parseNumber() {
  const start = pos;
  if (src.charCodeAt(pos) === 0x2d) pos++;
  const first = src.charCodeAt(pos);
  if (first === 0x30) pos++;
  else if (first >= 0x31 && first <= 0x39) while (isDigit(src.charCodeAt(pos))) pos++;
  else return syntax(src.startsWith("Infinity", pos) ? "has a non-finite number" : "");
  let fractional = false;
  if (src.charCodeAt(pos) === 0x2e && isDigit(src.charCodeAt(pos + 1))) {
    pos += 2;
    while (isDigit(src.charCodeAt(pos))) pos++;
    fractional = true;
  }
  const e = src.charCodeAt(pos);
  if (e === 0x65 || e === 0x45) {
    let at = pos + 1;
    const sign = src.charCodeAt(at);
    if (sign === 0x2b || sign === 0x2d) at++;
    if (isDigit(src.charCodeAt(at))) {
      pos = at;
      while (isDigit(src.charCodeAt(pos))) pos++;
      fractional = true;
    }
  }
  const text = src.slice(start, pos);
  const value = Number(text);
  if (fractional) {
    if (!Number.isFinite(value)) syntax("has a number out of range");
    return value === 0 ? 0 : value; // -0.0 reaches a client as 0 (authsvc/wire.py plain_claims)
  }
  if (pos - start - (text.charCodeAt(0) === 0x2d ? 1 : 0) > MAX_INT_DIGITS) syntax("has an integer too long");
  if (Math.abs(value) >= HUGE_INT) {
    // Python keeps it exact; the server renders it as text. A BigInt keeps it exact here.
    const exact = BigInt(text);
    if ((exact < 0n ? -exact : exact) >= 2n ** 1023n) {
      sawHugeInt = true;
      return exact;
    }
  }
  return value === 0 ? 0 : value;
}

/**
 * Whether JSON.parse reads `text` exactly as Python's json module does, and how many object members it has. The
 * two grammars are the same (RFC 8259, strict); they differ in what Python's side of authsvc then refuses or keeps:
 * duplicate keys (JSON.parse keeps the last: caught by counting members, a colon each outside strings, against the
 * keys parsed), \u escapes (NUL, lone surrogates), numbers that overflow or are -0, and the nesting depth. Returns
 * the member count, or -1 when the text has any of those (the full parser decides then).
 */
function plainMembers(text) {
  // Without a backslash (most tokens) a string ends at the next quote; with one, the full parser decides.
  if (text.indexOf("\\") !== -1) return -1;
  let members = 0;
  let open = 0;
  const n = text.length;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      i = text.indexOf('"', i + 1);
      if (i === -1) return -1;
    } else if (c === 0x3a) {
      members++;
    } else if (c === 0x7b || c === 0x5b) {
      // Brackets, not depth: the full parser measures depth when there are this many.
      if (++open > MAX_JSON_DEPTH) return -1;
    } else if (c === 0x2d || (c >= 0x30 && c <= 0x39)) {
      const start = i;
      if (c === 0x2d && text.charCodeAt(i + 1) === 0x30) return -1; // -0, -0.5: the full parser's rules
      let fraction = false;
      while (i + 1 < n) {
        const d = text.charCodeAt(i + 1);
        if (d >= 0x30 && d <= 0x39) i++;
        else if (d === 0x2e) {
          fraction = true;
          i++;
        } else if (d === 0x65 || d === 0x45) return -1; // exponents can overflow
        else break;
      }
      // Long integers can be 2**1023 and more (reported as text), or beyond Python's digit limit. A number with a
      // fraction is a double on both sides, correctly rounded by both, and cannot overflow below 300 characters:
      // authsvc's own iat and exp (microseconds: 17 characters) take this path.
      if (i - start >= (fraction ? 300 : 15)) return -1;
    }
  }
  return members;
}

function countMembers(value) {
  if (value === null || typeof value !== "object") return 0;
  let count = 0;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) count += countMembers(value[i]);
    return count;
  }
  const keys = Object.keys(value);
  for (let i = 0; i < keys.length; i++) count += 1 + countMembers(value[keys[i]]);
  return count;
}

/** The JSON object in `text` (header or payload); MalformedToken for anything else. */
function parseJsonObject(text, name) {
  const members = plainMembers(text);
  if (members >= 0) {
    let value;
    try {
      value = JSON.parse(text);
    } catch {
      throw new MalformedToken(`${name} is not valid JSON`);
    }
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      throw new MalformedToken(`${name} is not a JSON object`);
    }
    if (countMembers(value) !== members) throw new MalformedToken(`${name} has a duplicate key`);
    return value;
  }
  return parseStrictly(text, name);
}

function parseStrictly(text, name) {
  src = text;
  pos = 0;
  depth = 0;
  try {
    skipWhitespace();
    const value = parseValue();
    skipWhitespace();
    if (pos !== src.length) syntax();
    if (value === null || typeof value !== "object" || Array.isArray(value)) syntax("is not a JSON object");
    return value;
  } catch (error) {
    if (!(error instanceof MalformedToken)) throw error;
    const Kind = error instanceof LimitExceeded ? LimitExceeded : MalformedToken;
    throw new Kind(`${name} ${error.reason}`);
  } finally {
    src = "";
  }
}

function checkHeader(header) {
  if (typeof header.alg !== "string") throw new MalformedToken("header alg missing or not a string");
  for (const param of ["typ", "kid", "cty"]) {
    if (Object.prototype.hasOwnProperty.call(header, param) && typeof header[param] !== "string") {
      throw new MalformedToken(`header ${param} is not a string`);
    }
  }
  for (const [param, why] of [
    ["crit", "is not supported"],
    ["b64", "is not supported"],
    ["enc", "means JWE"],
  ]) {
    if (Object.prototype.hasOwnProperty.call(header, param)) throw new MalformedToken(`header ${param} ${why}`);
  }
  if (typeof header.cty === "string") {
    const cty = header.cty.toLowerCase();
    if (cty === "jwt" || cty === "application/jwt") throw new MalformedToken("nested JWT is not supported");
  }
}

function parseHeader(segment) {
  const header = parseJsonObject(segmentText(segment, "header"), "header");
  checkHeader(header);
  return deepFreeze(header);
}

function header(segment) {
  // An app's tokens mostly share one header: comparing with the last costs less than the look-up's hashing.
  if (segment === lastHeaderSegment) return lastHeader;
  if (segment.length > MAX_CACHED_HEADER_SEGMENT) return parseHeader(segment);
  let parsed = headerCache.get(segment);
  if (parsed === undefined) {
    parsed = parseHeader(segment);
    if (headerCache.size >= HEADER_CACHE_SIZE) headerCache.clear();
    headerCache.set(segment, parsed);
  }
  lastHeaderSegment = segment;
  lastHeader = parsed;
  return parsed;
}

/** Freezes a decoded JSON value and everything in it: a parsed token is shared by every call that verifies it. */
function deepFreeze(value) {
  if (value !== null && typeof value === "object" && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const key in value) deepFreeze(value[key]);
  }
  return value;
}

/** A copy of a decoded JSON value with its BigInts as decimal text. */
function asText(value) {
  if (typeof value === "bigint") return String(value);
  if (Array.isArray(value)) return value.map(asText);
  if (value !== null && typeof value === "object") {
    const copy = {};
    for (const key of Object.keys(value)) {
      Object.defineProperty(copy, key, { value: asText(value[key]), writable: true, enumerable: true, configurable: true });
    }
    return copy;
  }
  return value;
}

/** Says why a token that failed the fast shape check is malformed. */
function diagnose(token) {
  if (token.trimStart().startsWith("{")) return new MalformedToken("JWS JSON serialization is not supported");
  const segments = token.split(".");
  if (segments.length === 5) return new MalformedToken("JWE is not supported");
  if (segments.length !== 3) return new MalformedToken(`expected 3 segments, got ${segments.length}`);
  const names = ["header", "payload", "signature"];
  for (let i = 0; i < 3; i++) {
    if (!segments[i]) return new MalformedToken(`${names[i]} segment is empty`);
    if (segments[i].includes("=")) return new MalformedToken(`${names[i]} segment has base64 padding`);
  }
  return new MalformedToken("a segment has a character outside base64url");
}

/**
 * @typedef {object} CompactJws
 * @property {Readonly<Record<string, unknown>>} header
 * @property {Readonly<Record<string, unknown>>} payload what the rules read (integers of 2**1023 and more as BigInt)
 * @property {Readonly<Record<string, unknown>>} claims what a verdict shows: the payload, with such integers as
 *   their decimal text, as VerifyToken renders them
 * @property {string} signingInput the first two segments and their dot
 * @property {string} signatureSegment canonical base64url, or "devtoken"
 * @property {Buffer | null} signatureBytes the decoded signature, once signature() was asked
 */

/** Splits and decodes a compact JWS, throwing MalformedToken for anything not strictly well-formed. */
function parseCompact(token) {
  if (typeof token !== "string") throw new MalformedToken("token is not a string");
  // .length counts UTF-16 units: at most the UTF-8 bytes. A longer token is refused unread; a shorter one with
  // more bytes has non-ASCII characters, which COMPACT_RE refuses.
  if (token.length > MAX_TOKEN_BYTES) throw new LimitExceeded(`token too large (more than ${MAX_TOKEN_BYTES} bytes)`);
  if (!COMPACT_RE.test(token)) {
    if (Buffer.byteLength(token, "utf8") > MAX_TOKEN_BYTES) {
      throw new LimitExceeded(`token too large (more than ${MAX_TOKEN_BYTES} bytes)`);
    }
    throw diagnose(token);
  }
  const firstDot = token.indexOf(".");
  const secondDot = token.indexOf(".", firstDot + 1);
  const headerSegment = token.slice(0, firstDot);
  const payloadSegment = token.slice(firstDot + 1, secondDot);
  const signatureSegment = token.slice(secondDot + 1);
  const parsedHeader = header(headerSegment);
  sawHugeInt = false;
  const payload = deepFreeze(parseJsonObject(segmentText(payloadSegment, "payload"), "payload"));
  // Checked now, decoded when a key pair needs the bytes (signature()): a canonical segment stands for exactly one
  // byte string, so an HMAC compares as base64url text.
  if (signatureSegment !== DEV_SIGNATURE) checkCanonical(signatureSegment, "signature");
  return {
    header: parsedHeader,
    payload,
    claims: sawHugeInt ? deepFreeze(asText(payload)) : payload,
    signingInput: token.slice(0, secondDot),
    signatureSegment,
    signatureBytes: null,
  };
}

/** The signature of a parsed token as bytes (empty for a developer token). */
function signature(parsed) {
  if (parsed.signatureBytes === null) {
    parsed.signatureBytes =
      parsed.signatureSegment === DEV_SIGNATURE ? Buffer.alloc(0) : Buffer.from(parsed.signatureSegment, "base64url");
  }
  return parsed.signatureBytes;
}

/** The claim as a NumericDate in seconds, null if absent; MalformedToken unless a number in range. */
function numericDate(payload, claim) {
  if (!Object.prototype.hasOwnProperty.call(payload, claim)) return null;
  const value = payload[claim];
  if (typeof value === "bigint") throw new MalformedToken(`${claim} is out of range`); // at least 2**1023
  if (typeof value !== "number") throw new MalformedToken(`${claim} is not a number`);
  if (!(value >= 0 && value <= MAX_NUMERIC_DATE)) throw new MalformedToken(`${claim} is out of range`);
  return value;
}

module.exports = {
  DEV_SIGNATURE,
  MAX_JSON_DEPTH,
  MAX_NUMERIC_DATE,
  MAX_TOKEN_BYTES,
  LimitExceeded,
  MalformedToken,
  deepFreeze,
  numericDate,
  parseCompact,
  parseJsonObject,
  signature,
};
