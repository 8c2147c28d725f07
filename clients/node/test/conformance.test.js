"use strict";
// The conformance vectors (conformance/vectors.json at the repository root; conformance/README.md says what it is)
// run by the Node LocalVerifier: for each app and each of its two recorded streams, a fresh verifier is fed the
// stream's messages through its own message handler, decoded as grpc-js hands them to it, and every case of the app
// must get the server's verdict, field for field. AUTHSVC_CONFORMANCE_VECTORS names another file (for trying a new
// one). A missing file fails: it is never skipped.

const test = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const path = require("node:path");
const protoLoader = require("@grpc/proto-loader");
const { LocalVerifier } = require("..");

const VECTORS = process.env.AUTHSVC_CONFORMANCE_VECTORS || path.resolve(__dirname, "..", "..", "..", "conformance", "vectors.json");
const FIELDS = [
  "outcome",
  "user_id",
  "issued_at",
  "expires_at",
  "dev_token",
  "claims",
  "revoked_by",
  "revoked_before",
  "valid_from",
  "client_action",
];

// proto-loader's own deserializer, with the options index.js loads the protos with (keepCase, longs and enums as
// String, defaults, oneofs): the very function grpc-js runs on each message of the stream.
const decode = protoLoader.loadSync("authsvc/v1/auth_service.proto", {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: [path.resolve(__dirname, "..", "..", "..", "protos")],
})["authsvc.v1.AuthService"].WatchState.responseDeserialize;

function load() {
  assert.ok(fs.existsSync(VECTORS), `no conformance vectors at ${VECTORS}: run \`make conformance\``);
  const vectors = JSON.parse(fs.readFileSync(VECTORS, "utf8"));
  assert.equal(vectors.format, 1, "a vectors file of another format");
  return vectors;
}

/** What the verifier answered, in the file's terms (null where VerifyToken reports none). */
function answered(verdict) {
  return {
    outcome: verdict.outcome,
    user_id: verdict.userId || null,
    issued_at: verdict.issuedAt,
    expires_at: verdict.expiresAt,
    dev_token: verdict.devToken,
    claims: Object.keys(verdict.claims).length > 0 ? verdict.claims : null,
    revoked_by: verdict.revokedBy,
    revoked_before: verdict.revokedBefore,
    valid_from: verdict.validFrom,
    client_action: verdict.clientAction,
  };
}

function same(expected, got) {
  try {
    assert.deepStrictEqual(got, expected);
    return true;
  } catch {
    return false;
  }
}

const vectors = (() => {
  try {
    return load();
  } catch (error) {
    return error;
  }
})();

test("the conformance vectors are there", () => {
  if (vectors instanceof Error) throw vectors;
  assert.ok(vectors.cases.length > 0 && vectors.apps.length > 0);
  const names = new Set(vectors.apps.map((app) => app.name));
  for (const item of vectors.cases) assert.ok(names.has(item.app), `case ${item.name} names no app of the file`);
});

for (const app of vectors instanceof Error ? [] : vectors.apps) {
  const cases = vectors.cases.filter((item) => item.app === app.name);
  for (const stream of ["changes", "snapshot"]) {
    test(`${app.name} (${stream} stream): every case gets the server's verdict`, () => {
      let now = 0;
      const verifier = new LocalVerifier({
        target: "127.0.0.1:1", // never connected: the messages come from the file
        apiKey: app.api_key,
        credential: "unused",
        hs256Secret: app.hs256_secrets,
        clock: () => now,
      });
      for (const message of app.streams[stream]) verifier._receive(decode(Buffer.from(message, "base64")));
      assert.ok(verifier.version > 0, "the stream left no state");
      const mismatches = [];
      for (const item of cases) {
        now = item.now;
        const got = answered(verifier._check(item.token));
        for (const field of FIELDS) {
          if (!same(item.expect[field], got[field])) {
            mismatches.push(
              `${item.name} [node LocalVerifier (${stream} stream)] at now=${item.now}: ${field}: expected ` +
                `${JSON.stringify(item.expect[field])}, got ${JSON.stringify(got[field])} (rule: ${item.rule})`,
            );
          }
        }
        // The public shape says the same: verify() renders the verdict as AuthClient.verifyToken does.
        const shown = verifier.verify(item.token);
        const ms = (micros) => (micros === null ? null : Math.floor(micros / 1000));
        assert.deepStrictEqual(
          [shown.outcome, shown.valid, shown.userId, shown.issuedAt && shown.issuedAt.getTime(), shown.expiresAt && shown.expiresAt.getTime()],
          [got.outcome, got.outcome === "VALID", got.user_id, ms(got.issued_at), ms(got.expires_at)],
          item.name,
        );
      }
      assert.equal(mismatches.length, 0, `${mismatches.length} verdict(s) differ:\n${mismatches.join("\n")}`);
    });
  }
}
