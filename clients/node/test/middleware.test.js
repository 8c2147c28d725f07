"use strict";
// bearerAuth and tokenProvider in a chat backend: an Express app (and a plain http server) on an ephemeral port,
// called with Node's fetch, verifying with AuthClient against the running authsvc named by AUTHSVC_TARGET,
// AUTHSVC_API_KEY and AUTHSVC_API_SECRET (tests/test_node_client.py sets them for the test server).
// The contract is docs/web.md; the Python side (tests/test_web.py) checks the same answers.

const test = require("node:test");
const assert = require("node:assert/strict");
const crypto = require("node:crypto");
const fs = require("node:fs");
const http = require("node:http");
const net = require("node:net");
const path = require("node:path");
const express = require("express");
const { AuthClient, AuthsvcClientError, LocalVerifier, bearerAuth, tokenProvider, DESCRIPTIONS } = require("..");

const { AUTHSVC_TARGET: target, AUTHSVC_API_KEY: apiKey, AUTHSVC_API_SECRET: apiSecret } = process.env;
const skip =
  target && apiKey && apiSecret ? false : "set AUTHSVC_TARGET, AUTHSVC_API_KEY and AUTHSVC_API_SECRET to a running authsvc";

const REALM = "chat";
const TOKEN_PATH = "/auth/token";
const JSON_TYPE = { "content-type": "application/json" };
const run = `${process.pid}-${Date.now()}`;

/** The backend's own sessions (cookie `session` → user id), counting how often the token provider asked. */
function sessionTable(entries) {
  const users = new Map(entries);
  const table = {
    asked: 0,
    identify(req) {
      table.asked += 1;
      const cookie = /(?:^|;\s*)session=([^;]*)/.exec(req.headers.cookie || "");
      return cookie ? users.get(cookie[1]) ?? null : null;
    },
  };
  return table;
}

function chatApp({ verifier, client, sessions, onError }) {
  const app = express();
  app.get("/healthz", (req, res) => res.json({ status: "ok" }));
  app.all(
    TOKEN_PATH,
    tokenProvider({
      client,
      identify: async (req) => sessions.identify(req),
      ttlSeconds: 60,
      claims: (req, userId) => ({ room: "general", name: userId.toUpperCase() }),
    }),
  );
  app.use(bearerAuth({ verifier, realm: REALM, exclude: ["/healthz"], onError }));
  app.get("/messages", (req, res) => res.json({ user: req.authsvc.userId, room: req.authsvc.claims.room ?? null }));
  return app;
}

/** Listens on an ephemeral loopback port; resolves to { url, close }. */
function listen(handler) {
  return new Promise((resolve) => {
    const server = http.createServer(handler);
    server.listen(0, "127.0.0.1", () => {
      const url = `http://127.0.0.1:${server.address().port}`;
      resolve({ url, close: () => new Promise((done) => server.close(done)) });
    });
  });
}

function closedPort() {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** A token the backend minted itself with the app's API secret (HS256), as a chat vendor's server SDK does. */
function backendToken(payload) {
  const encode = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const unsigned = `${encode({ alg: "HS256", typ: "JWT" })}.${encode(payload)}`;
  const signature = crypto.createHmac("sha256", apiSecret).update(unsigned).digest("base64url");
  return `${unsigned}.${signature}`;
}

/** A GET written by hand (one header a line, as given); resolves to { status, body }. */
function rawGet(url, pathname, lines) {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), hostname, () => {
      socket.write([`GET ${pathname} HTTP/1.1`, `Host: ${hostname}:${port}`, ...lines, "Connection: close", "", ""].join("\r\n"));
    });
    const chunks = [];
    socket.on("data", (chunk) => chunks.push(chunk));
    socket.on("error", reject);
    socket.on("end", () => {
      const [head, body] = Buffer.concat(chunks).toString().split("\r\n\r\n", 2);
      resolve({ status: Number(head.split(" ")[1]), body: JSON.parse(body) });
    });
  });
}

function payloadOf(token) {
  return JSON.parse(Buffer.from(token.split(".")[1], "base64url").toString());
}

async function assertRefused(response, status, error, action, outcome = null) {
  assert.equal(response.status, status);
  assert.equal(response.headers.get("content-type"), "application/json");
  assert.equal(response.headers.get("cache-control"), "no-store");
  const body = await response.json();
  assert.deepEqual(Object.keys(body).sort(), ["action", "error", "error_description", "outcome"]);
  assert.deepEqual([body.error, body.action, body.outcome], [error, action, outcome]);
  return body;
}

function challenge(response) {
  const value = response.headers.get("www-authenticate");
  assert.ok(value.startsWith("Bearer "), value);
  return Object.fromEntries([...value.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
}

/** The client docs/web.md describes: on `action: refresh` it fetches a fresh token and retries once; on
 *  `logout` it stops. */
class ChatClient {
  constructor(url, session, token = null) {
    Object.assign(this, { url, session, token, refreshed: 0 });
  }

  async fetchToken() {
    const response = await fetch(`${this.url}${TOKEN_PATH}`, {
      method: "POST",
      headers: { ...JSON_TYPE, cookie: `session=${this.session}` },
      body: "{}",
    });
    assert.equal(response.status, 200);
    this.token = (await response.json()).token;
  }

  async get(pathname) {
    if (this.token === null) await this.fetchToken();
    const call = () => fetch(`${this.url}${pathname}`, { headers: { authorization: `Bearer ${this.token}` } });
    let response = await call();
    if (response.status === 401 && (await response.clone().json()).action === "refresh") {
      await this.fetchToken();
      this.refreshed += 1;
      response = await call();
    }
    if (response.status === 401 && (await response.clone().json()).action === "logout") {
      const error = new Error("logged out");
      error.outcome = (await response.json()).outcome;
      throw error;
    }
    return response;
  }
}

test.describe("bearerAuth and tokenProvider in an Express app, against a running authsvc", { skip }, () => {
  let client;
  let sessions;
  let server;
  const alice = `alice-${run}`;
  const bob = `bob-${run}`;

  test.before(async () => {
    client = new AuthClient({ target, apiKey, credential: apiSecret, timeoutMs: 10000 });
    sessions = sessionTable([
      ["s-alice", alice],
      ["s-bob", bob],
      ["s-broken", "not a user id!"],
    ]);
    server = await listen(chatApp({ verifier: client, client, sessions }));
  });
  test.after(async () => {
    await server.close();
    client.close();
  });

  test("a client refreshes on EXPIRED, then retries successfully", async () => {
    const now = Math.floor(Date.now() / 1000);
    const expired = backendToken({ user_id: alice, iat: now - 7200, exp: now - 3600 });
    const refused = await fetch(`${server.url}/messages`, { headers: { authorization: `Bearer ${expired}` } });
    await assertRefused(refused, 401, "invalid_token", "refresh", "EXPIRED");
    assert.deepEqual(challenge(refused), {
      realm: REALM,
      error: "invalid_token",
      error_description: `EXPIRED: ${DESCRIPTIONS.EXPIRED}`,
    });

    const chat = new ChatClient(server.url, "s-alice", expired);
    const asked = sessions.asked;
    const response = await chat.get("/messages");
    assert.equal(response.status, 200);
    assert.deepEqual(await response.json(), { user: alice, room: "general" });
    assert.equal(chat.refreshed, 1);
    assert.equal(sessions.asked, asked + 1);
    assert.notEqual(chat.token, expired);
  });

  test("a client whose token is revoked is told to log out, and stops", async () => {
    const chat = new ChatClient(server.url, "s-bob");
    assert.equal((await (await chat.get("/messages")).json()).user, bob);
    const token = chat.token;
    await client.revokeUsers([bob]);

    const asked = sessions.asked;
    await assert.rejects(chat.get("/messages"), (error) => error.outcome === "REVOKED");
    assert.equal(sessions.asked, asked, "no refresh after REVOKED");
    assert.equal(chat.refreshed, 0);
    const refused = await fetch(`${server.url}/messages`, { headers: { authorization: `Bearer ${token}` } });
    const body = await assertRefused(refused, 401, "invalid_token", "logout", "REVOKED");
    assert.ok(body.error_description.startsWith("REVOKED: "));
    assert.ok(!JSON.stringify(body).includes(token) && !refused.headers.get("www-authenticate").includes(token));
  });

  test("a token that does not verify means log out", async () => {
    const { token } = await client.issueToken({ userId: alice });
    const tampered = token.slice(0, -4) + (token.endsWith("AAAA") ? "BBBB" : "AAAA");
    for (const [bad, outcome] of [
      [tampered, "INVALID_SIGNATURE"],
      ["not-a-jwt", "MALFORMED"],
    ]) {
      const refused = await fetch(`${server.url}/messages`, { headers: { authorization: `Bearer ${bad}` } });
      const body = await assertRefused(refused, 401, "invalid_token", "logout", outcome);
      assert.equal(body.error_description, `${outcome}: ${DESCRIPTIONS[outcome]}`);
    }
  });

  test("a token not valid yet means retry later with the same token, and a revoked device logs out", async () => {
    const encode = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
    const input = `${encode({ alg: "HS256", typ: "JWT" })}.${encode({ user_id: alice, nbf: Math.floor(Date.now() / 1000) + 600 })}`;
    const early = `${input}.${crypto.createHmac("sha256", apiSecret).update(input).digest("base64url")}`;
    const refused = await fetch(`${server.url}/messages`, { headers: { authorization: `Bearer ${early}` } });
    const body = await assertRefused(refused, 401, "invalid_token", "retry_later", "NOT_YET_VALID");
    assert.equal(body.error_description, `NOT_YET_VALID: ${DESCRIPTIONS.NOT_YET_VALID}`);
    const { token } = await client.issueToken({ userId: alice });
    await client.revokeToken(token);
    const gone = await fetch(`${server.url}/messages`, { headers: { authorization: `Bearer ${token}` } });
    await assertRefused(gone, 401, "invalid_token", "logout", "REVOKED");
  });

  test("no bearer token: 401 without an error code", async () => {
    for (const headers of [{}, { authorization: "Basic YWxpY2U6c2VjcmV0" }]) {
      const refused = await fetch(`${server.url}/messages`, { headers });
      await assertRefused(refused, 401, "missing_token", "authenticate");
      assert.equal(refused.headers.get("www-authenticate"), `Bearer realm="${REALM}"`);
    }
  });

  test("a malformed Authorization header: 400 invalid_request", async () => {
    for (const value of ["Bearer", "Bearer one two", "Bearer a, b", "Bearer <token>"]) {
      const refused = await fetch(`${server.url}/messages`, { headers: { authorization: value } });
      await assertRefused(refused, 400, "invalid_request", "fix_request");
      const params = challenge(refused);
      assert.equal(params.realm, REALM);
      assert.equal(params.error, "invalid_request");
    }
    // Two Authorization headers: fetch would join them into one, so they go over a socket of their own.
    const twice = await rawGet(server.url, "/messages", ["Authorization: Bearer a", "Authorization: Bearer b"]);
    assert.equal(twice.status, 400);
    assert.equal(twice.body.error, "invalid_request");
  });

  test("excluded paths need no token; the scheme is case-insensitive", async () => {
    assert.deepEqual(await (await fetch(`${server.url}/healthz`)).json(), { status: "ok" });
    const { token } = await client.issueToken({ userId: alice });
    const response = await fetch(`${server.url}/messages`, { headers: { authorization: `bearer ${token}` } });
    assert.equal(response.status, 200);
    assert.equal((await response.json()).user, alice);
  });

  test("the token provider issues a token for the session's user", async () => {
    const response = await fetch(`${server.url}${TOKEN_PATH}`, {
      method: "POST",
      headers: { ...JSON_TYPE, cookie: "session=s-alice" },
      body: "{}",
    });
    assert.equal(response.status, 200);
    assert.equal(response.headers.get("cache-control"), "no-store");
    const body = await response.json();
    assert.deepEqual(Object.keys(body).sort(), ["expires_at", "token"]);
    const payload = payloadOf(body.token);
    assert.equal(payload.user_id, alice);
    assert.equal(payload.room, "general");
    assert.equal(payload.name, alice.toUpperCase());
    assert.ok(Math.abs(payload.exp - payload.iat - 60) < 0.01, "the provider's ttl");
    assert.match(body.expires_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.ok(Math.abs(Date.parse(body.expires_at) - payload.exp * 1000) < 1);
  });

  test("the token provider refuses what it must", async () => {
    const url = `${server.url}${TOKEN_PATH}`;
    const cookie = "session=s-alice";
    const asked = sessions.asked;

    const got = await fetch(url, { headers: { cookie } });
    await assertRefused(got, 405, "method_not_allowed", "fix_request");
    assert.equal(got.headers.get("allow"), "POST");
    for (const init of [
      { body: "{}", headers: { cookie, "content-type": "text/plain" } },
      { body: new URLSearchParams({ a: "b" }), headers: { cookie } }, // what an HTML form sends
      { headers: { cookie } },
    ]) {
      await assertRefused(await fetch(url, { method: "POST", ...init }), 415, "unsupported_media_type", "fix_request");
    }
    const foreign = await fetch(url, {
      method: "POST",
      headers: { ...JSON_TYPE, cookie, origin: "https://evil.example" },
      body: "{}",
    });
    await assertRefused(foreign, 403, "forbidden_origin", "fix_request");
    assert.equal(sessions.asked, asked, "a refused request never reaches identify");

    const sameOrigin = await fetch(url, { method: "POST", headers: { ...JSON_TYPE, cookie, origin: server.url }, body: "{}" });
    assert.equal(sameOrigin.status, 200);
    const nobody = await fetch(url, { method: "POST", headers: { ...JSON_TYPE, cookie: "session=s-unknown" }, body: "{}" });
    await assertRefused(nobody, 401, "no_session", "authenticate");
    const broken = await fetch(url, { method: "POST", headers: { ...JSON_TYPE, cookie: "session=s-broken" }, body: "{}" });
    const body = await assertRefused(broken, 500, "server_error", "retry");
    assert.equal(body.error_description, "the backend could not issue a token");
  });

  test("authsvc out of reach: 503 with Retry-After; a wrong configuration: 500 without internals", async () => {
    const { token } = await client.issueToken({ userId: alice });
    const authorization = `Bearer ${token}`;
    const down = new AuthClient({ target: `127.0.0.1:${await closedPort()}`, apiKey, credential: apiSecret, timeoutMs: 1000, retryAttempts: 1 });
    const heard = [];
    const downServer = await listen(chatApp({ verifier: down, client: down, sessions, onError: (e) => heard.push(e) }));
    try {
      const refused = await fetch(`${downServer.url}/messages`, { headers: { authorization } });
      await assertRefused(refused, 503, "temporarily_unavailable", "retry");
      assert.equal(refused.headers.get("retry-after"), "2");
      assert.equal(refused.headers.get("www-authenticate"), null);
      const provided = await fetch(`${downServer.url}${TOKEN_PATH}`, {
        method: "POST",
        headers: { ...JSON_TYPE, cookie: "session=s-alice" },
        body: "{}",
      });
      await assertRefused(provided, 503, "temporarily_unavailable", "retry");
      assert.equal(provided.headers.get("retry-after"), "2");
    } finally {
      await downServer.close();
      down.close();
    }
    assert.ok(heard.length >= 1 && heard.every((e) => e instanceof AuthsvcClientError && e.codeName === "UNAVAILABLE"));

    const wrong = new AuthClient({ target, apiKey: "no-such-api-key", credential: apiSecret });
    const wrongServer = await listen(chatApp({ verifier: wrong, client: wrong, sessions }));
    try {
      const refused = await fetch(`${wrongServer.url}/messages`, { headers: { authorization } });
      const body = await assertRefused(refused, 500, "server_error", "retry");
      assert.ok(!JSON.stringify(body).includes("no-such-api-key"));
    } finally {
      await wrongServer.close();
      wrong.close();
    }
  });

  test("plain http, no Express: a connect-style chain, and a verifier with verify()", async () => {
    const verifier = { verify: (token) => client.verifyToken(token) }; // the LocalVerifier's shape
    const check = bearerAuth({ verifier });
    const provider = tokenProvider({ client, identify: (req) => sessions.identify(req) });
    const plain = await listen((req, res) => {
      if (req.url === TOKEN_PATH) return provider(req, res);
      return check(req, res, () => res.end(JSON.stringify({ user: req.authsvc.userId })));
    });
    try {
      const chat = new ChatClient(plain.url, "s-alice");
      assert.deepEqual(await (await chat.get("/anything")).json(), { user: alice });
      const refused = await fetch(`${plain.url}/anything`);
      await assertRefused(refused, 401, "missing_token", "authenticate");
      assert.equal(refused.headers.get("www-authenticate"), 'Bearer realm="api"');
    } finally {
      await plain.close();
    }
  });
});

// allowAnonymous: the app "anonymous" of AUTHSVC_LOCAL_APPS has anonymous_access on; the main app has it off.
const localApps = process.env.AUTHSVC_LOCAL_APPS;
const skipAnonymous = skip || (localApps ? false : "set AUTHSVC_LOCAL_APPS (with an anonymous app)");

/** A verifier of `kind` ("rpc": AuthClient, "local": a started LocalVerifier) for an app, counting its calls in
 *  `calls` (true for the empty token; no token is kept). */
async function countingVerifier(kind, found, calls) {
  const client = new AuthClient({ target, apiKey: found.apiKey, credential: found.apiSecret, timeoutMs: 10000 });
  if (kind === "rpc") {
    const verifier = { verifyToken: (token) => (calls.push(token === ""), client.verifyToken(token)) };
    return { verifier, client, close: async () => client.close() };
  }
  const local = new LocalVerifier({ target, apiKey: found.apiKey, credential: found.apiSecret, hs256Secret: found.apiSecret });
  await local.start();
  const verifier = { verify: (token) => (calls.push(token === ""), local.verify(token)) };
  return { verifier, client, close: async () => (await local.close(), client.close()) };
}

function whoamiServer(verifier, options = {}) {
  const app = express();
  app.use(bearerAuth({ verifier, realm: REALM, ...options }));
  app.get("/whoami", (req, res) => res.json({ user: req.authsvc.userId, role: req.authsvc.role, outcome: req.authsvc.outcome }));
  return listen(app);
}

test.describe("bearerAuth with allowAnonymous, against a running authsvc", { skip: skipAnonymous }, () => {
  const open = () => {
    const found = JSON.parse(localApps).anonymous;
    assert.ok(found, "AUTHSVC_LOCAL_APPS has no app anonymous");
    return { apiKey: found.api_key, apiSecret: found.api_secret };
  };
  const basic = { authorization: "Basic YWxpY2U6c2VjcmV0" };

  for (const kind of ["rpc", "local"]) {
    test(`${kind}: an app that allows anonymous users lets a request without a token through as ANONYMOUS`, async () => {
      const calls = [];
      const { verifier, client, close } = await countingVerifier(kind, open(), calls);
      const server = await whoamiServer(verifier, { allowAnonymous: true });
      try {
        for (const headers of [{}, basic]) {
          const response = await fetch(`${server.url}/whoami`, { headers });
          assert.equal(response.status, 200);
          assert.deepEqual(await response.json(), { user: null, role: "ANONYMOUS", outcome: "VALID" });
        }
        assert.deepEqual(calls, [true, true], "each verified as the empty token");

        // A user's token still names its user; a token that fails is refused for itself, never made anonymous.
        const { token } = await client.issueToken({ userId: `anon-${run}` });
        const user = await fetch(`${server.url}/whoami`, { headers: { authorization: `Bearer ${token}` } });
        assert.deepEqual(await user.json(), { user: `anon-${run}`, role: "USER", outcome: "VALID" });
        const bad = await fetch(`${server.url}/whoami`, { headers: { authorization: "Bearer not-a-jwt" } });
        await assertRefused(bad, 401, "invalid_token", "logout", "MALFORMED");
        const now = Math.floor(Date.now() / 1000);
        const input = `${Buffer.from(JSON.stringify({ alg: "HS256", typ: "JWT" })).toString("base64url")}.${Buffer.from(
          JSON.stringify({ user_id: "alice", iat: now - 7200, exp: now - 3600 }),
        ).toString("base64url")}`;
        const expired = `${input}.${crypto.createHmac("sha256", open().apiSecret).update(input).digest("base64url")}`;
        const old = await fetch(`${server.url}/whoami`, { headers: { authorization: `Bearer ${expired}` } });
        await assertRefused(old, 401, "invalid_token", "refresh", "EXPIRED");
        for (const value of ["Bearer", "Bearer one two"]) {
          const refused = await fetch(`${server.url}/whoami`, { headers: { authorization: value } });
          await assertRefused(refused, 400, "invalid_request", "fix_request");
        }
        const twice = await rawGet(server.url, "/whoami", ["Authorization: Bearer a", "Authorization: Bearer b"]);
        assert.equal(twice.status, 400);
        assert.deepEqual(calls, [true, true, false, false, false], "the 400s verify nothing");
      } finally {
        await server.close();
        await close();
      }
    });

    test(`${kind}: without allowAnonymous, no token is the usual 401 and nothing is verified`, async () => {
      const calls = [];
      const { verifier, close } = await countingVerifier(kind, open(), calls);
      const server = await whoamiServer(verifier);
      try {
        for (const headers of [{}, basic]) {
          const refused = await fetch(`${server.url}/whoami`, { headers });
          await assertRefused(refused, 401, "missing_token", "authenticate");
          assert.equal(refused.headers.get("www-authenticate"), `Bearer realm="${REALM}"`);
        }
        assert.deepEqual(calls, [], "no VerifyToken (nor local verify) without a bearer token");
      } finally {
        await server.close();
        await close();
      }
    });

    test(`${kind}: allowAnonymous for an app without anonymous access is the usual 401 missing_token`, async () => {
      const calls = [];
      const { verifier, close } = await countingVerifier(kind, { apiKey, apiSecret }, calls);
      const server = await whoamiServer(verifier, { allowAnonymous: true });
      try {
        for (const headers of [{}, basic]) {
          const refused = await fetch(`${server.url}/whoami`, { headers });
          await assertRefused(refused, 401, "missing_token", "authenticate");
          assert.equal(refused.headers.get("www-authenticate"), `Bearer realm="${REALM}"`);
        }
        assert.deepEqual(calls, [true, true], "asked, and authsvc said ANONYMOUS_DISABLED");
      } finally {
        await server.close();
        await close();
      }
    });
  }

  test("allowAnonymous fails closed: authsvc out of reach is a 503, a wrong configuration a 500", async () => {
    const { apiKey: openKey, apiSecret: openSecret } = open();
    const down = new AuthClient({ target: `127.0.0.1:${await closedPort()}`, apiKey: openKey, credential: openSecret, timeoutMs: 1000, retryAttempts: 1 });
    const downServer = await whoamiServer(down, { allowAnonymous: true });
    try {
      const refused = await fetch(`${downServer.url}/whoami`);
      await assertRefused(refused, 503, "temporarily_unavailable", "retry");
      assert.equal(refused.headers.get("retry-after"), "2");
    } finally {
      await downServer.close();
      down.close();
    }
    const wrong = new AuthClient({ target, apiKey: "no-such-api-key", credential: openSecret });
    const wrongServer = await whoamiServer(wrong, { allowAnonymous: true });
    try {
      await assertRefused(await fetch(`${wrongServer.url}/whoami`), 500, "server_error", "retry");
    } finally {
      await wrongServer.close();
      wrong.close();
    }
  });
});

test("the descriptions are those docs/web.md prints, as in the Python package", () => {
  const doc = fs.readFileSync(path.resolve(__dirname, "..", "..", "..", "docs", "web.md"), "utf8");
  const documented = Object.fromEntries(
    [...doc.matchAll(/^\| `([A-Z_]+)` \| [^|]+ \| `([^`]+)` \|$/gm)].map((m) => [m[1], m[2]]),
  );
  assert.ok(Object.keys(documented).length >= 7);
  for (const [outcome, description] of Object.entries(DESCRIPTIONS)) {
    assert.equal(documented[outcome], `${outcome}: ${description}`);
  }
});

test("set-up mistakes fail at once", () => {
  assert.throws(() => bearerAuth({ verifier: {} }), /LocalVerifier or an AuthClient/);
  assert.throws(() => bearerAuth({ verifier: { verify() {} }, realm: 'a"b' }), /realm/);
  assert.throws(() => bearerAuth({ verifier: { verify() {} }, allowAnonymous: "yes" }), /allowAnonymous/);
  assert.throws(() => tokenProvider({ client: {}, identify() {} }), /AuthClient/);
  assert.throws(() => tokenProvider({ client: { issueToken() {} } }), /identify/);
});
