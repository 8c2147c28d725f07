"use strict";
// Tests of the Node client. The first group runs against a running authsvc named by AUTHSVC_TARGET,
// AUTHSVC_API_KEY and AUTHSVC_API_SECRET (tests/test_node_client.py sets them for the test server);
// the second against a tiny grpc-js server in this file that never answers, or fails on purpose.

const test = require("node:test");
const assert = require("node:assert/strict");
const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const { AuthClient, AuthsvcClientError, ROUND_ROBIN, VerifyOutcome, status } = require("..");

const { AUTHSVC_TARGET: target, AUTHSVC_API_KEY: apiKey, AUTHSVC_API_SECRET: apiSecret } = process.env;
const skip =
  target && apiKey && apiSecret ? false : "set AUTHSVC_TARGET, AUTHSVC_API_KEY and AUTHSVC_API_SECRET to a running authsvc";

function rejectsWith(promise, { code, reason }) {
  return assert.rejects(promise, (error) => {
    assert.ok(error instanceof AuthsvcClientError, `not an AuthsvcClientError: ${error}`);
    assert.equal(error.code, code);
    assert.equal(error.reason, reason);
    return true;
  });
}

test.describe("AuthClient against a running authsvc", { skip }, () => {
  let client;
  const userId = `node-${process.pid}-${Date.now()}`;

  test.before(() => {
    client = new AuthClient({ target, apiKey, credential: apiSecret, timeoutMs: 10000 });
  });
  test.after(() => client.close());

  test("issue, verify, revoke, verify again, clear", async () => {
    const claims = { room: "general", level: 3, tags: ["a", "b"], nested: { ok: true }, nothing: null };
    const issued = await client.issueToken({ userId, ttlSeconds: 3600, claims });
    assert.equal(issued.token.split(".").length, 3);
    assert.ok(issued.issuedAt instanceof Date);
    assert.ok(Math.abs(issued.expiresAt - issued.issuedAt - 3600 * 1000) <= 1);
    assert.ok(issued.keyId);

    const valid = await client.verifyToken(issued.token);
    assert.equal(valid.outcome, VerifyOutcome.VALID);
    assert.equal(valid.valid, true);
    assert.equal(valid.userId, userId);
    assert.equal(valid.devToken, false);
    assert.equal(valid.claims.aud, apiKey);
    for (const [key, value] of Object.entries(claims)) assert.deepEqual(valid.claims[key], value);

    const revoked = await client.revokeUsers([userId]);
    assert.deepEqual([...revoked.keys()], [userId]);
    assert.ok(revoked.get(userId) >= issued.issuedAt);
    const afterRevoke = await client.verifyToken(issued.token);
    assert.equal(afterRevoke.outcome, VerifyOutcome.REVOKED);
    assert.equal(afterRevoke.valid, false);
    assert.equal(afterRevoke.userId, userId);

    assert.deepEqual(await client.clearUserRevocations([userId]), [userId]);
    assert.equal((await client.verifyToken(issued.token)).outcome, VerifyOutcome.VALID);
  });

  test("verifyTokens answers in order", async () => {
    const { token } = await client.issueToken({ userId });
    const results = await client.verifyTokens([token, "not-a-jwt"]);
    assert.deepEqual(
      results.map((r) => [r.outcome, r.userId]),
      [
        [VerifyOutcome.VALID, userId],
        [VerifyOutcome.MALFORMED, null],
      ],
    );
  });

  test("revokeApp, then clearAppRevocation", async () => {
    const { token } = await client.issueToken({ userId });
    const revokedBefore = await client.revokeApp();
    assert.ok(revokedBefore instanceof Date);
    assert.equal((await client.verifyToken(token)).outcome, VerifyOutcome.REVOKED);
    assert.equal(await client.clearAppRevocation(), true);
    assert.equal(await client.clearAppRevocation(), false);
    assert.equal((await client.verifyToken(token)).outcome, VerifyOutcome.VALID);
  });

  test("revokeToken logs out one device, with provenance; clearTokenRevocations restores it", async () => {
    const phone = await client.issueToken({ userId, ttlSeconds: 3600 });
    const laptop = await client.issueToken({ userId });
    const revoked = await client.revokeToken(phone.token);
    assert.ok(revoked.jti.length >= 22);
    assert.ok(revoked.revokedBefore instanceof Date);
    assert.equal(revoked.expiresAt.getTime(), phone.expiresAt.getTime());
    const verdict = await client.verifyToken(phone.token);
    assert.deepEqual(
      [verdict.outcome, verdict.revokedBy, verdict.revokedBefore.getTime(), verdict.clientAction],
      [VerifyOutcome.REVOKED, "TOKEN", revoked.revokedBefore.getTime(), "LOGOUT"],
    );
    const other = await client.verifyToken(laptop.token);
    assert.deepEqual([other.outcome, other.revokedBy, other.clientAction], [VerifyOutcome.VALID, null, null]);
    assert.deepEqual(await client.revokeToken({ jti: revoked.jti }).then((r) => r.jti), revoked.jti);
    assert.deepEqual(await client.clearTokenRevocations([revoked.jti]), [revoked.jti]);
    assert.equal((await client.verifyToken(phone.token)).outcome, VerifyOutcome.VALID);
  });

  test("a user revocation names itself, and malformed tokens say LOGOUT", async () => {
    const { token } = await client.issueToken({ userId });
    await new Promise((resolve) => setTimeout(resolve, 5));
    const at = (await client.revokeUsers([userId])).get(userId);
    const verdict = await client.verifyToken(token);
    assert.deepEqual([verdict.revokedBy, verdict.revokedBefore.getTime()], ["USER", at.getTime()]);
    await client.clearUserRevocations([userId]);
    const malformed = await client.verifyToken("not-a-jwt");
    assert.deepEqual([malformed.outcome, malformed.clientAction, malformed.revokedBy], ["MALFORMED", "LOGOUT", null]);
  });

  test("a token without jti cannot be revoked by itself: FAILED_PRECONDITION TOKEN_WITHOUT_JTI", async () => {
    const crypto = require("node:crypto");
    const encode = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
    const input = `${encode({ alg: "HS256", typ: "JWT" })}.${encode({ user_id: userId })}`;
    const signature = crypto.createHmac("sha256", apiSecret).update(input).digest("base64url");
    await rejectsWith(client.revokeToken(`${input}.${signature}`), {
      code: status.FAILED_PRECONDITION,
      reason: "TOKEN_WITHOUT_JTI",
    });
  });

  test("an empty user id is INVALID_ARGUMENT with reason INVALID_USER_ID", async () => {
    await assert.rejects(client.issueToken({ userId: "" }), (error) => {
      assert.ok(error instanceof AuthsvcClientError);
      assert.equal(error.code, status.INVALID_ARGUMENT);
      assert.equal(error.codeName, "INVALID_ARGUMENT");
      assert.equal(error.reason, "INVALID_USER_ID");
      assert.equal(error.domain, "authsvc");
      assert.ok(error.details.length > 0);
      return true;
    });
  });

  test("an unknown API key is NOT_FOUND with reason APP_NOT_FOUND", async () => {
    const stranger = new AuthClient({ target, apiKey: "no-such-key" });
    try {
      await rejectsWith(stranger.verifyToken("a.b.c"), { code: status.NOT_FOUND, reason: "APP_NOT_FOUND" });
    } finally {
      stranger.close();
    }
  });

  test("a wrong credential is UNAUTHENTICATED with reason INVALID_CREDENTIAL", async () => {
    const impostor = new AuthClient({ target, apiKey, credential: "not-the-secret" });
    try {
      await rejectsWith(impostor.revokeUsers([userId]), { code: status.UNAUTHENTICATED, reason: "INVALID_CREDENTIAL" });
    } finally {
      impostor.close();
    }
  });
});

const { AUTHSVC_LIMITED_TARGET: limitedTarget, AUTHSVC_LOCAL_APPS: localApps } = process.env;

test.describe("AuthClient against an authsvc with a guest rate limit", {
  skip: limitedTarget && localApps ? false : "set AUTHSVC_LIMITED_TARGET and AUTHSVC_LOCAL_APPS (with a guests app)",
}, () => {
  test("a rate-limited guest is told when to try again (RetryInfo → retryAfterMs)", async () => {
    const guests = JSON.parse(localApps).guests;
    const client = new AuthClient({ target: limitedTarget, apiKey: guests.api_key });
    try {
      let refused = null;
      for (let i = 0; i < 3 && refused === null; i++) {
        try {
          await client.issueGuestToken();
        } catch (error) {
          refused = error;
        }
      }
      assert.ok(refused instanceof AuthsvcClientError, `no refusal in 3 calls at 2 a minute: ${refused}`);
      assert.equal(refused.code, status.RESOURCE_EXHAUSTED);
      assert.equal(refused.reason, "GUEST_RATE_LIMITED");
      // 2 a minute per address: the next call is due within 30 s.
      assert.ok(refused.retryAfterMs > 0 && refused.retryAfterMs <= 30000, `retryAfterMs ${refused.retryAfterMs}`);
    } finally {
      client.close();
    }
    const other = new AuthClient({ target: limitedTarget, apiKey: "no-such-key" });
    try {
      await assert.rejects(other.verifyToken("a.b.c"), (error) => {
        assert.equal(error.reason, "APP_NOT_FOUND");
        assert.equal(error.retryAfterMs, null); // no rate limit, no hint
        return true;
      });
    } finally {
      other.close();
    }
  });
});

test.describe("AuthClient against a small grpc-js server of this file", () => {
  let server;
  let port;
  let mode = "silent"; // "silent": never answers; "flaky": UNAVAILABLE for the first two calls of each method
  const seen = [];
  const calls = {};

  test.before(async () => {
    const definition = protoLoader.loadSync("authsvc/v1/auth_service.proto", {
      includeDirs: [path.resolve(__dirname, "..", "..", "..", "protos")],
      keepCase: true,
    });
    const { AuthService } = grpc.loadPackageDefinition(definition).authsvc.v1;
    const handler = (name) => (call, callback) => {
      seen.push(call.metadata.getMap());
      calls[name] = (calls[name] || 0) + 1;
      if (mode === "flaky") {
        if (calls[name] <= 2) callback({ code: status.UNAVAILABLE, details: "down for a moment" });
        else callback(null, name === "IssueToken" ? { token: "a.b.c", issued_at: { seconds: 1 } } : {});
      }
    };
    const handlers = Object.fromEntries(Object.keys(AuthService.service).map((name) => [name, handler(name)]));
    server = new grpc.Server();
    server.addService(AuthService.service, handlers);
    port = await new Promise((resolve, reject) =>
      server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, bound) =>
        error ? reject(error) : resolve(bound),
      ),
    );
  });
  test.after(() => server.forceShutdown());
  test.beforeEach(() => {
    seen.length = 0;
    for (const name of Object.keys(calls)) delete calls[name];
  });

  test("every call has a deadline, and sends the credential only where needed", async () => {
    mode = "silent";
    const client = new AuthClient({ target: `127.0.0.1:${port}`, apiKey: "key", credential: "secret", timeoutMs: 200 });
    try {
      const deadline = { code: status.DEADLINE_EXCEEDED, reason: "" };
      await rejectsWith(client.issueToken({ userId: "alice" }), deadline);
      await rejectsWith(client.verifyToken("a.b.c"), deadline);
      await rejectsWith(client.verifyTokens(["a.b.c"]), deadline);
      await rejectsWith(client.revokeUsers(["alice"]), deadline);
      await rejectsWith(client.revokeApp(), deadline);
      await rejectsWith(client.clearUserRevocations(["alice"]), deadline);
      await rejectsWith(client.clearAppRevocation(), deadline);
    } finally {
      client.close();
    }
    assert.equal(seen.length, 7);
    const authorized = seen.map((metadata) => [metadata["x-api-key"], metadata.authorization]);
    assert.deepEqual(authorized, [
      ["key", "Bearer secret"],
      ["key", undefined],
      ["key", undefined],
      ["key", "Bearer secret"],
      ["key", "Bearer secret"],
      ["key", "Bearer secret"],
      ["key", "Bearer secret"],
    ]);
  });

  test("a call that needs the credential fails client-side without one", async () => {
    const client = new AuthClient({ target: `127.0.0.1:${port}`, apiKey: "key" });
    try {
      await assert.rejects(client.issueToken({ userId: "alice" }), {
        name: "TypeError",
        message: /IssueToken needs the app's credential/,
      });
      await assert.rejects(client.revokeUsers(["alice"]), /RevokeUser needs the app's credential/);
      await assert.rejects(client.revokeApp(), /RevokeApp needs the app's credential/);
      await assert.rejects(client.clearUserRevocations(["alice"]), /ClearRevocation needs the app's credential/);
    } finally {
      client.close();
    }
    assert.equal(seen.length, 0, "nothing reached the server");
  });

  test("safe calls are retried on UNAVAILABLE, IssueToken never", async () => {
    mode = "flaky";
    const client = new AuthClient({
      target: `127.0.0.1:${port}`,
      apiKey: "key",
      credential: "secret",
      channelOptions: ROUND_ROBIN,
    });
    try {
      await client.verifyToken("a.b.c");
      await client.verifyTokens(["a.b.c"]);
      await client.revokeUsers(["alice"]);
      await client.revokeApp();
      await client.clearUserRevocations(["alice"]);
      await client.revokeToken({ jti: "a-jti" });
      await rejectsWith(client.issueToken({ userId: "alice" }), { code: status.UNAVAILABLE, reason: "" });
    } finally {
      client.close();
    }
    assert.deepEqual(calls, {
      VerifyToken: 3,
      VerifyTokens: 3,
      RevokeUser: 3,
      RevokeApp: 3,
      ClearRevocation: 3,
      RevokeToken: 3,
      IssueToken: 1,
    });
  });

  test("retryAttempts: 1 turns retries off", async () => {
    mode = "flaky";
    const client = new AuthClient({ target: `127.0.0.1:${port}`, apiKey: "key", retryAttempts: 1 });
    try {
      await rejectsWith(client.verifyToken("a.b.c"), { code: status.UNAVAILABLE, reason: "" });
    } finally {
      client.close();
    }
    assert.deepEqual(calls, { VerifyToken: 1 });
  });
});
