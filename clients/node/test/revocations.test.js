"use strict";
// The LocalVerifier's revocation set (revocations.js) against a plain Map of the same changes: snapshots in and out
// of order, revocations, clears and the merges they trigger, a million revoked users. No server needed.

const test = require("node:test");
const assert = require("node:assert/strict");
const crypto = require("node:crypto");
const { RevocationSet } = require("../revocations");
const { userHash } = require("../tokens");

/** The user hash by its definition: the first 8 bytes of SHA-256 of the id, big-endian, signed. */
function hashOf(userId) {
  return crypto.createHash("sha256").update(userId, "utf8").digest().readBigInt64BE(0);
}

function randomHash() {
  return crypto.randomBytes(8).readBigInt64BE(0);
}

test("a user's hash is the first 8 bytes of SHA-256 of its id, as two halves", () => {
  for (const userId of ["alice", "bob", "a@b_c-d", "x".repeat(255), "é"]) {
    const { hi, lo } = userHash(userId);
    assert.equal((BigInt(hi) << 32n) | BigInt(lo), hashOf(userId), userId);
  }
});

test("snapshot, revocations and clears answer as a Map of the same changes, across merges", () => {
  const model = new Map();
  const users = Array.from({ length: 3000 }, (_, i) => `user-${i}`);
  const snapshot = users.slice(0, 1000).map((userId, i) => [hashOf(userId), 1_700_000_000_000_000 + i]);
  snapshot.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  for (const [hash, time] of snapshot) model.set(hash, time);
  const set = new RevocationSet(
    snapshot.map(([hash]) => String(hash)),
    snapshot.map(([, time]) => String(time)),
  );
  const check = () => {
    for (const userId of users) {
      const expected = model.get(hashOf(userId)) ?? null;
      assert.equal(set.getUser(userId), expected, userId);
      assert.equal(set.getUser(userId, false), expected, `${userId}, not remembered`);
      // revoking(): the answer a verdict needs for a token issued then; no look-up for one newer than newest.
      for (const issuedAt of [expected === null ? 0 : expected - 1, expected ?? 1, set.newest, set.newest - 1]) {
        const answer = set.revoking(userId, issuedAt, Math.random() < 0.5);
        const revoked = expected !== null && issuedAt < expected;
        assert.equal(answer !== null && issuedAt < answer, revoked, `${userId} issued at ${issuedAt}`);
        if (answer !== null) assert.equal(answer, expected, userId);
      }
    }
    for (const time of model.values()) assert.ok(time <= set.newest, "no time held is newer than newest");
  };
  check();
  // Enough changes to merge several times (past 1,024 pending), with clears of absent users and revokes again.
  for (let round = 0; round < 5000; round++) {
    const userId = users[Math.floor(Math.random() * users.length)];
    const hash = hashOf(userId);
    if (Math.random() < 0.35) {
      set.remove(String(hash));
      model.delete(hash);
    } else {
      const time = 1_800_000_000_000_000 + round;
      set.set(String(hash), String(time));
      model.set(hash, time);
    }
    if (round % 997 === 0) check();
  }
  check();
  assert.equal(set.size, model.size);
  assert.equal(set.newest, Math.max(...model.values()), "once merged, newest is the newest time held");
  for (const hash of model.keys()) set.remove(String(hash));
  assert.equal(set.size, 0);
  assert.equal(set.newest, -Infinity, "none held");
});

test("a snapshot out of order is sorted; hashes at the ends of the 64-bit range work", () => {
  const hashes = [2n ** 63n - 1n, -(2n ** 63n), 0n, -1n, 1n, 2n ** 32n, -(2n ** 32n), 2n ** 32n - 1n];
  const set = new RevocationSet(
    hashes.map(String),
    hashes.map((_, i) => String(i + 1)),
  );
  hashes.forEach((hash, i) => assert.equal(set.get(hash), i + 1, String(hash)));
  assert.equal(set.get(5n), null);
  assert.throws(() => set.set(String(2n ** 63n), "1"), RangeError);
});

test("a million revoked users fit in 16 bytes each and answer correctly", () => {
  const n = 1_000_000;
  const hashes = new BigInt64Array(crypto.randomBytes(8 * n).buffer).sort();
  const builder = RevocationSet.builder();
  const chunk = 65_536; // as a snapshot arrives
  for (let start = 0; start < n; start += chunk) {
    const part = Array.from(hashes.subarray(start, start + chunk), String);
    builder.add(
      part,
      part.map((_, i) => String(start + i)),
    );
  }
  const set = builder.build();
  assert.equal(set.size, n);
  assert.equal(set._hi.byteLength + set._lo.byteLength + set._times.byteLength, 16 * n);
  for (let i = 0; i < n; i += 9973) assert.equal(set.get(hashes[i]), i);
  // A random hash is among a million with a chance of 1 in 18 trillion.
  for (let i = 0; i < 100; i++) assert.equal(set.get(randomHash()), null);
});
