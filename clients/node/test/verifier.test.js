"use strict";
// The Verifier's cache of tokens whose signature checked out (verifier.js): a token is remembered from its second
// good check on, tokens presented once do not push out remembered ones, and a hit still runs the time and revocation
// checks. No server needed.

const test = require("node:test");
const assert = require("node:assert/strict");
const crypto = require("node:crypto");
const tokens = require("../tokens");
const { Verifier } = require("../verifier");

const SECRET = "a-secret-of-this-test-only-0123456789";
const NOW = 1_790_000_000; // seconds
const app = tokens.app({ apiKey: "verifier-test-app", secrets: [tokens.secret("k1", SECRET)] });
const devApp = tokens.app({ apiKey: "verifier-test-dev", secrets: [tokens.secret("k1", SECRET)], authChecksDisabled: true });

function segment(value) {
  return Buffer.from(JSON.stringify(value)).toString("base64url");
}

function token(userId, extra = {}) {
  const input = `${segment({ alg: "HS256", kid: "k1", typ: "JWT" })}.${segment({ user_id: userId, iat: NOW - 60, ...extra })}`;
  return `${input}.${crypto.createHmac("sha256", SECRET).update(input).digest("base64url")}`;
}

function devToken(userId) {
  return `${segment({ alg: "none" })}.${segment({ user_id: userId, iat: NOW - 60 })}.devtoken`;
}

const notRevoked = () => null;

function verify(verifier, value, target = app, revokedBefore = notRevoked) {
  return verifier.verify(value, target, NOW * 1e6, 0, revokedBefore);
}

test("a token is remembered from its second good check on; a failed one never", () => {
  const verifier = new Verifier(100);
  const alice = token("alice");
  assert.equal(verify(verifier, alice).outcome, "VALID");
  assert.equal(verifier.has(alice), false, "a token presented once is not remembered");
  assert.equal(verify(verifier, alice).outcome, "VALID");
  assert.equal(verifier.has(alice), true, "presented twice, it is");
  const forged = `${alice.slice(0, alice.lastIndexOf("."))}.${"A".repeat(43)}`;
  for (let i = 0; i < 3; i++) assert.equal(verify(verifier, forged).outcome, "INVALID_SIGNATURE");
  assert.equal(verifier.has(forged), false);
  assert.equal(verifier.size, 1);
});

test("developer tokens, which share their signature, are told apart by their payload", () => {
  const verifier = new Verifier(100);
  const first = devToken("alice");
  assert.equal(verify(verifier, first, devApp).outcome, "VALID");
  for (let i = 0; i < 50; i++) verify(verifier, devToken(`user-${i}`), devApp);
  assert.equal(verifier.size, 0, "fifty developer tokens presented once each: none remembered");
});

test("a stream of tokens presented once does not push out the ones in use", () => {
  const verifier = new Verifier(1000);
  const inUse = Array.from({ length: 100 }, (_, i) => token(`in-use-${i}`));
  for (const value of [...inUse, ...inUse]) verify(verifier, value);
  assert.equal(verifier.size, 100);
  for (let i = 0; i < 5000; i++) assert.equal(verify(verifier, token(`fresh-${i}`)).outcome, "VALID");
  assert.equal(verifier.size, 100, "no token presented once got in (a fingerprint collision would let one in early)");
  for (const value of inUse) assert.ok(verifier.has(value));
});

test("the cache stays within its size; cacheSize 0 remembers nothing", () => {
  const verifier = new Verifier(10);
  for (let i = 0; i < 50; i++) {
    const value = token(`user-${i}`);
    verify(verifier, value);
    verify(verifier, value);
  }
  assert.equal(verifier.size, 10);
  const none = new Verifier(0);
  const alice = token("alice");
  for (let i = 0; i < 3; i++) assert.equal(verify(none, alice).outcome, "VALID");
  assert.equal(none.size, 0);
});

test("a remembered token still gets the time and revocation checks, with the look-up for remembered tokens", () => {
  const verifier = new Verifier(100);
  const alice = token("alice", { exp: NOW + 10 });
  const asked = [];
  const remembered = (userId) => {
    asked.push(["remembered", userId]);
    return null;
  };
  const once = (userId) => {
    asked.push(["once", userId]);
    return null;
  };
  const check = (revokedBefore, revokedBeforeOnce, now = NOW) =>
    verifier.verify(alice, app, now * 1e6, 0, revokedBefore, null, revokedBeforeOnce).outcome;
  assert.equal(check(remembered, once), "VALID");
  assert.equal(check(remembered, once), "VALID");
  assert.deepEqual(asked, [["once", "alice"], ["once", "alice"]], "not remembered yet: the look-up for tokens seen once");
  assert.equal(check(remembered, once), "VALID");
  assert.deepEqual(asked.at(-1), ["remembered", "alice"]);
  assert.equal(check(() => (NOW - 1) * 1e6), "REVOKED", "revoked after it was remembered");
  assert.equal(check(remembered, once, NOW + 10), "EXPIRED", "expired after it was remembered");
});

test("HS256 checks out with an ASCII secret, a non-ASCII one and one longer than SHA-256's block", () => {
  for (const value of [SECRET, "sécret-ünïcode-0123456789-ключ", "x".repeat(64), "y".repeat(65), `é${"z".repeat(100)}`]) {
    const keyed = tokens.app({ apiKey: "verifier-test-app", secrets: [tokens.secret("k1", value)] });
    const input = `${segment({ alg: "HS256", kid: "k1" })}.${segment({ user_id: "alice", iat: NOW - 60 })}`;
    const signed = `${input}.${crypto.createHmac("sha256", Buffer.from(value, "utf8")).update(input).digest("base64url")}`;
    const other = `${input}.${crypto.createHmac("sha256", `${value}!`).update(input).digest("base64url")}`;
    assert.equal(verify(new Verifier(10), signed, keyed).outcome, "VALID", value);
    assert.equal(verify(new Verifier(10), other, keyed).outcome, "INVALID_SIGNATURE", value);
  }
});
