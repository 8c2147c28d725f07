"use strict";
// The LocalVerifier's message handler on WatchState messages made here: encoded with the proto and decoded by
// proto-loader's deserializer, as grpc-js hands them over. What the live tests cannot arrange at will: a snapshot in
// chunks, a fresh snapshot after a resume (resync), the server's staleness in the lag, a key that does not load.

const test = require("node:test");
const assert = require("node:assert/strict");
const crypto = require("node:crypto");
const { LocalVerifier } = require("..");
const { secretFingerprint } = require("../watch_wire");
const { watchMessages } = require("./watch_messages");

const message = watchMessages(); // a message as grpc-js would deliver it

const API_KEY = "stream-test-app";
const SECRET = "a-secret-of-this-test-only-0123456789";
const NOW = 1_790_000_000; // seconds

function appState(extra = {}) {
  return {
    api_key: API_KEY,
    algorithm: "HS256",
    clock_leeway: { seconds: 5 },
    secrets: [{ kid: "k1", fingerprint: secretFingerprint(SECRET, API_KEY) }],
    ...extra,
  };
}

function hashOf(userId) {
  return crypto.createHash("sha256").update(userId).digest().readBigInt64BE(0).toString();
}

function token(payload) {
  const input = `${Buffer.from('{"alg":"HS256","kid":"k1"}').toString("base64url")}.${Buffer.from(JSON.stringify(payload)).toString("base64url")}`;
  return `${input}.${crypto.createHmac("sha256", SECRET).update(input).digest("base64url")}`;
}

function verifier(events) {
  const made = new LocalVerifier({
    target: "127.0.0.1:1",
    apiKey: API_KEY,
    credential: "unused",
    hs256Secret: SECRET,
    clock: () => NOW * 1e6,
  });
  made.onRevoked((event) => events.push(event));
  return made;
}

test("a snapshot in chunks is applied at its last chunk, as one replacement", () => {
  const events = [];
  const local = verifier(events);
  const alice = token({ user_id: "alice", iat: NOW - 60 });
  const bob = token({ user_id: "bob", iat: NOW - 60 });
  const sorted = [hashOf("alice"), hashOf("bob")].sort((a, b) => (BigInt(a) < BigInt(b) ? -1 : 1));
  local._receive(message({ version: 7, snapshot: { app: appState(), user_hashes: [sorted[0]], revoked_before: [String(NOW * 1e6)] } }));
  assert.equal(local.verify(alice).outcome, "UNAVAILABLE", "nothing held before the last chunk");
  assert.equal(local.version, 0);
  local._receive(message({ version: 7, snapshot: { user_hashes: [sorted[1]], revoked_before: [String(NOW * 1e6)], last: true } }));
  assert.equal(local.version, 7);
  assert.equal(local.verify(alice).outcome, "REVOKED");
  assert.equal(local.verify(bob).outcome, "REVOKED");
  assert.deepEqual(events, [], "a first snapshot is no revocation event");
});

test("token revocations: by jti in the snapshot and in changes, for every encoding; cleared lifts them", () => {
  const events = [];
  const local = verifier(events);
  const phone = token({ user_id: "alice", iat: NOW - 60, jti: "phone" });
  const laptop = token({ user_id: "alice", iat: NOW - 60, jti: "laptop" });
  const noJti = token({ user_id: "alice", iat: NOW - 60 });
  const at = String((NOW - 10) * 1e6);
  local._receive(message({ version: 1, snapshot: { app: appState(), token_revocations: { jtis: ["phone"], revoked_before: [at] }, last: true } }));
  const verdict = local.verify(phone);
  assert.deepEqual(
    [verdict.outcome, verdict.revokedBy, verdict.revokedBefore.getTime(), verdict.clientAction],
    ["REVOKED", "TOKEN", (NOW - 10) * 1000, "LOGOUT"],
  );
  assert.equal(local.verify(laptop).outcome, "VALID");
  assert.equal(local.verify(noJti).outcome, "VALID");
  local._receive(message({ version: 2, change: { tokens_revoked: { jtis: ["laptop"], revoked_before: [at] } } }));
  assert.equal(local.verify(laptop).revokedBy, "TOKEN");
  assert.deepEqual(events.at(-1), { userIds: [], app: false, resync: false, jtis: ["laptop"] });
  local._receive(message({ version: 3, change: { tokens_cleared: { jtis: ["phone", "laptop"] } } }));
  assert.equal(local.verify(phone).outcome, "VALID");
  assert.equal(local.verify(laptop).outcome, "VALID");
  assert.throws(
    () => local._receive(message({ version: 4, change: { tokens_revoked: { jtis: ["x", "y"], revoked_before: [at] } } })),
    /without its time/,
  );
});

test("provenance: the user's revocation and its time; not yet valid says from when, and retry later", () => {
  const local = verifier([]);
  const alice = token({ user_id: "alice", iat: NOW - 60 });
  const early = token({ user_id: "alice", iat: NOW - 60, nbf: NOW + 600 });
  local._receive(message({ version: 1, snapshot: { app: appState(), user_hashes: [hashOf("alice")], revoked_before: [String((NOW - 30) * 1e6)], last: true } }));
  const revoked = local.verify(alice);
  assert.deepEqual([revoked.revokedBy, revoked.revokedBefore.getTime()], ["USER", (NOW - 30) * 1000]);
  const notYet = local.verify(early);
  assert.deepEqual(
    [notYet.outcome, notYet.validFrom.getTime(), notYet.clientAction, notYet.revokedBy],
    ["NOT_YET_VALID", (NOW + 600) * 1000, "RETRY_LATER", null],
  );
});

test("changes: revoked names the users; cleared lifts them; an app revocation and a resync are events", () => {
  const events = [];
  const local = verifier(events);
  const alice = token({ user_id: "alice", iat: NOW - 60 });
  local._receive(message({ version: 1, snapshot: { app: appState(), last: true } }));
  assert.equal(local.verify(alice).outcome, "VALID");

  local._receive(message({ version: 2, change: { revoked: { user_hashes: [hashOf("alice")], revoked_before: [String((NOW - 1) * 1e6)], user_ids: ["alice"] } } }));
  assert.equal(local.verify(alice).outcome, "REVOKED");
  assert.deepEqual(events.at(-1), { userIds: ["alice"], app: false, resync: false, jtis: [] });

  local._receive(message({ version: 3, change: { cleared: { user_hashes: [hashOf("alice")] } } }));
  assert.equal(local.verify(alice).outcome, "VALID");
  assert.equal(events.length, 1);

  local._receive(message({ version: 4, change: { app: appState({ revoked_before: { seconds: NOW - 1 } }) } }));
  assert.equal(local.verify(alice).outcome, "REVOKED");
  assert.deepEqual(events.at(-1), { userIds: [], app: true, resync: false, jtis: [] });

  // A fresh snapshot (the server could not resume from our version): anything may have been revoked meanwhile.
  local._receive(message({ version: 9, snapshot: { app: appState(), fresh: true, last: true } }));
  assert.equal(local.verify(alice).outcome, "VALID", "the fresh snapshot replaced everything");
  assert.deepEqual(events.at(-1), { userIds: [], app: false, resync: true, jtis: [] });
  assert.equal(local.version, 9);
});

test("lag counts the server's staleness; a heartbeat renews it; past maxLag, UNAVAILABLE", () => {
  const local = verifier([]);
  const alice = token({ user_id: "alice", iat: NOW - 60 });
  local._receive(message({ version: 1, staleness: { seconds: 11 }, snapshot: { app: appState(), last: true } }));
  assert.ok(local.lag >= 11 && local.lag < 12, String(local.lag));
  assert.equal(local.verify(alice).outcome, "UNAVAILABLE", "a state the server itself last confirmed 11 s ago");
  local._receive(message({ version: 1, staleness: { nanos: 500_000_000 }, heartbeat: { interval: { seconds: 2 } } }));
  assert.ok(local.lag >= 0.5 && local.lag < 1.5, String(local.lag));
  assert.equal(local.verify(alice).outcome, "VALID");
});

test("a key that does not load is an error of the handler, and the state held stays as it was", () => {
  const local = verifier([]);
  const alice = token({ user_id: "alice", iat: NOW - 60 });
  local._receive(message({ version: 1, snapshot: { app: appState(), last: true } }));
  const broken = appState({
    algorithm: "EdDSA",
    public_keys: [{ jwk: { kty: "OKP", crv: "Ed25519", x: "AAAA", kid: "bad", alg: "EdDSA" }, state: "KEY_STATE_SIGNING" }],
  });
  assert.throws(() => local._receive(message({ version: 2, change: { app: broken } })), TypeError);
  assert.equal(local.version, 1);
  assert.equal(local.verify(alice).outcome, "VALID");
});

test("a token issued at or after every revocation held is not revoked; one issued before a user's is", () => {
  const local = verifier([]);
  const at = (seconds) => String(seconds * 1e6);
  const sorted = [hashOf("alice"), hashOf("bob")].sort((a, b) => (BigInt(a) < BigInt(b) ? -1 : 1));
  const times = { [hashOf("alice")]: at(NOW - 100), [hashOf("bob")]: at(NOW - 50) };
  local._receive(message({ version: 1, snapshot: { app: appState(), user_hashes: sorted, revoked_before: sorted.map((h) => times[h]), last: true } }));
  // alice's revocation is older than the newest (bob's): her tokens between the two are looked up, and valid.
  assert.equal(local.verify(token({ user_id: "alice", iat: NOW - 101 })).outcome, "REVOKED");
  assert.equal(local.verify(token({ user_id: "alice", iat: NOW - 100 })).outcome, "VALID");
  assert.equal(local.verify(token({ user_id: "alice", iat: NOW - 70 })).outcome, "VALID");
  assert.equal(local.verify(token({ user_id: "bob", iat: NOW - 51 })).outcome, "REVOKED");
  assert.equal(local.verify(token({ user_id: "bob", iat: NOW - 50 })).outcome, "VALID", "issued at the revocation");
  assert.equal(local.verify(token({ user_id: "carol", iat: NOW - 60 })).outcome, "VALID");
  // A change newer than everything: a token issued before it, of that user, is revoked, over and over.
  local._receive(message({ version: 2, change: { revoked: { user_hashes: [hashOf("carol")], revoked_before: [at(NOW - 10)], user_ids: ["carol"] } } }));
  const carol = token({ user_id: "carol", iat: NOW - 20 });
  for (let i = 0; i < 4; i++) assert.equal(local.verify(carol).outcome, "REVOKED", `carol, check ${i + 1}`);
  assert.equal(local.verify(token({ user_id: "carol", iat: NOW - 10 })).outcome, "VALID");
  local._receive(message({ version: 3, change: { cleared: { user_hashes: [hashOf("carol")] } } }));
  for (let i = 0; i < 2; i++) assert.equal(local.verify(carol).outcome, "VALID", `carol cleared, check ${i + 1}`);
});
