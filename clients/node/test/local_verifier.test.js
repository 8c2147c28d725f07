"use strict";
// LocalVerifier against real authsvc servers that tests/test_node_client.py starts: the session's server
// (AUTHSVC_TARGET), a server of the same state with an operator (AUTHSVC_ADMIN_TARGET, AUTHSVC_OPERATOR_TOKEN: key
// and secret rotations), a separate `authsvc serve` process that cuts connections every second and that a test
// kills (AUTHSVC_DOOMED_TARGET, AUTHSVC_DOOMED_PID), and a port with nothing listening (AUTHSVC_CLOSED_TARGET).
// AUTHSVC_LOCAL_APPS holds the apps of these tests (JSON: name → {api_key, api_secret, algorithm}), one per test
// that changes its app, since node runs test files side by side.

const test = require("node:test");
const assert = require("node:assert/strict");
const crypto = require("node:crypto");
const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const http = require("node:http");
const { AuthClient, AuthsvcClientError, LocalVerifier, VerifyOutcome, bearerAuth, status } = require("..");

const env = process.env;
const WAIT_MS = 20000; // the longest any wait below may take (the machine is shared)

function setting(name) {
  assert.ok(env[name], `${name} is not set: tests/test_node_client.py runs these tests against real servers`);
  return env[name];
}

const target = () => setting("AUTHSVC_TARGET");
const apps = () => JSON.parse(setting("AUTHSVC_LOCAL_APPS"));

function app(name) {
  const found = apps()[name];
  assert.ok(found, `AUTHSVC_LOCAL_APPS has no app ${name}`);
  return found;
}

function clientOf(found, at = target()) {
  return new AuthClient({ target: at, apiKey: found.api_key, credential: found.api_secret, timeoutMs: 10000 });
}

function verifierOf(found, options = {}) {
  return new LocalVerifier({
    target: target(),
    apiKey: found.api_key,
    credential: found.api_secret,
    hs256Secret: found.algorithm === "HS256" ? found.api_secret : undefined,
    ...options,
  });
}

async function eventually(check, what) {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) assert.fail(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

const b64 = (text) => Buffer.from(text, "utf8").toString("base64url");

/** A token of raw header and payload JSON text, HS256-signed with `secret` (or with the given signature segment). */
function signed(header, payload, secret, signature) {
  const input = `${b64(typeof header === "string" ? header : JSON.stringify(header))}.${b64(
    typeof payload === "string" ? payload : JSON.stringify(payload),
  )}`;
  return `${input}.${signature ?? crypto.createHmac("sha256", secret).update(input).digest("base64url")}`;
}

function tampered(token) {
  const [header, payload, signature] = token.split(".");
  const flipped = signature[0] === "A" ? `B${signature.slice(1)}` : `A${signature.slice(1)}`;
  return [header, payload, flipped].join(".");
}

/** Tokens of every kind for an app, and the server's verdict on each must be the verifier's. */
async function tokensFor(found, client) {
  const seconds = Math.floor(Date.now() / 1000);
  const user = `lv-${found.algorithm}-${process.pid}`;
  const issued = await client.issueToken({ userId: user, ttlSeconds: 600, claims: { room: "general", n: [1, 2.5] } });
  const forever = await client.issueToken({ userId: `${user}-forever` });
  const [header, payload] = issued.token.split(".");
  const kid = JSON.parse(Buffer.from(header, "base64url")).kid;
  const list = {
    issued: issued.token,
    forever: forever.token,
    tampered: tampered(issued.token),
    "alg none": `${b64('{"alg":"none"}')}.${payload}.`,
    "alg none, a signature": `${b64('{"alg":"none"}')}.${payload}.c2ln`,
    "other kid": `${b64(JSON.stringify({ alg: found.algorithm, kid: "nosuchkey" }))}.${payload}.${issued.token.split(".")[2]}`,
    "dev token": `${header}.${payload}.devtoken`,
    garbage: "not-a-jwt",
    empty: "",
    padded: `${issued.token}=`,
    "two segments": `${header}.${payload}`,
    "JWE-like": `${header}.${payload}.a.b.c`,
    "non-canonical base64": `${header}.${payload.slice(0, -1)}${payload.endsWith("A") ? "B" : "A"}.sig`,
  };
  if (found.algorithm === "HS256") {
    const secret = found.api_secret;
    const h = { alg: "HS256", kid };
    const base = { user_id: user, iat: seconds - 10 };
    Object.assign(list, {
      "hand-made": signed(h, { ...base, exp: seconds + 100, extra: { deep: [true, null, "x"] } }, secret),
      "no kid": signed({ alg: "HS256" }, base, secret),
      "fractional iat": signed(h, { ...base, iat: seconds - 10.123456789 }, secret),
      expired: signed(h, { ...base, exp: seconds - 60 }, secret),
      "expired within the leeway": signed(h, { ...base, exp: seconds - 1 }, secret),
      "iat ahead": signed(h, { ...base, iat: seconds + 3600 }, secret),
      "nbf ahead": signed(h, { ...base, nbf: seconds + 3600 }, secret),
      "wrong audience": signed(h, { ...base, aud: "someone-else" }, secret),
      "audience list": signed(h, { ...base, aud: ["x", found.api_key] }, secret),
      "audience number": signed(h, { ...base, aud: 5 }, secret),
      "no user_id": signed(h, { iat: seconds }, secret),
      "user_id of a bad character": signed(h, { ...base, user_id: "bob smith" }, secret),
      "user_id a number": signed(h, { ...base, user_id: 7 }, secret),
      "server token": signed(h, { server: true, iat: seconds }, secret),
      "server null": signed(h, { ...base, server: null }, secret),
      "no iat": signed(h, { user_id: user }, secret),
      "iat a string": signed(h, { ...base, iat: "1700000000" }, secret),
      "iat true": signed(h, { ...base, iat: true }, secret),
      "exp beyond 9999": signed(h, { ...base, exp: 253402300800 }, secret),
      "exp at 9999": signed(h, { ...base, exp: 253402300799 }, secret),
      "iat negative": signed(h, { ...base, iat: -1 }, secret),
      "duplicate key": signed(h, `{"user_id":"${user}","iat":${seconds},"iat":${seconds}}`, secret),
      "a huge integer claim": signed(h, `{"user_id":"${user}","iat":${seconds},"big":1${"0".repeat(400)}}`, secret),
      "an overflowing float": signed(h, `{"user_id":"${user}","iat":${seconds},"big":1e400}`, secret),
      NaN: signed(h, `{"user_id":"${user}","iat":NaN}`, secret),
      "lone surrogate": signed(h, `{"user_id":"${user}","iat":${seconds},"x":"\\ud800"}`, secret),
      "escaped pair": signed(h, `{"user_id":"${user}","iat":${seconds},"x":"\\ud83d\\ude00"}`, secret),
      "escaped NUL": signed(h, `{"user_id":"${user}","iat":${seconds},"x":"a\\u0000"}`, secret),
      "nested 32 deep": signed(h, `{"user_id":"${user}","x":${"[".repeat(31)}${"]".repeat(31)}}`, secret),
      "nested 33 deep": signed(h, `{"user_id":"${user}","x":${"[".repeat(32)}${"]".repeat(32)}}`, secret),
      "payload an array": signed(h, "[1]", secret),
      "whitespace around": signed(h, ` {"user_id" : "${user}" }\n`, secret),
      "a BOM": signed(h, `\ufeff{"user_id":"${user}"}`, secret),
      "__proto__ claim": signed(h, `{"user_id":"${user}","__proto__":{"admin":true}}`, secret),
      "alg HS512": signed({ alg: "HS512", kid }, base, secret),
      "alg hs256": signed({ alg: "hs256", kid }, base, secret),
      "header crit": signed({ ...h, crit: ["exp"] }, base, secret),
      "header kid a number": signed({ alg: "HS256", kid: 1 }, base, secret),
      "header cty JWT": signed({ ...h, cty: "application/JWT" }, base, secret),
      "header typ JWT": signed({ ...h, typ: "JWT" }, base, secret),
      "signed by another secret": signed(h, base, "not-the-secret"),
      "too long": signed(h, { ...base, pad: "x".repeat(9000) }, secret),
    });
  }
  return list;
}

/** The server's verdicts (VerifyToken) and the verifier's on the same tokens, side by side; they must be equal. */
async function compare(verifier, client, tokens) {
  for (const [name, token] of Object.entries(tokens)) {
    const local = verifier.verify(token);
    if (token === "") {
      assert.equal(local.outcome, VerifyOutcome.MALFORMED, name); // VerifyToken refuses an empty token outright
      continue;
    }
    assert.deepStrictEqual(local, await client.verifyToken(token), `the verdicts on "${name}" differ`);
  }
}

test.describe("LocalVerifier against a running authsvc", () => {
  for (const name of ["hs256", "eddsa", "es256", "dev"]) {
    test(`${name}: the snapshot loads and every verdict is the server's`, async () => {
      const found = app(name);
      const client = clientOf(found);
      const verifier = verifierOf(found);
      try {
        assert.equal(verifier.verify("x.y.z").outcome, VerifyOutcome.UNAVAILABLE, "before start: no state");
        assert.equal(verifier.lag, Infinity);
        await verifier.start();
        assert.ok(verifier.version > 0);
        assert.ok(verifier.lag >= 0 && verifier.lag < 10, `lag ${verifier.lag}`);
        assert.equal(verifier.lastError, null);
        const tokens = await tokensFor(found, client);
        await compare(verifier, client, tokens);
        // Once more: the second time, the signatures come from the cache; the verdicts must not change.
        await compare(verifier, client, tokens);
        await compare(verifier, client, tokens);
        const { outcome, userId, valid, issuedAt, claims } = verifier.verify(tokens.issued);
        assert.deepEqual([outcome, valid], ["VALID", true]);
        assert.match(userId, /^lv-/);
        assert.ok(issuedAt instanceof Date);
        assert.equal(claims.room, "general");
        assert.throws(() => {
          claims.room = "admin";
        }, TypeError);
      } finally {
        await verifier.close();
        client.close();
      }
    });
  }

  test("a revocation reaches verify() and onRevoked; a clear lifts it; the app's too", async () => {
    const found = app("revocations");
    const client = clientOf(found);
    const verifier = verifierOf(found);
    const events = [];
    verifier.onRevoked((event) => events.push(event));
    try {
      await verifier.start();
      const { token } = await client.issueToken({ userId: "bob" });
      const other = (await client.issueToken({ userId: "carol" })).token;
      assert.equal(verifier.verify(token).outcome, "VALID");

      await client.revokeUsers(["bob"]);
      await eventually(() => events.length > 0, "onRevoked is called");
      assert.deepEqual(events[0], { userIds: ["bob"], app: false, resync: false, jtis: [] });
      assert.equal(verifier.verify(token).outcome, "REVOKED");
      assert.equal(verifier.verify(other).outcome, "VALID");
      assert.deepStrictEqual(verifier.verify(token), await client.verifyToken(token));

      await client.clearUserRevocations(["bob"]);
      await eventually(() => verifier.verify(token).outcome === "VALID", "the clear lifts bob's revocation");

      await client.revokeApp();
      await eventually(() => events.some((event) => event.app), "onRevoked hears of the app's revocation");
      assert.deepEqual(events.at(-1), { userIds: [], app: true, resync: false, jtis: [] });
      assert.equal(verifier.verify(other).outcome, "REVOKED");
      assert.deepStrictEqual(verifier.verify(other), await client.verifyToken(other));
      const after = (await client.issueToken({ userId: "carol" })).token;
      assert.equal(verifier.verify(after).outcome, "VALID", "a token issued after the app's revocation");

      await client.clearAppRevocation();
      await eventually(() => verifier.verify(other).outcome === "VALID", "the clear lifts the app's revocation");
      assert.equal(events.length, 2, "a clear calls no callback");
    } finally {
      await verifier.close();
      client.close();
    }
  });

  test("behind bearerAuth (middleware.js): VALID passes, a revoked user is told to log out", async () => {
    const found = app("middleware");
    const client = clientOf(found);
    const verifier = verifierOf(found);
    const check = bearerAuth({ verifier });
    const server = http.createServer((req, res) => check(req, res, () => res.end(JSON.stringify({ user: req.authsvc.userId }))));
    await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
    const url = `http://127.0.0.1:${server.address().port}/messages`;
    try {
      await verifier.start();
      const { token } = await client.issueToken({ userId: "judy" });
      const headers = { authorization: `Bearer ${token}` };
      const ok = await fetch(url, { headers });
      assert.equal(ok.status, 200);
      assert.deepEqual(await ok.json(), { user: "judy" });
      await client.revokeUsers(["judy"]);
      await eventually(() => verifier.verify(token).outcome === "REVOKED", "the revocation arrives");
      const refused = await fetch(url, { headers });
      assert.equal(refused.status, 401);
      const body = await refused.json();
      assert.deepEqual([body.outcome, body.action], ["REVOKED", "logout"]);
    } finally {
      await new Promise((resolve) => server.close(resolve));
      await verifier.close();
      client.close();
    }
  });

  test("a callback that throws is reported, and the stream goes on", async () => {
    const found = app("callbacks");
    const client = clientOf(found);
    const verifier = verifierOf(found);
    const warnings = [];
    const onWarning = (warning) => warnings.push(String(warning.message));
    process.on("warning", onWarning);
    const heard = [];
    const remove = verifier.onRevoked(() => {
      throw new Error("the caller's bug");
    });
    verifier.on_revoked((event) => heard.push(...event.userIds)); // the Python SDK's name works too
    try {
      await verifier.start();
      await client.revokeUsers(["dave"]);
      await eventually(() => heard.includes("dave"), "the second callback hears of dave");
      await eventually(() => warnings.some((w) => w.includes("the caller's bug")), "the failure is reported");
      remove();
      await client.revokeUsers(["erin"]);
      await eventually(() => heard.includes("erin"), "the stream goes on");
      assert.equal(warnings.filter((w) => w.includes("the caller's bug")).length, 1, "a removed callback is not called");
    } finally {
      process.off("warning", onWarning);
      await verifier.close();
      client.close();
    }
  });

  test("secret rotation: old and new secrets verify during the overlap, the old one not after it", async () => {
    const found = app("rotation_hs256");
    const client = clientOf(found);
    const oldToken = (await client.issueToken({ userId: "frank" })).token;
    const admin = adminClient();
    const overlapSeconds = 3;
    const rotated = await adminCall(admin, "RotateApiSecret", {
      api_key: found.api_key,
      overlap: { seconds: String(overlapSeconds), nanos: 0 },
    });
    const newSecret = rotated.api_secret;
    const newClient = new AuthClient({ target: target(), apiKey: found.api_key, credential: newSecret });
    const newToken = (await newClient.issueToken({ userId: "frank" })).token;
    const both = verifierOf(found, { credential: newSecret, hs256Secret: [found.api_secret, newSecret] });
    const onlyOld = verifierOf(found);
    try {
      await both.start();
      await onlyOld.start();
      for (const token of [oldToken, newToken]) {
        assert.equal(both.verify(token).outcome, "VALID");
        assert.deepStrictEqual(both.verify(token), await client.verifyToken(token));
      }
      assert.equal(onlyOld.verify(oldToken).outcome, "VALID");
      // Its kid names a secret this verifier was not given: no key to check it with.
      assert.equal(onlyOld.verify(newToken).outcome, "UNKNOWN_KEY");
      await eventually(async () => (await client.verifyToken(oldToken)).outcome !== "VALID", "the overlap ends");
      const server = await client.verifyToken(oldToken);
      assert.equal(server.outcome, "UNKNOWN_KEY");
      assert.deepStrictEqual(both.verify(oldToken), server);
      assert.equal(both.verify(newToken).outcome, "VALID");

      // A verifier given no secret the app accepts refuses to start: every token would be refused.
      const wrong = verifierOf(found, { credential: newSecret, hs256Secret: "a-secret-the-app-never-had-0123456789" });
      await assert.rejects(wrong.start(), (error) => {
        assert.ok(error instanceof TypeError && /hs256Secret/.test(error.message), String(error));
        assert.ok(!error.message.includes("a-secret-the-app-never-had") && !error.message.includes(newSecret));
        return true;
      });
    } finally {
      await both.close();
      await onlyOld.close();
      client.close();
      newClient.close();
      admin.close();
    }
  });

  test("key rotation: a rotated-in key verifies once its change arrives; a retired one is UNKNOWN_KEY", async () => {
    for (const name of ["rotation_eddsa", "rotation_es256"]) {
      const found = app(name);
      const client = clientOf(found);
      const admin = adminClient();
      const verifier = verifierOf(found);
      try {
        await verifier.start();
        const oldToken = (await client.issueToken({ userId: "grace" })).token;
        const oldKid = JSON.parse(Buffer.from(oldToken.split(".")[0], "base64url")).kid;
        assert.equal(verifier.verify(oldToken).outcome, "VALID");
        const rotated = await adminCall(admin, "RotateKey", { api_key: found.api_key, delay: { seconds: "0", nanos: 0 } });
        const newToken = (await client.issueToken({ userId: "grace" })).token;
        assert.equal(JSON.parse(Buffer.from(newToken.split(".")[0], "base64url")).kid, rotated.key_id);
        await eventually(() => verifier.verify(newToken).outcome === "VALID", `${name}: the new key verifies`);
        assert.deepStrictEqual(verifier.verify(newToken), await client.verifyToken(newToken));
        assert.equal(verifier.verify(oldToken).outcome, "VALID", "the old key verifies until it is retired");
        await adminCall(admin, "RetireKey", { api_key: found.api_key, key_id: oldKid });
        await eventually(() => verifier.verify(oldToken).outcome === "UNKNOWN_KEY", `${name}: the old key is retired`);
        assert.deepStrictEqual(verifier.verify(oldToken), await client.verifyToken(oldToken));
        assert.equal(verifier.verify(newToken).outcome, "VALID");
      } finally {
        await verifier.close();
        client.close();
        admin.close();
      }
    }
  });

  test("start() rejects a wrong credential, another app's, an unknown app; nothing secret in the error", async () => {
    const found = app("hs256");
    const other = app("eddsa");
    const cases = [
      [{ credential: "not-the-secret-at-all" }, status.UNAUTHENTICATED, "INVALID_CREDENTIAL"],
      [{ credential: other.api_secret }, status.PERMISSION_DENIED, "CREDENTIAL_OF_ANOTHER_APP"],
      [{ apiKey: "nosuchapp" }, status.NOT_FOUND, "APP_NOT_FOUND"],
    ];
    for (const [options, code, reason] of cases) {
      const verifier = verifierOf(found, options);
      await assert.rejects(verifier.start(), (error) => {
        assert.ok(error instanceof AuthsvcClientError, String(error));
        assert.deepEqual([error.code, error.reason], [code, reason]);
        assert.ok(!error.message.includes(found.api_secret) && !error.message.includes(other.api_secret));
        return true;
      });
      assert.equal(verifier.verify("a.b.c").outcome, "UNAVAILABLE");
    }
  });

  test("start() rejects with UNAVAILABLE after startTimeout when nothing listens", async () => {
    const found = app("hs256");
    const verifier = verifierOf(found, { target: setting("AUTHSVC_CLOSED_TARGET"), startTimeout: 1 });
    const started = Date.now();
    await assert.rejects(verifier.start(), (error) => {
      assert.ok(error instanceof AuthsvcClientError, String(error));
      assert.equal(error.code, status.UNAVAILABLE);
      assert.match(error.message, /no state from .* within 1s/);
      return true;
    });
    assert.ok(Date.now() - started >= 900);
    assert.ok(verifier.lastError instanceof AuthsvcClientError, "lastError says why");
  });

  test("the stream reconnects by itself and resumes from its version", async () => {
    // The doomed server closes every connection after a second (AUTHSVC_MAX_CONNECTION_AGE=1).
    const found = app("doomed");
    const client = clientOf(found);
    const verifier = verifierOf(found, { target: setting("AUTHSVC_DOOMED_TARGET"), maxLag: 3 });
    const events = [];
    verifier.onRevoked((event) => events.push(event));
    try {
      await verifier.start();
      const { token } = await client.issueToken({ userId: "heidi" });
      await new Promise((resolve) => setTimeout(resolve, 2500)); // two connection ages at least
      assert.equal(verifier.verify(token).outcome, "VALID", `lag ${verifier.lag}, ${verifier.lastError}`);
      assert.ok(verifier.lastError instanceof AuthsvcClientError, "the stream was cut at least once");
      const before = verifier.version;
      await client.revokeUsers(["heidi"]); // through the session's server: the doomed one follows the database
      await eventually(() => verifier.verify(token).outcome === "REVOKED", "the revocation arrives after reconnecting");
      assert.ok(verifier.version > before);
      assert.deepEqual(events, [{ userIds: ["heidi"], app: false, resync: false, jtis: [] }], "resumed: changes, no resync");
    } finally {
      await verifier.close();
      client.close();
    }
  });

  test("past maxLag with its server gone it answers UNAVAILABLE, never a stale verdict", async () => {
    const found = app("doomed");
    const client = clientOf(found);
    const verifier = verifierOf(found, { target: setting("AUTHSVC_DOOMED_TARGET"), maxLag: 1.5 });
    try {
      await verifier.start();
      const { token } = await client.issueToken({ userId: "ivan" });
      assert.equal(verifier.verify(token).outcome, "VALID");
      process.kill(Number(setting("AUTHSVC_DOOMED_PID")), "SIGKILL");
      await eventually(() => verifier.verify(token).outcome === "UNAVAILABLE", "the verifier fails closed");
      const answer = verifier.verify(token);
      assert.deepStrictEqual(answer, {
        outcome: "UNAVAILABLE",
        valid: false,
        userId: null,
        issuedAt: null,
        expiresAt: null,
        claims: {},
        devToken: false,
        revokedBy: null,
        revokedBefore: null,
        validFrom: null,
        clientAction: "RETRY_LATER",
      });
      assert.ok(verifier.lag > 1.5);
      assert.equal(verifier.lastError.code, status.UNAVAILABLE);
    } finally {
      await verifier.close();
      client.close();
    }
  });
});

test("the options are checked before any connection", () => {
  const base = { target: "127.0.0.1:1", apiKey: "k", credential: "c" };
  for (const [options, pattern] of [
    [{ target: "" }, /target/],
    [{ apiKey: "" }, /apiKey/],
    [{ credential: undefined }, /credential/],
    [{ maxLag: 0 }, /maxLag/],
    [{ maxLag: "10" }, /maxLag/],
    [{ hs256Secret: [""] }, /hs256Secret/],
    [{ reconnectBackoff: 2, reconnectMaxBackoff: 1 }, /reconnectMaxBackoff/],
    [{ cacheSize: -1 }, /cacheSize/],
  ]) {
    assert.throws(() => new LocalVerifier({ ...base, ...options }), (error) => error instanceof TypeError && pattern.test(error.message));
  }
  const verifier = new LocalVerifier({ ...base, hs256Secret: "s3cret-value" });
  assert.ok(!JSON.stringify(verifier).includes("s3cret-value") && !JSON.stringify(verifier).includes('"c"'));
});

// The AdminService, with the operator token, for rotations.
const ADMIN = protoLoader.loadSync("authsvc/v1/admin_service.proto", {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: [path.resolve(__dirname, "..", "..", "..", "protos")],
});

function adminClient() {
  const AdminService = grpc.loadPackageDefinition(ADMIN).authsvc.v1.AdminService;
  return new AdminService(setting("AUTHSVC_ADMIN_TARGET"), grpc.credentials.createInsecure());
}

function adminCall(admin, method, request) {
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${setting("AUTHSVC_OPERATOR_TOKEN")}`);
  return new Promise((resolve, reject) => {
    admin[method](request, metadata, { deadline: Date.now() + 10000 }, (error, response) =>
      error ? reject(AuthsvcClientError.fromServiceError(error)) : resolve(response),
    );
  });
}
